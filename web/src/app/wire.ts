/**
 * Strict readers for JSON that comes from the network: every field is checked for
 * presence, type and range, and anything else is an error that names the field (never
 * its value, which may be a secret or hostile text).
 */

/** JSON from the relay that does not have the promised shape. */
export class MalformedAnswer extends Error {
  override readonly name = "MalformedAnswer";
}

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function get(obj: unknown, key: string, what: string): unknown {
  if (!isObject(obj)) throw new MalformedAnswer(`${what}: not an object`);
  return obj[key];
}

export function str(obj: unknown, key: string, what: string, maxLength = 4096): string {
  const value = get(obj, key, what);
  if (typeof value !== "string" || value.length > maxLength) throw new MalformedAnswer(`${what}: ${key}`);
  return value;
}

export function int(obj: unknown, key: string, what: string, min: number, max: number): number {
  const value = get(obj, key, what);
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new MalformedAnswer(`${what}: ${key} out of range`);
  }
  return value;
}

export function optional<T>(obj: unknown, key: string, what: string, read: (o: unknown, k: string) => T): T | undefined {
  const value = get(obj, key, what);
  return value === undefined || value === null ? undefined : read(obj, key);
}

export function list(obj: unknown, key: string, what: string, maxLength = 10_000): unknown[] {
  const value = get(obj, key, what);
  if (!Array.isArray(value) || value.length > maxLength) throw new MalformedAnswer(`${what}: ${key}`);
  return value;
}

export function bool(obj: unknown, key: string, what: string): boolean {
  const value = get(obj, key, what);
  if (typeof value !== "boolean") throw new MalformedAnswer(`${what}: ${key}`);
  return value;
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Standard base64, padded. */
export function toBase64(data: Uint8Array): string {
  let out = "";
  for (let i = 0; i < data.length; i += 0x8000) {
    out += String.fromCharCode(...data.subarray(i, i + 0x8000));
  }
  return btoa(out);
}

/** @throws MalformedAnswer not canonical standard base64. */
export function fromBase64(text: string, what = "base64"): Uint8Array {
  if (!BASE64.test(text)) throw new MalformedAnswer(`${what} is not base64`);
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

export function bytes(obj: unknown, key: string, what: string, maxLength = 1 << 20): Uint8Array {
  return fromBase64(str(obj, key, what, Math.ceil(maxLength / 3) * 4 + 4), `${what}: ${key}`);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** An account id or envelope id as the relay writes them (lower-case UUID). */
export function uuid(obj: unknown, key: string, what: string): string {
  const value = str(obj, key, what, 36);
  if (!UUID.test(value)) throw new MalformedAnswer(`${what}: ${key} is not an id`);
  return value;
}

export function isUuid(text: string): boolean {
  return UUID.test(text);
}
