/**
 * The stored form of SPQR states: every braid state round-trips and continues the same,
 * corrupt bytes fail as InvalidSpqrState and nothing else, and the bytes are Python's:
 * states the Python client stores load here and go on exactly as in Python, and the
 * other way round (through spqr_cross.py and the repository's venv).
 */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { ChainParams, Direction } from "../src/protocol/spqr/chain.js";
import { InvalidSpqrState, SpqrError, SpqrVersionMismatch } from "../src/protocol/spqr/errors.js";
import { V0_STATE, initialState, isNegotiating, recv, send, type PqRatchetState } from "../src/protocol/spqr/ratchet.js";
import { STORAGE_FORMAT, deserialize, serialize } from "../src/protocol/spqr/storage.js";
import { V0 } from "../src/protocol/spqr/wire.js";
import { AUTH, Conversation, H, hx, seeded } from "./spqr_helpers.js";

/** States of both parties after every step of a lossy, reordered conversation. */
function states(): PqRatchetState[] {
  const c = new Conversation(3); // a seed whose schedule reaches all eleven states
  const out: PqRatchetState[] = [c.state.A!, c.state.B!];
  c.run(150, () => out.push(c.state.A!, c.state.B!));
  return out;
}

const STATES = states();

describe("round trips", () => {
  test("every braid state is covered", () => {
    assert.deepEqual(new Set(STATES.map((s) => s.braid!.kind)), new Set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]));
    assert.deepEqual(new Set(STATES.map(isNegotiating)), new Set([true, false]));
    assert.ok(Math.max(...STATES.map((s) => s.chain?.currentEpoch ?? 0)) >= 2);
  });

  test("the round trip is exact and stable", () => {
    for (const state of STATES) {
      const data = serialize(state);
      assert.equal(data[0], STORAGE_FORMAT);
      const loaded = deserialize(data);
      assert.deepEqual(loaded, state);
      assert.deepEqual(serialize(loaded), data);
    }
  });

  test("a loaded state continues exactly like the original", () => {
    const c = new Conversation(8, 0);
    for (let step = 0; step < 400; step++) {
      const name = c.rnd.next() < 0.5 ? "A" : "B";
      if (step % 3 === 0) for (const k of ["A", "B"]) c.state[k] = deserialize(serialize(c.state[k]!));
      c.send(name);
      c.deliver(name === "A" ? "B" : "A"); // asserts the receiver's key equals the sender's
    }
    assert.ok(c.epochs() >= 2);
  });

  test("V0 is empty and empty is V0", () => {
    assert.equal(serialize(V0_STATE).length, 0);
    assert.equal(deserialize(new Uint8Array(0)), V0_STATE);
  });

  test("negotiation and limits survive", () => {
    const params = new ChainParams(2 ** 32 - 1, 7);
    const loaded = deserialize(serialize(initialState(AUTH, Direction.B2A, { minVersion: V0, params })));
    assert.ok(loaded.negotiation !== null && loaded.negotiation.params.equals(params));
    assert.equal(loaded.negotiation.minVersion, V0);
    assert.ok(loaded.braid !== null);
  });
});

describe("corrupt records", () => {
  test("every truncation fails cleanly", () => {
    for (const state of STATES.filter((_, i) => i % 40 === 0)) {
      const data = serialize(state);
      const cuts = [...Array(Math.min(data.length, 320)).keys()];
      for (let cut = 320; cut < data.length; cut += 13) cuts.push(cut);
      for (const cut of cuts) {
        assert.throws(() => deserialize(cut ? data.slice(0, cut) : H("01")), InvalidSpqrState, String(cut));
      }
      assert.throws(() => deserialize(Uint8Array.from([...data, 0])), InvalidSpqrState);
    }
  });

  test("corrupt bytes give InvalidSpqrState or a usable state", () => {
    const rnd = seeded(3);
    const outcomes = { refused: 0, loaded: 0 };
    for (const state of STATES.filter((_, i) => i % 20 === 0)) {
      const data = serialize(state);
      for (let n = 0; n < 20; n++) {
        const bad = Uint8Array.from(data);
        for (let k = rnd.int(1, 3); k > 0; k--) {
          const pos = rnd.next() < 0.7 ? rnd.int(0, Math.min(bad.length, 200) - 1) : rnd.int(0, bad.length - 1);
          bad[pos] = rnd.int(0, 255);
        }
        let loaded: PqRatchetState;
        try {
          loaded = deserialize(bad);
        } catch (e) {
          assert.ok(e instanceof InvalidSpqrState, String(e));
          outcomes.refused++;
          continue;
        }
        outcomes.loaded++;
        // A state that loads is well-formed: using it raises protocol errors at most.
        try {
          send(loaded, rnd.bytes);
        } catch (e) {
          assert.ok(e instanceof SpqrError, String(e));
        }
      }
    }
    assert.ok(outcomes.refused > 50 && outcomes.loaded > 50, JSON.stringify(outcomes));
  });

  test("bad headers are refused", () => {
    for (const data of ["0201", "0100", "0101", "0109", "0103" + "00".repeat(200)]) {
      assert.throws(() => deserialize(H(data)), InvalidSpqrState, data);
    }
  });

  test("a loaded state still refuses what the original refuses", () => {
    const state = STATES.find((s) => s.braid!.kind === 6 && !isNegotiating(s))!;
    const loaded = deserialize(serialize(state));
    assert.throws(() => deserialize(serialize(loaded).slice(0, -1)), InvalidSpqrState);
    for (const s of [state, loaded]) assert.throws(() => recv(s, new Uint8Array(0)), SpqrVersionMismatch);
  });
});

// -- Python <-> TypeScript ------------------------------------------------------------------

/** The repository's venv (made by `make test` before the web tests), or CIPHERPOST_PYTHON. */
const PYTHON = process.env.CIPHERPOST_PYTHON ?? fileURLToPath(new URL("../../.venv/bin/python", import.meta.url));
const SCRIPT = fileURLToPath(new URL("./spqr_cross.py", import.meta.url));

interface Rec {
  op: "send" | "recv";
  state: string;
  draws?: string[];
  data?: string;
  message?: string;
  key: string;
  after: string;
}

function python(args: string[], input?: string): any {
  const out = execFileSync(PYTHON, [SCRIPT, ...args], { input, maxBuffer: 1 << 28, timeout: 120_000 });
  return JSON.parse(out.toString("utf8"));
}

/** Repeat one record's step here; the message, key and stored state after must be the recorded ones. */
function replay(rec: Rec): void {
  const stored = H(rec.state);
  const state = deserialize(stored);
  assert.equal(hx(serialize(state)), rec.state);
  if (rec.op === "send") {
    const draws = rec.draws!.map(H);
    const sent = send(state, (n) => {
      const out = draws.shift()!;
      assert.equal(out.length, n);
      return out;
    });
    assert.deepEqual([hx(sent.message), hx(sent.key ?? new Uint8Array(0)), hx(serialize(sent.state))],
      [rec.message, rec.key, rec.after]);
  } else {
    const [after, key] = recv(state, H(rec.data!));
    assert.deepEqual([hx(key ?? new Uint8Array(0)), hx(serialize(after))], [rec.key, rec.after]);
  }
}

/** Records of a TypeScript conversation, in the form spqr_cross.py reads. */
function produce(seed: number, steps: number): Rec[] {
  const rnd = seeded(seed);
  const state: Record<string, PqRatchetState> = { A: initialState(AUTH, Direction.A2B), B: initialState(AUTH, Direction.B2A) };
  const flight: Record<string, Uint8Array[]> = { A: [], B: [] };
  const records: Rec[] = [];
  const seen = new Map<string, number>();
  let total = 0;
  const keep = (rec: Rec, before: PqRatchetState): void => {
    const kind = `${rec.op}${before.braid!.kind}`;
    seen.set(kind, (seen.get(kind) ?? 0) + 1);
    if (seen.get(kind)! <= 3 || ++total % 8 === 0) records.push(rec);
  };
  for (let i = 0; i < steps; i++) {
    const name = rnd.next() < 0.5 ? "A" : "B";
    const other = name === "A" ? "B" : "A";
    for (let k = rnd.int(1, 4); k > 0; k--) {
      const draws: Uint8Array[] = [];
      const before = state[name]!;
      const sent = send(before, (n) => {
        draws.push(rnd.bytes(n));
        return draws.at(-1)!;
      });
      state[name] = sent.state;
      keep({ op: "send", state: hx(serialize(before)), draws: draws.map(hx), message: hx(sent.message),
        key: hx(sent.key ?? new Uint8Array(0)), after: hx(serialize(sent.state)) }, before);
      if (rnd.next() >= 0.05) flight[other]!.push(sent.message);
    }
    while (flight[other]!.length && rnd.next() < 0.8) {
      const data = flight[other]!.splice(rnd.int(0, Math.min(3, flight[other]!.length) - 1), 1)[0]!;
      const before = state[other]!;
      const [after, key] = recv(before, data);
      state[other] = after;
      keep({ op: "recv", state: hx(serialize(before)), data: hx(data), key: hx(key ?? new Uint8Array(0)),
        after: hx(serialize(after)) }, before);
    }
  }
  return records;
}

const kindsOf = (records: Rec[]): Set<number> => new Set(records.map((r) => deserialize(H(r.state)).braid!.kind));

describe("Python and TypeScript read each other's states", { skip: existsSync(PYTHON) ? false : `no ${PYTHON}` }, () => {
  test("states Python stored load here and continue exactly as in Python", () => {
    const records: Rec[] = python(["produce", "1", "150"]);
    assert.ok(records.length > 100, String(records.length));
    assert.deepEqual(kindsOf(records), new Set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]));
    assert.ok(records.some((r) => r.op === "recv" && r.key !== "" && deserialize(H(r.after)).chain!.currentEpoch >= 2));
    for (const rec of records) replay(rec);
  });

  test("states TypeScript stored load in Python and continue exactly as here", () => {
    const records = produce(4, 150);
    assert.ok(records.length > 100, String(records.length));
    assert.deepEqual(kindsOf(records), new Set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]));
    for (const rec of records.slice(0, 5)) replay(rec); // the records are right here first
    const verdict = python(["consume"], JSON.stringify(records));
    assert.deepEqual(verdict, { checked: records.length, failures: [] });
  });
});
