/**
 * Resetting the account's identity key from the browser after a compromise, as the SDK's
 * cipherpost.client.identity_reset does (docs/spec/README.md §7). The order matters,
 * because the relay drops every device's keys when it takes the new identity key:
 *
 * 1. sessions with every other device of ours, while their bundles (signed with the old
 *    key) are still published;
 * 2. the new key pair and each device's new registration id encrypted for it over those
 *    sessions (SyncMessage.identity_reset; nothing sent yet);
 * 3. the new identity and this browser's new prekeys stored, then published
 *    (PUT /v1/accounts/me/identity, a second-factor action: its code is asked for before
 *    step 1). A refusal puts the old identity back (a refused code asks again); a lost
 *    answer asks the relay which key it holds first;
 * 4. the resets sent in one request; every session forgotten and every group chain
 *    retired, so that contacts get our new key with our next message and see the safety
 *    number change (sending to us waits for them to accept it).
 *
 * The relay tells the account's devices itself too (a login notice). The recovery blobs
 * this browser holds the secrets of are sealed again, since they carry the identity key.
 */

import { create } from "@bufbuild/protobuf";

import { ProtocolAddress } from "../protocol/address.js";
import { systemRandom } from "../protocol/bytes.js";
import { IdentityKeyPair } from "../protocol/keys.js";
import { encrypt, hasSession } from "../protocol/session.js";
import { RelayError, RelayUnavailable, type Outgoing } from "./api.js";
import type { Client } from "./client.js";
import { encodeContent } from "./content.js";
import { forgetSessions } from "./identity_adopt.js";
import { DEFAULT_POLICY, newDeviceBody, newRegistrationId } from "./keys.js";
import { ContentSchema } from "./proto/cipherpost/app/v1/app_pb.js";
import { resealRecovery } from "./recovery_secrets.js";
import { twoFactorStatus } from "./account.js";
import { codeRefused, describeAction, normalizeCode, REFUSED_CODE, SECOND_FACTOR_HEADER } from "./second_factor.js";
import { toBase64, type Json } from "./wire.js";

/** The relay refused the reset, or whether it took it is unknown. */
export class IdentityResetError extends Error {
  override readonly name = "IdentityResetError";
}

export interface ResetResult {
  /** Devices of ours that could not be given the new key: remove them and link them again. */
  unreachable: number[];
  /** Recovery blobs sealed again with the new key (0 when this browser holds no recovery secrets). */
  resealed: number;
}

/**
 * Replace the account's identity key on every device.
 * @throws IdentityResetError the relay refused (the second factor, for one) or could
 * not be asked whether it took the key; nothing changed in the first case.
 */
export async function resetIdentity(client: Client, now: () => number = Date.now): Promise<ResetResult> {
  // With a second factor, its code is asked for before anything changes here: asked at
  // the PUT instead, the inbox would run under a key the relay does not hold yet while
  // the user types, and a cancel would put the old key back after contacts saw the new one.
  let refused: string | undefined;
  for (;;) {
    const headers = await codeFirst(client, refused);
    try {
      return await resetWith(client, now, headers);
    } catch (error) {
      const asked = Object.keys(headers).length > 0; // without a prompt nobody can type another
      if (!(asked && error instanceof IdentityResetError && codeRefused(error.cause))) throw error;
      refused = REFUSED_CODE; // nothing changed: ask again
    }
  }
}

/**
 * The second-factor header for the reset (none when the account has no second factor or
 * the page asks for none). @throws IdentityResetError when the user cancels.
 */
async function codeFirst(client: Client, refused: string | undefined): Promise<Record<string, string>> {
  const prompt = client.api.secondFactor;
  if (prompt === undefined || !(await twoFactorStatus(client.api)).enabled) return {};
  for (;;) {
    const typed = await prompt({ action: describeAction("PUT", "/v1/accounts/me/identity"), refused });
    if (typed === undefined) throw new IdentityResetError("the identity reset needs a second-factor code; nothing changed");
    try {
      return { [SECOND_FACTOR_HEADER]: normalizeCode(typed) };
    } catch (bad) {
      refused = `${(bad as RangeError).message.charAt(0).toUpperCase()}${(bad as RangeError).message.slice(1)}.`;
    }
  }
}

async function resetWith(client: Client, now: () => number, headers: Record<string, string>): Promise<ResetResult> {
  const { store, outbox, accountId: own } = client;
  const devices = [...new Set(await client.api.devices())].sort((a, b) => a - b);
  const others = devices.filter((d) => d !== client.deviceId);
  const seconds = () => Math.floor(now() / 1000);
  const unreachable: number[] = [];
  for (const device of others) {
    const address = new ProtocolAddress(own, device);
    if (!(await hasSession(store, address, seconds()))) await outbox.startSession(own, device);
    if (!(await hasSession(store, address, seconds()))) unreachable.push(device);
  }

  const identity = IdentityKeyPair.generate(systemRandom);
  const registrationIds = new Map(devices.map((d) => [d, newRegistrationId()]));
  const old = { pair: store.getIdentityKeyPair(), registrationId: store.getLocalRegistrationId() };
  const timestamp = now();
  const { messages, body } = await store.transaction(async () => {
    const out: Outgoing[] = [];
    for (const device of others.filter((d) => !unreachable.includes(d))) {
      const address = new ProtocolAddress(own, device);
      const content = create(ContentSchema, { body: { case: "sync", value: { body: { case: "identityReset", value: {
        identityKeyPair: identity.serialize(), registrationId: registrationIds.get(device)! } } } } });
      const message = await encrypt(store, address, encodeContent(content),
        { now: seconds(), localAddress: new ProtocolAddress(own, client.deviceId) });
      out.push({ device_id: device, registration_id: registrationIds.get(device)!, type: message.messageType,
        content: toBase64(message.serialized) });
    }
    const keys = await newDeviceBody(store, identity, registrationIds.get(client.deviceId)!, now(), DEFAULT_POLICY);
    return { messages: out, body: keys };
  });
  delete body.registration_id;
  body.registration_ids = [...registrationIds].map(([d, r]) => ({ device_id: d, registration_id: r }));
  try {
    await client.api.request("PUT", "/v1/accounts/me/identity", body as Json, true, headers);
  } catch (error) {
    if (!(error instanceof RelayError || error instanceof RelayUnavailable)) throw error;
    if (!(await relayHolds(client, identity))) {
      await store.transaction(() => store.setIdentity(old.pair, old.registrationId));
      throw new IdentityResetError(error instanceof RelayError ? `the relay refused the identity reset: ${error.message}`
        : "the relay could not be reached; nothing was changed", { cause: error });
    }
  }
  try {
    unreachable.push(...await sendResets(client, timestamp, messages));
  } finally {
    await store.transaction(() => forgetSessions(store));
  }
  let resealed = 0;
  try {
    resealed = await resealRecovery(client);
  } catch (error) {
    console.warn("cipherpost: the recovery blobs could not be sealed again after the reset: %s", (error as Error).name);
  }
  return { unreachable: unreachable.sort((a, b) => a - b), resealed };
}

/** Whether the relay took the new key after all (its answer to the PUT was lost or refused). */
async function relayHolds(client: Client, identity: IdentityKeyPair): Promise<boolean> {
  let me: unknown;
  try {
    me = await client.api.request("GET", "/v1/accounts/me");
  } catch {
    throw new IdentityResetError("the relay did not answer whether it took the new identity key; "
      + "reset again once it is reachable");
  }
  const held = (me as { identity_key?: unknown } | undefined)?.identity_key;
  return held === toBase64(identity.publicKey.serialize());
}

/**
 * Send the resets in one request (the relay takes whole device lists); devices it no
 * longer lists are dropped. The devices not reached.
 */
async function sendResets(client: Client, timestamp: number, messages: Outgoing[]): Promise<number[]> {
  let left = messages;
  for (let attempt = 0; attempt < 2 && left.length > 0; attempt++) {
    try {
      await client.outbox.sendRequest(client.accountId, timestamp, left);
      return [];
    } catch (error) {
      if (!(error instanceof RelayError) || error.status !== 409) throw error;
      const extra = new Set(numbers(error.body.extra_devices));
      left = left.filter((m) => !extra.has(m.device_id));
      if (numbers(error.body.missing_devices).length > 0) break; // linked meanwhile: no session carries the key
    }
  }
  return left.map((m) => m.device_id);
}

function numbers(value: unknown): number[] {
  return Array.isArray(value) ? value.filter((d): d is number => Number.isInteger(d)) : [];
}
