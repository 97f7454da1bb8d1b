/** QR codes (src/ui/qr.ts): the same modules segno draws for the same bytes, mask and
 * level (the CLI's encoder), and a round trip through a decoder for text. */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import decodeQR from "@paulmillr/qr/decode.js";

import { qrModules } from "../src/ui/qr.js";

interface Case { payload_hex: string; version: number; mask: number; rows: string[] }
const fixture = JSON.parse(readFileSync(new URL("./fixtures/qr-segno.json", import.meta.url), "utf8")) as { cases: Case[] };
const unhex = (hex: string) => Uint8Array.from(hex.match(/../g)!.map((b) => parseInt(b, 16)));
const rows = (modules: boolean[][]) => modules.map((row) => row.map((dark) => (dark ? "1" : "0")).join(""));

test("byte-mode codes match segno's module for module, binary bytes included", () => {
  assert.ok(fixture.cases.length >= 4);
  for (const c of fixture.cases) {
    assert.deepEqual(rows(qrModules(unhex(c.payload_hex), c.mask)), c.rows, `version ${c.version} mask ${c.mask}`);
  }
});

test("the mask of least penalty is chosen and the code decodes to the text", () => {
  const uri = "cipherpost://link?v=1&s=http://127.0.0.1:8000&a=mailbox&k=" + "K".repeat(43) + "&x=" + "x".repeat(22);
  const modules = qrModules(new TextEncoder().encode(uri));
  const scale = 4;
  const quiet = 4;
  const side = (modules.length + 2 * quiet) * scale;
  const data = new Uint8Array(side * side * 3).fill(255);
  modules.forEach((row, y) => row.forEach((dark, x) => {
    if (!dark) return;
    for (let dy = 0; dy < scale; dy++) {
      for (let dx = 0; dx < scale; dx++) {
        const offset = (((y + quiet) * scale + dy) * side + (x + quiet) * scale + dx) * 3;
        data.fill(0, offset, offset + 3);
      }
    }
  }));
  assert.equal(decodeQR({ width: side, height: side, data }), uri);
});

test("a payload too large for any version is refused", () => {
  assert.throws(() => qrModules(new Uint8Array(3000)), RangeError);
});
