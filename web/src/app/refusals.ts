/**
 * Sealed envelopes this browser refused (docs/spec/sealed-sender.md): one whose sender
 * certificate did not check out (wrong trust root, expired, revoked server key, not
 * from a contact, a self-send) is dropped before any session is touched, and the inbox
 * says so with a `sealed_rejected` event (the SDK's SealedRejected; the CLI prints a
 * notice). Its sender is unknown by design, so what is kept is when and why: the last
 * {@link KEEP} refusals, sealed in the store, for the security page to show.
 */

import type { Client } from "./client.js";
import type { ClientEvent } from "./model.js";

export interface SealedRefusal {
  /** When this browser refused it (ms). */
  at: number;
  /** The error kind (invalid_certificate, sealed_sender_self_send, ...). */
  error: string;
  reason: string;
}

export const KEEP = 50;
const PREFIX = "sealed_rejected:";

/** What the user is told about a refusal of this kind. */
export function describeRefusal(refusal: SealedRefusal): string {
  const why = refusal.error === "invalid_certificate"
    ? "its sender certificate did not check out (not signed under this server's trust root, expired or revoked)"
    : refusal.error === "sealed_sender_self_send" ? "it claimed to come from this very device"
      : `it could not be opened (${refusal.error.replace(/_/g, " ")})`;
  return `A sealed message was dropped unread: ${why}. Its sender cannot be known. If it keeps happening, `
    + "someone may be sending forged messages, or the server's keys changed.";
}

/** The refusals kept, oldest first. */
export async function sealedRefusals(client: Client): Promise<SealedRefusal[]> {
  return (await client.store.scanJson<SealedRefusal>(PREFIX)).map(([, r]) => r);
}

async function record(client: Client, event: { error: string; reason: string }, at: number): Promise<void> {
  await client.store.transaction(async () => {
    const id = await client.store.nextId("sealed_rejected");
    await client.store.putJson(`${PREFIX}${String(id).padStart(12, "0")}`,
      { at, error: event.error.slice(0, 64), reason: event.reason.slice(0, 200) } satisfies SealedRefusal);
    const kept = await client.store.scan(PREFIX);
    for (const [key] of kept.slice(0, Math.max(0, kept.length - KEEP))) await client.store.put(key, null);
  });
}

/**
 * Keep every refusal `client` reports from now on; `changed` runs after each is stored.
 * Returns the function that stops watching.
 */
export function watchRefusals(client: Client, changed: () => unknown, clock: () => number = Date.now): () => void {
  return client.on((event: ClientEvent) => {
    if (event.kind !== "sealed_rejected") return;
    void record(client, event, clock()).then(changed,
      (error) => console.warn("cipherpost: a refusal was not kept:", (error as Error).name));
  });
}
