/**
 * A minimal protobuf wire codec for the handful of libsignal messages (mirrors
 * cipherpost.protocol.protobuf).
 *
 * Why not a protobuf library: libsignal's messages are a few flat structures, and the MAC
 * is computed over the exact bytes received, so we need byte-level control of field order
 * and must never re-encode a received message. Decoding is strict about wire structure
 * (truncation, overlong varints, bad wire types throw {@link DecodeError}) and lenient
 * about unknown fields (skipped, as proto2 readers do).
 *
 * Integers are JS numbers. Varints up to 2^64 are accepted; values above 2^53 lose
 * precision, which is harmless here: every such field is either refused (uint32 fields)
 * or never re-encoded (received bytes are kept verbatim).
 */

import { concat } from "./bytes.js";

export const VARINT = 0;
export const FIXED64 = 1;
export const LENGTH = 2;
export const FIXED32 = 5;

/** The bytes are not a well-formed protobuf message. */
export class DecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DecodeError";
  }
}

export type Value = number | Uint8Array;
export type Fields = Map<number, Value[]>;

const TWO_32 = 2 ** 32;

/** Encode a non-negative safe integer as a varint. */
export function encodeVarint(value: number): Uint8Array {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError("varint out of range");
  if (value < 0x80) return Uint8Array.of(value);
  const out: number[] = [];
  while (value >= 0x80) {
    out.push((value % 0x80) | 0x80);
    value = Math.floor(value / 0x80);
  }
  out.push(value);
  return Uint8Array.from(out);
}

/** One varint field. */
export function fieldVarint(number: number, value: number): Uint8Array {
  return concat(encodeVarint(number * 8), encodeVarint(value));
}

/** One length-delimited field. */
export function fieldBytes(number: number, value: Uint8Array): Uint8Array {
  return concat(encodeVarint(number * 8 + LENGTH), encodeVarint(value.length), value);
}

/** One fixed64 field (little-endian). */
export function fieldFixed64(number: number, value: number): Uint8Array {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError("fixed64 out of range");
  const out = new Uint8Array(8);
  const view = new DataView(out.buffer);
  view.setUint32(0, value % TWO_32, true);
  view.setUint32(4, Math.floor(value / TWO_32), true);
  return concat(encodeVarint(number * 8 + FIXED64), out);
}

/** Read a varint at `pos` (before `end`); return it and the next position. */
export function readVarint(data: Uint8Array, pos: number, end: number): [number, number] {
  let result = 0;
  let multiplier = 1;
  for (let count = 0; ; count++) {
    if (pos >= end) throw new DecodeError("truncated varint");
    if (count >= 10) throw new DecodeError("overlong varint");
    const b = data[pos++]!;
    if (count === 9 && b > 1) throw new DecodeError("varint out of range");
    result += (b & 0x7f) * multiplier;
    if (!(b & 0x80)) break;
    multiplier *= 0x80;
  }
  return [result, pos];
}

/** One field as it came on the wire. */
export interface WireField {
  readonly number: number;
  readonly wire: number;
  readonly value: Value;
}

/**
 * Decode a message into its fields in wire order, with their wire types: for messages
 * whose meaning depends on the order of different fields (a `oneof`: the last member on
 * the wire wins) or on the wire type (libsignal's prost refuses a known field sent with
 * the wrong one). {@link decode} is the usual path.
 */
export function decodeOrdered(data: Uint8Array): WireField[] {
  const out: WireField[] = [];
  let pos = 0;
  const end = data.length;
  while (pos < end) {
    let number: number;
    let wire: number;
    let value: Value;
    [number, wire, value, pos] = readField(data, pos, end);
    out.push({ number, wire, value });
  }
  return out;
}

/** One field at `pos`: its number, wire type, value and the next position. */
function readField(data: Uint8Array, pos: number, end: number): [number, number, Value, number] {
  let key: number;
  [key, pos] = readVarint(data, pos, end);
  const number = Math.floor(key / 8);
  const wire = key % 8;
  if (number === 0) throw new DecodeError("field number 0");
  let value: Value;
  if (wire === VARINT) {
    [value, pos] = readVarint(data, pos, end);
  } else if (wire === LENGTH) {
    let length: number;
    [length, pos] = readVarint(data, pos, end);
    if (length > end - pos) throw new DecodeError("truncated field");
    value = data.subarray(pos, pos + length);
    pos += length;
  } else if (wire === FIXED64) {
    if (pos + 8 > end) throw new DecodeError("truncated fixed64");
    const view = new DataView(data.buffer, data.byteOffset + pos, 8);
    value = view.getUint32(0, true) + view.getUint32(4, true) * TWO_32;
    pos += 8;
  } else if (wire === FIXED32) {
    if (pos + 4 > end) throw new DecodeError("truncated fixed32");
    value = new DataView(data.buffer, data.byteOffset + pos, 4).getUint32(0, true);
    pos += 4;
  } else {
    throw new DecodeError(`unsupported wire type ${wire}`);
  }
  return [number, wire, value, pos];
}

/**
 * Decode a message into `{field number: [values in order]}`. Varint, fixed32 and fixed64
 * values are numbers; length-delimited values are byte views into `data`.
 */
export function decode(data: Uint8Array): Fields {
  // Its own loop (the hot path of every message): regrouping decodeOrdered's fields
  // made it 1.3 to 1.6 times slower.
  const fields: Fields = new Map();
  let pos = 0;
  const end = data.length;
  while (pos < end) {
    let key: number;
    [key, pos] = readVarint(data, pos, end);
    const number = Math.floor(key / 8);
    const wire = key % 8;
    if (number === 0) throw new DecodeError("field number 0");
    let value: Value;
    if (wire === VARINT) {
      [value, pos] = readVarint(data, pos, end);
    } else if (wire === LENGTH) {
      let length: number;
      [length, pos] = readVarint(data, pos, end);
      if (length > end - pos) throw new DecodeError("truncated field");
      value = data.subarray(pos, pos + length);
      pos += length;
    } else if (wire === FIXED64) {
      if (pos + 8 > end) throw new DecodeError("truncated fixed64");
      const view = new DataView(data.buffer, data.byteOffset + pos, 8);
      value = view.getUint32(0, true) + view.getUint32(4, true) * TWO_32;
      pos += 8;
    } else if (wire === FIXED32) {
      if (pos + 4 > end) throw new DecodeError("truncated fixed32");
      value = new DataView(data.buffer, data.byteOffset + pos, 4).getUint32(0, true);
      pos += 4;
    } else {
      throw new DecodeError(`unsupported wire type ${wire}`);
    }
    const list = fields.get(number);
    if (list) list.push(value);
    else fields.set(number, [value]);
  }
  return fields;
}

/** The last value of a bytes field, or undefined (proto semantics: last one wins). */
export function getBytes(fields: Fields, number: number): Uint8Array | undefined {
  const values = fields.get(number);
  if (!values || values.length === 0) return undefined;
  const value = values[values.length - 1]!;
  if (!(value instanceof Uint8Array)) throw new DecodeError(`field ${number} is not length-delimited`);
  return value;
}

/** The last value of an integer field, or undefined. */
export function getInt(fields: Fields, number: number): number | undefined {
  const values = fields.get(number);
  if (!values || values.length === 0) return undefined;
  const value = values[values.length - 1]!;
  if (typeof value !== "number") throw new DecodeError(`field ${number} is not an integer`);
  return value;
}

/** An integer field that must fit in 32 bits (protobuf truncates; we refuse). */
export function getUint32(fields: Fields, number: number): number | undefined {
  const value = getInt(fields, number);
  if (value !== undefined && value >= TWO_32) throw new DecodeError(`field ${number} exceeds uint32`);
  return value;
}

/** All values of a repeated bytes field. */
export function getRepeatedBytes(fields: Fields, number: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const value of fields.get(number) ?? []) {
    if (!(value instanceof Uint8Array)) throw new DecodeError(`field ${number} is not length-delimited`);
    out.push(value);
  }
  return out;
}

/** Concatenate encoded fields. */
export function join(parts: Uint8Array[]): Uint8Array {
  return concat(...parts);
}
