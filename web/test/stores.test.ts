/** Store contract: the in-memory stores, and a store whose every method is asynchronous
 * (as an IndexedDB store will be), driving the same protocol code. */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, test } from "node:test";

import { ProtocolAddress } from "../src/protocol/address.js";
import { generatePreKeyBundle } from "../src/protocol/bundles.js";
import { systemRandom } from "../src/protocol/bytes.js";
import { InvalidKyberPreKeyId, InvalidMessage, InvalidPreKeyId } from "../src/protocol/errors.js";
import { IdentityKeyPair } from "../src/protocol/keys.js";
import { KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord } from "../src/protocol/prekeys.js";
import {
  createDistributionMessage, groupDecrypt, groupEncrypt, processDistributionMessage, SenderKeyRecord,
} from "../src/protocol/sender_keys.js";
import { decrypt, encrypt, processPreKeyBundle } from "../src/protocol/session.js";
import {
  Direction, InMemoryProtocolStore, InMemorySenderKeyStore, SerializingSessionStore,
  type ProtocolStore, type SenderKeyStore,
} from "../src/protocol/stores.js";
import { NOW, toHex, utf8 } from "./helpers.js";

/** Every method of `target` returns a promise that settles on a later tick. */
function asynchronous<T extends object>(target: T): T {
  return new Proxy(target, {
    get(obj, prop, receiver) {
      const value = Reflect.get(obj, prop, receiver);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => new Promise((resolve, reject) => {
        setImmediate(() => {
          try {
            resolve(value.apply(obj, args));
          } catch (error) {
            reject(error);
          }
        });
      });
    },
  });
}

describe("stores", () => {
  test("in-memory contract: TOFU identities, prekey lookups, Kyber use, records", () => {
    const identity = IdentityKeyPair.generate(systemRandom);
    const store = new InMemoryProtocolStore(identity, 42, new SerializingSessionStore());
    const remote = new ProtocolAddress("remote", 3);
    const key = IdentityKeyPair.generate(systemRandom).publicKey;
    const other = IdentityKeyPair.generate(systemRandom).publicKey;
    assert.equal(store.getLocalRegistrationId(), 42);
    assert.equal(store.getIdentity(remote), undefined);
    assert.ok(store.isTrustedIdentity(remote, key, Direction.RECEIVING));
    assert.equal(store.saveIdentity(remote, key), false);
    assert.ok(!store.isTrustedIdentity(remote, other, Direction.SENDING));
    assert.equal(store.saveIdentity(remote, key), false);
    assert.equal(store.saveIdentity(remote, other), true);
    assert.ok(store.isTrustedIdentity(remote, other, Direction.SENDING));

    assert.throws(() => store.getPreKey(1), InvalidPreKeyId);
    assert.throws(() => store.getSignedPreKey(1), InvalidPreKeyId);
    assert.throws(() => store.getKyberPreKey(1), InvalidKyberPreKeyId);
    const pre = PreKeyRecord.generate(1, systemRandom);
    store.savePreKey(PreKeyRecord.deserialize(pre.serialize()));
    assert.ok(store.getPreKey(1).keyPair.publicKey.equals(pre.keyPair.publicKey));
    store.removePreKey(1);
    assert.throws(() => store.getPreKey(1), InvalidPreKeyId);
    const signed = SignedPreKeyRecord.generate(2, identity, NOW * 1000, systemRandom);
    const signedAgain = SignedPreKeyRecord.deserialize(signed.serialize());
    assert.equal(toHex(signedAgain.serialize()), toHex(signed.serialize()));
    const kyber = KyberPreKeyRecord.generate(3, identity, NOW * 1000, systemRandom, { lastResort: true });
    const kyberAgain = KyberPreKeyRecord.deserialize(kyber.serialize());
    assert.equal(toHex(kyberAgain.serialize()), toHex(kyber.serialize()));
    store.saveKyberPreKey(kyberAgain);
    const base = systemRandom(33);
    store.markKyberPreKeyUsed(3, 2, base);
    assert.throws(() => store.markKyberPreKeyUsed(3, 2, base), InvalidMessage);
    store.markKyberPreKeyUsed(3, 2, systemRandom(33));
    for (const bad of [new Uint8Array(0), Uint8Array.of(2, 8, 1), Uint8Array.of(1, 0xff)]) {
      assert.throws(() => PreKeyRecord.deserialize(bad));
    }
  });

  test("the protocol runs on stores whose every method is asynchronous", async () => {
    const aliceAddr = new ProtocolAddress("alice", 1);
    const bobAddr = new ProtocolAddress("bob", 1);
    const alice = asynchronous<ProtocolStore>(
      new InMemoryProtocolStore(IdentityKeyPair.generate(systemRandom), 1, new SerializingSessionStore()));
    const bob = asynchronous<ProtocolStore>(
      new InMemoryProtocolStore(IdentityKeyPair.generate(systemRandom), 2, new SerializingSessionStore()));
    const bundle = await generatePreKeyBundle(bob, {
      deviceId: 1, signedPreKeyId: 1, kyberPreKeyId: 2, preKeyId: 3, rng: systemRandom, nowMs: NOW * 1000,
    });
    await processPreKeyBundle(alice, bobAddr, bundle, { now: NOW });
    const text = (d: Uint8Array): string => new TextDecoder().decode(d);
    for (let i = 0; i < 4; i++) {
      const m = await encrypt(alice, bobAddr, utf8(`a${i}`), { now: NOW });
      assert.equal(text(await decrypt(bob, aliceAddr, m.messageType, m.serialized)), `a${i}`);
      const r = await encrypt(bob, aliceAddr, utf8(`b${i}`), { now: NOW });
      assert.equal(text(await decrypt(alice, bobAddr, r.messageType, r.serialized)), `b${i}`);
    }
    // Several operations in flight at once on one session still serialize correctly.
    const batch = await Promise.all([0, 1, 2, 3, 4].map((i) => encrypt(alice, bobAddr, utf8(`p${i}`), { now: NOW })));
    const counters = new Set(batch.map((m) => toHex(m.serialized.subarray(36, 38))));
    assert.equal(counters.size, 5, "five distinct chain positions");
    const plain = await Promise.all(batch.reverse().map((m) => decrypt(bob, aliceAddr, m.messageType, m.serialized)));
    assert.deepEqual(plain.map(text).sort(), ["p0", "p1", "p2", "p3", "p4"]);

    const senderStore = asynchronous<SenderKeyStore>(new InMemorySenderKeyStore());
    const memberStore = asynchronous<SenderKeyStore>(new InMemorySenderKeyStore());
    const distribution = randomUUID();
    const skdm = await createDistributionMessage(senderStore, aliceAddr, distribution);
    await processDistributionMessage(memberStore, aliceAddr, skdm.serialized);
    const sealed = await groupEncrypt(senderStore, aliceAddr, distribution, utf8("group"));
    assert.equal(text(await groupDecrypt(memberStore, aliceAddr, sealed)), "group");
    const record = await memberStore.loadSenderKey(aliceAddr, distribution);
    assert.ok(record instanceof SenderKeyRecord);
  });
});
