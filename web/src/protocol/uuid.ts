/** 128-bit ids written 8-4-4-4-12 in hex (sender-key distribution ids), RFC 4122 byte order. */

import { fromHex, toHex } from "./bytes.js";

const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

export function isUuid(text: string): boolean {
  return UUID_RE.test(text);
}

/** The 16 bytes of an id. @throws RangeError not 8-4-4-4-12 hex. */
export function parseUuid(text: string): Uint8Array {
  if (!isUuid(text)) throw new RangeError("not a 128-bit id written 8-4-4-4-12 in hex");
  return fromHex(text.replace(/-/g, "").toLowerCase());
}

/** Lowercase 8-4-4-4-12 form of 16 bytes. */
export function formatUuid(data: Uint8Array): string {
  if (data.length !== 16) throw new RangeError("an id is 16 bytes");
  const h = toHex(data);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
