/** ML-KEM-768 and its incremental split, against @noble/post-quantum and the recorded vectors. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { ml_kem768 } from "@noble/post-quantum/ml-kem.js";

import { concat } from "../src/protocol/bytes.js";
import * as incremental from "../src/protocol/spqr/incremental.js";
import * as mlkem768 from "../src/protocol/spqr/mlkem768.js";
import { H, RUNS, flip, hx, loadSpqr, seeded } from "./spqr_helpers.js";

const SEEDS = [0, 1, 2].map((i) => seeded(100 + i).bytes(64));
const fixed = (bytes: Uint8Array) => (n: number): Uint8Array => bytes.slice(0, n);

test("keygen matches noble, and the key pair splits as the braid sends it", () => {
  for (const seed of SEEDS) {
    const [ek, dk] = mlkem768.keygen(seed.slice(0, 32), seed.slice(32));
    const noble = ml_kem768.keygen(seed);
    assert.deepEqual(ek, noble.publicKey);
    assert.deepEqual(dk, noble.secretKey);
    const pair = incremental.generate(fixed(seed));
    assert.deepEqual(pair.header, concat(ek.slice(1152), mlkem768.h(ek)));
    assert.deepEqual(pair.ek, ek.slice(0, 1152));
    assert.deepEqual(pair.dk, seed);
  }
});

test("split encapsulation equals noble's and decapsulates every way", () => {
  for (const seed of SEEDS) {
    const rnd = seeded(seed[0]!);
    const pair = incremental.generate(fixed(seed));
    const m = rnd.bytes(32);
    const [ct1, state, shared] = incremental.encaps1(pair.header, fixed(m));
    assert.equal(ct1.length, 960);
    assert.ok(incremental.ekMatchesHeader(pair.ek, pair.header));
    const ct2 = incremental.encaps2(pair.ek, state);
    assert.equal(ct2.length, 128);
    const full = concat(pair.ek, pair.header.slice(0, 32));
    const noble = ml_kem768.encapsulate(full, m);
    assert.deepEqual(concat(ct1, ct2), noble.cipherText);
    assert.deepEqual(shared, noble.sharedSecret);
    assert.deepEqual(mlkem768.encapsulate(full, m), [shared, noble.cipherText]);
    const expanded = ml_kem768.keygen(seed).secretKey;
    assert.deepEqual(ml_kem768.decapsulate(concat(ct1, ct2), expanded), shared);
    assert.deepEqual(incremental.decapsulate(pair.dk, ct1, ct2), shared);
    assert.deepEqual(incremental.decapsulate(expanded, ct1, ct2), shared);
    // Implicit rejection: a tampered ciphertext gives the same pseudo-random secret both ways.
    const bad = flip(concat(ct1, ct2), 9);
    const rejected = ml_kem768.decapsulate(bad, expanded);
    assert.notDeepEqual(rejected, shared);
    assert.deepEqual(mlkem768.decapsulate(expanded, bad), rejected);
    assert.deepEqual(incremental.decapsulate(pair.dk, bad.slice(0, 960), bad.slice(960)), rejected);
  }
});

const EPOCHS = RUNS.flatMap((name) => loadSpqr(name).epochs as any[]);

test("recorded incremental encapsulations reproduce byte for byte", () => {
  assert.equal(EPOCHS.length, 4);
  for (const e of EPOCHS) {
    const header = H(e.hdr);
    const ek = H(e.ek);
    const [ct1, state, shared] = incremental.encaps1(header, fixed(H(e.encaps_m)));
    assert.equal(hx(ct1), e.ct1);
    assert.equal(hx(shared), e.mlkem_ss);
    assert.ok(incremental.ekMatchesHeader(ek, header));
    assert.equal(hx(incremental.encaps2(ek, state)), e.ct2);
    const dk = H(e.dk); // libsignal's expanded key
    assert.equal(dk.length, 2400);
    assert.deepEqual(incremental.decapsulate(dk, H(e.ct1), H(e.ct2)), shared);
    assert.deepEqual(ml_kem768.decapsulate(H(e.ct1 + e.ct2), dk), shared);
    assert.deepEqual(dk.slice(1152, 2336), concat(ek, header.slice(0, 32)));
  }
});

test("an ek that does not match its header, or fails the modulus check, is refused", () => {
  const e = EPOCHS[0];
  const header = H(e.hdr);
  const ek = H(e.ek);
  assert.ok(!incremental.ekMatchesHeader(flip(ek, 100), header));
  assert.ok(!incremental.ekMatchesHeader(ek, flip(header, 3))); // rho
  assert.ok(!incremental.ekMatchesHeader(ek, flip(header, 300))); // H(ek)
  assert.ok(!incremental.ekMatchesHeader(ek.slice(0, -1), header));
  assert.ok(!incremental.ekMatchesHeader(ek, header.slice(0, -1)));
  const bad = Uint8Array.from(ek);
  bad[0] = 0xff;
  bad[1]! |= 0x0f; // first 12-bit value = 4095
  const badHeader = concat(header.slice(0, 32), mlkem768.h(concat(bad, header.slice(0, 32))));
  assert.ok(!mlkem768.ekModulusOk(bad));
  assert.ok(!incremental.ekMatchesHeader(bad, badHeader));
  assert.throws(() => ml_kem768.encapsulate(concat(bad, header.slice(0, 32))));
});

test("size misuse is a RangeError", () => {
  const pair = incremental.generate(fixed(SEEDS[1]!));
  const zeros = (n: number): Uint8Array => new Uint8Array(n);
  assert.throws(() => incremental.encaps1(pair.header.slice(0, -1), zeros), RangeError);
  const [, state] = incremental.encaps1(pair.header, zeros);
  assert.throws(() => incremental.encaps2(concat(pair.ek, zeros(1)), state), RangeError);
  assert.throws(() => incremental.decapsulate(pair.dk.slice(0, 63), zeros(960), zeros(128)), RangeError);
  assert.throws(() => incremental.decapsulate(pair.dk, zeros(959), zeros(128)), RangeError);
  assert.throws(() => mlkem768.decapsulate(zeros(2399), zeros(1088)), RangeError);
  assert.throws(() => new incremental.KeyPair(pair.header, pair.ek, zeros(65)), RangeError);
});

test("key material stays out of string forms", () => {
  const pair = incremental.generate(fixed(SEEDS[2]!));
  const [, state] = incremental.encaps1(pair.header, (n) => new Uint8Array(n).fill(0x42));
  const text = String(pair) + String(state) + JSON.stringify({ pair, state });
  assert.ok(!text.includes(hx(pair.dk).slice(0, 16)) && !text.includes("42424242"));
});
