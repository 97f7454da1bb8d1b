/**
 * Encode and decode Content, the plaintext of every ciphertext (docs/spec/README.md §2).
 * Mirrors cipherpost.client.content. The schema's TypeScript is generated into ./proto
 * (`npm run gen:proto`; test/proto.test.ts fails when it is stale).
 */

import { fromBinary, ScalarType, toBinary, type DescMessage } from "@bufbuild/protobuf";
import { reflect, type ReflectMessage } from "@bufbuild/protobuf/reflect";

import { pad, PaddingError, unpad } from "./padding.js";
import { ContentSchema, type Content } from "./proto/cipherpost/app/v1/app_pb.js";

/** The spec version this implementation follows (Content.version). */
export const SPEC_VERSION = 1;

/** The largest magnitude any 64-bit integer field may carry: 2^53 - 1 (spec §2). */
export const MAX_INTEGER = BigInt(Number.MAX_SAFE_INTEGER);

const WIDE = new Set<ScalarType>([ScalarType.INT64, ScalarType.UINT64, ScalarType.FIXED64,
  ScalarType.SFIXED64, ScalarType.SINT64]);

/** A decrypted plaintext that is not a padded Content (or breaks a spec rule). */
export class InvalidContent extends Error {
  override readonly name = "InvalidContent";
}

/** Padded serialization, stamped with our spec version. */
export function encodeContent(content: Content): Uint8Array {
  content.version = SPEC_VERSION;
  checkIntegers(ContentSchema, content);
  return pad(toBinary(ContentSchema, content));
}

/**
 * Parse a padded Content. Unknown fields and bodies are kept aside by the codec and
 * ignored (an unset `body` means a body this version does not know).
 * @throws InvalidContent bad padding, not a Content, or an integer out of range.
 */
export function decodeContent(plaintext: Uint8Array): Content {
  let content: Content;
  try {
    content = fromBinary(ContentSchema, unpad(plaintext));
  } catch (error) {
    if (error instanceof PaddingError) throw new InvalidContent(error.message);
    throw new InvalidContent(`not a Content: ${(error as Error).message}`);
  }
  checkIntegers(ContentSchema, content);
  return content;
}

function checkOne(value: unknown, name: string): void {
  const n = typeof value === "bigint" ? value : BigInt(value as number | string);
  if (n > MAX_INTEGER || n < -MAX_INTEGER) throw new InvalidContent(`${name} is out of range`);
}

/**
 * Every 64-bit integer in `message` (nested messages included) lies within ±(2^53 − 1).
 * @throws InvalidContent naming the first field out of range.
 */
export function checkIntegers(schema: DescMessage, message: object): void {
  walk(reflect(schema, message as never));
}

function walk(r: ReflectMessage): void {
  for (const field of r.fields) {
    if (!r.isSet(field)) continue;
    switch (field.fieldKind) {
      case "scalar":
        if (WIDE.has(field.scalar)) checkOne(r.get(field), field.toString());
        break;
      case "message":
        walk(r.get(field));
        break;
      case "list": {
        const list = r.get(field);
        for (const item of list) {
          if (field.listKind === "message") walk(item as ReflectMessage);
          else if (field.listKind === "scalar" && WIDE.has(field.scalar)) checkOne(item, field.toString());
        }
        break;
      }
      default:
        break; // enums are 32-bit; this schema has no maps
    }
  }
}

/** Milliseconds as the bigint protobuf-es uses for uint64 fields (checked range). */
export function u64(value: number): bigint {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError("not a timestamp");
  return BigInt(value);
}

/** A uint64 field as a number (decodeContent already range-checked it). */
export function num(value: bigint): number {
  return Number(value);
}
