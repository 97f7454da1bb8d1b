/**
 * The systematic Reed-Solomon code that splits SPQR values into 32-byte chunks
 * (spqr-digest §6.1); mirrors cipherpost.protocol.spqr.erasure.
 *
 * A value of L bytes (L a multiple of 32) is read as L/2 big-endian 16-bit symbols;
 * symbol k belongs to polynomial k mod 16 at x = k div 16. Each of the 16 polynomials
 * thus has n = L/32 points at x = 0..n-1 and is the unique polynomial of degree < n
 * through them. Chunk c is the 16 values P_0(c) .. P_15(c), so chunks 0..n-1 are the
 * value itself and chunks from n on are parity: any n chunks with distinct indices give
 * the value back. Because every chunk carries one point of every polynomial at the same
 * x, the decoder simply keeps chunks by index.
 *
 * A parity chunk is a combination of n chunks with Lagrange weights, computed once per
 * chunk index (logs of the weights) and applied to all 16 lanes. Encoders and decoders
 * are immutable values: `next` and `add` return new objects, so a tentative receive can
 * be thrown away.
 */

import { EXP, LOG, ORDER } from "./gf16.js";
import { CHUNK_SIZE, MAX_CHUNK_INDEX, type Chunk } from "./wire.js";

const LANES = CHUNK_SIZE / 2;

function checkLength(length: number, what: string): void {
  if (!Number.isInteger(length) || length <= 0 || length % CHUNK_SIZE !== 0) {
    throw new RangeError(`the ${what} must be a positive multiple of 32 bytes`);
  }
}

/**
 * Logs of the Lagrange weights w_j with P(x) = sum_j w_j P(xs[j]); `xs` are distinct and
 * `x` is not among them. In characteristic 2, w_j = prod_{m != j} (x ^ x_m) / (x_j ^ x_m).
 */
function logWeights(xs: readonly number[], x: number): number[] {
  let total = 0;
  for (const m of xs) total += LOG[x ^ m]!;
  return xs.map((xj) => {
    let denominator = 0;
    for (const m of xs) if (m !== xj) denominator += LOG[xj ^ m]!;
    const w = (total - LOG[x ^ xj]! - denominator) % ORDER;
    return w < 0 ? w + ORDER : w;
  });
}

/** sum_j w_j * rows[j], lane by lane, as a 32-byte chunk. */
function combination(weights: readonly number[], rows: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(CHUNK_SIZE);
  for (let p = 0; p < LANES; p++) {
    let acc = 0;
    for (let j = 0; j < rows.length; j++) {
      const row = rows[j]!;
      const symbol = (row[2 * p]! << 8) | row[2 * p + 1]!;
      if (symbol !== 0) acc ^= EXP[weights[j]! + LOG[symbol]!]!;
    }
    out[2 * p] = acc >>> 8;
    out[2 * p + 1] = acc & 0xff;
  }
  return out;
}

/** Chunk `index` (0..65535) of `message` (a positive multiple of 32 bytes). */
export function chunkAt(message: Uint8Array, index: number): Uint8Array {
  checkLength(message.length, "message");
  const n = message.length / CHUNK_SIZE;
  if (index < n) return message.slice(index * CHUNK_SIZE, (index + 1) * CHUNK_SIZE);
  if (index > MAX_CHUNK_INDEX) throw new RangeError("chunk index beyond 65535");
  const nodes = Array.from({ length: n }, (_, j) => j);
  const rows = nodes.map((j) => message.subarray(j * CHUNK_SIZE, (j + 1) * CHUNK_SIZE));
  return combination(logWeights(nodes, index), rows);
}

/**
 * Emits chunk 0, 1, 2, ... of a value, one per call, never repeating. The counter is 32
 * bits and goes onto the wire truncated to 16, as libsignal does.
 */
export class Encoder {
  constructor(readonly message: Uint8Array, readonly nextIndex: number = 0) {
    checkLength(message.length, "message");
    if (!Number.isInteger(nextIndex) || nextIndex < 0 || nextIndex > 0xffffffff) {
      throw new RangeError("encoder index out of range");
    }
  }

  /** `[encoder after this chunk, the chunk]`. */
  next(): [Encoder, Chunk] {
    const index = this.nextIndex & MAX_CHUNK_INDEX;
    const after = new Encoder(this.message, (this.nextIndex + 1) % 0x100000000);
    return [after, { index, data: chunkAt(this.message, index) }];
  }

  toString(): string {
    return `Encoder(${this.message.length} bytes, nextIndex=${this.nextIndex})`;
  }
}

/**
 * Collects chunks of a value of `length` bytes until any n = length/32 are held.
 *
 * A chunk is kept if its index is below n (a data chunk) or if fewer than n chunks are
 * held (a kept chunk whose index is already held replaces it). Decoding takes the data
 * chunks held and interpolates the others from the n lowest indices held.
 */
export class Decoder {
  readonly chunks: ReadonlyMap<number, Uint8Array>;

  constructor(readonly length: number, chunks?: ReadonlyMap<number, Uint8Array>) {
    checkLength(length, "length");
    this.chunks = chunks ?? new Map();
  }

  /** n: how many chunks with distinct indices make the value. */
  get needed(): number {
    return this.length / CHUNK_SIZE;
  }

  /** This decoder with the chunk taken in (or this one, unchanged, if it is not kept). */
  add(c: Chunk): Decoder {
    return this.addData(c.index, c.data);
  }

  addData(index: number, data: Uint8Array): Decoder {
    if (index >= this.needed && this.chunks.size >= this.needed) return this;
    const chunks = new Map(this.chunks);
    chunks.set(index, data);
    return new Decoder(this.length, chunks);
  }

  /** The value, once n chunks are held; else null. */
  decoded(): Uint8Array | null {
    const n = this.needed;
    if (this.chunks.size < n) return null;
    const xs = [...this.chunks.keys()].sort((a, b) => a - b).slice(0, n);
    const out = new Uint8Array(this.length);
    if (xs[n - 1] === n - 1) { // all data chunks: the value as it is
      for (const x of xs) out.set(this.chunks.get(x)!, x * CHUNK_SIZE);
      return out;
    }
    const rows = xs.map((x) => this.chunks.get(x)!);
    for (let x = 0; x < n; x++) {
      const held = this.chunks.get(x);
      out.set(held ?? combination(logWeights(xs, x), rows), x * CHUNK_SIZE);
    }
    return out;
  }
}
