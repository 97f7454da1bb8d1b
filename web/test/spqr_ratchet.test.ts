/**
 * SPQR send/recv (spqr-digest §5, §8): negotiation, error cases, the Python-initiator
 * vectors accepted and refused by libsignal 0.103.0, and long conversations under bursts,
 * reordering and loss.
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { concat } from "../src/protocol/bytes.js";
import { InvalidMessage } from "../src/protocol/errors.js";
import { PrivateKey } from "../src/protocol/keys.js";
import { PreKeySignalMessage, SignalMessage } from "../src/protocol/messages.js";
import { aesCbcDecrypt, messageKeys, messageKeySeed, rootStep } from "../src/protocol/ratchet.js";
import { Chain, Direction } from "../src/protocol/spqr/chain.js";
import {
  MalformedSpqrMessage, SpqrAuthenticationFailed, SpqrEpochOutOfRange, SpqrMinimumVersion, SpqrVersionMismatch,
} from "../src/protocol/spqr/errors.js";
import * as incremental from "../src/protocol/spqr/incremental.js";
import * as mlkem768 from "../src/protocol/spqr/mlkem768.js";
import {
  SpqrSettings, V0_STATE, initialState, isNegotiating, recv, send, versionOf,
} from "../src/protocol/spqr/ratchet.js";
import { PayloadType, V0, V1, decodeMessage, encodeMessage, spqrMessage } from "../src/protocol/spqr/wire.js";
import { AUTH, Conversation, H, hx, loadSpqr, seeded } from "./spqr_helpers.js";

const PY_ALICE = loadSpqr("py-alice-to-libsignal.json").results;
const EMPTY = new Uint8Array(0);

function pqFields(result: any): Uint8Array[] {
  return result.msgs.map((m: string) => PreKeySignalMessage.parse(H(m)).message.pqRatchet);
}

function recordedKeyPair(state: any): incremental.KeyPair {
  const ek = H(state.ek);
  return new incremental.KeyPair(concat(ek.slice(1152), mlkem768.h(ek)), ek.slice(0, 1152), H(state.dk));
}

describe("libsignal 0.103.0 and a Python initiator", () => {
  test("the accepted V1 first messages reproduce, and libsignal's reply decrypts with the SPQR salt", async () => {
    const result = PY_ALICE.spqr;
    const state = result.alice_state;
    const authKey = H(state.A);
    let alice = initialState(authKey, Direction.A2B);
    let bob = initialState(authKey, Direction.B2A);
    const pair = recordedKeyPair(state);
    assert.ok(result.delivered.every((d: any) => d.ok));
    pqFields(result).forEach((field, i) => {
      const sent = send(alice, seeded(0).bytes, () => pair);
      alice = sent.state;
      assert.deepEqual(sent.message, field);
      const msg = decodeMessage(field);
      assert.equal(msg.payload, PayloadType.HDR);
      assert.equal(msg.chunk!.index, i);
      let key;
      [bob, key] = recv(bob, field);
      assert.deepEqual(key, sent.key);
    });
    assert.equal(bob.braid!.kind, 7); // HeaderReceived
    const reply = SignalMessage.parse(H(result.reply));
    assert.equal(hx(reply.pqRatchet), result.reply_decoded_by_python.pq_ratchet);
    let key;
    [alice, key] = recv(alice, reply.pqRatchet);
    assert.ok(key !== null);
    assert.equal(alice.braid!.kind, 3); // HeaderSent
    assert.equal(hx(Chain.start(authKey, Direction.A2B).links[0]!.recv.nextKey), state.b2a);
    // The Double Ratchet's receiving chain after Bob's new ratchet key, salted with the SPQR key.
    const dh = new PrivateKey(H(state.s_priv)).agree(reply.ratchetKey);
    const [, chainKey] = rootStep(H(state.rk), dh);
    const keys = messageKeys(messageKeySeed(chainKey), key);
    const identities = concat(H(state.bik), H(state.aik));
    assert.ok(reply.verifyMacPrefixed(keys.macKey, identities));
    const plaintext = await aesCbcDecrypt(keys.cipherKey, keys.iv, reply.ciphertext);
    assert.equal(new TextDecoder().decode(plaintext), result.reply_decoded_by_python.plaintext);
    assert.ok(!reply.verifyMacPrefixed(messageKeys(messageKeySeed(chainKey)).macKey, identities));
    // Both sides start from libsignal's initial authenticator.
    assert.deepEqual([hx(initialState(authKey, Direction.A2B).braid!.auth.rootKey),
      hx(initialState(authKey, Direction.A2B).braid!.auth.macKey)], [state.auth_root, state.auth_mac]);
  });

  test("a bad header MAC is refused on the completing chunk, and nothing changes", () => {
    const result = PY_ALICE.badmac;
    assert.deepEqual(result.delivered.map((d: any) => d.ok), [true, true, false]);
    let bob = initialState(H(result.alice_state.A), Direction.B2A);
    const fields = pqFields(result);
    for (const field of fields.slice(0, 2)) {
      let key;
      [bob, key] = recv(bob, field);
      assert.ok(key !== null);
    }
    assert.throws(() => recv(bob, fields[2]!), SpqrAuthenticationFailed);
    assert.equal(bob.braid!.kind, 6);
    assert.equal(decodeMessage(send(bob, seeded(1).bytes).message).payload, PayloadType.NONE);
  });

  test("a V0 initiator is refused by the minimum version", () => {
    const result = PY_ALICE.v0;
    assert.ok(!result.delivered.some((d: any) => d.ok));
    const fields = pqFields(result);
    assert.deepEqual(fields, [EMPTY, EMPTY, EMPTY]);
    const bob = initialState(H(result.alice_state.A), Direction.B2A);
    assert.throws(() => recv(bob, fields[0]!), (e: unknown) => e instanceof SpqrMinimumVersion
      && e instanceof InvalidMessage && e.kind === "invalid_message");
  });
});

const v1Message = (): Uint8Array => send(initialState(AUTH, Direction.A2B), seeded(2).bytes).message;

describe("negotiation (spqr-digest §8.2)", () => {
  test("the table", () => {
    const v1 = v1Message();
    const v0State = initialState(AUTH, Direction.B2A, { version: V0, minVersion: V0 });
    assert.equal(v0State, V0_STATE);
    assert.equal(versionOf(v0State), V0);
    assert.deepEqual(recv(v0State, v1), [V0_STATE, null]);
    assert.deepEqual(recv(v0State, EMPTY), [V0_STATE, null]);
    assert.deepEqual(send(v0State, seeded(0).bytes).message, EMPTY);
    const lax = initialState(AUTH, Direction.B2A, { minVersion: V0 });
    assert.deepEqual(recv(lax, EMPTY), [V0_STATE, null]);
    assert.deepEqual(recv(lax, H("00ab")), [V0_STATE, null]);
    const strict = initialState(AUTH, Direction.B2A);
    assert.throws(() => recv(strict, EMPTY), SpqrMinimumVersion);
    const [done, key] = recv(strict, v1);
    assert.ok(key !== null && !isNegotiating(done) && isNegotiating(strict));
    assert.throws(() => recv(done, EMPTY), SpqrVersionMismatch);
    for (const state of [strict, done, lax]) {
      assert.deepEqual(recv(state, Uint8Array.from([2, ...v1.slice(1)])), [state, null]);
    }
  });

  test("sending never ends negotiation; with minimum V0 the first messages carry no key", () => {
    const lax = send(initialState(AUTH, Direction.A2B, { minVersion: V0 }), seeded(3).bytes);
    assert.ok(lax.key === null && isNegotiating(lax.state) && lax.state.chain === null);
    const msg = decodeMessage(lax.message);
    assert.deepEqual([msg.epoch, msg.index], [1n, 0]);
    const [bob, key] = recv(initialState(AUTH, Direction.B2A), lax.message);
    assert.ok(key === null && !isNegotiating(bob)); // epoch 1, index 0: no key
    const strict = send(initialState(AUTH, Direction.A2B), seeded(3).bytes);
    assert.ok(strict.key !== null && decodeMessage(strict.message).index === 1 && isNegotiating(strict.state));
  });

  test("settings", () => {
    assert.equal(SpqrSettings.OFF.initialState(AUTH, Direction.A2B), V0_STATE);
    const offered = SpqrSettings.OFFERED.initialState(AUTH, Direction.A2B);
    assert.equal(offered.negotiation!.minVersion, V0);
    const required = SpqrSettings.REQUIRED.initialState(AUTH, Direction.B2A, true);
    assert.deepEqual([required.negotiation!.minVersion, required.negotiation!.params.maxJump], [V1, 0xffffffff]);
    assert.throws(() => new SpqrSettings(V0, V1), RangeError);
  });

  test("initial state misuse", () => {
    assert.throws(() => initialState(AUTH.slice(0, 31), Direction.A2B), RangeError);
    assert.throws(() => initialState(AUTH, Direction.A2B, { version: V0, minVersion: V1 }), RangeError);
    assert.throws(() => initialState(AUTH, Direction.A2B, { version: 2 }), RangeError);
  });

  test("malformed and out-of-range messages change nothing", () => {
    const bob = initialState(AUTH, Direction.B2A);
    for (const data of [H("01"), H("01000100"), H("01010109")]) assert.throws(() => recv(bob, data), MalformedSpqrMessage);
    assert.throws(() => recv(bob, encodeMessage(spqrMessage(2, 1, PayloadType.NONE))), SpqrEpochOutOfRange);
    assert.throws(() => recv(bob, encodeMessage(spqrMessage(2n ** 63n, 1, PayloadType.NONE))), SpqrEpochOutOfRange);
    assert.deepEqual(bob, initialState(AUTH, Direction.B2A));
  });
});

describe("whole conversations", () => {
  for (const seed of [1, 2]) {
    test(`long conversation under reordering and loss (seed ${seed})`, () => {
      const c = new Conversation(seed);
      c.run(400);
      assert.ok(c.epochs() >= 3, String(c.epochs()));
      assert.ok(c.delivered > 1000, String(c.delivered));
    });
  }
});
