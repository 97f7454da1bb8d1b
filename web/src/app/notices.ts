/**
 * Server notices about our own account (docs/server.md, "Login notices"): envelopes of
 * type 0 with no sender holding a small JSON object the relay wrote (a new device, a
 * recovery, an identity reset, second-factor changes). Clients cannot send type 0, so
 * no contact can forge one; the relay itself can (and can stay silent). Mirrors
 * cipherpost.client.notices.
 */

export const NOTICE_TYPE = 0;
const MAX = 4096;

/** One notice as kept in the store and shown on the security page. */
export interface AccountNotice {
  kind: string;
  /** Milliseconds since the epoch (the relay rounds it to the minute). */
  at: number;
  deviceId?: number;
  name: string;
  via: string;
}

const SENTENCES: Record<string, string> = {
  device_added: "a new device joined",
  recovery: "its recovery blob was opened (someone restored the account)",
  identity_reset: "its identity key was reset",
  recovery_changed: "its recovery secrets changed",
  two_factor_enabled: "a second factor was turned on",
  two_factor_disabled: "the second factor was turned off",
};

const decoder = new TextDecoder("utf-8", { fatal: true });

/** The notice in an envelope's content, or undefined when it is not one. */
export function parseNotice(content: Uint8Array): AccountNotice | undefined {
  if (content.length > MAX) return undefined;
  let data: unknown;
  try {
    data = JSON.parse(decoder.decode(content));
  } catch {
    return undefined;
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) return undefined;
  const o = data as Record<string, unknown>;
  if (typeof o.kind !== "string" || !Number.isSafeInteger(o.at)) return undefined;
  const device = o.device_id;
  const via = typeof o.via === "string" ? o.via : typeof o.what === "string" ? o.what : "";
  return {
    kind: o.kind.slice(0, 64), at: o.at as number,
    ...(Number.isInteger(device) && (device as number) >= 1 && (device as number) <= 127 ? { deviceId: device as number } : {}),
    name: typeof o.name === "string" ? o.name.slice(0, 64) : "", via: via.slice(0, 64),
  };
}

/** One sentence for a person (the time in UTC, to the minute). */
export function describeNotice(notice: AccountNotice): string {
  const when = new Date(notice.at).toISOString().slice(0, 16).replace("T", " ");
  const what = SENTENCES[notice.kind] ?? notice.kind.replace(/_/g, " ");
  const parts = [`${when} UTC: ${what}`];
  if (notice.deviceId !== undefined) parts.push(`device ${notice.deviceId}${notice.name ? ` "${notice.name}"` : ""}`);
  if (notice.via) parts.push(`via ${notice.via.replace(/_/g, " ")}`);
  return parts.join(", ");
}
