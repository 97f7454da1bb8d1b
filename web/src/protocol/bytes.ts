/** Byte helpers (no cryptography here: constant-time comparison comes from noble). */

import { equalBytes } from "@noble/curves/utils.js";
import { bytesToHex, concatBytes, hexToBytes, randomBytes } from "@noble/hashes/utils.js";

/** A source of randomness: `rng(n)` returns `n` bytes from a CSPRNG (or a seeded test double). */
export type Random = (n: number) => Uint8Array;

/** The platform CSPRNG (WebCrypto `getRandomValues`, through noble). */
export const systemRandom: Random = (n) => randomBytes(n);

/** Constant-time equality of two byte strings (lengths are not secret). */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  return equalBytes(a, b);
}

/** Plain equality for public values (keys, ids). */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  return concatBytes(...parts);
}

export function toHex(data: Uint8Array): string {
  return bytesToHex(data);
}

export function fromHex(hex: string): Uint8Array {
  return hexToBytes(hex);
}

const encoder = new TextEncoder();

export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

/** A stable string key for a byte string (for Map/Set keys of public values). */
export function keyOf(data: Uint8Array): string {
  return bytesToHex(data);
}
