/**
 * The SPQR bytes of a SignalMessage (field 5), spqr-digest §6; mirrors
 * cipherpost.protocol.spqr.wire.
 *
 * Not protobuf:
 *
 *     0x01 | varint epoch (>= 1) | varint index (u32) | type (0..6)
 *          [| varint chunk index (<= 65535) | 32 chunk bytes]   for types 1, 2, 3, 5, 6
 *
 * Varints are LEB128 of at most 10 bytes; bits beyond 64 are dropped, as libsignal does.
 * Anything after the payload is ignored (room for later versions). An empty field means
 * V0 (no SPQR); a first byte 0x00 also means V0; any other first byte is a version this
 * implementation does not know.
 *
 * Epochs are u64 on the wire. {@link SpqrMessage} keeps them exact as bigints; the
 * per-message form {@link decodeFields} gives a number, and an epoch beyond 2^53 - 1
 * (which no state can reach) as `Infinity`, which compares as "ahead of every state".
 */

import { MalformedSpqrMessage } from "./errors.js";

export const V0 = 0;
export const V1 = 1;
export type Version = typeof V0 | typeof V1;

export const CHUNK_SIZE = 32;
export const MAX_CHUNK_INDEX = 0xffff;
const MAX_VARINT_LEN = 10;
const U64 = (1n << 64n) - 1n;
const U32 = 0xffffffff;

/** What one SPQR message carries (spqr-digest §4.2). */
export const PayloadType = {
  NONE: 0,
  HDR: 1,
  EK: 2,
  EK_CT1_ACK: 3,
  CT1_ACK: 4,
  CT1: 5,
  CT2: 6,
} as const;
export type PayloadType = (typeof PayloadType)[keyof typeof PayloadType];

export const PAYLOAD_NAMES: readonly string[] = ["None", "Hdr", "Ek", "EkCt1Ack", "Ct1Ack", "Ct1", "Ct2"];

/** Per payload type 0..6: whether it carries a chunk. */
const HAS_CHUNK: readonly boolean[] = [false, true, true, true, false, true, true];

export function hasChunk(payload: number): boolean {
  return HAS_CHUNK[payload] === true;
}

/** One 32-byte piece of an erasure-coded value, with its index. */
export interface Chunk {
  readonly index: number;
  readonly data: Uint8Array;
}

export function chunk(index: number, data: Uint8Array): Chunk {
  if (!Number.isInteger(index) || index < 0 || index > MAX_CHUNK_INDEX || data.length !== CHUNK_SIZE) {
    throw new RangeError("a chunk is 32 bytes with an index in 0..65535");
  }
  return { index, data };
}

/** A decoded V1 message: the SCKA epoch, the chain key index, and the payload. */
export interface SpqrMessage {
  readonly epoch: bigint;
  readonly index: number;
  readonly payload: PayloadType;
  readonly chunk?: Chunk | undefined;
}

/** A checked {@link SpqrMessage} (RangeError for values that cannot go on the wire). */
export function spqrMessage(epoch: bigint | number, index: number, payload: PayloadType, c?: Chunk): SpqrMessage {
  const e = BigInt(epoch);
  if ((c !== undefined) !== hasChunk(payload)) {
    throw new RangeError(`payload ${PAYLOAD_NAMES[payload] ?? payload} and chunk do not agree`);
  }
  if (e < 1n || e > U64 || !Number.isInteger(index) || index < 0 || index > U32) {
    throw new RangeError("epoch must be in 1..2^64-1 and index in 0..2^32-1");
  }
  return c === undefined ? { epoch: e, index, payload } : { epoch: e, index, payload, chunk: c };
}

/** The wire bytes of `msg` (always canonical varints). */
export function encodeMessage(msg: SpqrMessage): Uint8Array {
  const parts: number[] = [V1, ...encodeVarint(msg.epoch), ...encodeVarint(msg.index), msg.payload];
  if (msg.chunk === undefined) return Uint8Array.from(parts);
  parts.push(...encodeVarint(msg.chunk.index));
  const out = new Uint8Array(parts.length + CHUNK_SIZE);
  out.set(parts);
  out.set(msg.chunk.data, parts.length);
  return out;
}

/**
 * Parse V1 bytes; trailing bytes are ignored.
 * @throws MalformedSpqrMessage not V1, truncated, epoch 0, index beyond u32, unknown
 *   payload type, or chunk index beyond 65535.
 */
export function decodeMessage(data: Uint8Array): SpqrMessage {
  const [epoch, f] = readFields(data);
  return f.chunkData === null
    ? { epoch, index: f.index, payload: f.payload }
    : { epoch, index: f.index, payload: f.payload, chunk: { index: f.chunkIndex, data: f.chunkData } };
}

/** The decoded fields of one message, for the per-message path. */
export interface Fields {
  /** The SCKA epoch; `Infinity` if beyond 2^53 - 1. */
  readonly epoch: number;
  readonly index: number;
  readonly payload: PayloadType;
  /** 0 when the payload has no chunk. */
  readonly chunkIndex: number;
  readonly chunkData: Uint8Array | null;
}

/** {@link decodeMessage} as plain fields (see {@link Fields} for the epoch). */
export function decodeFields(data: Uint8Array): Fields {
  const [epoch, f] = readFields(data);
  return epoch <= BigInt(Number.MAX_SAFE_INTEGER) ? { ...f, epoch: Number(epoch) } : { ...f, epoch: Infinity };
}

function readFields(data: Uint8Array): [bigint, Omit<Fields, "epoch">] {
  const n = data.length;
  if (n === 0 || data[0] !== V1) throw new MalformedSpqrMessage("not an SPQR V1 message");
  let [epoch, at] = decodeVarint(data, 1);
  if (epoch === 0n) throw new MalformedSpqrMessage("SPQR epoch 0");
  let index: bigint;
  [index, at] = decodeVarint(data, at);
  if (index > BigInt(U32)) throw new MalformedSpqrMessage("SPQR key index beyond 32 bits");
  if (at >= n) throw new MalformedSpqrMessage("truncated SPQR message");
  const payload = data[at]!;
  if (payload >= HAS_CHUNK.length) throw new MalformedSpqrMessage("unknown SPQR payload type");
  at += 1;
  const base = { index: Number(index), payload: payload as PayloadType };
  if (!HAS_CHUNK[payload]) return [epoch, { ...base, chunkIndex: 0, chunkData: null }];
  let chunkIndex: bigint;
  [chunkIndex, at] = decodeVarint(data, at);
  if (chunkIndex > BigInt(MAX_CHUNK_INDEX) || at + CHUNK_SIZE > n) {
    throw new MalformedSpqrMessage("bad SPQR chunk");
  }
  return [epoch, { ...base, chunkIndex: Number(chunkIndex), chunkData: data.slice(at, at + CHUNK_SIZE) }];
}

/** The wire bytes of a message from our own state's values (see {@link spqrMessage}). */
export function encodeFields(epoch: number, index: number, payload: PayloadType, chunkIndex: number,
  chunkData: Uint8Array | null): Uint8Array {
  return encodeMessage(chunkData === null
    ? { epoch: BigInt(epoch), index, payload }
    : { epoch: BigInt(epoch), index, payload, chunk: { index: chunkIndex, data: chunkData } });
}

/** The SPQR version of field-5 bytes: V0 for empty or 0x00, V1, or null if unknown. */
export function messageVersion(data: Uint8Array): Version | null {
  if (data.length === 0) return V0;
  const v = data[0]!;
  return v === V0 || v === V1 ? v : null;
}

/** LEB128 of an unsigned 64-bit value. */
export function encodeVarint(value: bigint | number): number[] {
  let v = BigInt(value);
  if (v < 0n || v > U64) throw new RangeError("varint out of range");
  const out: number[] = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}

/**
 * `[value, position after it]`; at most 10 bytes, bits past 64 dropped.
 * @throws MalformedSpqrMessage no bytes left, or no terminating byte within 10 bytes.
 */
export function decodeVarint(data: Uint8Array, at: number): [bigint, number] {
  const first = data[at];
  if (first !== undefined && first < 0x80) return [BigInt(first), at + 1]; // the usual case
  let value = 0n;
  const end = Math.min(MAX_VARINT_LEN, data.length - at);
  for (let i = 0; i < end; i++) {
    const byte = data[at + i]!;
    value |= BigInt(byte & 0x7f) << BigInt(7 * i);
    if (!(byte & 0x80)) return [value & U64, at + i + 1];
  }
  throw new MalformedSpqrMessage("truncated or overlong varint");
}
