/**
 * The V1 braid (spqr-digest §4) driven with the recorded inputs of libsignal 0.103.0 runs:
 * both parties run in TypeScript with libsignal's key pairs and encapsulation messages
 * injected; every SPQR message they emit must equal the recorded one byte for byte, and
 * every key the recorded SPQR key. The braid is glued to the chains here as spqr-digest
 * §5.2 says (minimum version V1); ratchet.ts does the same with negotiation on top.
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { concat, type Random } from "../src/protocol/bytes.js";
import { messageKeys, messageKeySeed } from "../src/protocol/ratchet.js";
import * as braid from "../src/protocol/spqr/braid.js";
import { Chain, Direction } from "../src/protocol/spqr/chain.js";
import { chunkAt } from "../src/protocol/spqr/erasure.js";
import { SpqrAuthenticationFailed, SpqrEpochOutOfRange, SpqrErroneousData } from "../src/protocol/spqr/errors.js";
import * as incremental from "../src/protocol/spqr/incremental.js";
import { PayloadType, decodeFields, encodeFields, type Chunk } from "../src/protocol/spqr/wire.js";
import { H, flip, hx, loadSpqr, seeded } from "./spqr_helpers.js";

const VALUE_OF: Record<number, string> = { 1: "hdr", 2: "ek", 3: "ek", 5: "ct1", 6: "ct2" };

/** One side: braid and chain, plus the recorded key pairs and encapsulation messages. */
class Party {
  constructor(
    readonly name: string,
    public state: braid.BraidState,
    public chain: Chain,
    readonly keyPairs: incremental.KeyPair[],
    readonly encapsMs: Uint8Array[],
    readonly fallback: (n: number) => Uint8Array,
  ) {}

  fork(): Party {
    return new Party(this.name, this.state, this.chain, [...this.keyPairs], [...this.encapsMs], this.fallback);
  }

  rng: Random = (n) => (n === 32 && this.encapsMs.length ? this.encapsMs.shift()! : this.fallback(n));
  keygen = (rng: Random): incremental.KeyPair => this.keyPairs.shift() ?? incremental.generate(rng);

  send(): { message: Uint8Array; key: Uint8Array } {
    const sent = braid.send(this.state, this.rng, this.keygen);
    this.state = sent.state;
    if (sent.secret !== null) this.chain = this.chain.addEpoch(sent.epoch, sent.secret);
    const [chain, index, key] = this.chain.sendKey(sent.epoch - 1);
    this.chain = chain;
    return { message: encodeFields(sent.epoch, index, sent.payload, sent.chunk?.index ?? 0, sent.chunk?.data ?? null), key };
  }

  recv(data: Uint8Array): Uint8Array {
    const f = decodeFields(data);
    const chunk: Chunk | null = f.chunkData === null ? null : { index: f.chunkIndex, data: f.chunkData };
    const [state, secret] = braid.recv(this.state, f.epoch, f.payload, chunk);
    let chain = this.chain;
    if (secret !== null) chain = chain.addEpoch(f.epoch, secret);
    const [after, key] = chain.recvKey(f.epoch - 1, f.index);
    this.state = state;
    this.chain = after;
    return key;
  }
}

function parties(run: any): Record<string, Party> {
  const authKey = H(run.spqr_auth_key);
  const out: Record<string, Party> = {};
  for (const [name, direction] of [["A", Direction.A2B], ["B", Direction.B2A]] as const) {
    const mine = run.epochs.filter((e: any) => e.ek_side === name);
    const theirs = run.epochs.filter((e: any) => e.ek_side !== name);
    const rnd = seeded(name === "A" ? 99 : 98);
    out[name] = new Party(name, name === "A" ? braid.initialA(authKey) : braid.initialB(authKey),
      Chain.start(authKey, direction),
      mine.map((e: any) => new incremental.KeyPair(H(e.hdr), H(e.ek), H(e.dk))),
      theirs.map((e: any) => H(e.encaps_m)), rnd.bytes);
  }
  return out;
}

function checkChunk(run: any, message: Uint8Array): void {
  const f = decodeFields(message);
  if (f.chunkData !== null && f.epoch <= run.epochs.length) {
    const recorded = run.epochs[f.epoch - 1].wire_chunks[VALUE_OF[f.payload]!];
    assert.equal(recorded[String(f.chunkIndex)], hx(f.chunkData));
  }
}

describe("recorded runs", () => {
  test("lockstep run replays byte for byte", () => {
    const run = loadSpqr("run-lockstep-0.103.0.json");
    const party = parties(run);
    const recorded = new Map<number, any>(run.messages.map((m: any) => [m.id, m]));
    const firstSeen = new Map<number, [string, Uint8Array]>();
    for (let i = 0; i < 200; i++) {
      const [s, r] = i % 2 === 0 ? ["A", "B"] : ["B", "A"];
      const sent = party[s]!.send();
      checkChunk(run, sent.message);
      assert.deepEqual(party[r]!.recv(sent.message), sent.key);
      const m = recorded.get(i);
      if (m !== undefined) {
        assert.equal(m.from, s);
        assert.equal(hx(sent.message), m.pq_ratchet, `message ${i}`);
        assert.equal(hx(sent.key), m.spqr_key);
        // The SPQR key is the HKDF salt of the Double Ratchet message keys (§7).
        const keys = messageKeys(messageKeySeed(H(m.dr_chain_key)), sent.key);
        assert.deepEqual([hx(keys.cipherKey), hx(keys.macKey), hx(keys.iv)], [m.cipher_key, m.mac_key, m.iv]);
      }
      for (const p of Object.values(party)) {
        const e = p.chain.currentEpoch;
        if (e > 0 && !firstSeen.has(e)) firstSeen.set(e, [p.name, p.chain.nextRoot]);
      }
    }
    for (const e of run.epochs) {
      const [first, nextRoot] = firstSeen.get(e.epoch)!;
      assert.notEqual(first, e.ek_side); // the CT sender knows the epoch secret first
      assert.equal(hx(nextRoot), e.chain_next_root_after);
    }
    // After the recorded epochs, a third (with fresh keys) was under way.
    assert.ok(firstSeen.has(3) && firstSeen.get(3)![0] === "B");
  });

  test("lockstep epoch 1 transitions as in spqr-digest §6.2", () => {
    const types = loadSpqr("run-lockstep-0.103.0.json").messages.map((m: any) => `${m.pq_decoded.epoch}${m.pq_decoded.type}`);
    assert.deepEqual([types[0], types[1], types[5], types[6], types[85], types[86], types[87]],
      ["1Hdr", "1None", "1Ct1", "1Ek", "1Ct2", "2None", "2Hdr"]);
  });

  test("bursty run replays with inferred delivery", () => {
    // The run records what each side sent, not when the other received it: each side's
    // next message is reproduced by delivering the peer's pending messages, oldest first,
    // only as far as needed to emit exactly the recorded bytes.
    const run = loadSpqr("run-bursty-0.103.0.json");
    const party = parties(run);
    const pending: Record<string, [Uint8Array, Uint8Array][]> = { A: [], B: [] };
    let delivered = 0;
    for (const m of run.messages) {
      const other = m.from === "A" ? "B" : "A";
      let trial: Party;
      let sent: { message: Uint8Array; key: Uint8Array };
      for (;;) {
        trial = party[m.from]!.fork();
        sent = trial.send();
        if (hx(sent.message) === m.pq_ratchet) break;
        assert.ok(pending[m.from]!.length, `message ${m.id} cannot be reproduced`);
        const [data, key] = pending[m.from]!.shift()!;
        assert.deepEqual(party[m.from]!.recv(data), key);
        delivered++;
      }
      party[m.from] = trial;
      assert.equal(hx(sent.key), m.spqr_key);
      checkChunk(run, sent.message);
      pending[other]!.push([sent.message, sent.key]);
    }
    for (const [name, queue] of Object.entries(pending)) {
      for (const [data, key] of queue.reverse()) assert.deepEqual(party[name]!.recv(data), key); // newest first
    }
    assert.ok(delivered > 30, String(delivered));
  });
});

/** Two fresh parties in lockstep until `until` holds for the pair; returns them. */
function lockstep(seed: number, until: (a: Party, b: Party, next: Uint8Array, from: string) => boolean): [Party, Party, Uint8Array, string] {
  const authKey = new Uint8Array(32).fill(0x29);
  const rnd = seeded(seed);
  const a = new Party("A", braid.initialA(authKey), Chain.start(authKey, Direction.A2B), [], [], rnd.bytes);
  const b = new Party("B", braid.initialB(authKey), Chain.start(authKey, Direction.B2A), [], [], rnd.bytes);
  for (let i = 0; i < 400; i++) {
    const [s, r] = i % 2 === 0 ? [a, b] : [b, a];
    const { message } = s.send();
    if (until(a, b, message, s.name)) return [a, b, message, s.name];
    r.recv(message);
  }
  throw new Error("condition never reached");
}

function tamper(data: Uint8Array): Chunk {
  const f = decodeFields(data);
  return { index: f.chunkIndex, data: flip(f.chunkData!, 5) };
}

describe("state machine", () => {
  test("a tampered last ct2 chunk fails the ciphertext MAC; the real one completes the epoch", () => {
    const [a, , message] = lockstep(5, (a, _b, next, from) => from === "B" && a.state.kind === 5
      && a.state.receivingCt2.chunks.size === 4 && decodeFields(next).payload === PayloadType.CT2);
    const f = decodeFields(message);
    assert.throws(() => braid.recv(a.state, f.epoch, f.payload, tamper(message)), SpqrAuthenticationFailed);
    const [state, secret] = braid.recv(a.state, f.epoch, f.payload, { index: f.chunkIndex, data: f.chunkData! });
    assert.equal(state.kind, 6);
    assert.equal(state.epoch, 2);
    assert.ok(secret !== null);
  });

  test("an ek that does not match the header is refused", () => {
    const [, b, message] = lockstep(6, (_a, b, next, from) => from === "A" && (b.state.kind === 8 || b.state.kind === 10)
      && b.state.receivingEk.chunks.size === 35 && [2, 3].includes(decodeFields(next).payload));
    const f = decodeFields(message);
    assert.throws(() => braid.recv(b.state, f.epoch, f.payload, tamper(message)), SpqrErroneousData);
    const [state] = braid.recv(b.state, f.epoch, f.payload, { index: f.chunkIndex, data: f.chunkData! });
    assert.ok(state.kind === 11 || state.kind === 9);
  });

  test("a bad header MAC is refused on the completing chunk", () => {
    const authKey = new Uint8Array(32).fill(0x29);
    const keys = incremental.generate(seeded(1).bytes);
    const value = concat(keys.header, flip(braid.initialA(authKey).auth.macHeader(1, keys.header), 1));
    let bob: braid.BraidState = braid.initialB(authKey);
    for (const index of [0, 1]) [bob] = braid.recv(bob, 1, PayloadType.HDR, { index, data: chunkAt(value, index) });
    assert.throws(() => braid.recv(bob, 1, PayloadType.HDR, { index: 2, data: chunkAt(value, 2) }), SpqrAuthenticationFailed);
    assert.equal(bob.kind, 6);
    assert.equal(braid.send(bob, seeded(2).bytes).payload, PayloadType.NONE);
  });

  test("epochs ahead are refused, epochs behind ignored; only Ct2Sampled moves on", () => {
    const authKey = new Uint8Array(32).fill(0x29);
    const bob = braid.initialB(authKey);
    assert.throws(() => braid.recv(bob, 2, PayloadType.NONE, null), SpqrEpochOutOfRange);
    assert.throws(() => braid.recv(bob, Infinity, PayloadType.NONE, null), SpqrEpochOutOfRange);
    const [, b] = lockstep(7, (_a, b) => b.state.kind === 11);
    assert.deepEqual(braid.recv(b.state, 1, PayloadType.NONE, null), [b.state, null]);
    const [next] = braid.recv(b.state, 2, PayloadType.NONE, null);
    assert.deepEqual([next.kind, next.epoch, next.auth], [1, 2, b.state.auth]);
    assert.throws(() => braid.recv(b.state, 3, PayloadType.NONE, null), SpqrEpochOutOfRange);
  });

  test("the payload shortcut covers exactly what each state takes in, and every state is reached", () => {
    const authKey = new Uint8Array(32).fill(0x29);
    const rnd = seeded(11);
    const a = new Party("A", braid.initialA(authKey), Chain.start(authKey, Direction.A2B), [], [], rnd.bytes);
    const b = new Party("B", braid.initialB(authKey), Chain.start(authKey, Direction.B2A), [], [], rnd.bytes);
    const seen = new Set<number>();
    const check = (state: braid.BraidState): void => {
      seen.add(state.kind);
      for (let payload = 0; payload <= 6; payload++) {
        if (braid.CONSUMES[state.kind].includes(payload as PayloadType)) continue;
        const chunk = [1, 2, 3, 5, 6].includes(payload) ? { index: 0, data: new Uint8Array(32) } : null;
        assert.deepEqual(braid.consume(state, payload as PayloadType, chunk), [state, null]);
      }
    };
    for (let step = 0; step < 300; step++) {
      const [s, r] = step % 2 === 0 ? [a, b] : [b, a];
      r.recv(s.send().message);
      check(a.state);
      check(b.state);
    }
    assert.ok(seen.size >= 9, [...seen].join());
    assert.deepEqual(Object.keys(braid.CONSUMES).map(Number), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  });

  test("descriptions hold no keys", () => {
    const authKey = new Uint8Array(32).fill(0x29);
    const state = braid.initialA(authKey);
    const text = braid.describe(state) + JSON.stringify(state);
    assert.ok(!text.includes(hx(state.auth.rootKey).slice(0, 8)) && !text.includes(hx(state.auth.macKey).slice(0, 8)));
  });
});
