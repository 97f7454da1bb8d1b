/** SPQR wire bytes, GF(2^16) and the erasure code against the recorded vectors (spqr-digest §6). */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { InvalidMessage } from "../src/protocol/errors.js";
import { Decoder, Encoder, chunkAt } from "../src/protocol/spqr/erasure.js";
import { MalformedSpqrMessage } from "../src/protocol/spqr/errors.js";
import * as gf16 from "../src/protocol/spqr/gf16.js";
import {
  PAYLOAD_NAMES, PayloadType, V0, V1, chunk, decodeFields, decodeMessage, decodeVarint, encodeFields,
  encodeMessage, encodeVarint, messageVersion, spqrMessage,
} from "../src/protocol/spqr/wire.js";
import { H, RUNS, hx, loadSpqr, seeded } from "./spqr_helpers.js";

const TYPES = new Map(PAYLOAD_NAMES.map((name, i) => [name, i as PayloadType]));

function recordedMessages(): { pq_ratchet: string; pq_decoded: any }[] {
  const out: { pq_ratchet: string; pq_decoded: any }[] = [];
  for (const name of RUNS) out.push(...loadSpqr(name).messages);
  for (const mode of ["spqr", "badmac"]) {
    const r = loadSpqr("py-alice-to-libsignal.json").results[mode].reply_decoded_by_python;
    out.push({ pq_ratchet: r.pq_ratchet, pq_decoded: r.pq_decoded });
  }
  return out;
}

const MESSAGES = recordedMessages();
const MODEL = loadSpqr("model-fixed-inputs.json");

describe("wire", () => {
  test("every recorded message decodes and re-encodes byte for byte", () => {
    assert.ok(MESSAGES.length > 200);
    assert.deepEqual(new Set(MESSAGES.map((m) => m.pq_decoded.type)), new Set(PAYLOAD_NAMES));
    for (const m of MESSAGES) {
      const raw = H(m.pq_ratchet);
      const want = m.pq_decoded;
      const msg = decodeMessage(raw);
      assert.deepEqual([msg.epoch, msg.index, msg.payload], [BigInt(want.epoch), want.index, TYPES.get(want.type)]);
      if (msg.chunk === undefined) assert.equal(want.chunk, undefined);
      else assert.deepEqual([msg.chunk.index, hx(msg.chunk.data)], [want.chunk_index, want.chunk]);
      assert.equal(want.trailing, 0);
      assert.equal(hx(encodeMessage(msg)), m.pq_ratchet);
      assert.equal(messageVersion(raw), V1);
      const f = decodeFields(raw);
      assert.equal(hx(encodeFields(f.epoch, f.index, f.payload, f.chunkIndex, f.chunkData)), m.pq_ratchet);
    }
  });

  test("model wire encodings", () => {
    for (const c of MODEL.wire) {
      const ch = c.chunk_index === undefined ? undefined : chunk(c.chunk_index, new Uint8Array(32));
      const msg = spqrMessage(c.epoch, c.index, TYPES.get(c.type)!, ch);
      assert.equal(hx(encodeMessage(msg)), c.bytes);
      assert.deepEqual(decodeMessage(H(c.bytes)), msg);
    }
  });

  test("trailing bytes are ignored", () => {
    const raw = H(MESSAGES[0]!.pq_ratchet);
    assert.deepEqual(decodeMessage(Uint8Array.from([...raw, 1, 2, 3])), decodeMessage(raw));
  });

  test("versions", () => {
    assert.equal(messageVersion(new Uint8Array(0)), V0);
    assert.equal(messageVersion(H("00ab")), V0);
    assert.equal(messageVersion(H("01010100")), V1);
    assert.equal(messageVersion(H("02010100")), null);
    assert.equal(messageVersion(H("ff")), null);
  });

  test("malformed bytes are refused as MalformedSpqrMessage (an InvalidMessage)", () => {
    const bad = [
      "", "00", "02010100", "01", "0100", "010101", "01000100",
      "0101808080801000", // index 2^32
      "01010107", // unknown payload type
      "0101010100", // Hdr without chunk
      "010101010000", // Hdr with a short chunk
      "01010101808004" + "00".repeat(32), // chunk index 65536
      "01" + "80".repeat(10) + "0001" + "00", // 11-byte varint
      "01ff", // truncated varint
    ];
    for (const raw of bad) {
      assert.throws(() => decodeMessage(H(raw)), (e: unknown) => e instanceof MalformedSpqrMessage
        && e instanceof InvalidMessage && e.kind === "invalid_message", raw);
      assert.throws(() => decodeFields(H(raw)), MalformedSpqrMessage, raw);
    }
  });

  test("every truncation of a chunk message is refused", () => {
    const raw = H(MESSAGES[0]!.pq_ratchet);
    for (let cut = 0; cut < raw.length; cut++) assert.throws(() => decodeMessage(raw.slice(0, cut)), MalformedSpqrMessage);
  });

  test("random bytes never crash", () => {
    const rnd = seeded(7);
    for (let i = 0; i < 3000; i++) {
      const raw = Uint8Array.from([1, ...rnd.bytes(rnd.int(0, 44))]);
      let msg;
      try {
        msg = decodeMessage(raw);
      } catch (e) {
        assert.ok(e instanceof MalformedSpqrMessage);
        continue;
      }
      assert.deepEqual(raw.slice(0, 2), encodeMessage(msg).slice(0, 2));
    }
  });

  test("varints", () => {
    assert.deepEqual(encodeVarint(0x012c), [0xac, 0x02]);
    assert.deepEqual(decodeVarint(H("ffac02ff"), 1), [0x012cn, 3]);
    for (const v of [0n, 1n, 127n, 128n, 2n ** 32n - 1n, 2n ** 63n, 2n ** 64n - 1n]) {
      const enc = Uint8Array.from(encodeVarint(v));
      assert.deepEqual(decodeVarint(enc, 0), [v, enc.length]);
    }
    // A 10th byte's bits beyond 64 are dropped, as in libsignal.
    assert.deepEqual(decodeVarint(H("ff".repeat(9) + "7f"), 0), [2n ** 64n - 1n, 10]);
    assert.throws(() => encodeVarint(2n ** 64n), RangeError);
    // Non-canonical two-byte varints read as the general decoder reads them.
    assert.deepEqual(decodeVarint(H("8000"), 0), [0n, 2]);
  });

  test("an epoch beyond 2^53 decodes exactly as a message and as Infinity in the fields", () => {
    const raw = encodeMessage(spqrMessage(2n ** 63n, 5, PayloadType.NONE));
    assert.equal(decodeMessage(raw).epoch, 2n ** 63n);
    assert.equal(decodeFields(raw).epoch, Infinity);
  });

  test("the message constructor rejects inconsistent values", () => {
    assert.throws(() => spqrMessage(1, 1, PayloadType.HDR), RangeError);
    assert.throws(() => spqrMessage(1, 1, PayloadType.NONE, chunk(0, new Uint8Array(32))), RangeError);
    assert.throws(() => spqrMessage(0, 1, PayloadType.NONE), RangeError);
    assert.throws(() => spqrMessage(1, 2 ** 32, PayloadType.NONE), RangeError);
    assert.throws(() => chunk(65536, new Uint8Array(32)), RangeError);
    assert.throws(() => chunk(0, new Uint8Array(31)), RangeError);
  });

  test("per-message fields agree with the message codec around every length step", () => {
    const steps = [0, 1, 127, 128, 129, 255, 300, 16383, 16384, 16385, 65535];
    const rnd = seeded(7);
    for (const index of [...steps, 2 ** 21 - 1, 2 ** 21, 2 ** 32 - 1]) {
      for (const ci of steps) {
        const epoch = [1, 2, 127, 128, 2 ** 40][rnd.int(0, 4)]!;
        const data = rnd.bytes(32);
        const raw = encodeFields(epoch, index, PayloadType.EK, ci, data);
        assert.deepEqual(raw, encodeMessage(spqrMessage(epoch, index, PayloadType.EK, chunk(ci, data))));
        assert.deepEqual(decodeFields(raw), { epoch, index, payload: PayloadType.EK, chunkIndex: ci, chunkData: data });
      }
    }
    for (const raw of [H("01018001"), Uint8Array.from([1, 1, 1, 2, 0x80, 1, ...new Uint8Array(31)])]) {
      assert.throws(() => decodeFields(raw), MalformedSpqrMessage);
    }
  });
});

describe("GF(2^16)", () => {
  test("model vectors", () => {
    const v = MODEL.gf16;
    assert.equal(parseInt(v.poly, 16), gf16.POLY);
    for (const [a, b, p] of v.mul) {
      assert.equal(gf16.mul(a, b), p);
      assert.equal(gf16.mul(b, a), p);
    }
    for (const [a, i] of v.inv) {
      assert.equal(gf16.inv(a), i);
      assert.equal(gf16.mul(a, i), 1);
    }
  });

  test("tables match shift-and-add", () => {
    const slow = (a: number, b: number): number => {
      let out = 0;
      while (b) {
        if (b & 1) out ^= a;
        a <<= 1;
        if (a & 0x10000) a ^= gf16.POLY;
        b >>= 1;
      }
      return out;
    };
    const rnd = seeded(3);
    for (let i = 0; i < 2000; i++) {
      const a = rnd.int(0, 65535);
      const b = rnd.int(0, 65535);
      assert.equal(gf16.mul(a, b), slow(a, b));
      if (b) assert.equal(gf16.mul(gf16.div(a, b), b), a);
    }
    assert.throws(() => gf16.inv(0), RangeError);
    assert.throws(() => gf16.div(1, 0), RangeError);
  });
});

describe("erasure code", () => {
  test("model chunks, and decoding from the last n", () => {
    for (const c of MODEL.erasure) {
      const message = H(c.message);
      for (const [index, data] of Object.entries<string>(c.chunks)) assert.equal(hx(chunkAt(message, Number(index))), data);
      let decoder = new Decoder(message.length);
      const parity = Object.keys(c.chunks).map(Number).sort((a, b) => b - a);
      for (const index of parity.slice(0, message.length / 32)) decoder = decoder.add(chunk(index, H(c.chunks[String(index)])));
      assert.deepEqual(decoder.decoded(), message);
    }
  });

  const VALUES: Record<string, string[]> = { hdr: ["hdr", "hdr_mac"], ek: ["ek"], ct1: ["ct1"], ct2: ["ct2", "ct_mac"] };
  for (const name of RUNS) {
    for (const epoch of loadSpqr(name).epochs) {
      test(`every recorded chunk re-encodes: ${name.slice(4, 9)} epoch ${epoch.epoch}`, () => {
        for (const [what, parts] of Object.entries(VALUES)) {
          const value = H(parts.map((p) => epoch[p]).join(""));
          const chunks = new Map(Object.entries<string>(epoch.wire_chunks[what]).map(([i, c]) => [Number(i), c]));
          assert.ok(chunks.size >= value.length / 32);
          for (const [index, data] of chunks) assert.equal(hx(chunkAt(value, index)), data, `${what} ${index}`);
          let encoder = new Encoder(value);
          const last = Math.max(...chunks.keys());
          for (let index = 0; index <= last; index++) {
            let c;
            [encoder, c] = encoder.next();
            assert.equal(c.index, index);
            if (chunks.has(index)) assert.equal(hx(c.data), chunks.get(index));
          }
          // Decoding from the recorded chunks, highest indices first.
          let decoder = new Decoder(value.length);
          for (const index of [...chunks.keys()].sort((a, b) => b - a)) decoder = decoder.add(chunk(index, H(chunks.get(index)!)));
          assert.deepEqual(decoder.decoded(), value);
        }
      });
    }
  }

  test("the decoder works from any n chunks", () => {
    const rnd = seeded(11);
    for (const length of [96, 160, 960, 1152]) {
      const value = rnd.bytes(length);
      const n = length / 32;
      for (let r = 0; r < 3; r++) {
        const pool = Array.from({ length: n + 30 }, (_, i) => i);
        const indices: number[] = [];
        while (indices.length < n) indices.push(pool.splice(rnd.int(0, pool.length - 1), 1)[0]!);
        let decoder = new Decoder(length);
        indices.forEach((index, i) => {
          decoder = decoder.add(chunk(index, chunkAt(value, index)));
          assert.equal(decoder.decoded() === null, i + 1 < n);
        });
        assert.deepEqual(decoder.decoded(), value);
      }
    }
  });

  test("the decoder keeps data chunks and drops surplus parity", () => {
    const value = Uint8Array.from({ length: 96 }, (_, i) => i);
    let decoder = new Decoder(96);
    for (const index of [5, 6, 7]) decoder = decoder.add(chunk(index, chunkAt(value, index)));
    assert.deepEqual(decoder.decoded(), value);
    const full = decoder;
    assert.equal(full.add(chunk(8, chunkAt(value, 8))), full);
    assert.equal(full.add(chunk(5, new Uint8Array(32))), full);
    const withData = full.add(chunk(1, chunkAt(value, 1)));
    assert.deepEqual([...withData.chunks.keys()].sort(), [1, 5, 6, 7]);
    assert.deepEqual(withData.decoded(), value);
    assert.deepEqual([...full.chunks.keys()].sort(), [5, 6, 7]);
  });

  test("duplicates do not count", () => {
    const value = Uint8Array.from({ length: 96 }, (_, i) => i);
    let decoder = new Decoder(96);
    for (let i = 0; i < 5; i++) decoder = decoder.add(chunk(4, chunkAt(value, 4)));
    assert.equal(decoder.decoded(), null);
  });

  test("the encoder wraps the wire index; sizes are checked", () => {
    const value = Uint8Array.from({ length: 96 }, (_, i) => i);
    const [encoder, c] = new Encoder(value, 65536 + 2).next();
    assert.equal(c.index, 2);
    assert.deepEqual(c.data, value.slice(64));
    assert.equal(encoder.nextIndex, 65539);
    assert.equal(new Encoder(value, 0xffffffff).next()[0].nextIndex, 0);
    for (const bad of [new Uint8Array(0), new Uint8Array(31)]) {
      assert.throws(() => new Encoder(bad), RangeError);
      assert.throws(() => new Decoder(bad.length), RangeError);
    }
  });

  test("Lagrange over all 5-subsets of 9 chunks", () => {
    const value = Uint8Array.from({ length: 160 }, (_, i) => i);
    const subsets = (k: number, from: number): number[][] => k === 0 ? [[]]
      : Array.from({ length: 9 - from }, (_, i) => from + i).flatMap((x) => subsets(k - 1, x + 1).map((s) => [x, ...s]));
    for (const subset of subsets(5, 0)) {
      let decoder = new Decoder(160);
      for (const index of subset) decoder = decoder.add(chunk(index, chunkAt(value, index)));
      assert.deepEqual(decoder.decoded(), value);
    }
  });

  test("parity chunks match textbook Lagrange symbol by symbol", () => {
    const reference = (value: Uint8Array, index: number): string => {
      const n = value.length / 32;
      const out: number[] = [];
      for (let p = 0; p < 16; p++) {
        let total = 0;
        for (let j = 0; j < n; j++) {
          let w = 1;
          for (let m = 0; m < n; m++) if (m !== j) w = gf16.mul(w, gf16.div(index ^ m, j ^ m));
          total ^= gf16.mul(w, (value[32 * j + 2 * p]! << 8) | value[32 * j + 2 * p + 1]!);
        }
        out.push(total >> 8, total & 0xff);
      }
      return hx(Uint8Array.from(out));
    };
    for (const length of [32, 64, 96, 160, 960, 1152]) {
      const rnd = seeded(length);
      const n = length / 32;
      const value = rnd.bytes(length);
      for (const index of [n, n + 1, 255, 256, 257, 4096, 65534, 65535, rnd.int(n, 65535)]) {
        assert.equal(hx(chunkAt(value, index)), reference(value, index), `${length} ${index}`);
      }
    }
  });
});
