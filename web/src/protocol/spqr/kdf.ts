/**
 * HKDF/HMAC-SHA256 and the labels of SPQR V1 (spqr-digest §3); mirrors
 * cipherpost.protocol.spqr.kdf.
 *
 * HKDF here always has a salt (32 zero bytes unless stated, identical to "no salt" for
 * SHA-256); integers inside `info` are big-endian.
 */

import { hkdf as nobleHkdf } from "@noble/hashes/hkdf.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";

import { utf8 } from "../bytes.js";

export const ZERO_SALT = new Uint8Array(32);

export const CHAIN_START = utf8("Signal PQ Ratchet V1 Chain  Start"); // two spaces, as in libsignal
export const CHAIN_ADD_EPOCH = utf8("Signal PQ Ratchet V1 Chain Add Epoch");
export const CHAIN_NEXT = utf8("Signal PQ Ratchet V1 Chain Next");
export const AUTH_UPDATE = utf8("Signal_PQCKA_V1_MLKEM768:Authenticator Update");
export const HDR_MAC = utf8("Signal_PQCKA_V1_MLKEM768:ekheader");
export const CT_MAC = utf8("Signal_PQCKA_V1_MLKEM768:ciphertext");
export const SCKA_KEY = utf8("Signal_PQCKA_V1_MLKEM768:SCKA Key");

/** RFC 5869 HKDF-SHA256 (extract with `salt`, expand to `length` bytes). */
export function hkdf(salt: Uint8Array, ikm: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  return nobleHkdf(sha256, ikm, salt, info, length);
}

/** HMAC-SHA256 with the full 32-byte tag. */
export function hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array {
  return hmac(sha256, key, data);
}

/** An epoch as 8 big-endian bytes. */
export function be64(value: number): Uint8Array {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError("epoch out of range");
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(value));
  return out;
}

/** A chain counter as 4 big-endian bytes. */
export function be32(value: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value);
  return out;
}

/** The epoch secret S_e from the ML-KEM shared secret of epoch `epoch` (§4.1). */
export function sckaKey(sharedSecret: Uint8Array, epoch: number): Uint8Array {
  const info = new Uint8Array(SCKA_KEY.length + 8);
  info.set(SCKA_KEY);
  info.set(be64(epoch), SCKA_KEY.length);
  return hkdf(ZERO_SALT, sharedSecret, info, 32);
}
