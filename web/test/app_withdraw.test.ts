/** A join that fails after the relay took the device (src/app/withdraw.ts, Client.link): a
 * failure in the unit that stores the account removes the device from the relay with its
 * own token and says so (or says which device is left when that fails too), and a retry
 * works; a failure after it (the server-stored history unreachable) keeps the store,
 * which is usable and resumes the history later. A sign-up whose account cannot be stored
 * deletes the new account again. Against a stand-in relay (fetch). */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import { create, toBinary } from "@bufbuild/protobuf";

import { concat, systemRandom, utf8 } from "../src/protocol/bytes.js";
import { IdentityKeyPair } from "../src/protocol/keys.js";
import { Client } from "../src/app/client.js";
import { importKeyFile, readKeyFile, RECOVERY_SECRET, writeKeyFile } from "../src/app/key_file.js";
import { replayPending } from "../src/app/history.js";
import {
  HistoryKeysSchema, RecoveryBlobSchema, type ExportRecord, type RecoveryBlob,
} from "../src/app/proto/cipherpost/app/v1/app_pb.js";
import { deriveSecrets, formatKey, KEY_SECRETS, restoreWithKey } from "../src/app/recovery.js";
import { TEST_PARAMS } from "../src/app/store/crypto.js";
import { DeviceStore } from "../src/app/store/device.js";
import { MemoryKv } from "../src/app/store/kv.js";
import { JoinUndone } from "../src/app/withdraw.js";
import { b64, hex } from "./helpers.js";

const vector = JSON.parse(readFileSync(new URL("./fixtures/key-file-python.json", import.meta.url), "utf8")) as {
  passphrase: string; file: string; account_id: string; contact: { account_id: string };
};
const SERVER = "http://127.0.0.1:9";
const PASSWORD = "a long password";
const DEVICE = 3;
const TOKEN = `${vector.account_id}.${DEVICE}.${"t".repeat(32)}`;

interface Call { method: string; path: string; auth: string | undefined }

/**
 * The relay as fetch sees it: joins answer device 3 (of `accountId`), the history is
 * unreachable when `historyDown`, and the device's removal when `removalDown`.
 */
class StandIn {
  calls: Call[] = [];
  historyDown = false;
  removalDown = false;
  accountId = vector.account_id;
  recoveryBlob: string | undefined;
  #saved = globalThis.fetch;

  install(): void {
    globalThis.fetch = (async (input: string, init: RequestInit) => {
      const headers = (init.headers ?? {}) as Record<string, string>;
      const method = init.method ?? "GET";
      const path = new URL(input).pathname;
      this.calls.push({ method, path, auth: headers.Authorization });
      const answer = (status: number, body?: unknown): Response =>
        new Response(body === undefined ? null : JSON.stringify(body), { status });
      if (method === "POST" && path === "/v1/recovery/devices") {
        return answer(201, { account_id: this.accountId, device_id: DEVICE, token: TOKEN });
      }
      if (method === "POST" && path === "/v1/recovery/open") return answer(200, { account_id: vector.account_id, blob: this.recoveryBlob });
      if (method === "POST" && path === "/v1/accounts") {
        return answer(201, { account_id: vector.account_id, device_id: 1, token: `${vector.account_id}.1.${"t".repeat(32)}` });
      }
      if (method === "DELETE" && (path === `/v1/devices/${DEVICE}` || path === "/v1/accounts/me")) {
        if (this.removalDown) throw new TypeError("Failed to fetch");
        return answer(204);
      }
      if (path.startsWith("/v1/history")) {
        if (this.historyDown) throw new TypeError("Failed to fetch");
        if (path === "/v1/history/settings") return answer(200, { enabled: true, stored_bytes: 0 });
        return answer(200, { entries: [], more: false });
      }
      if (path === "/v1/accounts/me") return answer(200, { account_id: vector.account_id, username: "kira", devices: [] });
      return answer(404, { error: { code: "not_found", message: "not here" } });
    }) as typeof fetch;
  }

  restore(): void {
    globalThis.fetch = this.#saved;
  }

  removals(): Call[] {
    return this.calls.filter((c) => c.method === "DELETE");
  }
}

/** A Kv whose commits that store the account fail while `failing` (the browser's storage quota, say). */
class FailingKv extends MemoryKv {
  failing = true;

  override async commit(batch: Map<string, Uint8Array | null>): Promise<void> {
    if (this.failing && batch.has("account")) {
      throw Object.assign(new Error("the storage quota is used up"), { name: "QuotaExceededError" });
    }
    return super.commit(batch);
  }
}

/** The SDK's key file with its account record changed by `change`. */
async function keyFile(change: (blob: RecoveryBlob) => void, extra: ExportRecord[] = []): Promise<Uint8Array> {
  const records = await readKeyFile(hex(vector.file), vector.passphrase);
  const first = records[0]!;
  if (first.body.case !== "account") throw new Error("the fixture starts with an account");
  change(first.body.value);
  return writeKeyFile([...records, ...extra], vector.passphrase, TEST_PARAMS);
}

const HISTORY_KEYS = { idKey: new Uint8Array(32).fill(5), epochs: [{ number: 1, key: new Uint8Array(32).fill(6), startedAt: 1n }] };

async function withRelay<T>(relay: StandIn, fn: () => Promise<T>): Promise<T> {
  relay.install();
  try {
    return await fn();
  } finally {
    relay.restore();
  }
}

function undone(removed: boolean, why: RegExp): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof JoinUndone, String(error));
    assert.equal(error.removed, removed);
    assert.equal(error.deviceId, DEVICE);
    assert.match(error.message, why);
    return true;
  };
}

describe("a key file import that fails after the relay took the device", () => {
  test("the account's store cannot be written: the device removes itself with its own token; a retry works", async () => {
    const relay = new StandIn();
    const kv = new FailingKv();
    const file = await keyFile(() => undefined);
    await withRelay(relay, () => assert.rejects(
      importKeyFile(kv, SERVER, file, vector.passphrase, PASSWORD, { argon2: TEST_PARAMS }),
      undone(true, /^this browser could not be set up \(the storage quota is used up\); the server forgot it again .*try again$/)));
    assert.deepEqual(relay.removals(), [{ method: "DELETE", path: `/v1/devices/${DEVICE}`, auth: `Bearer ${TOKEN}` }]);
    assert.equal(await (await DeviceStore.open(kv, PASSWORD)).getJson("account"), undefined); // nothing usable kept

    const again = new StandIn();
    const imported = await withRelay(again, () =>
      importKeyFile(new MemoryKv(), SERVER, file, vector.passphrase, PASSWORD, { argon2: TEST_PARAMS }));
    assert.equal(imported.client.deviceId, DEVICE);
    assert.equal(imported.messages, 2);
    assert.deepEqual(again.removals(), []);
  });

  test("malformed history keys in the file: refused after the join, the device removed again", async () => {
    const relay = new StandIn();
    const file = await keyFile((blob) => {
      blob.historyEnabled = true;
      blob.historyKeys = create(HistoryKeysSchema, { idKey: new Uint8Array(5), epochs: [] });
    });
    await withRelay(relay, () => assert.rejects(
      importKeyFile(new MemoryKv(), SERVER, file, vector.passphrase, PASSWORD, { argon2: TEST_PARAMS }),
      undone(true, /\(malformed history keys\)/)));
    assert.equal(relay.removals().length, 1);
    assert.equal(relay.calls.some((c) => c.path.startsWith("/v1/history")), false);
  });

  test("the removal fails too: the error names the device left on the relay", async () => {
    const relay = new StandIn();
    relay.removalDown = true;
    await withRelay(relay, async () => assert.rejects(
      importKeyFile(new FailingKv(), SERVER, await keyFile(() => undefined), vector.passphrase, PASSWORD, { argon2: TEST_PARAMS }),
      undone(false, /the server still lists it as device 3: .*remove device 3 on the Devices page$/)));
    assert.equal(relay.removals().length, 1);
  });

  test("the relay joined another account than the file's: the device is removed", async () => {
    const relay = new StandIn();
    relay.accountId = "00000000-0000-4000-8000-00000000abcd";
    await withRelay(relay, async () => assert.rejects(
      importKeyFile(new MemoryKv(), SERVER, await keyFile(() => undefined), vector.passphrase, PASSWORD, { argon2: TEST_PARAMS }),
      undone(true, /another account than announced/)));
    assert.equal(relay.removals().length, 1);
  });

  test("the server-stored history unreachable: the store is kept and usable, the history resumes later", async () => {
    const relay = new StandIn();
    relay.historyDown = true;
    const kv = new MemoryKv();
    const file = await keyFile((blob) => {
      blob.historyEnabled = true;
      blob.historyKeys = create(HistoryKeysSchema, HISTORY_KEYS);
    });
    const { client, messages } = await withRelay(relay, () =>
      importKeyFile(kv, SERVER, file, vector.passphrase, PASSWORD, { argon2: TEST_PARAMS }));
    assert.equal(messages, 2);
    assert.ok(relay.calls.some((c) => c.path === "/v1/history/settings"));
    assert.deepEqual(relay.removals(), []);
    assert.equal(await replayPending(client.store), true);
    const reopened = await Client.open(kv, PASSWORD);
    assert.equal(reopened.accountId, vector.account_id);
    assert.equal((await reopened.messages(vector.contact.account_id)).length, 2);
    assert.ok((await reopened.store.get(RECOVERY_SECRET)) !== undefined);
    // the relay is back: the replay finishes
    relay.historyDown = false;
    await withRelay(relay, () => reopened.resumeHistory());
    assert.equal(await replayPending(reopened.store), false);
  });
});

describe("a recovery that fails after the relay took the device", () => {
  test("removed with its own token; a retry stores the account with the recovery secrets", async () => {
    const key = systemRandom(32);
    const secrets = deriveSecrets(key);
    const blob = create(RecoveryBlobSchema, { accountId: vector.account_id, username: "kira",
      identityKeyPair: IdentityKeyPair.generate(systemRandom).serialize() });
    const nonce = systemRandom(12);
    const aes = await crypto.subtle.importKey("raw", secrets.sealKey as Uint8Array<ArrayBuffer>, "AES-GCM", false, ["encrypt"]);
    const sealed = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv: nonce as Uint8Array<ArrayBuffer>,
      additionalData: concat(utf8("Cipherpost recovery blob v1"), secrets.lookupId) as Uint8Array<ArrayBuffer> }, aes,
    toBinary(RecoveryBlobSchema, blob) as Uint8Array<ArrayBuffer>));
    const relay = new StandIn();
    relay.recoveryBlob = b64(concat(nonce, sealed));
    const kv = new FailingKv();
    await withRelay(relay, () => assert.rejects(restoreWithKey(kv, SERVER, formatKey(key), PASSWORD, { argon2: TEST_PARAMS }),
      undone(true, /storage quota/)));
    assert.deepEqual(relay.removals(), [{ method: "DELETE", path: `/v1/devices/${DEVICE}`, auth: `Bearer ${TOKEN}` }]);

    const retry = new StandIn();
    retry.recoveryBlob = relay.recoveryBlob;
    kv.failing = false;
    const client = await withRelay(retry, async () => {
      // the half-made store is discarded by the page (IdbKv.destroy); here, a fresh one
      return restoreWithKey(new MemoryKv(), SERVER, formatKey(key), PASSWORD, { argon2: TEST_PARAMS });
    });
    assert.equal(client.accountId, vector.account_id);
    assert.equal((await client.store.get(KEY_SECRETS))?.length, 80);
    assert.deepEqual(retry.removals(), []);
  });
});

describe("a sign-up that fails after the relay made the account", () => {
  test("the account is deleted again with its own token, so that its username is free; a retry works", async () => {
    const relay = new StandIn();
    await withRelay(relay, () => assert.rejects(Client.register(new FailingKv(), SERVER, "kira", PASSWORD, { argon2: TEST_PARAMS }),
      (error: unknown) => error instanceof JoinUndone && error.removed
        && /^this browser could not be set up \(the storage quota is used up\); the server deleted the new account again/
          .test(error.message)));
    assert.deepEqual(relay.removals(), [{ method: "DELETE", path: "/v1/accounts/me",
      auth: `Bearer ${vector.account_id}.1.${"t".repeat(32)}` }]);
    relay.removalDown = true;
    await withRelay(relay, () => assert.rejects(Client.register(new FailingKv(), SERVER, "kira", PASSWORD, { argon2: TEST_PARAMS }),
      (error: unknown) => error instanceof JoinUndone && !error.removed && /still holds the new account kira/.test(error.message)));
    const client = await withRelay(new StandIn(), () => Client.register(new MemoryKv(), SERVER, "kira", PASSWORD,
      { argon2: TEST_PARAMS }));
    assert.equal(client.username, "kira");
  });
});
