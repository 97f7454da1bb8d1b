/** Passkey unlocking: the versioned record that wraps the local key under a key derived
 * from a WebAuthn PRF output (a fixed value here), and the register / unlock / remove
 * flows against a stand-in for navigator.credentials. */

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { describe, test } from "node:test";

import "fake-indexeddb/auto"; // IDBKeyRange and friends as globals, as in a browser
import { IDBFactory } from "fake-indexeddb";

import { systemRandom } from "../src/protocol/bytes.js";
import { IdentityKeyPair } from "../src/protocol/keys.js";
import { deriveKey, LocalKey, TEST_PARAMS, WrongKey } from "../src/app/store/crypto.js";
import { DeviceStore } from "../src/app/store/device.js";
import { IdbKv, KvConflict, MemoryKv, type Kv } from "../src/app/store/kv.js";
import {
  addPasskey, changePassword, decodeRecord, encodeRecord, NoPasskey, openRecord, PasskeyConflict, PasskeyMismatch,
  PasskeyNotUsed, saveRecord,
  PasskeyRecordInvalid, PasskeyStale, PrfUnavailable, RECORD_KEY, removePasskey, sealRecord, unlockWithPasskey,
  VERSION, type Credentials,
} from "../src/app/store/passkey.js";
import { toHex } from "./helpers.js";

const PASSWORD = "correct horse";
const PRF = new Uint8Array(32).fill(7);
const SALT = new Uint8Array(32).fill(9);
const CRED = new Uint8Array([1, 2, 3, 4, 5]);
const ACCOUNT = { accountId: "0b0f6d6e-0000-4000-8000-000000000001", username: "ada" };

async function storeWithIdentity(): Promise<{ kv: MemoryKv; identity: IdentityKeyPair }> {
  const kv = new MemoryKv();
  const store = await DeviceStore.create(kv, PASSWORD, TEST_PARAMS);
  const identity = IdentityKeyPair.generate(systemRandom);
  await store.transaction(() => store.setIdentity(identity, 77));
  return { kv, identity };
}

async function rawKey(kv: MemoryKv): Promise<Uint8Array> {
  return DeviceStore.rawKey(kv, PASSWORD);
}

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  return toHex(haystack).includes(toHex(needle));
}

describe("passkey record", () => {
  test("wraps the local key: the unwrapped key opens the store, the record holds no key bytes", async () => {
    const { kv, identity } = await storeWithIdentity();
    const raw = await rawKey(kv);
    const copy = raw.slice();
    const check = await DeviceStore.checkValue(kv);
    const data = await sealRecord(raw, check, CRED, SALT, PRF, 1_700_000_000_000);
    assert.deepEqual(raw, new Uint8Array(32), "the caller's raw key is wiped");
    assert.ok(!contains(data, copy) && !contains(data, PRF));
    // version | created | id length | id | salt | check hash | nonce | wrapped key + tag
    assert.equal(data.length, 1 + 8 + 2 + CRED.length + 32 + 32 + 12 + 48);
    assert.equal(data[0], VERSION);
    const record = decodeRecord(data);
    assert.deepEqual(record.credentialId, CRED);
    assert.deepEqual(record.prfSalt, SALT);
    assert.equal(record.created, 1_700_000_000_000);
    assert.deepEqual(encodeRecord(record), data);

    const key = await openRecord(data, check, PRF);
    assert.equal(key.key.extractable, false);
    const store = await DeviceStore.open(kv, key);
    assert.deepEqual(store.getIdentityKeyPair().serialize(), identity.serialize());
  });

  test("another PRF output, or any changed header byte, does not unwrap", async () => {
    const { kv } = await storeWithIdentity();
    const check = await DeviceStore.checkValue(kv);
    const data = await sealRecord(await rawKey(kv), check, CRED, SALT, PRF, 1);
    await assert.rejects(openRecord(data, check, new Uint8Array(32).fill(8)), PasskeyMismatch);
    // created, credential id and PRF salt are bound by the associated data
    for (const at of [8, 11, 11 + CRED.length, 11 + CRED.length + 31]) {
      const changed = data.slice();
      changed[at]! ^= 1;
      await assert.rejects(openRecord(changed, check, PRF), PasskeyMismatch, `byte ${at}`);
    }
    // the nonce and the wrapped key itself
    for (const at of [data.length - 60, data.length - 1]) {
      const changed = data.slice();
      changed[at]! ^= 1;
      await assert.rejects(openRecord(changed, check, PRF), PasskeyMismatch, `byte ${at}`);
    }
    await assert.rejects(openRecord(data, check, PRF.subarray(0, 31)), RangeError);
  });

  test("a store sealed under another key (a new password) finds the record stale", async () => {
    const { kv } = await storeWithIdentity();
    const data = await sealRecord(await rawKey(kv), await DeviceStore.checkValue(kv), CRED, SALT, PRF, 1);
    const other = await LocalKey.fromRaw(await deriveKey("another password", SALT.subarray(0, 16), TEST_PARAMS));
    await assert.rejects(openRecord(data, await other.checkValue(), PRF), PasskeyStale);
    // and the check hash is bound too: changing it in the record does not get past the unwrap
    const changed = data.slice();
    changed[11 + CRED.length + 32]! ^= 1;
    await assert.rejects(openRecord(changed, await DeviceStore.checkValue(kv), PRF), PasskeyStale);
  });

  test("anything but a whole version-1 record is refused before any cryptography", async () => {
    const { kv } = await storeWithIdentity();
    const data = await sealRecord(await rawKey(kv), await DeviceStore.checkValue(kv), CRED, SALT, PRF, 1);
    const refused = (bytes: Uint8Array, why: RegExp) => assert.throws(() => decodeRecord(bytes),
      (e: unknown) => e instanceof PasskeyRecordInvalid && why.test(e.message));
    for (const version of [0, 2, 255]) {
      const other = data.slice();
      other[0] = version;
      refused(other, new RegExp(`version ${version} is not supported`));
    }
    refused(data.subarray(0, data.length - 1), /bytes where/);
    refused(new Uint8Array([...data, 0]), /bytes where/);
    refused(data.subarray(0, 5), /truncated/);
    refused(new Uint8Array(0), /truncated/);
    const noId = data.slice();
    noId[9] = 0;
    noId[10] = 0;
    refused(noId.subarray(0, data.length - CRED.length), /1 to 1023 bytes/);
    const dateTooLate = data.slice();
    dateTooLate.fill(0xff, 1, 9);
    refused(dateTooLate, /date/);
    await assert.rejects(sealRecord(await rawKey(kv), await DeviceStore.checkValue(kv), new Uint8Array(1024), SALT,
      PRF, 1), PasskeyRecordInvalid);
    await assert.rejects(sealRecord(await rawKey(kv), await DeviceStore.checkValue(kv), CRED, SALT.subarray(1),
      PRF, 1), PasskeyRecordInvalid);
  });
});

/** A stand-in authenticator: PRF(credential, salt) = HMAC-SHA-256(its secret, salt). */
class FakeAuthenticator implements Credentials {
  readonly secrets = new Map<string, Buffer>();
  calls: string[] = [];
  prfAtCreate = true;
  prfSupported = true;
  refuse: string | undefined;
  /** Runs while the user would be touching the authenticator (another tab's work). */
  meanwhile: (() => Promise<void>) | undefined;

  #credential(id: Uint8Array, salt: ArrayBuffer | undefined, enabled: boolean): Credential {
    const secret = this.secrets.get(toHex(id));
    const results = salt !== undefined && secret !== undefined && this.prfSupported
      ? { first: new Uint8Array(createHmac("sha256", secret).update(new Uint8Array(salt)).digest()).buffer }
      : undefined;
    return {
      id: toHex(id), type: "public-key", rawId: id.slice().buffer,
      getClientExtensionResults: () => (this.prfSupported ? { prf: { enabled, results } } : {}),
    } as unknown as Credential;
  }

  async create(options: CredentialCreationOptions): Promise<Credential | null> {
    this.calls.push("create");
    if (this.refuse) throw new DOMException("refused", this.refuse);
    await this.meanwhile?.();
    const o = options.publicKey!;
    assert.equal(o.authenticatorSelection?.userVerification, "required");
    assert.equal(o.rp.id, "example.test");
    const id = new Uint8Array(16).fill(this.secrets.size + 1);
    this.secrets.set(toHex(id), Buffer.alloc(32, this.secrets.size + 40));
    const salt = o.extensions?.prf?.eval?.first as ArrayBuffer | undefined;
    return this.#credential(id, this.prfAtCreate ? salt : undefined, true);
  }

  async get(options: CredentialRequestOptions): Promise<Credential | null> {
    this.calls.push("get");
    if (this.refuse) throw new DOMException("refused", this.refuse);
    const o = options.publicKey!;
    assert.equal(o.userVerification, "required");
    const id = new Uint8Array(o.allowCredentials![0]!.id as ArrayBuffer);
    if (!this.secrets.has(toHex(id))) throw new DOMException("no such credential", "NotAllowedError");
    return this.#credential(id, o.extensions?.prf?.eval?.first as ArrayBuffer, false);
  }
}

describe("passkey register, unlock, remove", () => {
  test("a registered passkey unlocks the store; the password still does", async () => {
    const { kv, identity } = await storeWithIdentity();
    const authenticator = new FakeAuthenticator();
    const record = await addPasskey(kv, PASSWORD, ACCOUNT, "example.test", authenticator, 5);
    assert.equal(record.created, 5);
    assert.deepEqual(authenticator.calls, ["create"]);
    const key = await unlockWithPasskey(kv, "example.test", authenticator);
    assert.deepEqual((await DeviceStore.open(kv, key)).getIdentityKeyPair().serialize(), identity.serialize());
    assert.deepEqual((await DeviceStore.open(kv, PASSWORD)).getIdentityKeyPair().serialize(), identity.serialize());
  });

  test("an authenticator that evaluates the PRF only on use gets asked once more at registration", async () => {
    const { kv } = await storeWithIdentity();
    const authenticator = new FakeAuthenticator();
    authenticator.prfAtCreate = false;
    await addPasskey(kv, PASSWORD, ACCOUNT, "example.test", authenticator);
    assert.deepEqual(authenticator.calls, ["create", "get"]);
    await DeviceStore.open(kv, await unlockWithPasskey(kv, "example.test", authenticator));
  });

  test("no PRF from the browser or authenticator: a clear error and nothing stored", async () => {
    const { kv } = await storeWithIdentity();
    const authenticator = new FakeAuthenticator();
    authenticator.prfSupported = false;
    await assert.rejects(addPasskey(kv, PASSWORD, ACCOUNT, "example.test", authenticator),
      (e: unknown) => e instanceof PrfUnavailable && /does not offer the PRF extension/.test(e.message));
    assert.equal(kv.data.has(RECORD_KEY), false);
    await assert.rejects(unlockWithPasskey(kv, "example.test", authenticator), NoPasskey);
  });

  test("a wrong password registers nothing and asks no authenticator", async () => {
    const { kv } = await storeWithIdentity();
    const authenticator = new FakeAuthenticator();
    await assert.rejects(addPasskey(kv, "wrong horse", ACCOUNT, "example.test", authenticator), WrongKey);
    assert.deepEqual(authenticator.calls, []);
    assert.equal(kv.data.has(RECORD_KEY), false);
  });

  test("a cancelled or removed credential is PasskeyNotUsed; another credential's answer is refused", async () => {
    const { kv } = await storeWithIdentity();
    const authenticator = new FakeAuthenticator();
    await addPasskey(kv, PASSWORD, ACCOUNT, "example.test", authenticator);
    authenticator.refuse = "NotAllowedError";
    await assert.rejects(unlockWithPasskey(kv, "example.test", authenticator), PasskeyNotUsed);
    authenticator.refuse = undefined;
    authenticator.secrets.clear(); // the credential is gone from the authenticator
    await assert.rejects(unlockWithPasskey(kv, "example.test", authenticator), PasskeyNotUsed);
    // A credential with the same id but another secret (a different authenticator).
    authenticator.secrets.set(toHex(decodeRecord(kv.data.get(RECORD_KEY)!).credentialId), Buffer.alloc(32, 1));
    await assert.rejects(unlockWithPasskey(kv, "example.test", authenticator), PasskeyMismatch);
    await DeviceStore.open(kv, PASSWORD);
  });

  test("a changed store key is found stale before the browser asks for the passkey", async () => {
    const { kv } = await storeWithIdentity();
    const authenticator = new FakeAuthenticator();
    await addPasskey(kv, PASSWORD, ACCOUNT, "example.test", authenticator);
    const other = await LocalKey.fromRaw(await deriveKey("another password", SALT.subarray(0, 16), TEST_PARAMS));
    kv.data.set("meta:check", await other.checkValue());
    authenticator.calls = [];
    await assert.rejects(unlockWithPasskey(kv, "example.test", authenticator), PasskeyStale);
    assert.deepEqual(authenticator.calls, []);
  });

  test("removing the passkey deletes the record: only the password unlocks", async () => {
    const { kv } = await storeWithIdentity();
    const authenticator = new FakeAuthenticator();
    await addPasskey(kv, PASSWORD, ACCOUNT, "example.test", authenticator);
    assert.equal(await removePasskey(kv, "example.test"), true);
    assert.equal(kv.data.has(RECORD_KEY), false);
    await assert.rejects(unlockWithPasskey(kv, "example.test", authenticator), NoPasskey);
    assert.equal(await removePasskey(kv, "example.test"), false);
    await DeviceStore.open(kv, PASSWORD);
  });

  test("changing the password seals everything again and drops the passkey, which must be added again", async () => {
    const { kv, identity } = await storeWithIdentity();
    const authenticator = new FakeAuthenticator();
    await addPasskey(kv, PASSWORD, ACCOUNT, "example.test", authenticator);
    const store = await DeviceStore.open(kv, PASSWORD);
    await store.transaction(() => store.putJson("message:1", { text: "kept" }));
    const before = new Map(kv.data);
    await assert.rejects(changePassword(store, "wrong horse", "a new password"), WrongKey);
    await assert.rejects(changePassword(store, PASSWORD, "short"), RangeError);
    assert.deepEqual(kv.data, before, "a refused change changes nothing");

    assert.equal(await changePassword(store, PASSWORD, "a new password"), true);
    assert.equal(kv.data.has(RECORD_KEY), false);
    for (const [k, v] of kv.data) {
      if (!k.startsWith("meta:")) assert.notDeepEqual(v, before.get(k), `${k} sealed again`);
    }
    // the open store goes on under the new key, and a reopened one too
    assert.deepEqual(await store.getJson("message:1"), { text: "kept" });
    await store.transaction(() => store.putJson("message:2", { text: "after" }));
    await assert.rejects(DeviceStore.open(kv, PASSWORD), WrongKey);
    const reopened = await DeviceStore.open(kv, "a new password");
    assert.deepEqual(reopened.getIdentityKeyPair().serialize(), identity.serialize());
    assert.deepEqual(await reopened.getJson("message:2"), { text: "after" });
    await assert.rejects(unlockWithPasskey(kv, "example.test", authenticator), NoPasskey);
    // added again, it unlocks under the new key
    await addPasskey(kv, "a new password", ACCOUNT, "example.test", authenticator);
    await DeviceStore.open(kv, await unlockWithPasskey(kv, "example.test", authenticator));
  });

  test("a record left behind by a password change (not dropped) is found stale", async () => {
    const { kv } = await storeWithIdentity();
    const authenticator = new FakeAuthenticator();
    await addPasskey(kv, PASSWORD, ACCOUNT, "example.test", authenticator);
    await (await DeviceStore.open(kv, PASSWORD)).changePassword(PASSWORD, "a new password");
    assert.equal(kv.data.has(RECORD_KEY), true);
    await assert.rejects(unlockWithPasskey(kv, "example.test", authenticator), PasskeyStale);
  });
});

describe("adding a passkey while the store changes (compare-and-set)", () => {
  const kinds: [string, () => Promise<Kv>][] = [
    ["memory", async () => new MemoryKv()],
    ["IndexedDB", async () => IdbKv.open(`passkey-${Math.random()}`, new IDBFactory())],
  ];

  for (const [kind, open] of kinds) {
    test(`${kind}: a conditional commit writes only while the expected records are unchanged`, async () => {
      const kv = await open();
      const a = new Uint8Array([1]);
      await kv.commit(new Map([["x", a]]));
      await assert.rejects(kv.commit(new Map([["y", a]]), new Map([["x", new Uint8Array([2])]])), KvConflict);
      await assert.rejects(kv.commit(new Map([["y", a]]), new Map([["x", a], ["z", a]])), KvConflict); // z is absent
      assert.equal(await kv.get("y"), undefined, "nothing written");
      await kv.commit(new Map([["y", a], ["x", null]]), new Map([["x", a], ["z", undefined]]));
      assert.deepEqual([await kv.get("x"), await kv.get("y")], [undefined, a]);
    });

    test(`${kind}: the password changed in another tab during the ceremony: refused, nothing stored, a retry works`,
      async () => {
        const kv = await open();
        const store = await DeviceStore.create(kv, PASSWORD, TEST_PARAMS);
        const identity = IdentityKeyPair.generate(systemRandom);
        await store.transaction(() => store.setIdentity(identity, 77));
        const authenticator = new FakeAuthenticator();
        authenticator.meanwhile = () => store.changePassword(PASSWORD, "a new password");
        await assert.rejects(addPasskey(kv, PASSWORD, ACCOUNT, "example.test", authenticator),
          (e: unknown) => e instanceof PasskeyConflict && /nothing was stored; add it again/.test(e.message));
        assert.equal(await kv.get(RECORD_KEY), undefined);
        await assert.rejects(unlockWithPasskey(kv, "example.test", authenticator), NoPasskey);
        await assert.rejects(addPasskey(kv, PASSWORD, ACCOUNT, "example.test", authenticator), WrongKey);
        authenticator.meanwhile = undefined;
        await addPasskey(kv, "a new password", ACCOUNT, "example.test", authenticator);
        const unlocked = await DeviceStore.open(kv, await unlockWithPasskey(kv, "example.test", authenticator));
        assert.deepEqual(unlocked.getIdentityKeyPair().serialize(), identity.serialize());
      });
  }

  test("another tab added (or removed) a passkey meanwhile: refused, the other tab's record stays", async () => {
    const { kv } = await storeWithIdentity();
    const authenticator = new FakeAuthenticator();
    const other = new FakeAuthenticator();
    authenticator.meanwhile = async () => {
      await addPasskey(kv, PASSWORD, ACCOUNT, "example.test", other);
    };
    await assert.rejects(addPasskey(kv, PASSWORD, ACCOUNT, "example.test", authenticator), PasskeyConflict);
    await DeviceStore.open(kv, await unlockWithPasskey(kv, "example.test", other));
    authenticator.meanwhile = async () => {
      await removePasskey(kv, "example.test");
    };
    await assert.rejects(addPasskey(kv, PASSWORD, ACCOUNT, "example.test", authenticator), PasskeyConflict);
    assert.equal(kv.data.has(RECORD_KEY), false);
  });

  test("saveRecord refuses a record made for another check value than the one it compares with", async () => {
    const { kv } = await storeWithIdentity();
    const check = await DeviceStore.checkValue(kv);
    const data = await sealRecord(await rawKey(kv), check, CRED, SALT, PRF, 1);
    const other = await (await LocalKey.fromRaw(new Uint8Array(32).fill(3))).checkValue();
    await assert.rejects(saveRecord(kv, data, { check: other, previous: undefined }), RangeError);
    await saveRecord(kv, data, { check, previous: undefined });
    await assert.rejects(saveRecord(kv, data, { check, previous: undefined }), PasskeyConflict); // one exists now
    await saveRecord(kv, data, { check, previous: data });
  });
});
