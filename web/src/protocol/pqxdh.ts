/**
 * PQXDH key agreement (digest §3.2, §3.3); mirrors cipherpost.protocol.pqxdh.
 *
 * Key agreement only: it returns the wire values and the derived secret, and knows
 * nothing of ratchets. Both sides feed the same shared values in the same order:
 *
 *     0xFF*32 || DH(IK_A, SPK_B) || DH(EK_A, IK_B) || DH(EK_A, SPK_B) [|| DH(EK_A, OPK_B)] || SS
 *
 * and derive 96 bytes with HKDF: root key, chain key, and the SPQR seed.
 */

import { concat, type Random } from "./bytes.js";
import { DISCONTINUITY, PQXDH_INFO } from "./constants.js";
import { DEFAULT_KEMS, type KemKeyPair, type KemRegistry } from "./kem.js";
import { KeyPair, type IdentityKey, type IdentityKeyPair, type PublicKey } from "./keys.js";
import type { PreKeyBundle } from "./prekeys.js";
import { hkdf } from "./ratchet.js";

/** What PQXDH yields: root key, first chain key, SPQR seed. */
export interface DerivedKeys {
  readonly rootKey: Uint8Array;
  readonly chainKey: Uint8Array;
  readonly pqRatchetSeed: Uint8Array;
}

function derive(secret: Uint8Array): DerivedKeys {
  const okm = hkdf(secret, undefined, PQXDH_INFO, 96);
  return { rootKey: okm.slice(0, 32), chainKey: okm.slice(32, 64), pqRatchetSeed: okm.slice(64, 96) };
}

/** Alice's side: her base key pair, the KEM ciphertext to send, and the keys. */
export interface InitiatorResult {
  readonly baseKey: KeyPair;
  readonly kyberCiphertext: Uint8Array;
  readonly keys: DerivedKeys;
}

/**
 * Run PQXDH as the initiator against a (signature-checked) bundle.
 * @throws InvalidKey an agreement with a small-order key, or an unusable KEM key.
 */
export function initiate(identity: IdentityKeyPair, bundle: PreKeyBundle, rng: Random,
  kems: KemRegistry = DEFAULT_KEMS): InitiatorResult {
  const base = KeyPair.generate(rng);
  const parts = [
    DISCONTINUITY,
    identity.privateKey.agree(bundle.signedPreKey),
    base.privateKey.agree(bundle.identityKey),
    base.privateKey.agree(bundle.signedPreKey),
  ];
  if (bundle.preKey !== undefined) parts.push(base.privateKey.agree(bundle.preKey));
  const [shared, ciphertext] = bundle.kyberPreKey.encapsulate(kems);
  parts.push(shared);
  return { baseKey: base, kyberCiphertext: ciphertext, keys: derive(concat(...parts)) };
}

/**
 * Run PQXDH as the responder.
 * @throws InvalidKey an agreement with a small-order key, or a mismatched KEM ciphertext.
 */
export function respond(identity: IdentityKeyPair, signedPreKey: KeyPair, kyberPreKey: KemKeyPair,
  oneTimePreKey: KeyPair | undefined, theirIdentity: IdentityKey, theirBaseKey: PublicKey,
  kyberCiphertext: Uint8Array, kems: KemRegistry = DEFAULT_KEMS): DerivedKeys {
  const parts = [
    DISCONTINUITY,
    signedPreKey.privateKey.agree(theirIdentity),
    identity.privateKey.agree(theirBaseKey),
    signedPreKey.privateKey.agree(theirBaseKey),
  ];
  if (oneTimePreKey !== undefined) parts.push(oneTimePreKey.privateKey.agree(theirBaseKey));
  parts.push(kyberPreKey.decapsulate(kyberCiphertext, kems));
  return derive(concat(...parts));
}
