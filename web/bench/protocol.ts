/**
 * The TypeScript side of benchmarks/web_bench.py: the protocol benchmark's workloads
 * (W1-W4, see benchmarks/README.md) through web/src/protocol under Node, with the same
 * JSON interface as interop/libsignal-peer/bench.js. Prints one JSON object.
 *
 * Usage: node --import tsx bench/protocol.ts '{"w1": 10000, "size": 100, "reps": 1,
 *          "only": ["w1"], "serializing": false, "warmup": 1, "spqr": "off"}'
 * Every figure is the best of `reps` runs; W3 is the median of a run's set-ups. With
 * `warmup`, W1 and W2 first run once, shortened and untimed (JIT). `spqr` ("off", the
 * default, or "required") is passed to every session call, as protocol_bench.py's OFF/ON.
 */

import {
  IdentityKeyPair,
  InMemoryProtocolStore,
  ProtocolAddress,
  SerializingSessionStore,
  SpqrSettings,
  decrypt,
  encrypt,
  generatePreKeyBundle,
  processPreKeyBundle,
  systemRandom,
  type CiphertextMessage,
} from "../src/protocol/index.js";

const NOW = Math.floor(Date.now() / 1000);
let SPQR: SpqrSettings = SpqrSettings.OFF;

class Party {
  readonly address: ProtocolAddress;
  readonly store: InMemoryProtocolStore;

  constructor(name: string, registrationId: number, serializing: boolean) {
    this.address = new ProtocolAddress(name, 1);
    this.store = new InMemoryProtocolStore(IdentityKeyPair.generate(systemRandom), registrationId,
      serializing ? new SerializingSessionStore() : undefined);
  }

  bundle() {
    return generatePreKeyBundle(this.store, {
      deviceId: 1, signedPreKeyId: 1, kyberPreKeyId: 2, preKeyId: 3, rng: systemRandom,
      nowMs: NOW * 1000,
    });
  }

  send(to: Party, data: Uint8Array): Promise<CiphertextMessage> {
    return encrypt(this.store, to.address, data, { now: NOW, spqr: SPQR });
  }

  receive(from: Party, message: CiphertextMessage): Promise<Uint8Array> {
    return decrypt(this.store, from.address, message.messageType, message.serialized, { spqr: SPQR });
  }
}

async function pair(serializing: boolean): Promise<[Party, Party]> {
  const alice = new Party("alice", 1111, serializing);
  const bob = new Party("bob", 2222, serializing);
  await processPreKeyBundle(alice.store, bob.address, await bob.bundle(), { now: NOW, spqr: SPQR });
  await bob.receive(alice, await alice.send(bob, new TextEncoder().encode("hi")));
  await alice.receive(bob, await bob.send(alice, new TextEncoder().encode("hi")));
  return [alice, bob];
}

const micros = (): number => Number(process.hrtime.bigint()) / 1e3;

async function w1(n: number, size: number, serializing: boolean): Promise<number> {
  const [alice, bob] = await pair(serializing);
  const data = new Uint8Array(size).fill(7);
  const t0 = micros();
  const messages: CiphertextMessage[] = [];
  for (let i = 0; i < n; i++) messages.push(await alice.send(bob, data));
  for (const m of messages) await bob.receive(alice, m);
  return (micros() - t0) / n;
}

async function w2(n: number, size: number, serializing: boolean): Promise<number> {
  const [alice, bob] = await pair(serializing);
  const data = new Uint8Array(size).fill(7);
  const t0 = micros();
  for (let i = 0; i < n; i++) {
    const [from, to] = i % 2 ? [bob, alice] : [alice, bob];
    await to.receive(from, await from.send(to, data));
  }
  return (micros() - t0) / n;
}

async function w3(n: number): Promise<number> {
  const times: number[] = [];
  for (let i = -2; i < n; i++) { // two untimed set-ups first: JIT warm-up
    const t0 = micros();
    const alice = new Party("alice", 1111, false);
    const bob = new Party("bob", 2222, false);
    await processPreKeyBundle(alice.store, bob.address, await bob.bundle(), { now: NOW, spqr: SPQR });
    await bob.receive(alice, await alice.send(bob, new TextEncoder().encode("first message")));
    if (i >= 0) times.push((micros() - t0) / 1000);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

async function w4(n: number): Promise<number> {
  const [alice, bob] = await pair(false);
  const data = new Uint8Array(64 * 1024).fill(7);
  const t0 = micros();
  const messages: CiphertextMessage[] = [];
  for (let i = 0; i < n; i++) messages.push(await alice.send(bob, data));
  for (const m of messages) await bob.receive(alice, m);
  return (n * data.length) / ((micros() - t0) / 1e6) / 1e6; // MB/s
}

interface Params {
  w1?: number; w2?: number; w3?: number; w4?: number; size?: number; reps?: number;
  only?: string[]; serializing?: boolean; warmup?: number; spqr?: "off" | "required";
}

async function main(): Promise<void> {
  const p = JSON.parse(process.argv[2] ?? "{}") as Params;
  const reps = p.reps ?? 3;
  const size = p.size ?? 100;
  const serializing = p.serializing ?? false;
  SPQR = p.spqr === "required" ? SpqrSettings.REQUIRED : SpqrSettings.OFF;
  const only = new Set(p.only ?? ["w1", "w2", "w3", "w4"]);
  const best = async (f: () => Promise<number>, pick = Math.min): Promise<number> => {
    const runs: number[] = [];
    for (let i = 0; i < reps; i++) runs.push(await f());
    return pick(...runs);
  };
  const out: Record<string, number> = {};
  if (only.has("w1")) {
    const n = p.w1 ?? 10_000;
    if (p.warmup) await w1(Math.max(1, Math.floor(n / 5)), size, serializing);
    out.w1_us = await best(() => w1(n, size, serializing));
  }
  if (only.has("w2")) {
    const n = p.w2 ?? 2_000;
    if (p.warmup) await w2(Math.max(2, Math.floor(n / 5)), size, serializing);
    out.w2_us = await best(() => w2(n, size, serializing));
  }
  if (only.has("w3")) out.w3_ms = await best(() => w3(p.w3 ?? 30));
  if (only.has("w4")) out.w4_mbs = await best(() => w4(p.w4 ?? 500), Math.max);
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

await main();
