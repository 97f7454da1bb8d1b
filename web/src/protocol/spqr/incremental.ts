/**
 * Incremental ML-KEM-768 as the braid uses it (spqr-digest §3, §4.4); mirrors
 * cipherpost.protocol.spqr.incremental.
 *
 * The EK sender publishes a key in two parts: the 64-byte *header* `rho || H(ek)` and the
 * 1152-byte *ek* (t-hat, the standard encapsulation key without its trailing rho). The CT
 * sender answers in two parts too: `ct1` (u, 960 bytes) from the header alone, and `ct2`
 * (v, 128 bytes) once ek arrived and was checked against the header. The result is
 * exactly a standard ML-KEM-768 encapsulation to `ek || rho`, so decapsulation is
 * standard.
 *
 * Key generation and decapsulation of our own keys run on @noble/post-quantum (the
 * private key is kept as its 64-byte seed `d || z`, as Python keeps it); the two
 * encapsulation halves, which no library offers, run on mlkem768.ts. A 2400-byte
 * expanded key (the form libsignal stores) is accepted by {@link decapsulate} too.
 */

import { ml_kem768 } from "@noble/post-quantum/ml-kem.js";

import { concat, constantTimeEqual, type Random } from "../bytes.js";
import * as mlkem768 from "./mlkem768.js";

export const HEADER_SIZE = 64;
export const EK_SIZE = mlkem768.DK_PKE_BYTES; // 1152
export const CT1_SIZE = mlkem768.CT_U_BYTES; // 960
export const CT2_SIZE = mlkem768.CT_V_BYTES; // 128
export const SEED_SIZE = 64;
export const EXPANDED_DK_SIZE = mlkem768.DK_BYTES; // 2400

/** An EK sender's key pair: the header and ek it publishes, and its private key. */
export class KeyPair {
  /** `dk` is a 64-byte seed (d || z) or a 2400-byte expanded key. */
  constructor(readonly header: Uint8Array, readonly ek: Uint8Array, readonly dk: Uint8Array) {
    if (header.length !== HEADER_SIZE || ek.length !== EK_SIZE || (dk.length !== SEED_SIZE && dk.length !== EXPANDED_DK_SIZE)) {
      throw new RangeError("bad ML-KEM-768 key pair sizes");
    }
  }

  toString(): string {
    return "KeyPair(<keys redacted>)";
  }

  toJSON(): string {
    return this.toString();
  }
}

/** A fresh key pair from 64 bytes of `rng` (FIPS 203 KeyGen_internal(d, z)). */
export function generate(rng: Random): KeyPair {
  const seed = rng(SEED_SIZE);
  const full = ml_kem768.keygen(Uint8Array.from(seed)).publicKey;
  return new KeyPair(concat(full.subarray(EK_SIZE), mlkem768.h(full)), full.slice(0, EK_SIZE), seed);
}

/** What the CT sender keeps between ct1 and ct2: the header and the message `m`. */
export class EncapsState {
  constructor(readonly header: Uint8Array, readonly m: Uint8Array) {
    if (header.length !== HEADER_SIZE || m.length !== 32) throw new RangeError("bad ML-KEM-768 encapsulation state");
  }

  toString(): string {
    return "EncapsState(<keys redacted>)";
  }

  toJSON(): string {
    return this.toString();
  }
}

/**
 * `[ct1, state, shared secret]` for a key known only by its header. `m` is 32 bytes of
 * `rng`; (K, r) = G(m || H(ek)) and ct1 = u need only rho.
 */
export function encaps1(header: Uint8Array, rng: Random): [Uint8Array, EncapsState, Uint8Array] {
  if (header.length !== HEADER_SIZE) throw new RangeError("an ML-KEM-768 header is 64 bytes");
  const m = rng(32);
  const [shared, r] = mlkem768.encapsSecret(m, header.subarray(32));
  return [mlkem768.encryptU(header.subarray(0, 32), r), new EncapsState(header, m), shared];
}

/** ct2 = v for the full key; `ek` must already match the header (see {@link ekMatchesHeader}). */
export function encaps2(ek: Uint8Array, state: EncapsState): Uint8Array {
  if (ek.length !== EK_SIZE) throw new RangeError("an ML-KEM-768 ek part is 1152 bytes");
  const [, r] = mlkem768.encapsSecret(state.m, state.header.subarray(32));
  return mlkem768.encryptV(ek, state.m, r);
}

/** Whether `ek || rho` hashes to the header's H(ek) and passes the modulus check. */
export function ekMatchesHeader(ek: Uint8Array, header: Uint8Array): boolean {
  if (ek.length !== EK_SIZE || header.length !== HEADER_SIZE) return false;
  const digest = mlkem768.h(concat(ek, header.subarray(0, 32)));
  return constantTimeEqual(digest, header.subarray(32)) && mlkem768.ekModulusOk(ek);
}

/** The ML-KEM shared secret of `ct1 || ct2` (implicit rejection on bad input). */
export function decapsulate(dk: Uint8Array, ct1: Uint8Array, ct2: Uint8Array): Uint8Array {
  if (ct1.length !== CT1_SIZE || ct2.length !== CT2_SIZE) throw new RangeError("bad ML-KEM-768 ciphertext part length");
  if (dk.length === SEED_SIZE) {
    return ml_kem768.decapsulate(concat(ct1, ct2), ml_kem768.keygen(Uint8Array.from(dk)).secretKey);
  }
  if (dk.length === EXPANDED_DK_SIZE) return mlkem768.decapsulate(dk, concat(ct1, ct2));
  throw new RangeError("an ML-KEM-768 private key is a 64-byte seed or 2400 bytes");
}
