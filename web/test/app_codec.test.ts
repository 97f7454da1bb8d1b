/** The application layer's codec: padding and Content against the shared vectors
 * (vectors/app-padding.json, vectors/app-content.json), the same files Python reads. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { create, fromBinary, fromJson, toBinary, toJson } from "@bufbuild/protobuf";

import {
  decodeContent, encodeContent, InvalidContent, MAX_INTEGER,
} from "../src/app/content.js";
import { pad, padme, PaddingError, unpad } from "../src/app/padding.js";
import { ContentSchema, DataMessageSchema } from "../src/app/proto/cipherpost/app/v1/app_pb.js";
import { hex, loadVectors, toHex } from "./helpers.js";

describe("padding", () => {
  const vectors = loadVectors("app-padding.json");

  test("lengths match the vectors", () => {
    for (const c of vectors.lengths) assert.equal(pad(new Uint8Array(c.length)).length, c.padded, `length ${c.length}`);
  });

  test("cases pad and unpad byte for byte", () => {
    for (const c of vectors.cases) {
      assert.equal(toHex(pad(hex(c.plaintext))), c.padded);
      assert.equal(toHex(unpad(hex(c.padded))), c.plaintext);
    }
  });

  test("padme is monotonic and idempotent, overhead at most 12%", () => {
    let previous = 0;
    for (let n = 1; n < 70000; n += 7) {
      const bucket = padme(n);
      assert.ok(bucket >= n && bucket >= previous && padme(bucket) === bucket, `n=${n}`);
      assert.ok(n < 160 || bucket <= Math.floor(n * 1.12) + 1);
      previous = bucket;
    }
  });

  test("unpad refuses a missing marker", () => {
    for (const bad of [new Uint8Array(0), new Uint8Array(160), Uint8Array.of(1, 2, 3),
      Uint8Array.of(0x61, 0x62, 0x63, 0x81, 0, 0, 0)]) {
      assert.throws(() => unpad(bad), PaddingError);
    }
  });
});

describe("content", () => {
  const vectors = loadVectors("app-content.json");

  test("every case parses to its JSON and serializes back byte for byte", () => {
    assert.ok(vectors.cases.length >= 9);
    for (const c of vectors.cases) {
      const bytes = hex(c.serialized);
      const parsed = fromBinary(ContentSchema, bytes);
      assert.deepEqual(toJson(ContentSchema, parsed), c.json, c.name);
      assert.equal(toHex(toBinary(ContentSchema, fromJson(ContentSchema, c.json))), c.serialized, c.name);
      // through the padded codec too
      const decoded = decodeContent(pad(bytes));
      assert.equal(toHex(toBinary(ContentSchema, decoded)), c.serialized, c.name);
    }
  });

  test("encode stamps the spec version and pads", () => {
    const content = create(ContentSchema, {
      body: { case: "data", value: create(DataMessageSchema, { timestamp: 1790000000000n, text: "hello, Bob" }) },
    });
    const encoded = encodeContent(content);
    assert.equal(encoded.length, 160);
    assert.equal(toHex(unpad(encoded)), vectors.cases[0].serialized);
  });

  test("unknown fields and bodies are ignored", () => {
    const newer = Uint8Array.of(0x08, 0x02, 0xa2, 0x01, 0x02, 0x08, 0x01);
    const parsed = decodeContent(pad(newer));
    assert.equal(parsed.version, 2);
    assert.equal(parsed.body.case, undefined);
    const data = Uint8Array.of(0x08, 0x01, 0x12, 0x07, 0x12, 0x02, 0x68, 0x69, 0xc0, 0x02, 0x07);
    const withUnknown = decodeContent(pad(data));
    assert.equal(withUnknown.body.case, "data");
    assert.equal(withUnknown.body.value?.text, "hi");
  });

  test("garbage and unpadded plaintexts are InvalidContent", () => {
    assert.throws(() => decodeContent(pad(Uint8Array.of(0xff, 0xff, 0xff))), InvalidContent);
    assert.throws(() => decodeContent(new TextEncoder().encode("no padding")), InvalidContent);
  });

  test("64-bit integers beyond 2^53 - 1 are refused at any depth, either sign of the bound kept", () => {
    const at = (timestamp: bigint) => toBinary(ContentSchema, create(ContentSchema, {
      version: 1,
      body: { case: "sync", value: { body: { case: "sent", value: { destination: "x",
        message: { timestamp, text: "t" } } } } },
    }));
    assert.equal(decodeContent(pad(at(MAX_INTEGER))).body.case, "sync");
    assert.throws(() => decodeContent(pad(at(MAX_INTEGER + 1n))), /timestamp is out of range/);
    const receipt = toBinary(ContentSchema, create(ContentSchema, {
      body: { case: "receipt", value: { timestamps: [1n, 2n ** 60n] } },
    }));
    assert.throws(() => decodeContent(pad(receipt)), InvalidContent);
    assert.throws(() => encodeContent(fromBinary(ContentSchema, at(MAX_INTEGER + 1n))), InvalidContent);
  });

  test("flipped bits never escape as anything but InvalidContent", () => {
    const bytes = pad(hex(vectors.cases[1].serialized));
    for (let i = 0; i < 60; i++) {
      const copy = bytes.slice();
      copy[i] ^= 0x41;
      try {
        decodeContent(copy);
      } catch (error) {
        assert.ok(error instanceof InvalidContent, String(error));
      }
    }
  });
});
