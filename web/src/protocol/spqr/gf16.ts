/**
 * Arithmetic in GF(2^16) with the reduction polynomial x^16 + x^12 + x^3 + x + 1
 * (spqr-digest §6.1); mirrors cipherpost.protocol.spqr.gf16.
 *
 * Addition is XOR; multiplication goes through log/antilog tables over the generator
 * x (= 2, primitive for this polynomial), built once on import (384 KiB together).
 */

export const POLY = 0x1100b;
/** Size of the multiplicative group. */
export const ORDER = 0xffff;

/** EXP[i] = x^i for i in 0..2*ORDER-1 (doubled so that a sum of two logs needs no reduction). */
export const EXP = new Uint16Array(2 * ORDER);
/** LOG[a] = log_x a for a != 0 (LOG[0] is unused). */
export const LOG = new Uint16Array(ORDER + 1);

{
  let value = 1;
  for (let power = 0; power < ORDER; power++) {
    EXP[power] = value;
    LOG[value] = power;
    value <<= 1;
    if (value & 0x10000) value ^= POLY;
  }
  for (let power = ORDER; power < 2 * ORDER; power++) EXP[power] = EXP[power - ORDER]!;
}

/** Product of two field elements (integers in 0..65535). */
export function mul(a: number, b: number): number {
  if (a === 0 || b === 0) return 0;
  return EXP[LOG[a]! + LOG[b]!]!;
}

/** Multiplicative inverse; RangeError for 0. */
export function inv(a: number): number {
  if (a === 0) throw new RangeError("0 has no inverse");
  return EXP[ORDER - LOG[a]!]!;
}

/** `a / b`; RangeError if `b` is 0. */
export function div(a: number, b: number): number {
  if (b === 0) throw new RangeError("division by 0");
  if (a === 0) return 0;
  return EXP[LOG[a]! + ORDER - LOG[b]!]!;
}
