/**
 * This device's prekeys: generated into the store, in the relay's upload form. Mirrors
 * the key-making half of cipherpost.client.keys (same batch sizes as its KeyPolicy).
 * Replenishing and rotation are not done by the browser client yet.
 */

import { systemRandom } from "../protocol/bytes.js";
import type { IdentityKeyPair } from "../protocol/keys.js";
import { KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord } from "../protocol/prekeys.js";
import type { DeviceStore } from "./store/device.js";
import { toBase64, type Json } from "./wire.js";

export interface KeyPolicy {
  oneTimeBatch: number;
  kyberBatch: number;
}

/** cipherpost.client.keys.KeyPolicy's defaults. */
export const DEFAULT_POLICY: KeyPolicy = Object.freeze({ oneTimeBatch: 100, kyberBatch: 40 });

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
  const signed = SignedPreKeyRecord.generate(await store.nextId("signed_prekey"), identity, nowMs, systemRandom);
  await store.saveSignedPreKey(signed);
  const lastResort = KyberPreKeyRecord.generate(await store.nextId("kyber_prekey"), identity, nowMs, systemRandom, { lastResort: true });
  await store.saveKyberPreKey(lastResort);
  const oneTime: Json[] = [];
  for (let i = 0; i < policy.oneTimeBatch; i++) {
    const record = PreKeyRecord.generate(await store.nextId("prekey"), systemRandom);
    await store.savePreKey(record);
    oneTime.push({ key_id: record.id, public_key: toBase64(record.keyPair.publicKey.serialize()) });
  }
  const kyber: Json[] = [];
  for (let i = 0; i < policy.kyberBatch; i++) {
    const record = KyberPreKeyRecord.generate(await store.nextId("kyber_prekey"), identity, nowMs, systemRandom);
    await store.saveKyberPreKey(record);
    kyber.push(signedJson(record));
  }
  return {
    registration_id: registrationId,
    identity_key: toBase64(identity.publicKey.serialize()),
    signed_prekey: signedJson(signed),
    last_resort_kyber_prekey: signedJson(lastResort),
    one_time_prekeys: oneTime,
    kyber_prekeys: kyber,
  };
}
