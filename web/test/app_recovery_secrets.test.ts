/** Making and changing the recovery secrets (src/app/recovery_secrets.ts) and resetting the
 * identity (src/app/identity_reset.ts) from the browser, against a stand-in relay: what
 * the relay gets opens with the written-down key or the passphrase the way the SDK opens
 * it, weak passphrases never leave, and a reset replaces the identity, forgets sessions
 * and group chains, or puts everything back when the relay refuses. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { fromBinary } from "@bufbuild/protobuf";
import { argon2id } from "hash-wasm";

import { concat, systemRandom, toHex } from "../src/protocol/bytes.js";
import { IdentityKeyPair } from "../src/protocol/keys.js";
import { RelayError } from "../src/app/api.js";
import type { Client } from "../src/app/client.js";
import { adoptIdentityReset } from "../src/app/identity_adopt.js";
import { IdentityResetError, resetIdentity } from "../src/app/identity_reset.js";
import { newDeviceBody, DEFAULT_POLICY } from "../src/app/keys.js";
import { RecoveryBlobSchema, type RecoveryBlob } from "../src/app/proto/cipherpost/app/v1/app_pb.js";
import { deriveSecrets, parseKey } from "../src/app/recovery.js";
import { WeakPassphrase } from "../src/app/passphrase_rating.js";
import {
  heldSecrets, newRecoveryKey, resealRecovery, saveRecoveryKey, setRecoveryPassphrase,
} from "../src/app/recovery_secrets.js";
import { turnServerHistoryOn } from "../src/app/server_history.js";
import { TEST_PARAMS } from "../src/app/store/crypto.js";
import { DeviceStore } from "../src/app/store/device.js";
import { MemoryKv } from "../src/app/store/kv.js";
import { fromBase64, toBase64 } from "../src/app/wire.js";
// strength.js as the page loads it: zxcvbn for setRecoveryPassphrase's check
import "../src/strength/main.js";

const ME = "aaaaaaaa-0000-4000-8000-000000000001";
const BOB = "bbbbbbbb-0000-4000-8000-000000000002";
const GROUP = "cc".repeat(32);
const utf8 = (s: string) => new TextEncoder().encode(s);

interface Call { method: string; path: string; body: Record<string, unknown> | undefined }

async function setUp(answer: (call: Call) => unknown = () => undefined, devices = [1]) {
  const store = await DeviceStore.create(new MemoryKv(), "pw", TEST_PARAMS);
  const identity = IdentityKeyPair.generate(systemRandom);
  const bob = IdentityKeyPair.generate(systemRandom);
  await store.transaction(async () => {
    await newDeviceBody(store, identity, 1234, 1_000, { ...DEFAULT_POLICY, oneTimeBatch: 2, kyberBatch: 1 });
    await store.putJson(`trust:${BOB}`, { key: toHex(bob.publicKey.serialize()), verified: true, changed: false });
    await store.putJson(`contact:${BOB}`, { accountId: BOB, username: "bob" });
    await store.putJson(`group:${GROUP}`, "0a0b");
    await store.put(`session:${BOB}:1`, Uint8Array.of(1));
    await store.put(`gdist:${GROUP}`, Uint8Array.of(1));
  });
  store.ownAccountId = ME;
  const calls: Call[] = [];
  const sent: unknown[] = [];
  const client = {
    accountId: ME, deviceId: 1, username: "alice", store,
    api: {
      request: async (method: string, path: string, body?: Record<string, unknown>) => {
        const call = { method, path, body };
        calls.push(call);
        return answer(call);
      },
      devices: async () => devices,
    },
    outbox: {
      startSession: async () => undefined,
      sendRequest: async (...args: unknown[]) => { sent.push(args); },
      deliver: async () => [],
    },
    flushHistory: async () => undefined,
  } as unknown as Client;
  return { store, client, calls, sent, identity, bob };
}

async function open(key: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Promise<RecoveryBlob> {
  const aes = await crypto.subtle.importKey("raw", key as Uint8Array<ArrayBuffer>, "AES-GCM", false, ["decrypt"]);
  return fromBinary(RecoveryBlobSchema, new Uint8Array(await crypto.subtle.decrypt(
    { name: "AES-GCM", iv: sealed.slice(0, 12), additionalData: aad as Uint8Array<ArrayBuffer> }, aes, sealed.slice(12))));
}

describe("recovery key", () => {
  test("the relay gets the key's lookup id and release secret and a blob the written key opens", async () => {
    const { client, calls, identity, bob } = await setUp();
    const { key, text } = newRecoveryKey();
    assert.match(text, /^([0-9A-HJKMNP-TV-Z]{4} ){13}[0-9A-HJKMNP-TV-Z]{4}$/);
    await saveRecoveryKey(client, key);
    assert.deepEqual(key, new Uint8Array(32), "the key's bytes are wiped once saved");
    assert.equal(calls.length, 1);
    const [put] = calls;
    assert.deepEqual([put!.method, put!.path], ["PUT", "/v1/recovery"]);
    const secrets = deriveSecrets(parseKey(text));
    assert.equal(put!.body!.lookup_id, toBase64(secrets.lookupId));
    assert.equal(put!.body!.auth, toBase64(secrets.auth));
    const blob = await open(secrets.sealKey, concat(utf8("Cipherpost recovery blob v1"), secrets.lookupId),
      fromBase64(String(put!.body!.blob)));
    assert.equal(blob.accountId, ME);
    assert.equal(blob.username, "alice");
    assert.deepEqual(blob.identityKeyPair, identity.serialize());
    assert.deepEqual(blob.contacts.map((c) => [c.accountId, c.username, toHex(c.identityKey), c.verified]),
      [[BOB, "bob", toHex(bob.publicKey.serialize()), true]]);
    assert.deepEqual(blob.groupStates, [Uint8Array.of(10, 11)]);
    assert.deepEqual(await heldSecrets(client), { key: true, passphrase: false });
  });

  test("a refused save keeps nothing", async () => {
    const { client } = await setUp(() => { throw new RelayError(403, "second_factor_required", "code", {}); });
    await assert.rejects(saveRecoveryKey(client, newRecoveryKey().key), RelayError);
    assert.deepEqual(await heldSecrets(client), { key: false, passphrase: false });
  });

  test("sealing again uses the same secrets, with what the store holds now", async () => {
    const { client, calls, store } = await setUp();
    const { key, text } = newRecoveryKey();
    await saveRecoveryKey(client, key);
    await store.transaction(() => store.putJson(`contact:${BOB}`, { accountId: BOB, username: "robert" }));
    assert.equal(await resealRecovery(client), 1);
    const secrets = deriveSecrets(parseKey(text));
    assert.equal(calls[1]!.body!.lookup_id, calls[0]!.body!.lookup_id);
    assert.equal(calls[1]!.body!.auth, calls[0]!.body!.auth);
    assert.notEqual(calls[1]!.body!.blob, calls[0]!.body!.blob);
    const blob = await open(secrets.sealKey, concat(utf8("Cipherpost recovery blob v1"), secrets.lookupId),
      fromBase64(String(calls[1]!.body!.blob)));
    assert.equal(blob.contacts[0]!.username, "robert");
  });
});

test("turning server history on seals the blob again with the history keys", async () => {
  const { client, calls } = await setUp();
  const { key, text } = newRecoveryKey();
  await saveRecoveryKey(client, key);
  const secrets = deriveSecrets(parseKey(text));
  const opened = async (n: number) => open(secrets.sealKey, concat(utf8("Cipherpost recovery blob v1"), secrets.lookupId),
    fromBase64(String(calls[n]!.body!.blob)));
  assert.equal((await opened(0)).historyEnabled, false);
  await turnServerHistoryOn(client, 5_000);
  assert.equal(calls.length, 2);
  const blob = await opened(1);
  assert.equal(blob.historyEnabled, true);
  assert.equal(blob.historyKeys?.idKey.length, 32);
});

describe("recovery passphrase", () => {
  const good = "orbit walnut pencil tundra";

  test("Argon2id with the given parameters: the verifier and a blob the passphrase opens", async () => {
    const { client, calls } = await setUp();
    await setRecoveryPassphrase(client, good, TEST_PARAMS);
    const [put] = calls;
    assert.deepEqual([put!.method, put!.path, put!.body!.params], ["PUT", "/v1/recovery/passphrase", "1,8,1"]);
    const salt = fromBase64(String(put!.body!.salt));
    assert.equal(salt.length, 16);
    const raw = await argon2id({ password: utf8(good), salt, iterations: 1, memorySize: 8, parallelism: 1,
      hashLength: 64, outputType: "binary" });
    assert.equal(put!.body!.verifier, toBase64(raw.slice(32)));
    const blob = await open(raw.slice(0, 32), concat(utf8("Cipherpost recovery passphrase blob v1"), salt),
      fromBase64(String(put!.body!.blob)));
    assert.equal(blob.accountId, ME);
    assert.deepEqual(await heldSecrets(client), { key: false, passphrase: true });
    assert.equal(await resealRecovery(client), 1);
    assert.deepEqual([calls[1]!.body!.salt, calls[1]!.body!.verifier], [put!.body!.salt, put!.body!.verifier]);
  });

  test("the SDK's default parameters by default", async () => {
    const { client, calls } = await setUp();
    await setRecoveryPassphrase(client, good);
    assert.equal(calls[0]!.body!.params, "3,65536,2");
  });

  test("weak passphrases are refused before anything is derived or sent", async () => {
    const { client, calls } = await setUp();
    for (const weak of ["short one", "aaaaaaaaaaaaaaaaaaaaaaaa", "Password123!Password123!", "password password password",
      "alice1990", "cipherpost2026"]) {
      await assert.rejects(setRecoveryPassphrase(client, weak, TEST_PARAMS),
        (e: unknown) => e instanceof WeakPassphrase && e.rating.score < 3 && /too easy to guess/.test(e.message), weak);
    }
    assert.equal(calls.length, 0);
  });
});

describe("identity reset", () => {
  test("a new identity and keys for the relay, sessions and group chains forgotten", async () => {
    const { client, calls, store, identity } = await setUp();
    const result = await resetIdentity(client, () => 2_000_000);
    assert.deepEqual(result, { unreachable: [], resealed: 0 });
    const [put] = calls;
    assert.deepEqual([put!.method, put!.path], ["PUT", "/v1/accounts/me/identity"]);
    const fresh = store.getIdentityKeyPair();
    assert.notDeepEqual(fresh.serialize(), identity.serialize());
    assert.equal(put!.body!.identity_key, toBase64(fresh.publicKey.serialize()));
    assert.deepEqual(put!.body!.registration_ids, [{ device_id: 1, registration_id: store.getLocalRegistrationId() }]);
    assert.equal(put!.body!.registration_id, undefined);
    for (const field of ["signed_prekey", "last_resort_kyber_prekey", "one_time_prekeys", "kyber_prekeys"]) {
      assert.ok(put!.body![field], field);
    }
    assert.deepEqual(await store.scan("session:"), []);
    assert.deepEqual(await store.scan("gdist:"), []);
    assert.equal((await store.getTrust(BOB))!.key.length > 0, true, "contacts' keys stay");
  });

  test("the recovery blobs this browser holds the secrets of carry the new key", async () => {
    const { client, calls, store } = await setUp();
    const { key, text } = newRecoveryKey();
    await saveRecoveryKey(client, key);
    assert.equal((await resetIdentity(client)).resealed, 1);
    const secrets = deriveSecrets(parseKey(text));
    const last = calls[calls.length - 1]!;
    assert.equal(last.path, "/v1/recovery");
    const blob = await open(secrets.sealKey, concat(utf8("Cipherpost recovery blob v1"), secrets.lookupId),
      fromBase64(String(last.body!.blob)));
    assert.deepEqual(blob.identityKeyPair, store.getIdentityKeyPair().serialize());
  });

  test("a refusal puts the old identity back and forgets nothing", async () => {
    let identityKey = "";
    const { client, store, identity, sent } = await setUp((call) => {
      if (call.method === "PUT") throw new RelayError(403, "second_factor_invalid", "wrong code", {});
      return { identity_key: identityKey };
    });
    identityKey = toBase64(identity.publicKey.serialize());
    const registration = store.getLocalRegistrationId();
    await assert.rejects(resetIdentity(client), IdentityResetError);
    assert.deepEqual(store.getIdentityKeyPair().serialize(), identity.serialize());
    assert.equal(store.getLocalRegistrationId(), registration);
    assert.equal((await store.scan("session:")).length, 1);
    assert.equal(sent.length, 0);
  });

  test("with a second factor the code is asked for before anything changes; a wrong one asks again, a cancel changes nothing", async () => {
    const { client, store, identity } = await setUp();
    const codes: (string | undefined)[] = [];
    const api = client.api as unknown as Record<string, unknown>;
    api.request = async (method: string, path: string, _body?: unknown, _auth?: boolean,
      headers: Record<string, string> = {}) => {
      if (path === "/v1/accounts/me/2fa") return { enabled: true, pending: false, recovery_codes_left: 10 };
      if (path === "/v1/accounts/me") return { identity_key: toBase64(identity.publicKey.serialize()) };
      if (method === "PUT") {
        codes.push(headers["X-Second-Factor"]);
        if (headers["X-Second-Factor"] !== "123456") throw new RelayError(403, "second_factor_invalid", "wrong", {});
      }
      return undefined;
    };
    const refusals: (string | undefined)[] = [];
    const typed = ["111111", "123456"];
    api.secondFactor = async ({ refused }: { refused: string | undefined }) => {
      refusals.push(refused);
      assert.deepEqual(store.getIdentityKeyPair().serialize(), identity.serialize(), "asked before any change");
      return typed.shift();
    };
    await resetIdentity(client);
    assert.deepEqual(codes, ["111111", "123456"]);
    assert.equal(refusals[0], undefined);
    assert.match(refusals[1]!, /wrong/);
    assert.notDeepEqual(store.getIdentityKeyPair().serialize(), identity.serialize());

    const before = store.getIdentityKeyPair().serialize();
    codes.length = 0;
    api.secondFactor = async () => undefined;
    await assert.rejects(resetIdentity(client), IdentityResetError);
    assert.deepEqual(store.getIdentityKeyPair().serialize(), before);
    assert.deepEqual(codes, [], "nothing sent when the prompt is cancelled");
  });

  test("our devices without a session are reported, and get no new key", async () => {
    const { client, calls, sent } = await setUp(() => undefined, [1, 2]);
    assert.deepEqual((await resetIdentity(client)).unreachable, [2]);
    assert.deepEqual((calls[0]!.body!.registration_ids as { device_id: number }[]).map((r) => r.device_id), [1, 2]);
    assert.equal(sent.length, 0);
  });
});

describe("another device's identity reset", () => {
  test("taken: the new key pair and registration id, sessions and group chains forgotten", async () => {
    const { store } = await setUp();
    const fresh = IdentityKeyPair.generate(systemRandom);
    const adopted = await store.transaction(() => adoptIdentityReset(store,
      { identityKeyPair: fresh.serialize(), registrationId: 77 } as never));
    assert.equal(adopted, true);
    assert.deepEqual(store.getIdentityKeyPair().serialize(), fresh.serialize());
    assert.equal(store.getLocalRegistrationId(), 77);
    assert.deepEqual(await store.scan("session:"), []);
    assert.deepEqual(await store.scan("gdist:"), []);
  });

  test("a malformed one changes nothing", async () => {
    const { store, identity } = await setUp();
    for (const reset of [{ identityKeyPair: Uint8Array.of(1, 2, 3), registrationId: 77 },
      { identityKeyPair: IdentityKeyPair.generate(systemRandom).serialize(), registrationId: 0 },
      { identityKeyPair: IdentityKeyPair.generate(systemRandom).serialize(), registrationId: 16381 }]) {
      assert.equal(await store.transaction(() => adoptIdentityReset(store, reset as never)), false);
    }
    assert.deepEqual(store.getIdentityKeyPair().serialize(), identity.serialize());
    assert.equal(store.getLocalRegistrationId(), 1234);
    assert.equal((await store.scan("session:")).length, 1);
  });
});
