/**
 * Plaintext padding (docs/spec/README.md §3): Padmé buckets, a 0x80 marker, zeros.
 * Mirrors cipherpost.client.padding.
 *
 * Padmé (Nikitin et al., PETS 2019) rounds a length up so that only O(log log n) bits of
 * it show, at most 12% overhead; every padded plaintext is at least MIN_PADDED bytes.
 */

export const MIN_PADDED = 160;
export const MARKER = 0x80;

/** A plaintext without a valid padding marker. */
export class PaddingError extends Error {
  override readonly name = "PaddingError";
}

function bitLength(n: number): number {
  return n === 0 ? 0 : 32 - Math.clz32(n);
}

/** The Padmé bucket that holds `length` bytes (lengths below 2^31). */
export function padme(length: number): number {
  if (!Number.isInteger(length) || length < 0 || length >= 2 ** 31) {
    throw new RangeError("length must be an integer in [0, 2^31)");
  }
  if (length < 2) return length;
  const exponent = bitLength(length) - 1; // floor(log2 n)
  const sizeBits = bitLength(exponent); // floor(log2 e) + 1
  const mask = 2 ** (exponent - sizeBits) - 1;
  // (length + mask) & ~mask without 32-bit overflow
  return Math.floor((length + mask) / (mask + 1)) * (mask + 1);
}

/** `data` || 0x80 || zeros, to the Padmé bucket of at least MIN_PADDED. */
export function pad(data: Uint8Array): Uint8Array {
  const target = padme(Math.max(data.length + 1, MIN_PADDED));
  const out = new Uint8Array(target);
  out.set(data, 0);
  out[data.length] = MARKER;
  return out;
}

/**
 * Undo pad().
 * @throws PaddingError no 0x80 marker after the trailing zeros.
 */
export function unpad(data: Uint8Array): Uint8Array {
  let end = data.length;
  while (end > 0 && data[end - 1] === 0) end--;
  if (end === 0 || data[end - 1] !== MARKER) throw new PaddingError("plaintext padding is malformed");
  return data.slice(0, end - 1);
}
