/** Hostile SPQR bytes at many points of a conversation: every failure is a ProtocolError. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { InvalidMessage, ProtocolError } from "../src/protocol/errors.js";
import { ALL_SPQR_ERRORS, recv, serialize, type PqRatchetState } from "../src/protocol/spqr/index.js";
import { PayloadType, decodeMessage, encodeMessage, hasChunk, spqrMessage } from "../src/protocol/spqr/wire.js";
import { Conversation, seeded } from "./spqr_helpers.js";

/** States of the receiving party at many points of a conversation, and the messages seen. */
function snapshots(): [PqRatchetState[], Uint8Array[]] {
  const c = new Conversation(21, 0);
  const states: PqRatchetState[] = [];
  const messages: Uint8Array[] = [];
  for (let i = 0; i < 200; i++) {
    const name = c.rnd.next() < 0.5 ? "A" : "B";
    const other = name === "A" ? "B" : "A";
    c.send(name);
    messages.push(c.flight[other]!.at(-1)![0]);
    c.deliver(other);
    states.push(c.state[other]!);
  }
  return [states.filter((_, i) => i % 7 === 0), messages];
}

function forged(rnd: ReturnType<typeof seeded>, epoch: bigint | number, index: number): Uint8Array {
  const payload = rnd.int(0, 6) as PayloadType;
  const chunk = hasChunk(payload) ? { index: rnd.int(0, 65535), data: rnd.bytes(32) } : undefined;
  return encodeMessage(spqrMessage(epoch, index, payload, chunk));
}

function mutations(rnd: ReturnType<typeof seeded>, data: Uint8Array): Uint8Array[] {
  const flipped = Uint8Array.from(data);
  flipped[rnd.int(0, data.length - 1)]! ^= 1 << rnd.int(0, 7);
  const msg = decodeMessage(data);
  return [
    flipped,
    data.slice(0, rnd.int(0, data.length - 1)),
    Uint8Array.from([...data, 0]),
    Uint8Array.from([1, ...rnd.bytes(rnd.int(0, 39))]),
    forged(rnd, msg.epoch, msg.index), // same key, another payload
    forged(rnd, [1, 2, 3, 2 ** 63][rnd.int(0, 3)]!, rnd.int(0, 2 ** 32 - 1)),
  ];
}

test("mutated messages raise only protocol errors, and recv never changes the state it was given", () => {
  const rnd = seeded(5);
  const [states, messages] = snapshots();
  const outcomes = { ok: 0, refused: 0 };
  for (const state of states) {
    const stored = serialize(state);
    for (let n = 0; n < 12; n++) {
      for (const bad of mutations(rnd, messages[rnd.int(0, messages.length - 1)]!)) {
        try {
          recv(state, bad);
          outcomes.ok++;
        } catch (e) {
          assert.ok(e instanceof ProtocolError, String(e));
          outcomes.refused++;
        }
      }
    }
    // recv is tentative (the caller keeps its result only once the message verified).
    assert.deepEqual(serialize(state), stored);
  }
  assert.ok(outcomes.ok > 50 && outcomes.refused > 50, JSON.stringify(outcomes));
});

test("every SPQR error is an InvalidMessage of kind invalid_message", () => {
  assert.equal(ALL_SPQR_ERRORS.length, 11);
  for (const E of ALL_SPQR_ERRORS) {
    const e = new E("x");
    assert.ok(e instanceof InvalidMessage);
    assert.equal(e.kind, "invalid_message");
    assert.equal(e.name, E.name);
  }
});
