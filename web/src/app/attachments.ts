/**
 * Attachment encryption (docs/spec/attachments.md), byte-compatible with
 * cipherpost.client.attachments: the plaintext padded with zeros to its Padmé bucket,
 * AES-256-CBC with PKCS#7 (WebCrypto adds and checks it), HMAC-SHA256 over iv and
 * ciphertext (encrypt-then-MAC), and the SHA-256 digest of the whole blob
 * `iv || ciphertext || mac`. The 64-byte key is AES (32) then HMAC (32). The receiver
 * checks the digest and the MAC (constant time) before it decrypts anything.
 */

import { sha256 } from "@noble/hashes/sha2.js";

import { concat, constantTimeEqual, systemRandom } from "../protocol/bytes.js";
import { padme } from "./padding.js";

export const KEY_BYTES = 64;
export const IV_BYTES = 16;
export const MAC_BYTES = 32;
/** The largest file the browser encrypts in one piece (the relay has its own limit). */
export const MAX_ATTACHMENT = 100 * 1024 * 1024;

/** A downloaded attachment that does not match its pointer (digest, MAC or size). */
export class AttachmentError extends Error {
  override readonly name = "AttachmentError";
}

export interface EncryptedAttachment {
  blob: Uint8Array;
  key: Uint8Array;
  digest: Uint8Array;
  size: number;
}

type Bytes = Uint8Array<ArrayBuffer>;

async function keys(key: Uint8Array): Promise<{ aes: CryptoKey; mac: CryptoKey }> {
  const aes = await crypto.subtle.importKey("raw", key.slice(0, 32), "AES-CBC", false, ["encrypt", "decrypt"]);
  const mac = await crypto.subtle.importKey("raw", key.slice(32), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return { aes, mac };
}

/** Encrypt a file's bytes (`key` and `iv` only for known-answer tests). */
export async function encryptAttachment(plaintext: Uint8Array, key: Uint8Array = systemRandom(KEY_BYTES),
  iv: Uint8Array = systemRandom(IV_BYTES)): Promise<EncryptedAttachment> {
  if (key.length !== KEY_BYTES || iv.length !== IV_BYTES) throw new RangeError("an attachment key is 64 bytes and its iv 16");
  if (plaintext.length > MAX_ATTACHMENT) throw new RangeError("that file is too large to send");
  const padded = new Uint8Array(padme(plaintext.length));
  padded.set(plaintext);
  const { aes, mac } = await keys(key);
  const ciphertext = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-CBC", iv: iv as Bytes }, aes, padded));
  const body = concat(iv, ciphertext);
  const tag = new Uint8Array(await crypto.subtle.sign("HMAC", mac, body as Bytes));
  const blob = concat(body, tag);
  return { blob, key, digest: sha256(blob), size: plaintext.length };
}

/** The largest blob a pointer of `size` bytes can name (iv, padded body, a PKCS#7 block, MAC). */
export function blobBound(size: number): number {
  return IV_BYTES + padme(size) + 16 + MAC_BYTES;
}

/** Check and decrypt a downloaded blob. @throws AttachmentError */
export async function decryptAttachment(blob: Uint8Array, key: Uint8Array, digest: Uint8Array,
  size: number): Promise<Uint8Array> {
  if (key.length !== KEY_BYTES) throw new AttachmentError("the attachment key is malformed");
  if (digest.length !== 32 || !constantTimeEqual(sha256(blob), digest)) {
    throw new AttachmentError("the attachment does not match its digest");
  }
  if (blob.length < IV_BYTES + 16 + MAC_BYTES || (blob.length - IV_BYTES - MAC_BYTES) % 16 !== 0) {
    throw new AttachmentError("the attachment is truncated");
  }
  const body = blob.subarray(0, blob.length - MAC_BYTES);
  const { aes, mac } = await keys(key);
  const expected = new Uint8Array(await crypto.subtle.sign("HMAC", mac, body.slice() as Bytes));
  if (!constantTimeEqual(expected, blob.subarray(blob.length - MAC_BYTES))) {
    throw new AttachmentError("the attachment's MAC does not verify");
  }
  let padded: Uint8Array;
  try {
    padded = new Uint8Array(await crypto.subtle.decrypt({ name: "AES-CBC", iv: body.slice(0, IV_BYTES) as Bytes }, aes,
      body.slice(IV_BYTES) as Bytes));
  } catch {
    throw new AttachmentError("the attachment's padding is malformed");
  }
  if (size > padded.length) throw new AttachmentError("the attachment is shorter than its stated size");
  return padded.slice(0, size);
}
