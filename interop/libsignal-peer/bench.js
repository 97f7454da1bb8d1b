#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// The libsignal side of benchmarks/protocol_bench.py: the same workloads through
// @signalapp/libsignal-client, with stores that hold records as objects (the cheapest
// store possible, so the comparison favours libsignal). Prints one JSON object.
//
// Usage: node bench.js '{"w1": 10000, "w2": 2000, "w3": 30, "w4": 500, "size": 100,
//                        "reps": 7, "only": ["w1", "w2", "w3", "w4"], "warmup": 1}'
// Every figure is the best of `reps` runs; W3 is the median of a run's set-ups. With
// `warmup`, W1 and W2 first run once, shortened and untimed.
//
// This file runs on the 0.90.0 installed beside it; ../libsignal-peer-0.103/bench.js runs
// it on 0.103.0 (SPQR on every new session, as 0.92+ does), as peer.js does for the peer.

'use strict';

const fs = require('fs');
const path = require('path');
const { pathToFileURL } = require('url');

let SC;
// libsignal-client 0.91+ takes the local address in processPreKeyBundle, signalEncrypt,
// signalDecrypt and signalDecryptPreKey (for SignalMessage field 6).
let LOCAL_ADDRESS_API = false;

function addrKey(a) {
  return `${a.name()}.${a.deviceId()}`;
}

function storeClasses() {
  class Sessions extends SC.SessionStore {
    constructor() { super(); this.m = new Map(); }
    async saveSession(a, r) { this.m.set(addrKey(a), r); }
    async getSession(a) { return this.m.get(addrKey(a)) || null; }
    async getExistingSessions(as) { return as.map((a) => this.m.get(addrKey(a))); }
  }
  class Identities extends SC.IdentityKeyStore {
    constructor(pair, reg) { super(); this.pair = pair; this.reg = reg; this.m = new Map(); }
    async getIdentityKey() { return this.pair.privateKey; }
    async getLocalRegistrationId() { return this.reg; }
    async saveIdentity(a, k) { this.m.set(addrKey(a), k); return SC.IdentityChange.NewOrUnchanged; }
    async isTrustedIdentity() { return true; }
    async getIdentity(a) { return this.m.get(addrKey(a)) || null; }
  }
  class PreKeys extends SC.PreKeyStore {
    constructor() { super(); this.m = new Map(); }
    async savePreKey(id, r) { this.m.set(id, r); }
    async getPreKey(id) { return this.m.get(id); }
    async removePreKey(id) { this.m.delete(id); }
  }
  class SignedPreKeys extends SC.SignedPreKeyStore {
    constructor() { super(); this.m = new Map(); }
    async saveSignedPreKey(id, r) { this.m.set(id, r); }
    async getSignedPreKey(id) { return this.m.get(id); }
  }
  class KyberPreKeys extends SC.KyberPreKeyStore {
    constructor() { super(); this.m = new Map(); }
    async saveKyberPreKey(id, r) { this.m.set(id, r); }
    async getKyberPreKey(id) { return this.m.get(id); }
    async markKyberPreKeyUsed() {}
  }
  return { Sessions, Identities, PreKeys, SignedPreKeys, KyberPreKeys };
}

let S;

class Party {
  constructor(name, reg) {
    this.address = SC.ProtocolAddress.new(name, 1);
    this.identity = SC.IdentityKeyPair.generate();
    this.sessions = new S.Sessions();
    this.identities = new S.Identities(this.identity, reg);
    this.preKeys = new S.PreKeys();
    this.signed = new S.SignedPreKeys();
    this.kyber = new S.KyberPreKeys();
  }

  /** Fresh signed, Kyber and one-time prekeys, and the bundle advertising them. */
  async bundle() {
    const now = Date.now();
    const signed = SC.PrivateKey.generate();
    const signedSig = this.identity.privateKey.sign(signed.getPublicKey().serialize());
    await this.signed.saveSignedPreKey(1, SC.SignedPreKeyRecord.new(
      1, now, signed.getPublicKey(), signed, signedSig));
    const kyber = SC.KEMKeyPair.generate();
    const kyberSig = this.identity.privateKey.sign(kyber.getPublicKey().serialize());
    await this.kyber.saveKyberPreKey(2, SC.KyberPreKeyRecord.new(2, now, kyber, kyberSig));
    const oneTime = SC.PrivateKey.generate();
    await this.preKeys.savePreKey(3, SC.PreKeyRecord.new(3, oneTime.getPublicKey(), oneTime));
    return SC.PreKeyBundle.new(
      this.identities.reg, 1, 3, oneTime.getPublicKey(), 1, signed.getPublicKey(), signedSig,
      this.identity.publicKey, 2, kyber.getPublicKey(), kyberSig);
  }

  async encrypt(to, data) {
    return LOCAL_ADDRESS_API
      ? SC.signalEncrypt(data, to.address, this.address, this.sessions, this.identities,
        new Date())
      : SC.signalEncrypt(data, to.address, this.sessions, this.identities, new Date());
  }

  async decrypt(from, message) {
    const local = LOCAL_ADDRESS_API ? [this.address] : [];
    if (message.type() === SC.CiphertextMessageType.PreKey) {
      return SC.signalDecryptPreKey(SC.PreKeySignalMessage.deserialize(message.serialize()),
        from.address, ...local, this.sessions, this.identities, this.preKeys, this.signed,
        this.kyber);
    }
    return SC.signalDecrypt(SC.SignalMessage.deserialize(message.serialize()), from.address,
      ...local, this.sessions, this.identities);
  }
}

async function processBundle(alice, bob, bundle) {
  if (LOCAL_ADDRESS_API) {
    await SC.processPreKeyBundle(bundle, bob.address, alice.address, alice.sessions,
      alice.identities, new Date());
  } else {
    await SC.processPreKeyBundle(bundle, bob.address, alice.sessions, alice.identities,
      new Date());
  }
}

async function pair() {
  const alice = new Party('alice', 1111);
  const bob = new Party('bob', 2222);
  await processBundle(alice, bob, await bob.bundle());
  await bob.decrypt(alice, await alice.encrypt(bob, Buffer.from('hi')));
  await alice.decrypt(bob, await bob.encrypt(alice, Buffer.from('hi')));
  return [alice, bob];
}

const now = () => Number(process.hrtime.bigint()) / 1e3; // µs

async function w1(n, size) {
  const [alice, bob] = await pair();
  const data = Buffer.alloc(size, 7);
  const t0 = now();
  const messages = [];
  for (let i = 0; i < n; i++) messages.push(await alice.encrypt(bob, data));
  for (const m of messages) await bob.decrypt(alice, m);
  return (now() - t0) / n;
}

async function w2(n, size) {
  const [alice, bob] = await pair();
  const data = Buffer.alloc(size, 7);
  const t0 = now();
  for (let i = 0; i < n; i++) {
    const [from, to] = i % 2 ? [bob, alice] : [alice, bob];
    await to.decrypt(from, await from.encrypt(to, data));
  }
  return (now() - t0) / n;
}

async function w3(n) {
  const times = [];
  for (let i = -2; i < n; i++) { // two untimed set-ups first: JIT warm-up
    const t0 = now();
    const alice = new Party('alice', 1111);
    const bob = new Party('bob', 2222);
    const bundle = await bob.bundle();
    await processBundle(alice, bob, bundle);
    await bob.decrypt(alice, await alice.encrypt(bob, Buffer.from('first message')));
    if (i >= 0) times.push((now() - t0) / 1000);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

async function w4(n) {
  const [alice, bob] = await pair();
  const data = Buffer.alloc(64 * 1024, 7);
  const t0 = now();
  const messages = [];
  for (let i = 0; i < n; i++) messages.push(await alice.encrypt(bob, data));
  for (const m of messages) await bob.decrypt(alice, m);
  const seconds = (now() - t0) / 1e6;
  return (n * data.length) / seconds / 1e6; // MB/s
}

/** Loads libsignal-client from `fromDir`/node_modules; returns its version. */
async function loadLibsignal(fromDir) {
  const pkgDir = path.join(fromDir, 'node_modules', '@signalapp', 'libsignal-client');
  const pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
  SC = await import(pathToFileURL(path.join(pkgDir, 'dist', 'index.js')).href);
  const [major, minor] = pkg.version.split('.').map(Number);
  LOCAL_ADDRESS_API = major > 0 || minor >= 91;
  return pkg.version;
}

async function main(fromDir) {
  const version = await loadLibsignal(fromDir);
  S = storeClasses();
  const p = JSON.parse(process.argv[2] || '{}');
  const reps = p.reps || 3;
  const best = async (f) => {
    let out = Infinity;
    for (let i = 0; i < reps; i++) out = Math.min(out, await f());
    return out;
  };
  // `only`: a subset of the workloads (the Python side reruns W3 alone between its own
  // runs, so that both sides sample the same stretches of machine noise).
  const only = new Set(p.only || ['w1', 'w2', 'w3', 'w4']);
  const result = { version };
  // `warmup`: one short untimed run first (JIT), for callers that start a process per run.
  if (p.warmup && only.has('w1')) await w1(Math.min(p.w1 || 10000, 500), p.size || 100);
  if (p.warmup && only.has('w2')) await w2(Math.min(p.w2 || 2000, 200), p.size || 100);
  if (only.has('w1')) result.w1_us = await best(() => w1(p.w1 || 10000, p.size || 100));
  if (only.has('w2')) result.w2_us = await best(() => w2(p.w2 || 2000, p.size || 100));
  // W3: the median of each run's set-ups, best run kept (as the Python side does).
  if (only.has('w3')) result.w3_ms = await best(() => w3(p.w3 || 30));
  if (only.has('w4')) result.w4_mbps = -(await best(async () => -(await w4(p.w4 || 500))));
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

/** Runs the benchmark on the libsignal-client installed under `fromDir`. */
function start(fromDir) {
  main(fromDir).catch((err) => {
    process.stderr.write(`${err.stack}\n`);
    process.exit(1);
  });
}

module.exports = { start };

if (require.main === module) {
  start(__dirname);
}
