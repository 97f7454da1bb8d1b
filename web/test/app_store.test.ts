/** The browser's encrypted store: sealed at rest under an Argon2id key, units commit
 * all or nothing, and the protocol runs on it (over a Map and over IndexedDB). */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import "fake-indexeddb/auto"; // IDBKeyRange and friends as globals, as in a browser
import { IDBFactory } from "fake-indexeddb";

import { ProtocolAddress } from "../src/protocol/address.js";
import { generatePreKeyBundle } from "../src/protocol/bundles.js";
import { systemRandom } from "../src/protocol/bytes.js";
import { IdentityKeyPair } from "../src/protocol/keys.js";
import { decrypt, encrypt, processPreKeyBundle } from "../src/protocol/session.js";
import { InMemoryProtocolStore, Direction } from "../src/protocol/stores.js";
import { argon2id } from "hash-wasm";
import {
  CorruptValue, DEFAULT_PARAMS, decodeParams, deriveKey, encodeParams, MAX_PARAMS, TEST_PARAMS, WrongKey,
} from "../src/app/store/crypto.js";
import { DeviceStore, NoStore } from "../src/app/store/device.js";
import { IdbKv, MemoryKv, type Kv } from "../src/app/store/kv.js";
import { NOW, toHex, utf8 } from "./helpers.js";

async function withIdentity(kv: Kv): Promise<DeviceStore> {
  const store = await DeviceStore.create(kv, "correct horse", TEST_PARAMS);
  await store.transaction(() => store.setIdentity(IdentityKeyPair.generate(systemRandom), 1234));
  return store;
}

describe("store crypto", () => {
  test("the defaults are the Python store's (Argon2id 64 MiB, 3 passes, 2 lanes)", () => {
    assert.equal(encodeParams(DEFAULT_PARAMS), "3,65536,2");
    assert.deepEqual(decodeParams("3,65536,2"), DEFAULT_PARAMS);
    for (const bad of ["", "1,2", "0,65536,2", "3,4,2", "3,65536,x", "3,9999999999,2"]) {
      assert.throws(() => decodeParams(bad), RangeError, bad);
    }
  });

  test("parameters past the SDK's MAX_PARAMS (four times the defaults) are refused before any derivation", async () => {
    assert.deepEqual(MAX_PARAMS, { timeCost: 4 * DEFAULT_PARAMS.timeCost, memoryKib: 4 * DEFAULT_PARAMS.memoryKib,
      parallelism: 4 * DEFAULT_PARAMS.parallelism });
    assert.deepEqual(decodeParams("12,262144,8"), MAX_PARAMS);
    for (const bad of ["13,65536,2", "3,262145,2", "3,65536,9", "100,1048576,16"]) {
      assert.throws(() => decodeParams(bad), /cost more than this client/, bad);
    }
    // A store whose header was changed to ask for 1 GiB and 100 passes: refused at once,
    // where deriving would take minutes.
    const kv = new MemoryKv();
    await withIdentity(kv);
    const meta = JSON.parse(new TextDecoder().decode(await kv.get("meta:kdf"))) as { salt: string; argon2: string };
    kv.data.set("meta:kdf", utf8(JSON.stringify({ ...meta, argon2: "100,1048576,16" })));
    const started = performance.now();
    await assert.rejects(DeviceStore.open(kv, "correct horse"), /cost more than this client/);
    assert.ok(performance.now() - started < 1000);
    await assert.rejects(deriveKey("password", new Uint8Array(16), { ...MAX_PARAMS, timeCost: 13 }), RangeError);
    await assert.rejects(DeviceStore.create(new MemoryKv(), "correct horse", { ...MAX_PARAMS, parallelism: 9 }),
      RangeError);
  });

  test("deriveKey is Argon2id (RFC 9106 test vector shape: 32-byte output, salt-dependent)", async () => {
    const salt = new Uint8Array(16).fill(2);
    const key = await deriveKey("password", salt, TEST_PARAMS);
    assert.equal(key.length, 32);
    const direct = await argon2id({ password: utf8("password"), salt, iterations: 1, memorySize: 8, parallelism: 1,
      hashLength: 32, outputType: "binary" });
    assert.equal(toHex(key), toHex(direct));
    assert.notEqual(toHex(await deriveKey("password", new Uint8Array(16).fill(3), TEST_PARAMS)), toHex(key));
    await assert.rejects(deriveKey("", salt, TEST_PARAMS), RangeError);
  });
});

for (const [name, makeKv] of [
  ["memory", async () => new MemoryKv()],
  ["IndexedDB", async () => IdbKv.open(`test-${Math.random()}`, new IDBFactory())],
] as [string, () => Promise<Kv>][]) {
  describe(`device store over ${name}`, () => {
    test("reopens only with the right password", async () => {
      const kv = await makeKv();
      await assert.rejects(DeviceStore.open(kv, "x"), NoStore);
      const store = await withIdentity(kv);
      const pair = store.getIdentityKeyPair();
      const again = await DeviceStore.open(kv, "correct horse");
      assert.ok(again.getIdentityKeyPair().publicKey.equals(pair.publicKey));
      assert.equal(again.getLocalRegistrationId(), 1234);
      await assert.rejects(DeviceStore.open(kv, "wrong horse"), WrongKey);
    });

    test("no private value is stored in the clear, and values do not open under another key", async () => {
      const kv = await makeKv();
      const store = await withIdentity(kv);
      await store.transaction(() => store.putJson("account", { token: "secret-token-value" }));
      const privateHex = toHex(store.getIdentityKeyPair().privateKey.serialize());
      const raw = await kv.scan("");
      const everything = raw.map(([, v]) => toHex(v)).join("");
      assert.ok(!everything.includes(privateHex));
      assert.ok(!everything.includes(toHex(utf8("secret-token-value"))));
      const sealed = (await kv.get("account"))!;
      await kv.commit(new Map([["identity", sealed]]));
      await assert.rejects(store.get("identity"), CorruptValue);
      const flipped = sealed.slice();
      flipped[20]! ^= 1;
      await kv.commit(new Map([["account", flipped]]));
      await assert.rejects(store.get("account"), CorruptValue);
    });

    test("a unit commits all or nothing; savepoints undo part of one; writes need a unit", async () => {
      const kv = await makeKv();
      const store = await withIdentity(kv);
      await assert.rejects(store.transaction(async () => {
        await store.putJson("a", 1);
        assert.equal(await store.getJson("a"), 1);
        throw new Error("boom");
      }), /boom/);
      assert.equal(await store.getJson("a"), undefined);
      await store.transaction(async () => {
        await store.putJson("a", 1);
        const saved = store.savepoint();
        await store.putJson("b", 2);
        store.rollback(saved);
      });
      assert.equal(await store.getJson("a"), 1);
      assert.equal(await store.getJson("b"), undefined);
      await assert.rejects(store.putJson("c", 3), /not inside a transaction/);
      assert.deepEqual((await store.scanJson("a")).map(([k]) => k), ["a"]);
    });

    test("a session runs on it, and a failed decrypt inside a unit changes nothing", async () => {
      const kv = await makeKv();
      const bob = await withIdentity(kv);
      bob.ownAccountId = "bob";
      const alice = new InMemoryProtocolStore(IdentityKeyPair.generate(systemRandom), 77);
      const bundle = await bob.transaction(() => generatePreKeyBundle(bob, { deviceId: 1, signedPreKeyId: 1, kyberPreKeyId: 1, preKeyId: 1, rng: systemRandom, nowMs: NOW * 1000 }));
      await processPreKeyBundle(alice, new ProtocolAddress("bob", 1), bundle, { now: NOW });
      const first = await encrypt(alice, new ProtocolAddress("bob", 1), utf8("hello"), { now: NOW });
      const fromAlice = new ProtocolAddress("alice", 1);
      const tampered = first.serialized.slice();
      tampered[tampered.length - 1]! ^= 1;
      await assert.rejects(bob.transaction(() => decrypt(bob, fromAlice, first.messageType, tampered)));
      assert.equal(await bob.loadSession(fromAlice), undefined);
      const plain = await bob.transaction(() => decrypt(bob, fromAlice, first.messageType, first.serialized));
      assert.equal(new TextDecoder().decode(plain), "hello");
      const reopened = await DeviceStore.open(kv, "correct horse");
      assert.ok(await reopened.loadSession(fromAlice));
      assert.deepEqual(await reopened.sessionDevices("alice"), [1]);
      const reply = await reopened.transaction(() => encrypt(reopened, fromAlice, utf8("hi"), { now: NOW }));
      assert.equal(new TextDecoder().decode(await decrypt(alice, new ProtocolAddress("bob", 1), reply.messageType,
        reply.serialized)), "hi");
    });

    test("trust: own devices only under our key; a changed contact key blocks sending", async () => {
      const kv = await makeKv();
      const store = await withIdentity(kv);
      store.ownAccountId = "me";
      const mine = store.getIdentityKeyPair().publicKey;
      const other = IdentityKeyPair.generate(systemRandom).publicKey;
      const carol = new ProtocolAddress("carol", 1);
      assert.equal(await store.isTrustedIdentity(new ProtocolAddress("me", 2), mine, Direction.RECEIVING), true);
      assert.equal(await store.isTrustedIdentity(new ProtocolAddress("me", 2), other, Direction.RECEIVING), false);
      assert.equal(await store.isTrustedIdentity(carol, other, Direction.SENDING), true);
      await store.transaction(async () => assert.equal(await store.saveIdentity(carol, other), false));
      const changed = IdentityKeyPair.generate(systemRandom).publicKey;
      assert.equal(await store.isTrustedIdentity(carol, changed, Direction.RECEIVING), true);
      assert.equal(await store.isTrustedIdentity(carol, changed, Direction.SENDING), false);
      await store.transaction(async () => assert.equal(await store.saveIdentity(carol, changed), true));
      assert.equal(await store.isTrustedIdentity(carol, changed, Direction.SENDING), false);
      await store.transaction(() => store.trustIdentity("carol", false));
      assert.equal(await store.isTrustedIdentity(carol, changed, Direction.SENDING), true);
    });
  });
}
