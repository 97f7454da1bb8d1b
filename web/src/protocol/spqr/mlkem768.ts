/**
 * FIPS 203 ML-KEM-768 internals, with encryption split in two; mirrors
 * cipherpost.protocol.spqr.mlkem768.
 *
 * The braid needs what black-box ML-KEM libraries do not offer: the CT sender must send
 * `u` (the first 960 ciphertext bytes) knowing only the matrix seed rho and H(ek), and
 * compute `v` (the last 128) once the rest of the key, t-hat, arrived (spqr-digest §3,
 * §4.4). @noble/post-quantum keeps K-PKE private, so this module implements it:
 * {@link encryptU} and {@link encryptV} are the two halves of K-PKE.Encrypt, and together
 * equal the standard ML-KEM-768 encapsulation of `ek = t-hat || rho` with message `m`
 * (the tests check that against noble). Key generation and decapsulation from a
 * 2400-byte expanded key are here too, as in the Python module, for keys stored in that
 * form; our own keys (64-byte seeds) go through noble (see incremental.ts).
 *
 * Section numbers are FIPS 203's. Not constant-time (the Python reference is not
 * either); the secrets it touches are one-shot per epoch. Coefficients are kept reduced
 * in 0..q-1 after every operation, so JavaScript's signed `%` never sees a negative.
 */

import { sha3_256, sha3_512, shake128, shake256 } from "@noble/hashes/sha3.js";

import { concat, constantTimeEqual } from "../bytes.js";

export const N = 256;
export const Q = 3329;
export const K = 3;
const ETA1 = 2;
const ETA2 = 2;
const DU = 10;
const DV = 4;

export const POLY_BYTES = 384; // ByteEncode12 of one polynomial
export const EK_BYTES = POLY_BYTES * K + 32; // 1184
export const DK_PKE_BYTES = POLY_BYTES * K; // 1152
export const DK_BYTES = DK_PKE_BYTES + EK_BYTES + 64; // 2400
export const CT_U_BYTES = 32 * DU * K; // 960
export const CT_V_BYTES = 32 * DV; // 128

type Poly = Int32Array;

function bitrev7(i: number): number {
  let out = 0;
  for (let b = 0; b < 7; b++) out |= ((i >> b) & 1) << (6 - b);
  return out;
}

function powMod(base: number, exp: number): number {
  let out = 1;
  let b = base % Q;
  while (exp > 0) {
    if (exp & 1) out = (out * b) % Q;
    b = (b * b) % Q;
    exp >>= 1;
  }
  return out;
}

const ZETAS = Int32Array.from({ length: 128 }, (_, i) => powMod(17, bitrev7(i)));
const GAMMAS = Int32Array.from({ length: 128 }, (_, i) => powMod(17, 2 * bitrev7(i) + 1));
const N_INV = 3303; // 128^-1 mod q

// -- hash functions (§4.1) ----------------------------------------------------------------

/** H = SHA3-256. */
export function h(data: Uint8Array): Uint8Array {
  return sha3_256(data);
}

/** G = SHA3-512, split in two 32-byte halves. */
export function g(data: Uint8Array): [Uint8Array, Uint8Array] {
  const out = sha3_512(data);
  return [out.slice(0, 32), out.slice(32, 64)];
}

function prf(eta: number, seed: Uint8Array, nonce: number): Uint8Array {
  return shake256(concat(seed, Uint8Array.of(nonce)), { dkLen: 64 * eta });
}

// -- encodings (§4.2.1) -------------------------------------------------------------------

/** ByteEncode_d: 256 d-bit integers, little-endian bit order. */
export function byteEncode(poly: Poly, d: number): Uint8Array {
  const out = new Uint8Array(32 * d);
  let acc = 0;
  let bits = 0;
  let at = 0;
  for (let i = 0; i < N; i++) {
    acc |= poly[i]! << bits; // bits < 8 before the add, d <= 12: stays below 2^20
    bits += d;
    while (bits >= 8) {
      out[at++] = acc & 0xff;
      acc >>>= 8;
      bits -= 8;
    }
  }
  return out;
}

/** ByteDecode_d (for d = 12 the values are not reduced: callers check them). */
export function byteDecode(data: Uint8Array, d: number): Poly {
  const out = new Int32Array(N);
  const mask = (1 << d) - 1;
  let acc = 0;
  let bits = 0;
  let at = 0;
  for (let i = 0; i < N; i++) {
    while (bits < d) {
      acc |= data[at++]! << bits;
      bits += 8;
    }
    out[i] = acc & mask;
    acc >>>= d;
    bits -= d;
  }
  return out;
}

/** Compress_d: round(2^d / q * x) mod 2^d. */
function compress(poly: Poly, d: number): Poly {
  const mask = (1 << d) - 1;
  const half = Q >> 1;
  return poly.map((x) => Math.floor((x * (1 << d) + half) / Q) & mask);
}

/** Decompress_d: round(q / 2^d * y). */
function decompress(poly: Poly, d: number): Poly {
  const half = 1 << (d - 1);
  return poly.map((y) => (y * Q + half) >> d);
}

// -- sampling (§4.2.2) --------------------------------------------------------------------

/** SampleNTT: a uniform polynomial in NTT form from SHAKE128(seed) by rejection. */
function sampleNtt(seed: Uint8Array): Poly {
  let length = 840;
  for (;;) {
    const stream = shake128(seed, { dkLen: length });
    const out = new Int32Array(N);
    let count = 0;
    for (let i = 0; i + 2 < length; i += 3) {
      const c0 = stream[i]!;
      const c1 = stream[i + 1]!;
      const c2 = stream[i + 2]!;
      const d1 = c0 | ((c1 & 0x0f) << 8);
      const d2 = (c1 >> 4) | (c2 << 4);
      if (d1 < Q) {
        out[count++] = d1;
        if (count === N) return out;
      }
      if (d2 < Q) {
        out[count++] = d2;
        if (count === N) return out;
      }
    }
    length += 168; // one more SHAKE128 block; the prefix is the same stream
  }
}

function popcount(x: number): number {
  let c = 0;
  for (; x; x &= x - 1) c++;
  return c;
}

/** SamplePolyCBD_eta. */
function sampleCbd(data: Uint8Array, eta: number): Poly {
  const out = new Int32Array(N);
  const mask = (1 << eta) - 1;
  let acc = 0;
  let bits = 0;
  let at = 0;
  for (let i = 0; i < N; i++) {
    while (bits < 2 * eta) {
      acc |= data[at++]! << bits;
      bits += 8;
    }
    const a = popcount(acc & mask);
    const b = popcount((acc >>> eta) & mask);
    acc >>>= 2 * eta;
    bits -= 2 * eta;
    out[i] = (a - b + Q) % Q;
  }
  return out;
}

/** A-hat, with A-hat[i][j] = SampleNTT(rho || j || i). */
function matrix(rho: Uint8Array): Poly[][] {
  return Array.from({ length: K }, (_, i) => Array.from({ length: K }, (_, j) => sampleNtt(concat(rho, Uint8Array.of(j, i)))));
}

// -- NTT (§4.3) ---------------------------------------------------------------------------

/** NTT (Algorithm 9). */
function ntt(poly: Poly): Poly {
  const f = Int32Array.from(poly);
  let k = 1;
  for (let length = 128; length >= 2; length >>= 1) {
    for (let start = 0; start < N; start += 2 * length) {
      const zeta = ZETAS[k++]!;
      for (let j = start; j < start + length; j++) {
        const t = (zeta * f[j + length]!) % Q;
        f[j + length] = (f[j]! - t + Q) % Q;
        f[j] = (f[j]! + t) % Q;
      }
    }
  }
  return f;
}

/** NTT^-1 (Algorithm 10). */
function nttInv(poly: Poly): Poly {
  const f = Int32Array.from(poly);
  let k = 127;
  for (let length = 2; length <= 128; length <<= 1) {
    for (let start = 0; start < N; start += 2 * length) {
      const zeta = ZETAS[k--]!;
      for (let j = start; j < start + length; j++) {
        const t = f[j]!;
        const u = f[j + length]!;
        f[j] = (t + u) % Q;
        f[j + length] = (zeta * ((u - t + Q) % Q)) % Q;
      }
    }
  }
  return f.map((x) => (x * N_INV) % Q);
}

/** sum_i row[i] * vec[i] in the NTT domain (MultiplyNTTs, Algorithm 11), reduced. */
function dot(row: readonly Poly[], vec: readonly Poly[]): Poly {
  const out = new Int32Array(N);
  for (let i = 0; i < row.length; i++) {
    const a = row[i]!;
    const b = vec[i]!;
    for (let p = 0; p < N / 2; p++) {
      const a0 = a[2 * p]!;
      const a1 = a[2 * p + 1]!;
      const b0 = b[2 * p]!;
      const b1 = b[2 * p + 1]!;
      out[2 * p] = (out[2 * p]! + a0 * b0 + ((a1 * b1) % Q) * GAMMAS[p]!) % Q;
      out[2 * p + 1] = (out[2 * p + 1]! + a0 * b1 + a1 * b0) % Q;
    }
  }
  return out;
}

function add(...polys: Poly[]): Poly {
  const out = new Int32Array(N);
  for (const p of polys) for (let i = 0; i < N; i++) out[i] = (out[i]! + p[i]!) % Q;
  return out;
}

// -- K-PKE and ML-KEM (§5, §6) ------------------------------------------------------------

/** ML-KEM.KeyGen_internal(d, z): `[ek (1184), dk (2400)]`. */
export function keygen(d: Uint8Array, z: Uint8Array): [Uint8Array, Uint8Array] {
  const [rho, sigma] = g(concat(d, Uint8Array.of(K)));
  const aHat = matrix(rho);
  const s = Array.from({ length: K }, (_, i) => ntt(sampleCbd(prf(ETA1, sigma, i), ETA1)));
  const e = Array.from({ length: K }, (_, i) => ntt(sampleCbd(prf(ETA1, sigma, K + i), ETA1)));
  const tHat = Array.from({ length: K }, (_, i) => add(dot(aHat[i]!, s), e[i]!));
  const ek = concat(...tHat.map((t) => byteEncode(t, 12)), rho);
  const dkPke = concat(...s.map((x) => byteEncode(x, 12)));
  return [ek, concat(dkPke, ek, h(ek), z)];
}

/** y-hat of K-PKE.Encrypt from its randomness r. */
function yHat(r: Uint8Array): Poly[] {
  return Array.from({ length: K }, (_, i) => ntt(sampleCbd(prf(ETA1, r, i), ETA1)));
}

/** The first half of K-PKE.Encrypt: c1 = Encode(Compress(NTT^-1(A-hat^T y-hat) + e1)). */
export function encryptU(rho: Uint8Array, r: Uint8Array): Uint8Array {
  const aHat = matrix(rho);
  const y = yHat(r);
  const e1 = Array.from({ length: K }, (_, i) => sampleCbd(prf(ETA2, r, K + i), ETA2));
  const parts = Array.from({ length: K }, (_, i) => {
    const column = Array.from({ length: K }, (_, j) => aHat[j]![i]!);
    return byteEncode(compress(add(nttInv(dot(column, y)), e1[i]!), DU), DU);
  });
  return concat(...parts);
}

/** The second half: c2 = Encode(Compress(NTT^-1(t-hat^T y-hat) + e2 + Decompress1(m))). */
export function encryptV(tHatBytes: Uint8Array, m: Uint8Array, r: Uint8Array): Uint8Array {
  const tHat = Array.from({ length: K }, (_, i) => byteDecode(tHatBytes.subarray(i * POLY_BYTES, (i + 1) * POLY_BYTES), 12));
  const y = yHat(r);
  const e2 = sampleCbd(prf(ETA2, r, 2 * K), ETA2);
  const mu = decompress(byteDecode(m, 1), 1);
  return byteEncode(compress(add(nttInv(dot(tHat, y)), e2, mu), DV), DV);
}

/** `[K, r] = G(m || H(ek))`, the shared secret and the encryption randomness. */
export function encapsSecret(m: Uint8Array, ekHash: Uint8Array): [Uint8Array, Uint8Array] {
  return g(concat(m, ekHash));
}

/** ML-KEM.Encaps_internal(ek, m): `[K, c]`; both halves of K-PKE in one call. */
export function encapsulate(ek: Uint8Array, m: Uint8Array): [Uint8Array, Uint8Array] {
  const [shared, r] = encapsSecret(m, h(ek));
  return [shared, concat(encryptU(ek.subarray(DK_PKE_BYTES), r), encryptV(ek.subarray(0, DK_PKE_BYTES), m, r))];
}

function decrypt(dkPke: Uint8Array, c: Uint8Array): Uint8Array {
  const u = Array.from({ length: K }, (_, i) => ntt(decompress(byteDecode(c.subarray(i * 32 * DU, (i + 1) * 32 * DU), DU), DU)));
  const v = decompress(byteDecode(c.subarray(CT_U_BYTES), DV), DV);
  const sHat = Array.from({ length: K }, (_, i) => byteDecode(dkPke.subarray(i * POLY_BYTES, (i + 1) * POLY_BYTES), 12));
  const su = nttInv(dot(sHat, u));
  const w = v.map((x, i) => (x - su[i]! + Q) % Q);
  return byteEncode(compress(w, 1), 1);
}

/** ML-KEM.Decaps_internal with a 2400-byte expanded key (implicit rejection). */
export function decapsulate(dk: Uint8Array, c: Uint8Array): Uint8Array {
  if (dk.length !== DK_BYTES || c.length !== CT_U_BYTES + CT_V_BYTES) {
    throw new RangeError("bad ML-KEM-768 decapsulation key or ciphertext length");
  }
  const dkPke = dk.subarray(0, DK_PKE_BYTES);
  const ek = dk.subarray(DK_PKE_BYTES, DK_PKE_BYTES + EK_BYTES);
  const ekHash = dk.subarray(DK_PKE_BYTES + EK_BYTES, DK_BYTES - 32);
  const z = dk.subarray(DK_BYTES - 32);
  const m = decrypt(dkPke, c);
  const [shared, r] = encapsSecret(m, ekHash);
  const rejected = shake256(concat(z, c), { dkLen: 32 });
  const again = concat(encryptU(ek.subarray(DK_PKE_BYTES), r), encryptV(ek.subarray(0, DK_PKE_BYTES), m, r));
  return constantTimeEqual(again, c) ? shared : rejected;
}

/** FIPS 203 §7.2 modulus check on the t-hat part of an encapsulation key. */
export function ekModulusOk(tHatBytes: Uint8Array): boolean {
  if (tHatBytes.length % POLY_BYTES !== 0) return false;
  for (let i = 0; i < tHatBytes.length; i += POLY_BYTES) {
    if (byteDecode(tHatBytes.subarray(i, i + POLY_BYTES), 12).some((x) => x >= Q)) return false;
  }
  return true;
}
