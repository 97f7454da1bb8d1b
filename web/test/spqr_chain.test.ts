/** SPQR KDFs, the braid authenticator and the per-epoch chains (spqr-digest §3, §4.1, §5). */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { Authenticator } from "../src/protocol/spqr/authenticator.js";
import { Chain, ChainParams, Direction } from "../src/protocol/spqr/chain.js";
import {
  InvalidSpqrState, SpqrAuthenticationFailed, SpqrEpochOutOfRange, SpqrKeyAlreadyRequested, SpqrKeyJump,
  SpqrKeyTrimmed,
} from "../src/protocol/spqr/errors.js";
import { CHAIN_ADD_EPOCH, hkdf, sckaKey } from "../src/protocol/spqr/kdf.js";
import { H, RUNS, flip, hx, loadSpqr } from "./spqr_helpers.js";

const MODEL = loadSpqr("model-fixed-inputs.json").kdf;
const SMALL = new ChainParams(10, 4);

describe("kdf and authenticator", () => {
  test("HKDF matches RFC 5869 case 1", () => {
    const okm = hkdf(H("000102030405060708090a0b0c"), new Uint8Array(22).fill(0x0b), H("f0f1f2f3f4f5f6f7f8f9"), 42);
    assert.equal(hx(okm), "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
  });

  test("model authenticator", () => {
    const auth = Authenticator.initial(H(MODEL.auth_key));
    assert.equal(hx(auth.rootKey), MODEL.authenticator_init.root_key);
    assert.equal(hx(auth.macKey), MODEL.authenticator_init.mac_key);
    assert.equal(hx(auth.macHeader(1, H(MODEL.hdr_mac_epoch1.hdr))), MODEL.hdr_mac_epoch1.mac);
    const after = MODEL.after_update_1;
    const updated = auth.update(1, H(after.epoch_secret));
    assert.deepEqual([hx(updated.rootKey), hx(updated.macKey)], [after.root_key, after.mac_key]);
    assert.equal(hx(updated.macCiphertext(1, H(after.ct))), after.ct_mac_epoch1);
  });

  test("model SCKA key", () => {
    const c = MODEL.scka_key;
    assert.equal(hx(sckaKey(H(c.mlkem_ss), c.epoch)), c.secret);
    assert.equal(hx(sckaKey(H(c.mlkem_ss), 2)), c.epoch2_secret);
  });

  for (const name of RUNS) {
    test(`recorded authenticator through the epochs: ${name}`, () => {
      const run = loadSpqr(name);
      const authKey = H(run.pqxdh_okm96).slice(64);
      assert.equal(hx(authKey), run.spqr_auth_key);
      let auth = Authenticator.initial(authKey);
      assert.deepEqual([hx(auth.rootKey), hx(auth.macKey)], [run.authenticator_init.root_key, run.authenticator_init.mac_key]);
      for (const epoch of run.epochs) {
        const e: number = epoch.epoch;
        const hdr = H(epoch.hdr);
        const hdrMac = H(epoch.hdr_mac);
        auth.verifyHeader(e, hdr, hdrMac);
        const secret = sckaKey(H(epoch.mlkem_ss), e);
        assert.equal(hx(secret), epoch.epoch_secret);
        auth = auth.update(e, secret);
        assert.deepEqual([hx(auth.rootKey), hx(auth.macKey)], [epoch.auth_root_after, epoch.auth_mac_after]);
        const ct = H(epoch.ct1 + epoch.ct2);
        const mac = H(epoch.ct_mac);
        auth.verifyCiphertext(e, ct, mac);
        const a = auth;
        for (const bad of [
          () => a.verifyCiphertext(e + 1, ct, mac),
          () => a.verifyCiphertext(e, flip(ct, 77), mac),
          () => a.verifyCiphertext(e, ct, flip(mac, 255)),
          () => a.verifyCiphertext(e, ct, mac.slice(0, 31)),
          () => a.verifyHeader(e, flip(hdr, 3), hdrMac),
        ]) assert.throws(bad, SpqrAuthenticationFailed);
      }
    });
  }

  test("string forms hide keys", () => {
    const auth = Authenticator.initial(new Uint8Array(32).fill(0x29));
    const text = String(auth) + JSON.stringify({ auth });
    assert.ok(!text.includes(hx(auth.rootKey).slice(0, 8)) && !text.includes(hx(auth.macKey).slice(0, 8)));
  });
});

function pair(params: ChainParams = SMALL): [Chain, Chain] {
  const key = new Uint8Array(32).fill(7);
  return [Chain.start(key, Direction.A2B, params), Chain.start(key, Direction.B2A, params)];
}

function sent(chain: Chain, count: number, epoch = 0): [Chain, Map<number, Uint8Array>] {
  const keys = new Map<number, Uint8Array>();
  for (let i = 0; i < count; i++) {
    let index: number;
    let key: Uint8Array;
    [chain, index, key] = chain.sendKey(epoch);
    keys.set(index, key);
  }
  return [chain, keys];
}

const sortedKeys = (m: ReadonlyMap<number, unknown>): number[] => [...m.keys()].sort((a, b) => a - b);

describe("chain", () => {
  test("model chain start and keys", () => {
    let alice = Chain.start(H(MODEL.auth_key), Direction.A2B);
    let bob = Chain.start(H(MODEL.auth_key), Direction.B2A);
    const start = MODEL.chain_start;
    assert.equal(hx(alice.nextRoot), start.next_root);
    assert.equal(hx(bob.nextRoot), start.next_root);
    assert.equal(hx(alice.links[0]!.send.nextKey), start.a2b_seed);
    assert.equal(hx(alice.links[0]!.recv.nextKey), start.b2a_seed);
    assert.equal(hx(bob.links[0]!.send.nextKey), start.b2a_seed);
    let keys: Map<number, Uint8Array>;
    [alice, keys] = sent(alice, 10);
    const k = MODEL.chain_keys_epoch0;
    k.indices.forEach((index: number, i: number) => {
      assert.equal(hx(keys.get(index)!), k.a2b[i]);
      let key: Uint8Array;
      [bob, key] = bob.recvKey(0, index);
      assert.equal(hx(key), k.a2b[i]);
      [alice, key] = alice.recvKey(0, index);
      assert.equal(hx(key), k.b2a[i]);
    });
  });

  test("model add epoch", () => {
    const c = MODEL.add_epoch;
    for (const [direction, mine, theirs] of [[Direction.A2B, "a2b", "b2a"], [Direction.B2A, "b2a", "a2b"]] as const) {
      let chain = Chain.start(H(MODEL.auth_key), direction).addEpoch(1, H(c.epoch_secret));
      assert.equal(hx(chain.nextRoot), c.next_root);
      assert.equal(hx(chain.links.at(-1)!.send.nextKey), c[`${mine}_seed`]);
      let index: number;
      let key: Uint8Array;
      [chain, index, key] = chain.sendKey(1);
      assert.deepEqual([index, hx(key)], [1, c[`${mine}_key1`]]);
      [chain, key] = chain.recvKey(1, 1);
      assert.equal(hx(key), c[`${theirs}_key1`]);
    }
  });

  for (const name of RUNS) {
    test(`recorded chain epoch 0 and the added epochs: ${name}`, () => {
      const run = loadSpqr(name);
      let chain = Chain.start(H(run.spqr_auth_key), Direction.A2B);
      assert.equal(hx(chain.nextRoot), run.chain_epoch0.next_root);
      assert.equal(hx(chain.links[0]!.send.nextKey), run.chain_epoch0.a2b_seed);
      assert.equal(hx(chain.links[0]!.recv.nextKey), run.chain_epoch0.b2a_seed);
      for (const e of run.epochs) {
        const before = chain.nextRoot;
        chain = chain.addEpoch(e.epoch, H(e.epoch_secret));
        assert.equal(hx(chain.nextRoot), e.chain_next_root_after);
        assert.equal(hx(chain.links.at(-1)!.send.nextKey), e.chain_a2b_seed);
        assert.equal(hx(chain.links.at(-1)!.recv.nextKey), e.chain_b2a_seed);
        assert.equal(hx(hkdf(before, H(e.epoch_secret), CHAIN_ADD_EPOCH, 96)),
          e.chain_next_root_after + e.chain_a2b_seed + e.chain_b2a_seed);
      }
    });
  }

  test("out of order, and each key once", () => {
    let [alice, bob] = pair();
    let keys: Map<number, Uint8Array>;
    [alice, keys] = sent(alice, 8);
    for (const index of [5, 3, 4, 1, 2, 8, 7, 6]) {
      const before = bob;
      let key: Uint8Array;
      [bob, key] = bob.recvKey(0, index);
      assert.deepEqual(key, keys.get(index));
      assert.deepEqual(before.recvKey(0, index)[1], key); // the old value is untouched
      assert.throws(() => bob.recvKey(0, index), SpqrKeyAlreadyRequested);
    }
  });

  test("jump limit", () => {
    let [alice, bob] = pair();
    let keys: Map<number, Uint8Array>;
    [alice, keys] = sent(alice, 12);
    assert.throws(() => bob.recvKey(0, 11), SpqrKeyJump);
    let key: Uint8Array;
    [bob, key] = bob.recvKey(0, 10);
    assert.deepEqual(key, keys.get(10));
  });

  test("trimmed and discarded keys", () => {
    let [alice, bob] = pair();
    let keys: Map<number, Uint8Array>;
    [alice, keys] = sent(alice, 20);
    [bob] = bob.recvKey(0, 10); // keeps 6..9 (maxOoo 4), never 1..5
    assert.deepEqual(sortedKeys(bob.links[0]!.recv.skipped), [6, 7, 8, 9]);
    assert.throws(() => bob.recvKey(0, 5), SpqrKeyTrimmed);
    assert.deepEqual(bob.recvKey(0, 6)[1], keys.get(6));
    [bob] = bob.recvKey(0, 16); // a jump past maxOoo discards every stored key
    assert.deepEqual(sortedKeys(bob.links[0]!.recv.skipped), [12, 13, 14, 15]);
    assert.throws(() => bob.recvKey(0, 9), SpqrKeyTrimmed);
    assert.throws(() => bob.recvKey(0, 16), SpqrKeyAlreadyRequested);
  });

  test("garbage collection of old keys", () => {
    let [alice, bob] = pair(new ChainParams(100, 4)); // trim size 5
    let keys: Map<number, Uint8Array>;
    [alice, keys] = sent(alice, 30);
    for (const index of [2, 4, 6, 8, 10, 12]) [bob] = bob.recvKey(0, index);
    const skipped = bob.links[0]!.recv.skipped;
    assert.deepEqual(sortedKeys(skipped), [5, 7, 9, 11]);
    for (const [i, k] of skipped) assert.deepEqual(k, keys.get(i));
  });

  test("epoch bookkeeping", () => {
    let [alice, bob] = pair();
    assert.throws(() => bob.recvKey(1, 1), SpqrEpochOutOfRange);
    for (const e of [1, 2]) {
      alice = alice.addEpoch(e, new Uint8Array(32).fill(e));
      bob = bob.addEpoch(e, new Uint8Array(32).fill(e));
    }
    assert.throws(() => alice.addEpoch(4, new Uint8Array(32)), InvalidSpqrState);
    let keys0: Map<number, Uint8Array>;
    let keys1: Map<number, Uint8Array>;
    let keys2: Map<number, Uint8Array>;
    [alice, keys0] = sent(alice, 2, 0);
    [alice, keys1] = sent(alice, 2, 1);
    assert.equal(alice.links.length, 3);
    assert.equal(alice.links[0]!.send.nextKey.length, 0); // epoch 0 wiped
    [alice, keys2] = sent(alice, 1, 2);
    assert.equal(alice.links.length, 2); // epoch 0 dropped, epoch 1 kept for late messages
    assert.equal(alice.links[0]!.send.nextKey.length, 0);
    assert.throws(() => alice.sendKey(1), InvalidSpqrState);
    let key: Uint8Array;
    [bob, key] = bob.recvKey(1, 2);
    assert.deepEqual(key, keys1.get(2));
    [bob, key] = bob.recvKey(0, 1);
    assert.deepEqual(key, keys0.get(1));
    [bob] = bob.sendKey(2);
    assert.throws(() => bob.recvKey(0, 2), SpqrEpochOutOfRange);
    assert.deepEqual(bob.recvKey(2, 1)[1], keys2.get(1));
  });

  test("limits are checked", () => {
    for (const [j, o] of [[0, 1], [1, 0], [2 ** 32, 1], [1.5, 1]]) assert.throws(() => new ChainParams(j, o), RangeError);
    assert.equal(new ChainParams().maxJump, 25_000);
    assert.equal(new ChainParams().maxOooKeys, 2_000);
    assert.equal(new ChainParams().trimSize, 2201);
  });

  test("string forms hide keys", () => {
    const [alice] = pair();
    const text = String(alice) + JSON.stringify({ alice, half: alice.links[0]!.recv }) + String(alice.links[0]!.recv);
    assert.ok(!text.includes(hx(alice.nextRoot).slice(0, 8)));
    assert.ok(!text.includes(hx(alice.links[0]!.send.nextKey).slice(0, 8)));
    assert.ok(text.includes("skipped") && text.includes("redacted"));
  });
});
