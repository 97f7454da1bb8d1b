/** Attachments (src/app/attachments.ts): the same bytes as the Python SDK, and every
 * mismatch refused before decryption. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { toHex } from "../src/protocol/bytes.js";
import { AttachmentError, blobBound, decryptAttachment, encryptAttachment } from "../src/app/attachments.js";

const plaintext = new Uint8Array(769).map((_, i) => (i < 768 ? i % 256 : 0x78));
const key = new Uint8Array(64).map((_, i) => i);
const iv = new Uint8Array(16).map((_, i) => i);

describe("attachments", () => {
  test("a known answer from cipherpost.client.attachments.encrypt", async () => {
    // python: attachments.encrypt(bytes(range(256))*3 + b"x", key=bytes(range(64)), iv=bytes(range(16)))
    const encrypted = await encryptAttachment(plaintext, key, iv);
    assert.equal(encrypted.blob.length, 864);
    assert.ok(encrypted.blob.length <= blobBound(plaintext.length));
    assert.equal(toHex(encrypted.digest), "62693bad8fd0b28d1a1d2bf1bca82bd10feebb6f914f80fb1a6c00a5351bfc77");
    assert.deepEqual(await decryptAttachment(encrypted.blob, key, encrypted.digest, encrypted.size), plaintext);
  });

  test("a changed byte, a wrong digest, key or size are refused", async () => {
    const { blob, digest, size } = await encryptAttachment(new Uint8Array(100).fill(1));
    const k = new Uint8Array(64);
    const flipped = blob.slice();
    flipped[20]! ^= 1;
    await assert.rejects(decryptAttachment(flipped, k, digest, size), AttachmentError); // digest first
    await assert.rejects(decryptAttachment(blob, new Uint8Array(64), digest, size), /MAC/);
    await assert.rejects(decryptAttachment(blob.subarray(0, 40), k, digest, size), AttachmentError);
    const good = await encryptAttachment(new Uint8Array(10).fill(2), key, iv);
    await assert.rejects(decryptAttachment(good.blob, key, good.digest, 10_000), /shorter/);
    assert.deepEqual(await decryptAttachment(good.blob, key, good.digest, 10), new Uint8Array(10).fill(2));
  });
});
