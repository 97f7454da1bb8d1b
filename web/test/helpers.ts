/** Test helpers: the shared vectors, a seeded generator identical to Python's, parties. */

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { ProtocolAddress } from "../src/protocol/address.js";
import { generatePreKeyBundle } from "../src/protocol/bundles.js";
import type { Random } from "../src/protocol/bytes.js";
import { KYBER1024 } from "../src/protocol/kem.js";
import { IdentityKeyPair } from "../src/protocol/keys.js";
import type { PreKeyBundle } from "../src/protocol/prekeys.js";
import { InMemoryProtocolStore, type SessionStore } from "../src/protocol/stores.js";

const VECTORS = fileURLToPath(new URL("../../vectors/", import.meta.url));

/** One file of the repository's shared `vectors/` (the same files the Python tests read). */
export function loadVectors<T = any>(name: string): T {
  return JSON.parse(readFileSync(VECTORS + name, "utf8")) as T;
}

export function hex(text: string): Uint8Array {
  return Uint8Array.from(Buffer.from(text, "hex"));
}

export function toHex(data: Uint8Array): string {
  return Buffer.from(data).toString("hex");
}

export function b64(data: Uint8Array): string {
  return Buffer.from(data).toString("base64");
}

export function unb64(text: string): Uint8Array {
  return Uint8Array.from(Buffer.from(text, "base64"));
}

export function utf8(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

/**
 * `random.Random(seed).randbytes` of CPython, bit for bit (MT19937 seeded by
 * init_by_array; randbytes = getrandbits(8n) little-endian). A deterministic test double
 * so that the TypeScript core replays the vectors the Python tools recorded; never a
 * source of keys outside tests.
 */
export function pythonRandom(seed: number): Random {
  const N = 624;
  const mt = new Uint32Array(N);
  let index = N;
  const initGenrand = (s: number): void => {
    mt[0] = s >>> 0;
    for (let i = 1; i < N; i++) {
      const prev = mt[i - 1]!;
      mt[i] = (Math.imul(1812433253, prev ^ (prev >>> 30)) + i) >>> 0;
    }
  };
  const key: number[] = [];
  let rest = Math.abs(seed);
  do {
    key.push(rest % 2 ** 32);
    rest = Math.floor(rest / 2 ** 32);
  } while (rest > 0);
  initGenrand(19650218);
  let i = 1;
  let j = 0;
  for (let k = Math.max(N, key.length); k > 0; k--) {
    const prev = mt[i - 1]!;
    mt[i] = ((mt[i]! ^ Math.imul(prev ^ (prev >>> 30), 1664525)) + key[j]! + j) >>> 0;
    i++;
    j++;
    if (i >= N) {
      mt[0] = mt[N - 1]!;
      i = 1;
    }
    if (j >= key.length) j = 0;
  }
  for (let k = N - 1; k > 0; k--) {
    const prev = mt[i - 1]!;
    mt[i] = ((mt[i]! ^ Math.imul(prev ^ (prev >>> 30), 1566083941)) - i) >>> 0;
    i++;
    if (i >= N) {
      mt[0] = mt[N - 1]!;
      i = 1;
    }
  }
  mt[0] = 0x80000000;

  const next = (): number => {
    if (index >= N) {
      for (let kk = 0; kk < N; kk++) {
        const y = (mt[kk]! & 0x80000000) | (mt[(kk + 1) % N]! & 0x7fffffff);
        mt[kk] = mt[(kk + 397) % N]! ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      index = 0;
    }
    let y = mt[index++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  };

  return (n: number): Uint8Array => {
    const out = new Uint8Array(n);
    let pos = 0;
    while (n - pos >= 4) {
      const word = next();
      out[pos++] = word & 0xff;
      out[pos++] = (word >>> 8) & 0xff;
      out[pos++] = (word >>> 16) & 0xff;
      out[pos++] = word >>> 24;
    }
    const left = n - pos;
    if (left > 0) {
      let word = next() >>> (32 - 8 * left);
      for (let b = 0; b < left; b++) {
        out[pos++] = word & 0xff;
        word >>>= 8;
      }
    }
    return out;
  };
}

export const NOW = 1_790_000_000; // seconds

/** A protocol party for unit tests. */
export class Party {
  private nextId = 1;

  constructor(readonly address: ProtocolAddress, readonly store: InMemoryProtocolStore, readonly rng: Random) {}

  static create(name: string, rng: Random, registrationId = 1, sessions?: SessionStore): Party {
    return new Party(new ProtocolAddress(name, 1),
      new InMemoryProtocolStore(IdentityKeyPair.generate(rng), registrationId, sessions), rng);
  }

  bundle(options: { oneTime?: boolean; kem?: number; lastResort?: boolean } = {}): Promise<PreKeyBundle> {
    const base = this.nextId;
    this.nextId += 10;
    return generatePreKeyBundle(this.store, {
      deviceId: this.address.deviceId, signedPreKeyId: base, kyberPreKeyId: base + 1,
      preKeyId: options.oneTime ?? true ? base + 2 : undefined, rng: this.rng, nowMs: NOW * 1000,
      kemType: options.kem ?? KYBER1024, kyberLastResort: options.lastResort ?? false,
    });
  }
}
