/** Test helpers for SPQR: the recorded vectors (tests/protocol/spqr/vectors, as the Python tests read them). */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { Direction } from "../src/protocol/spqr/chain.js";
import { initialState, recv, send, type PqRatchetState } from "../src/protocol/spqr/ratchet.js";

const VECTORS = fileURLToPath(new URL("../../tests/protocol/spqr/vectors/", import.meta.url));
const cache = new Map<string, unknown>();

/** One SPQR vector file, parsed once. */
export function loadSpqr<T = any>(name: string): T {
  if (!cache.has(name)) cache.set(name, JSON.parse(readFileSync(VECTORS + name, "utf8")));
  return cache.get(name) as T;
}

export const RUNS = ["run-lockstep-0.103.0.json", "run-bursty-0.103.0.json"] as const;

export function H(text: string): Uint8Array {
  return Uint8Array.from(Buffer.from(text, "hex"));
}

export function hx(data: Uint8Array): string {
  return Buffer.from(data).toString("hex");
}

/** `data` with one bit flipped. */
export function flip(data: Uint8Array, bit = 0): Uint8Array {
  const out = Uint8Array.from(data);
  out[bit >> 3]! ^= 1 << (bit & 7);
  return out;
}

/** A small seeded generator (xorshift128+) for schedules and random inputs in tests. */
export function seeded(seed: number): { next(): number; int(lo: number, hi: number): number; bytes(n: number): Uint8Array } {
  let s0 = (seed * 0x9e3779b1) >>> 0 || 1;
  let s1 = (seed ^ 0x85ebca6b) >>> 0 || 2;
  const next = (): number => {
    let x = s0;
    const y = s1;
    s0 = y;
    x ^= x << 23;
    x ^= x >>> 17;
    x ^= y ^ (y >>> 26);
    s1 = x >>> 0;
    return ((s0 + s1) >>> 0) / 2 ** 32;
  };
  for (let i = 0; i < 20; i++) next();
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    bytes: (n) => Uint8Array.from({ length: n }, () => Math.floor(next() * 256)),
  };
}

export const AUTH = new Uint8Array(32).fill(0x29);

/** Two parties with a seeded schedule of bursts, reordering and loss. */
export class Conversation {
  readonly rnd: ReturnType<typeof seeded>;
  readonly state: Record<string, PqRatchetState>;
  readonly flight: Record<string, [Uint8Array, Uint8Array | null][]> = { A: [], B: [] };
  delivered = 0;

  constructor(seed: number, readonly loss = 0.05) {
    this.rnd = seeded(seed);
    this.state = { A: initialState(AUTH, Direction.A2B), B: initialState(AUTH, Direction.B2A) };
  }

  send(name: string): void {
    const sent = send(this.state[name]!, this.rnd.bytes);
    this.state[name] = sent.state;
    assert.ok(sent.key !== null);
    if (this.rnd.next() >= this.loss) this.flight[name === "A" ? "B" : "A"]!.push([sent.message, sent.key]);
  }

  deliver(name: string): void {
    const queue = this.flight[name]!;
    const [data, key] = queue.splice(this.rnd.int(0, Math.min(3, queue.length) - 1), 1)[0]!;
    const [state, got] = recv(this.state[name]!, data);
    assert.deepEqual(got, key);
    this.state[name] = state;
    this.delivered++;
  }

  run(steps: number, onStep?: () => void): void {
    for (let i = 0; i < steps; i++) {
      const name = this.rnd.next() < 0.5 ? "A" : "B";
      const other = name === "A" ? "B" : "A";
      for (let k = this.rnd.int(1, 6); k > 0; k--) {
        this.send(name);
        onStep?.();
      }
      while (this.flight[other]!.length && this.rnd.next() < 0.8) {
        this.deliver(other);
        onStep?.();
      }
    }
  }

  epochs(): number {
    return Math.min(...Object.values(this.state).map((s) => s.chain!.currentEpoch));
  }
}

