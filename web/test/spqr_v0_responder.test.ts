/**
 * Replay of `v0-responder-to-libsignal.json` (tests/protocol/spqr/vectors): libsignal
 * 0.103 as initiator, Bob's keys recorded (spqr-digest §10); the port of
 * tests/protocol/spqr/test_v0_responder.py.
 *
 * libsignal stores Kyber1024 private keys in the expanded 3168-byte form; a test backend
 * loads it as is and decapsulates through the real bridge (ML-KEM-1024 decapsulation of
 * the expanded key, then the round-3 finish), where the production backend keeps 64-byte
 * seeds. What the vector shows, checked against our responder:
 *
 * - with SPQR (OFFERED or REQUIRED) Bob decrypts 0.103's first message with the recorded
 *   keys, and the message's SPQR field is the recorded one;
 * - a responder without SPQR (OFF) cannot verify it: the SPQR key salts the message keys,
 *   so the MAC fails, and the failure leaves no session and keeps every prekey;
 * - the recorded reply of such a responder carries no SPQR field, which 0.103 refused
 *   ("Minimum version"); ours with SPQR carries one.
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { ProtocolAddress } from "../src/protocol/address.js";
import { type Random } from "../src/protocol/bytes.js";
import { DuplicatedMessage, InvalidMessage } from "../src/protocol/errors.js";
import { KemKeyPair, KemPublicKey, Kyber1024Backend, KYBER1024, type KemBackend, type KemRegistry } from "../src/protocol/kem.js";
import { IdentityKeyPair, KeyPair, PublicKey } from "../src/protocol/keys.js";
import { PREKEY_TYPE, PreKeySignalMessage, SignalMessage } from "../src/protocol/messages.js";
import { KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord } from "../src/protocol/prekeys.js";
import { decrypt, encrypt } from "../src/protocol/session.js";
import { SpqrSettings } from "../src/protocol/spqr/ratchet.js";
import { InMemoryProtocolStore } from "../src/protocol/stores.js";
import { pythonRandom } from "./helpers.js";
import { H, hx, loadSpqr } from "./spqr_helpers.js";

const ALICE = new ProtocolAddress("11111111-1111-4111-8111-111111111111", 1);
const VECTOR = loadSpqr("v0-responder-to-libsignal.json");

/** Kyber1024 whose private keys are libsignal's expanded form (decapsulation only). */
function expandedKyber(): KemRegistry {
  const bridge = new Kyber1024Backend();
  const backend: KemBackend = {
    keyType: KYBER1024,
    generate: () => { throw new Error("decapsulation only"); },
    load: (secret) => secret,
    publicFromSecret: () => { throw new Error("decapsulation only"); },
    encapsulate: () => { throw new Error("decapsulation only"); },
    decapsulate: (loaded, ciphertext) => bridge.decapsulate(loaded, ciphertext),
  };
  return new Map([[KYBER1024, backend]]);
}

const KEMS = expandedKyber();

function bob(): [InMemoryProtocolStore, PreKeySignalMessage] {
  const secrets = VECTOR.bob_secrets;
  const message = PreKeySignalMessage.parse(H(VECTOR.alice_prekey_message));
  const pair = KeyPair.fromPrivate(H(secrets.ik_priv));
  assert.ok(pair.publicKey.equals(PublicKey.deserialize(H(secrets.ik_pub))));
  const store = new InMemoryProtocolStore(new IdentityKeyPair(pair.publicKey, pair.privateKey), message.registrationId);
  assert.notEqual(message.preKeyId, undefined);
  store.saveSignedPreKey(new SignedPreKeyRecord(message.signedPreKeyId, KeyPair.fromPrivate(H(secrets.spk_priv)),
    new Uint8Array(0), 0));
  store.savePreKey(new PreKeyRecord(message.preKeyId!, KeyPair.fromPrivate(H(secrets.opk_priv))));
  const kyberSecret = H(secrets.kyb_sec);
  assert.equal(kyberSecret[0], KYBER1024);
  assert.equal(kyberSecret.length, 1 + 3168);
  const kyberPublic = KemPublicKey.deserialize(H(secrets.kyb_pub));
  store.saveKyberPreKey(new KyberPreKeyRecord(message.kyberPreKeyId, new KemKeyPair(kyberPublic, kyberSecret.subarray(1)),
    new Uint8Array(0), 0));
  return [store, message];
}

describe("v0-responder-to-libsignal.json (libsignal 0.103 initiating)", () => {
  test("the vector is what it says", () => {
    const [, message] = bob();
    assert.equal(hx(message.identityKey.serialize()), VECTOR.alice_ik_pub);
    assert.equal(hx(message.message.pqRatchet), VECTOR.python.pq_ratchet_in_alice_msg);
    assert.equal(VECTOR.python.mac_ok_without_salt, false);
    assert.equal(VECTOR.libsignal_result.ok, false);
    assert.ok(VECTOR.libsignal_result.logs.some((line: string) => line.includes("Minimum version")));
    // The recorded V0 reply has no SPQR field: what 0.103 refused.
    assert.equal(SignalMessage.parse(H(VECTOR.python.reply)).pqRatchet.length, 0);
  });

  for (const [name, spqr] of [["OFFERED", SpqrSettings.OFFERED], ["REQUIRED", SpqrSettings.REQUIRED]] as const) {
    test(`a responder with SPQR ${name} decrypts 0.103's first message`, async () => {
      const [store, message] = bob();
      const rng: Random = pythonRandom(7);
      const plaintext = await decrypt(store, ALICE, PREKEY_TYPE, message.serialized, { rng, kems: KEMS, spqr });
      assert.equal(new TextDecoder().decode(plaintext), "hello-v0-bob"); // what the probe sent
      assert.notEqual(await store.loadSession(ALICE), undefined);
      // Our reply carries SPQR (libsignal 0.103 refused the V0 reply for lacking it).
      const reply = await encrypt(store, ALICE, new TextEncoder().encode("reply"), { now: 1_790_000_000, rng, spqr });
      assert.ok(SignalMessage.parse(reply.serialized).pqRatchet.length > 0);
      // Delivered again: a duplicate, not a second session.
      await assert.rejects(decrypt(store, ALICE, PREKEY_TYPE, message.serialized, { rng, kems: KEMS, spqr }),
        DuplicatedMessage);
    });
  }

  test("a responder without SPQR cannot verify it and keeps everything", async () => {
    const [store, message] = bob();
    await assert.rejects(decrypt(store, ALICE, PREKEY_TYPE, message.serialized,
      { rng: pythonRandom(8), kems: KEMS, spqr: SpqrSettings.OFF }), InvalidMessage);
    assert.equal(await store.loadSession(ALICE), undefined);
    store.getPreKey(message.preKeyId!); // still there
    store.getKyberPreKey(message.kyberPreKeyId);
  });
});
