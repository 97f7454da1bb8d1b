/**
 * XEdDSA signatures over Curve25519 keys, exactly as libsignal makes and checks them
 * (digest §2); mirrors cipherpost.protocol.xeddsa.
 *
 * A Curve25519 private scalar `k` is used directly as an Ed25519 secret scalar
 * `a = k mod L` (no negation). Instead of forcing the public Edwards point's sign bit to
 * zero as the XEdDSA paper does, libsignal keeps `a` and stores the sign bit of `A = aB`
 * in the otherwise unused top bit of `s`. A verifier rebuilds the Edwards point from the
 * Montgomery `u` and that bit and checks `encode(S·B − h·A) == R` byte for byte
 * (cofactorless, as libsignal does).
 *
 * Point, field and scalar arithmetic come from @noble/curves; SHA-512 from @noble/hashes.
 */

import { ed25519 } from "@noble/curves/ed25519.js";
import { bytesToNumberLE, numberToBytesLE } from "@noble/curves/utils.js";
import { sha512 } from "@noble/hashes/sha2.js";

import { bytesEqual, concat, type Random } from "./bytes.js";
import type { PrivateKey, PublicKey } from "./keys.js";

export const SIGNATURE_LENGTH = 64;

const Point = ed25519.Point;
const Fp = Point.Fp;
const Fn = Point.Fn;
const HASH1_PREFIX = concat(Uint8Array.of(0xfe), new Uint8Array(31).fill(0xff));
const MASK_255 = (1n << 255n) - 1n;

/** `A = aB` per private key: public (it is the Edwards form of the public key), so cached. */
const edwardsPublic = new WeakMap<PrivateKey, Uint8Array>();

function reduce(digest: Uint8Array): bigint {
  return Fn.create(bytesToNumberLE(digest));
}

/** Sign `message` with a Curve25519 private key; 64 bytes, randomized by `rng`. */
export function sign(privateKey: PrivateKey, message: Uint8Array, rng: Random): Uint8Array {
  const k = privateKey.serialize();
  const a = Fn.create(bytesToNumberLE(k));
  let bigA = edwardsPublic.get(privateKey);
  if (bigA === undefined) {
    bigA = Point.BASE.multiply(a).toBytes();
    edwardsPublic.set(privateKey, bigA);
  }
  const signBit = bigA[31]! & 0x80;
  const z = rng(64);
  const r = reduce(sha512(concat(HASH1_PREFIX, k, message, z)));
  const bigR = Point.BASE.multiply(r).toBytes();
  const h = reduce(sha512(concat(bigR, bigA, message)));
  const s = numberToBytesLE(Fn.add(Fn.mul(h, a), r), 32);
  s[31] = (s[31]! & 0x7f) | signBit;
  return concat(bigR, s);
}

/**
 * True when `signature` is a valid XEdDSA signature of `message` by `publicKey`.
 * Never throws on malformed input: anything that is not a valid signature is false.
 */
export function verify(publicKey: PublicKey, message: Uint8Array, signature: Uint8Array): boolean {
  if (signature.length !== SIGNATURE_LENGTH) return false;
  const u = Fp.create(bytesToNumberLE(publicKey.raw) & MASK_255);
  if (u === Fp.ORDER - 1n) return false;
  const y = Fp.div(Fp.sub(u, 1n), Fp.add(u, 1n));
  const aBytes = numberToBytesLE(y, 32);
  aBytes[31]! |= signature[63]! & 0x80;
  const sBytes = Uint8Array.from(signature.subarray(32));
  sBytes[31]! &= 0x7f;
  if (sBytes[31]! & 0xe0) return false;
  try {
    const bigA = Point.fromBytes(aBytes);
    const rBytes = signature.subarray(0, 32);
    const h = reduce(sha512(concat(rBytes, aBytes, message)));
    const s = Fn.create(bytesToNumberLE(sBytes));
    const check = Point.BASE.multiplyUnsafe(s).subtract(bigA.multiplyUnsafe(h));
    return bytesEqual(check.toBytes(), rBytes);
  } catch {
    return false;
  }
}
