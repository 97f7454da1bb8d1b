/**
 * This device's prekeys: generated into the store, in the relay's upload form, and kept
 * healthy on the relay (`maintainKeys`: one-time keys replenished below the low-water
 * mark, the signed and last-resort Kyber prekeys rotated weekly, replaced ones dropped
 * after the grace period). Mirrors cipherpost.client.keys with the same KeyPolicy
 * defaults and the same back-off: what triggers a replenish (the relay's counts) is not
 * ours to trust, so a replenish soon after another waits, 1 min doubling to a day,
 * until the relay reports a healthy count again. `republishKeys` repairs a directory that
 * disagrees with the local keys (a PreKey message named a key this device does not hold),
 * at most hourly, as keys.republish does; a set whose upload failed is sent again as it
 * is at the next trigger, not made anew.
 */

import { systemRandom, toHex } from "../protocol/bytes.js";
import type { IdentityKeyPair } from "../protocol/keys.js";
import { KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord } from "../protocol/prekeys.js";
import { PREKEY_TYPE } from "../protocol/messages.js";
import { SEALED_TYPE } from "./sealed.js";
import type { DeviceStore } from "./store/device.js";
import { toBase64, type Json } from "./wire.js";

const MINUTE_MS = 60_000;
const DAY_MS = 24 * 60 * MINUTE_MS;

export interface KeyPolicy {
  oneTimeBatch: number;
  kyberBatch: number;
  /** Replenish when the relay holds fewer than this many one-time keys of a kind. */
  lowWater: number;
  /** Rotate the signed and last-resort Kyber prekeys this often... */
  rotateAfterMs: number;
  /** ...and keep replaced ones this long for messages still in flight. */
  keepOldMs: number;
  /** A replenish this soon after the previous one waits; the wait doubles up to the max. */
  replenishMinBackoffMs: number;
  replenishMaxBackoffMs: number;
  /** At most one full republish this often (an identity change always republishes). */
  republishIntervalMs: number;
}

/** cipherpost.client.keys.KeyPolicy's defaults. */
export const DEFAULT_POLICY: KeyPolicy = Object.freeze({
  oneTimeBatch: 100, kyberBatch: 40, lowWater: 20, rotateAfterMs: 7 * DAY_MS, keepOldMs: 30 * DAY_MS,
  replenishMinBackoffMs: MINUTE_MS, replenishMaxBackoffMs: DAY_MS, republishIntervalMs: 60 * MINUTE_MS,
});

/** Store records of the upkeep (sealed like every value). */
const ROTATED_AT = "keys_rotated_at";
const REPLENISHED_AT = "keys_replenished_at";
const BACKOFF = "keys_replenish_backoff_ms";
const REPUBLISHED = "keys_republished"; // { at, identity }: the last republish
const ONE_TIME_REPLACED = "keys_one_time_replaced"; // { prekeyBelow, kyberBelow, at }
const REPUBLISH_PENDING = "keys_republish_pending"; // a set made and not yet uploaded: PendingSet

/** A republished set the relay has not taken yet: for which identity and rotation, and the upload. */
interface PendingSet {
  identity: string;
  rotatedAt: number;
  body: Record<string, Json>;
}

/** A registration id as Python picks them: 1..16380. */
export function newRegistrationId(): number {
  const [n] = crypto.getRandomValues(new Uint32Array(1)) as unknown as [number];
  return 1 + (n % 16380);
}

function signedJson(record: SignedPreKeyRecord | KyberPreKeyRecord): Json {
  return { key_id: record.id, public_key: toBase64(record.keyPair.publicKey.serialize()), signature: toBase64(record.signature) };
}

/**
 * Make this device's identity and complete key set (inside a store unit); the register
 * body. Private halves are saved before anything is published.
 */
export async function newDeviceBody(store: DeviceStore, identity: IdentityKeyPair, registrationId: number,
  nowMs: number, policy: KeyPolicy): Promise<Record<string, Json>> {
  await store.setIdentity(identity, registrationId);
  const body = {
    registration_id: registrationId,
    identity_key: toBase64(identity.publicKey.serialize()),
    signed_prekey: await makeSigned(store, identity, nowMs),
    last_resort_kyber_prekey: await makeLastResort(store, identity, nowMs),
    one_time_prekeys: await makeOneTime(store, policy.oneTimeBatch),
    kyber_prekeys: await makeOneTimeKyber(store, identity, policy.kyberBatch, nowMs),
  };
  await store.putJson(ROTATED_AT, nowMs);
  return body;
}

async function makeSigned(store: DeviceStore, identity: IdentityKeyPair, nowMs: number): Promise<Json> {
  const record = SignedPreKeyRecord.generate(await store.nextId("signed_prekey"), identity, nowMs, systemRandom);
  await store.saveSignedPreKey(record);
  return signedJson(record);
}

async function makeLastResort(store: DeviceStore, identity: IdentityKeyPair, nowMs: number): Promise<Json> {
  const record = KyberPreKeyRecord.generate(await store.nextId("kyber_prekey"), identity, nowMs, systemRandom, { lastResort: true });
  await store.saveKyberPreKey(record);
  return signedJson(record);
}

async function makeOneTime(store: DeviceStore, count: number): Promise<Json[]> {
  const out: Json[] = [];
  for (let i = 0; i < count; i++) {
    const record = PreKeyRecord.generate(await store.nextId("prekey"), systemRandom);
    await store.savePreKey(record);
    out.push({ key_id: record.id, public_key: toBase64(record.keyPair.publicKey.serialize()) });
  }
  return out;
}

async function makeOneTimeKyber(store: DeviceStore, identity: IdentityKeyPair, count: number, nowMs: number): Promise<Json[]> {
  const out: Json[] = [];
  for (let i = 0; i < count; i++) {
    const record = KyberPreKeyRecord.generate(await store.nextId("kyber_prekey"), identity, nowMs, systemRandom);
    await store.saveKyberPreKey(record);
    out.push(signedJson(record));
  }
  return out;
}

/** What `maintainKeys` needs of the relay (RelayApi has both). */
export interface KeysApi {
  keyCounts(): Promise<{ oneTime: number; kyber: number }>;
  uploadKeys(body: Json): Promise<void>;
}

/**
 * Replenish and rotate as needed (mirrors keys.maintain); true if anything was uploaded.
 * Keys are committed to the store before they are published, so a failed upload leaves
 * unused local keys, never a published key without its private half.
 * @throws RelayError, RelayUnavailable from the count or the upload.
 */
export async function maintainKeys(api: KeysApi, store: DeviceStore, nowMs: number,
  policy: KeyPolicy = DEFAULT_POLICY): Promise<boolean> {
  const { oneTime, kyber } = await api.keyCounts();
  const body = await store.transaction(async () => {
    const identity = store.getIdentityKeyPair();
    const out: Record<string, Json> = {};
    const low = oneTime < policy.lowWater || kyber < policy.lowWater;
    if (low && await replenishAllowed(store, nowMs, policy, oneTime, kyber)) {
      if (oneTime < policy.lowWater) out.one_time_prekeys = await makeOneTime(store, policy.oneTimeBatch);
      if (kyber < policy.lowWater) out.kyber_prekeys = await makeOneTimeKyber(store, identity, policy.kyberBatch, nowMs);
    } else if (!low && ((await store.getJson<number>(BACKOFF)) ?? 0) !== 0) {
      await store.putJson(BACKOFF, 0); // healthy again: no back-off
    }
    const rotatedAt = (await store.getJson<number>(ROTATED_AT)) ?? 0;
    if (nowMs - rotatedAt >= policy.rotateAfterMs) {
      out.signed_prekey = await makeSigned(store, identity, nowMs);
      out.last_resort_kyber_prekey = await makeLastResort(store, identity, nowMs);
      await store.putJson(ROTATED_AT, nowMs);
      await dropOld(store, nowMs, policy);
    }
    return out;
  });
  if (Object.keys(body).length === 0) return false;
  await api.uploadKeys(body);
  return true;
}

/**
 * Repair a directory that disagrees with the local keys (a PreKey message named a
 * one-time key we do not hold: a relay restored from a backup, or keys lost on either
 * side): publish a fresh complete set that replaces every one-time key the relay still
 * holds. True if it was published. Anyone who can send us a PreKey message can trigger
 * this, so it runs at most once per `policy.republishIntervalMs` unless the identity key
 * changed since the last one (mirrors keys.republish). A set whose upload failed is
 * kept and its signed and last-resort keys sent again at the next trigger, without its
 * one-time keys (the relay may have handed some out), unless the identity changed or a
 * rotation replaced its signed prekeys: no new keys are made for every failed try.
 * @throws RelayError, RelayUnavailable from the upload (the next trigger tries again).
 */
export async function republishKeys(api: Pick<KeysApi, "uploadKeys">, store: DeviceStore, nowMs: number,
  policy: KeyPolicy = DEFAULT_POLICY): Promise<boolean> {
  const identity = toHex(store.getIdentityKeyPair().publicKey.serialize());
  const last = await store.getJson<{ at: number; identity: string }>(REPUBLISHED);
  if (last !== undefined && last.identity === identity && nowMs - last.at >= 0
    && nowMs - last.at < policy.republishIntervalMs) {
    console.warn(`cipherpost: prekey republish skipped: the last one was ${Math.floor((nowMs - last.at) / 1000)} s ago`);
    return false;
  }
  const body = await store.transaction(async () => {
    const pending = await store.getJson<PendingSet>(REPUBLISH_PENDING);
    // Every one-time key made so far is being replaced; their private halves stay for
    // the grace period, for a bundle handed out just before.
    const replaced = async (): Promise<void> => store.putJson(ONE_TIME_REPLACED, {
      prekeyBelow: (await store.peekId("prekey")) + 1, kyberBelow: (await store.peekId("kyber_prekey")) + 1, at: nowMs });
    if (pending !== undefined && pending.identity === identity
      && pending.rotatedAt === await store.getJson<number>(ROTATED_AT)) {
      // Sent again without one-time keys: the failed try may have reached the relay,
      // which may have handed some of them out already, and uploading one again would
      // let it be served twice. The relay's one-time keys are dropped instead
      // (replace_one_time) and the usual replenishment publishes fresh ones; the pending
      // set's stay here for the grace period, as replaced keys.
      await replaced();
      const again = { ...pending.body, one_time_prekeys: [], kyber_prekeys: [] };
      await store.putJson(REPUBLISH_PENDING, { ...pending, body: again } satisfies PendingSet);
      return again;
    }
    const pair = store.getIdentityKeyPair();
    await replaced();
    const out: Record<string, Json> = {
      signed_prekey: await makeSigned(store, pair, nowMs),
      last_resort_kyber_prekey: await makeLastResort(store, pair, nowMs),
      one_time_prekeys: await makeOneTime(store, policy.oneTimeBatch),
      kyber_prekeys: await makeOneTimeKyber(store, pair, policy.kyberBatch, nowMs),
      replace_one_time: true,
    };
    await store.putJson(ROTATED_AT, nowMs);
    // Kept until the relay takes it: a failed upload is sent again as it is, so that a
    // trigger repeated while the relay is unreachable or refusing makes no new keys
    // (each would be a batch of key pairs written and kept through the grace period).
    await store.putJson(REPUBLISH_PENDING, { identity, rotatedAt: nowMs, body: out } satisfies PendingSet);
    return out;
  });
  await api.uploadKeys(body);
  // Recorded only once published: a failed upload is tried again at the next trigger.
  await store.transaction(async () => {
    await store.putJson(REPUBLISHED, { at: nowMs, identity });
    await store.put(REPUBLISH_PENDING, null);
  });
  return true;
}

/** Whether a replenish may run now; if so, record it and lengthen the back-off. */
async function replenishAllowed(store: DeviceStore, nowMs: number, policy: KeyPolicy, oneTime: number,
  kyber: number): Promise<boolean> {
  const last = (await store.getJson<number>(REPLENISHED_AT)) ?? 0;
  let backoff = (await store.getJson<number>(BACKOFF)) ?? 0;
  if (nowMs - last >= 0 && nowMs - last < backoff) {
    console.warn(`cipherpost: the relay reports ${oneTime} one-time and ${kyber} Kyber prekeys left, below `
      + `${policy.lowWater}; replenishing again in ${Math.ceil((backoff - (nowMs - last)) / 1000)} s`);
    return false;
  }
  backoff = Math.min(Math.max(2 * backoff, policy.replenishMinBackoffMs), policy.replenishMaxBackoffMs);
  await store.putJson(REPLENISHED_AT, nowMs);
  await store.putJson(BACKOFF, backoff);
  return true;
}

/**
 * Delete replaced signed and last-resort Kyber prekeys once their replacement is older
 * than the grace period (the newest of each kind always stays), and one-time keys a
 * republish replaced once that is older than the grace period. Runs when a rotation
 * happens (weekly), so a replaced key goes 30 to 37 days after its replacement.
 */
async function dropOld(store: DeviceStore, nowMs: number, policy: KeyPolicy): Promise<void> {
  const replaced = await store.getJson<{ prekeyBelow: number; kyberBelow: number; at: number }>(ONE_TIME_REPLACED);
  if (replaced !== undefined && replaced.at !== 0 && nowMs - replaced.at > policy.keepOldMs) {
    for (const [key] of await store.scan("prekey:")) {
      if (Number(key.slice("prekey:".length)) < replaced.prekeyBelow) await store.put(key, null);
    }
    for (const [key, data] of await store.scan("kyber:")) {
      if (Number(key.slice("kyber:".length)) < replaced.kyberBelow && !KyberPreKeyRecord.deserialize(data).lastResort) {
        await store.put(key, null);
      }
    }
    await store.putJson(ONE_TIME_REPLACED, { ...replaced, at: 0 });
  }
  const signed = (await store.scan("signed:")).map(([key, data]) => ({ key, record: SignedPreKeyRecord.deserialize(data) }));
  const lastResort = (await store.scan("kyber:")).map(([key, data]) => ({ key, record: KyberPreKeyRecord.deserialize(data) }))
    .filter(({ record }) => record.lastResort);
  for (const kind of [signed, lastResort]) {
    kind.sort((a, b) => a.record.id - b.record.id);
    for (let i = 0; i + 1 < kind.length; i++) {
      if (nowMs - kind[i + 1]!.record.timestamp > policy.keepOldMs) await store.put(kind[i]!.key, null);
    }
  }
}

/** Envelope types that may have used one of our one-time prekeys (a sealed one may hold a PreKey message). */
const PREKEY_CARRIERS = new Set([PREKEY_TYPE, SEALED_TYPE]);

/** How soon after a check a PreKey message triggers another (a connection always checks). */
export const RECHECK_AFTER_PREKEY_MS = 10_000;

/**
 * When to run `maintainKeys`: at each new connection (as the SDK does) and after
 * envelopes that may have used a one-time prekey (at most once in
 * {@link RECHECK_AFTER_PREKEY_MS}); one run at a time. A failed run is logged and waits
 * for the next trigger.
 */
export class KeyUpkeep {
  #running: Promise<void> | undefined;
  #checkedAt: number | undefined;

  constructor(private readonly api: KeysApi, private readonly store: DeviceStore, private readonly clock: () => number,
    private readonly policy: KeyPolicy = DEFAULT_POLICY) {}

  /** A new connection: check now (unless a check is running). */
  connected(): Promise<void> {
    return this.#run();
  }

  /** Envelopes were processed: check if one may have used a prekey and no check ran lately. */
  received(types: Iterable<number>): Promise<void> {
    if (![...types].some((t) => PREKEY_CARRIERS.has(t))) return Promise.resolve();
    const since = this.clock() - (this.#checkedAt ?? -Infinity);
    if (since >= 0 && since < RECHECK_AFTER_PREKEY_MS) return Promise.resolve();
    return this.#run();
  }

  /** A PreKey message named a key we do not hold: republish (after a running check). */
  republish(): Promise<boolean> {
    return (this.#running ?? Promise.resolve()).then(() =>
      republishKeys(this.api, this.store, this.clock(), this.policy));
  }

  #run(): Promise<void> {
    if (this.#running !== undefined) return this.#running;
    const now = this.clock();
    this.#checkedAt = now;
    this.#running = maintainKeys(this.api, this.store, now, this.policy).then(() => undefined, (error: unknown) => {
      console.info("cipherpost: key upkeep postponed:", (error as Error).name);
    }).finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }
}
