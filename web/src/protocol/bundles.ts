/** Make a device's prekeys, keep their private halves in its stores, publish the bundle;
 * mirrors cipherpost.protocol.bundles. */

import type { Random } from "./bytes.js";
import { DEFAULT_KEMS, KYBER1024, type KemRegistry } from "./kem.js";
import { KyberPreKeyRecord, PreKeyBundle, PreKeyRecord, SignedPreKeyRecord } from "./prekeys.js";
import type { IdentityKeyStore, KyberPreKeyStore, PreKeyStore, SignedPreKeyStore } from "./stores.js";

/** The stores a device's prekeys live in. */
export interface PreKeyStores extends IdentityKeyStore, PreKeyStore, SignedPreKeyStore, KyberPreKeyStore {}

/**
 * Generate a signed prekey, a Kyber prekey and (if `preKeyId` is given) a one-time prekey;
 * save them in `store`; return the bundle that advertises them.
 *
 * The Kyber prekey is last-resort by default (kept after use, reuse of a base key
 * refused); pass `kyberLastResort: false` for a one-time Kyber prekey.
 */
export async function generatePreKeyBundle(store: PreKeyStores, options: {
  deviceId: number; signedPreKeyId: number; kyberPreKeyId: number; preKeyId: number | undefined;
  rng: Random; nowMs: number; kemType?: number; kyberLastResort?: boolean; kems?: KemRegistry;
}): Promise<PreKeyBundle> {
  const identity = await store.getIdentityKeyPair();
  const signed = SignedPreKeyRecord.generate(options.signedPreKeyId, identity, options.nowMs, options.rng);
  const kyber = KyberPreKeyRecord.generate(options.kyberPreKeyId, identity, options.nowMs, options.rng, {
    keyType: options.kemType ?? KYBER1024,
    lastResort: options.kyberLastResort ?? true,
    kems: options.kems ?? DEFAULT_KEMS,
  });
  const oneTime = options.preKeyId !== undefined ? PreKeyRecord.generate(options.preKeyId, options.rng) : undefined;
  await store.saveSignedPreKey(signed);
  await store.saveKyberPreKey(kyber);
  if (oneTime !== undefined) await store.savePreKey(oneTime);
  return new PreKeyBundle({
    registrationId: await store.getLocalRegistrationId(),
    deviceId: options.deviceId,
    identityKey: identity.publicKey,
    signedPreKeyId: signed.id,
    signedPreKey: signed.keyPair.publicKey,
    signedPreKeySignature: signed.signature,
    kyberPreKeyId: kyber.id,
    kyberPreKey: kyber.keyPair.publicKey,
    kyberPreKeySignature: kyber.signature,
    preKeyId: oneTime?.id,
    preKey: oneTime?.keyPair.publicKey,
  });
}
