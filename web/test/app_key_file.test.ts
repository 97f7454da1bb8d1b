/** The encrypted key file (src/app/key_file.ts): a file the Python SDK wrote
 * (fixtures/key-file-python.json, made by key_file_fixture.py) opens here record for
 * record; what this browser writes reads back; a wrong passphrase, a cut, reordered,
 * lengthened or altered file and costly Argon2id parameters are refused, before any
 * request or store write. */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import { create, toBinary } from "@bufbuild/protobuf";

import { IdentityKeyPair } from "../src/protocol/keys.js";
import { systemRandom } from "../src/protocol/bytes.js";
import type { Client } from "../src/app/client.js";
import {
  exportKeyFile, exportRecords, HEADER_BYTES, importKeyFile, KeyFileError, keyFileName, readKeyFile, RECOVERY_SECRET,
  writeKeyFile,
} from "../src/app/key_file.js";
import { applyEvents } from "../src/app/archive.js";
import { messageKey, type StoredMessage } from "../src/app/model.js";
import { ExportRecordSchema, type ExportRecord, type HistoryEvent } from "../src/app/proto/cipherpost/app/v1/app_pb.js";
import { reactionsOf, setReaction } from "../src/app/reactions.js";
import { MAX_PARAMS, TEST_PARAMS } from "../src/app/store/crypto.js";
import { DeviceStore } from "../src/app/store/device.js";
import { MemoryKv } from "../src/app/store/kv.js";
import { hex, toHex } from "./helpers.js";

const vector = JSON.parse(readFileSync(new URL("./fixtures/key-file-python.json", import.meta.url), "utf8")) as {
  passphrase: string; file: string; account_id: string; identity_key_pair: string; recovery_secrets: string;
  contact: { account_id: string; username: string; identity_key: string; verified: boolean };
  messages: { conversation: string; author: string; text: string; outgoing: boolean; timestamp: number }[];
};
const FILE = hex(vector.file);

/** The [start, end) of each chunk (length prefix included) of a key file. */
function chunks(file: Uint8Array): [number, number][] {
  const out: [number, number][] = [];
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  for (let at = HEADER_BYTES; at < file.length;) {
    const end = at + 4 + view.getUint32(at);
    out.push([at, end]);
    at = end;
  }
  return out;
}

function join(...parts: Uint8Array[]): Uint8Array {
  return Uint8Array.from(Buffer.concat(parts));
}

async function refused(file: Uint8Array, message: RegExp, passphrase = vector.passphrase): Promise<void> {
  await assert.rejects(readKeyFile(file, passphrase), (error: unknown) => {
    assert.ok(error instanceof KeyFileError, String(error));
    assert.match(error.message, message);
    return true;
  });
}

describe("a key file the Python SDK wrote", () => {
  test("opens record for record: account, recovery secrets, messages", async () => {
    const records = await readKeyFile(FILE, vector.passphrase);
    assert.equal(records.length, 2 + vector.messages.length);
    const [account, secrets, ...events] = records;
    assert.equal(account!.body.case, "account");
    if (account!.body.case === "account") {
      const blob = account!.body.value;
      assert.equal(blob.accountId, vector.account_id);
      assert.equal(toHex(blob.identityKeyPair), vector.identity_key_pair);
      assert.equal(blob.username, "");
      assert.deepEqual(blob.contacts.map((c) => [c.accountId, c.username, toHex(c.identityKey), c.verified]),
        [[vector.contact.account_id, vector.contact.username, vector.contact.identity_key, vector.contact.verified]]);
    }
    assert.equal(secrets!.body.case, "recoverySecrets");
    assert.equal(toHex(secrets!.body.value as Uint8Array), vector.recovery_secrets);
    assert.deepEqual(events.map((r) => {
      assert.equal(r.body.case, "event");
      const event = r.body.value as { body: { case: string; value: { conversation: string; author: string; outgoing: boolean;
        data?: { text: string; timestamp: bigint } } } };
      assert.equal(event.body.case, "message");
      const m = event.body.value;
      return { conversation: m.conversation, author: m.author, text: m.data!.text, outgoing: m.outgoing,
        timestamp: Number(m.data!.timestamp) };
    }), vector.messages);
  });

  test("a wrong passphrase and an empty one are refused", async () => {
    await refused(FILE, /^wrong passphrase, or the key file is damaged$/, `${vector.passphrase}!`);
    await refused(FILE, /must not be empty/, "");
  });

  test("a cut file is refused: at a chunk's end, inside one, inside a length", async () => {
    const parts = chunks(FILE);
    assert.equal(parts.length, 4);
    await refused(FILE.slice(0, parts[3]![0]), /^the key file is truncated$/);
    await refused(FILE.slice(0, FILE.length - 1), /^the key file is truncated$/);
    await refused(FILE.slice(0, parts[1]![0] + 2), /^the key file is truncated$/);
    await refused(FILE.slice(0, HEADER_BYTES), /^the key file is truncated$/);
    await refused(FILE.slice(0, HEADER_BYTES - 1), /^not a Cipherpost key file$/);
    // the lengths are checked before the key: a wrong passphrase is not what it reports
    await refused(FILE.slice(0, FILE.length - 1), /^the key file is truncated$/, "not the passphrase");
  });

  test("reordered chunks are refused", async () => {
    const [a, b, c, d] = chunks(FILE).map(([s, e]) => FILE.slice(s, e));
    await refused(join(FILE.slice(0, HEADER_BYTES), a!, c!, b!, d!), /^the key file is damaged$/);
    await refused(join(FILE.slice(0, HEADER_BYTES), a!, b!, d!, c!), /^the key file is damaged$/);
    await refused(join(FILE.slice(0, HEADER_BYTES), a!, b!, d!), /^the key file is damaged$/);
    await refused(join(FILE.slice(0, HEADER_BYTES), b!, a!, c!, d!), /^wrong passphrase, or the key file is damaged$/);
  });

  test("a lengthened file is refused: a chunk repeated, a byte added", async () => {
    const parts = chunks(FILE);
    const last = FILE.slice(...parts[3]!);
    await refused(join(FILE, last), /^the key file has data after its end$/);
    await refused(join(FILE, new Uint8Array(1)), /^the key file is truncated$/);
    await refused(join(FILE, new Uint8Array([0, 0, 0, 16]), new Uint8Array(16)), /^the key file has data after its end$/);
  });

  test("an altered byte anywhere is refused", async () => {
    for (const at of [20, 40, HEADER_BYTES + 10, chunks(FILE)[2]![0] + 8, FILE.length - 1]) {
      const altered = FILE.slice();
      altered[at]! ^= 1;
      await refused(altered, /damaged/);
    }
    const magic = FILE.slice();
    magic[0] = 0x44;
    await refused(magic, /^not a Cipherpost key file$/);
    const version = FILE.slice();
    version[8] = 2;
    await refused(version, /^a key file of version 2; this Cipherpost reads 1$/);
    const length = FILE.slice();
    new DataView(length.buffer).setUint32(HEADER_BYTES, (1 << 20) + 1);
    await refused(length, /^the key file is damaged$/);
  });

  test("Argon2id parameters past MAX_PARAMS or below Argon2's floor are refused before deriving", async () => {
    const withParams = (t: number, m: number, p: number): Uint8Array => {
      const file = FILE.slice();
      const view = new DataView(file.buffer);
      view.setUint32(9, t);
      view.setUint32(13, m);
      file[17] = p;
      return file;
    };
    // each would take minutes or gigabytes if it were derived
    await refused(withParams(MAX_PARAMS.timeCost + 1, 8, 1), /^the key file's key parameters are refused: .*cost more/);
    await refused(withParams(1, MAX_PARAMS.memoryKib + 1, 1), /^the key file's key parameters are refused: .*cost more/);
    await refused(withParams(1, 0xffffffff, 255), /^the key file's key parameters are refused/);
    await refused(withParams(1, 128, MAX_PARAMS.parallelism + 1), /^the key file's key parameters are refused: .*cost more/);
    await refused(withParams(0, 8, 1), /^the key file's key parameters are refused: .*invalid/);
    await refused(withParams(1, 15, 2), /^the key file's key parameters are refused: .*invalid/);
  });
});

describe("importing from a key file", () => {
  test("a refused file makes no request and writes nothing to the store", async () => {
    const kv = new MemoryKv();
    const requests: string[] = [];
    const saved = globalThis.fetch;
    globalThis.fetch = (async (input: unknown) => {
      requests.push(String(input));
      throw new Error("no network in this test");
    }) as typeof fetch;
    try {
      const parts = chunks(FILE);
      for (const [file, passphrase] of [[FILE, "wrong"], [FILE.slice(0, parts[3]![0]), vector.passphrase]] as const) {
        await assert.rejects(importKeyFile(kv, "http://127.0.0.1:9", file, passphrase, "a long password", { argon2: TEST_PARAMS }),
          KeyFileError);
      }
      // a file that opens but holds no account first
      const events = await readKeyFile(FILE, vector.passphrase);
      const noAccount = await writeKeyFile(events.slice(1), "pass", TEST_PARAMS);
      await assert.rejects(importKeyFile(kv, "http://127.0.0.1:9", noAccount, "pass", "a long password"),
        /does not start with an account/);
    } finally {
      globalThis.fetch = saved;
    }
    assert.deepEqual(requests, []);
    assert.equal(kv.data.size, 0);
  });
});

describe("importing the SDK's key file against a stand-in relay", () => {
  test("joins with the file's recovery secrets (asking for the second factor), keeps them, stores the messages", async () => {
    const secrets = hex(vector.recovery_secrets);
    const b64 = (data: Uint8Array): string => Buffer.from(data).toString("base64");
    const calls: { method: string; path: string; code: string | undefined; body: Record<string, unknown> }[] = [];
    const answer = (status: number, body: unknown): Response => new Response(JSON.stringify(body), { status });
    const saved = globalThis.fetch;
    globalThis.fetch = (async (input: string, init: RequestInit) => {
      const headers = (init.headers ?? {}) as Record<string, string>;
      const path = new URL(input).pathname;
      calls.push({ method: init.method ?? "GET", path, code: headers["X-Second-Factor"],
        body: typeof init.body === "string" ? JSON.parse(init.body) as Record<string, unknown> : {} });
      if (path === "/v1/recovery/devices") {
        if (headers["X-Second-Factor"] === undefined) {
          return answer(403, { error: { code: "second_factor_required", message: "a code is needed" } });
        }
        return answer(201, { account_id: vector.account_id, device_id: 3, token: `${vector.account_id}.3.${"t".repeat(32)}` });
      }
      if (path === "/v1/accounts/me") return answer(200, { account_id: vector.account_id, username: "kira", devices: [] });
      return answer(404, { error: { code: "not_found", message: "not here" } });
    }) as typeof fetch;
    const asked: string[] = [];
    let imported;
    try {
      imported = await importKeyFile(new MemoryKv(), "http://127.0.0.1:9", FILE, vector.passphrase, "a long password", {
        argon2: TEST_PARAMS, secondFactor: async ({ action }) => { asked.push(action); return "123 456"; } });
    } finally {
      globalThis.fetch = saved;
    }
    assert.deepEqual(asked, ["Recovering your account"]);
    assert.deepEqual(calls.map((c) => [c.method, c.path, c.code]), [["POST", "/v1/recovery/devices", undefined],
      ["POST", "/v1/recovery/devices", "123456"], ["GET", "/v1/accounts/me", undefined]]);
    assert.equal(calls[1]!.body.lookup_id, b64(secrets.subarray(0, 16)));
    assert.equal(calls[1]!.body.auth, b64(secrets.subarray(16, 48)));
    const { client, messages } = imported;
    assert.equal(messages, 2);
    assert.equal(client.accountId, vector.account_id);
    assert.equal(client.username, "kira");
    assert.equal(toHex(client.store.getIdentityKeyPair().serialize()), vector.identity_key_pair);
    assert.equal(toHex((await client.store.get(RECOVERY_SECRET))!), vector.recovery_secrets);
    assert.deepEqual((await client.messages(vector.contact.account_id)).map((m) => [m.text, m.outgoing, m.author]),
      vector.messages.map((m) => [m.text, m.outgoing, m.author]));
    assert.equal((await client.contact(vector.contact.account_id))?.username, "olga");
    assert.equal((await client.store.getTrust(vector.contact.account_id))?.verified, true);
    // it can write a key file itself now, which reads back with the same account
    const again = await readKeyFile(await exportKeyFile(client, "p", { withHistory: true, params: TEST_PARAMS }), "p");
    assert.deepEqual(again.map((r) => r.body.case), ["account", "recoverySecrets", "event", "event"]);
  });
});

describe("a key file this browser writes", () => {
  const ME = "aaaaaaaa-0000-4000-8000-000000000001";
  const BOB = "bbbbbbbb-0000-4000-8000-000000000002";

  async function browserClient(secrets: boolean): Promise<Client> {
    const store = await DeviceStore.create(new MemoryKv(), "pw", TEST_PARAMS);
    const identity = IdentityKeyPair.generate(systemRandom);
    const bob = IdentityKeyPair.generate(systemRandom);
    await store.transaction(async () => {
      await store.setIdentity(identity, 7);
      await store.putJson(`trust:${BOB}`, { key: toHex(bob.publicKey.serialize()), verified: true, changed: false });
      await store.putJson(`contact:${BOB}`, { accountId: BOB, username: "bob", lastAt: 0, lastText: "", unread: 0 });
      const m: StoredMessage = { conversation: BOB, author: ME, authorDevice: 2, timestamp: 1_000, text: "from the browser",
        outgoing: true, status: "delivered", receivedAt: 1_000, editedAt: 1_500 };
      await store.putJson(messageKey(BOB, m.timestamp, ME), m);
      await setReaction(store, messageKey(BOB, m.timestamp, ME), BOB, "👍");
      if (secrets) await store.put(RECOVERY_SECRET, hex(vector.recovery_secrets));
    });
    return { accountId: ME, username: "amy", store } as unknown as Client;
  }

  test("without the recovery secrets: refused, saying what to do", async () => {
    const client = await browserClient(false);
    await assert.rejects(exportRecords(client, true), /make a recovery key first.*cipherpost recovery-key/);
  });

  test("reads back: account with contacts and trust, secrets, messages only when asked", async () => {
    const client = await browserClient(true);
    const file = await exportKeyFile(client, "a chosen passphrase", { withHistory: true, params: TEST_PARAMS });
    assert.equal(Buffer.from(file.slice(0, 9)).toString("hex"), `${Buffer.from("CPEXPORT").toString("hex")}01`);
    const records = await readKeyFile(file, "a chosen passphrase");
    assert.deepEqual(records.map((r) => r.body.case), ["account", "recoverySecrets", "event", "event", "event"]);
    // the message, then its edit and bob's reaction to it as changes (as the SDK writes them), which a fresh store replays
    const events = records.slice(2).map((r) => r.body.value as HistoryEvent);
    assert.deepEqual(events.map((e) => e.body.case), ["message", "change", "change"]);
    const fresh = await DeviceStore.create(new MemoryKv(), "pw", TEST_PARAMS);
    assert.equal(await fresh.transaction(() => applyEvents(fresh, events, 2_000)), 1);
    const held = await fresh.getJson<StoredMessage>(messageKey(BOB, 1_000, ME));
    assert.deepEqual([held?.text, held?.editedAt], ["from the browser", 1_500]);
    assert.deepEqual(await reactionsOf(fresh, messageKey(BOB, 1_000, ME)), { [BOB]: "👍" });
    const blob = records[0]!.body.value as { accountId: string; username: string; identityKeyPair: Uint8Array;
      contacts: { accountId: string; username: string; verified: boolean }[] };
    assert.equal(blob.accountId, ME);
    assert.equal(blob.username, "amy");
    assert.deepEqual(blob.identityKeyPair, client.store.getIdentityKeyPair().serialize());
    assert.deepEqual(blob.contacts.map((c) => [c.accountId, c.username, c.verified]), [[BOB, "bob", true]]);
    assert.equal(toHex(records[1]!.body.value as Uint8Array), vector.recovery_secrets);
    const without = await readKeyFile(await exportKeyFile(client, "p", { withHistory: false, params: TEST_PARAMS }), "p");
    assert.deepEqual(without.map((r) => r.body.case), ["account", "recoverySecrets"]);
    await assert.rejects(exportKeyFile(client, "", { withHistory: false, params: TEST_PARAMS }), /must not be empty/);
    await assert.rejects(exportKeyFile(client, "p", { withHistory: false, params: { ...TEST_PARAMS, timeCost: 13 } }),
      RangeError);
  });

  test("the same records written twice differ (fresh salt and nonce prefix) and read back the same", async () => {
    const records: ExportRecord[] = [create(ExportRecordSchema, { body: { case: "recoverySecrets", value: new Uint8Array(80) } })];
    const [one, two] = [await writeKeyFile(records, "p", TEST_PARAMS), await writeKeyFile(records, "p", TEST_PARAMS)];
    assert.notDeepEqual(one, two);
    for (const file of [one, two]) {
      assert.deepEqual((await readKeyFile(file, "p")).map((r) => toBinary(ExportRecordSchema, r)),
        records.map((r) => toBinary(ExportRecordSchema, r)));
    }
    assert.match(keyFileName("amy", Date.UTC(2026, 10, 29)), /^cipherpost-amy-2026-11-29\.cpexport$/);
  });
});
