/** Turning server history on from the browser (src/app/server_history.ts): new keys when
 * the account has none (kept when it has), every stored message (with its reactions)
 * queued sealed under them, and the keys sent to our other devices. */

import assert from "node:assert/strict";
import { test } from "node:test";

import type { Client } from "../src/app/client.js";
import { decodeContent } from "../src/app/content.js";
import * as history from "../src/app/history.js";
import { messageKey, type StoredMessage } from "../src/app/model.js";
import type { HistoryKeys } from "../src/app/proto/cipherpost/app/v1/app_pb.js";
import { setReaction } from "../src/app/reactions.js";
import { serverHistoryOn, turnServerHistoryOn } from "../src/app/server_history.js";
import { TEST_PARAMS } from "../src/app/store/crypto.js";
import { DeviceStore } from "../src/app/store/device.js";
import { MemoryKv } from "../src/app/store/kv.js";

const ME = "aaaaaaaa-0000-4000-8000-000000000001";
const BOB = "bbbbbbbb-0000-4000-8000-000000000002";

async function setUp() {
  const store = await DeviceStore.create(new MemoryKv(), "pw", TEST_PARAMS);
  const sent: { account: string; keys: HistoryKeys }[] = [];
  let flushed = 0;
  const client = {
    accountId: ME, store,
    outbox: { deliver: async (account: string, plaintext: Uint8Array) => {
      const content = decodeContent(plaintext);
      assert.equal(content.body.case, "sync");
      const sync = content.body.value as { body: { case: string; value: HistoryKeys } };
      assert.equal(sync.body.case, "historyKeys");
      sent.push({ account, keys: sync.body.value });
    } },
    flushHistory: async () => { flushed += 1; },
  } as unknown as Client;
  const message = (timestamp: number, text: string): StoredMessage => ({ conversation: BOB, author: BOB, authorDevice: 1,
    timestamp, text, outgoing: false, status: "received", receivedAt: timestamp });
  await store.transaction(async () => {
    for (const m of [message(1, "one"), message(2, "two")]) await store.putJson(messageKey(BOB, m.timestamp, BOB), m);
    await setReaction(store, messageKey(BOB, 2, BOB), ME, "👍");
  });
  return { store, client, sent, flushed: () => flushed };
}

test("new keys, every stored message queued and opened with them, the keys sent to our devices", async () => {
  const { store, client, sent, flushed } = await setUp();
  assert.equal(await serverHistoryOn(store), false);
  assert.equal(await turnServerHistoryOn(client, 1_000), 2);
  assert.equal(await serverHistoryOn(store), true);
  assert.equal(flushed(), 1);
  assert.equal(sent.length, 1);
  assert.equal(sent[0]!.account, ME);
  assert.equal(sent[0]!.keys.historyOff, false);
  const keys = history.keysFromProto(sent[0]!.keys);
  assert.equal(keys.idKey.length, 32);
  const queued = await history.pendingEntries(store);
  assert.equal(queued.length, 3);
  const texts: string[] = [];
  for (const { name, blob } of queued) {
    const event = await history.openBlob(keys, Uint8Array.from(Buffer.from(name, "hex")), blob);
    if (event.body.case === "message") texts.push(event.body.value.data!.text);
    else if (event.body.case === "change") {
      const { author, data } = event.body.value;
      texts.push(`${author === ME ? "my" : "?"} ${data!.reaction!.emoji} on ${data!.reaction!.target!.timestamp}`);
    }
  }
  assert.deepEqual(texts, ["one", "two", "my 👍 on 2"], "queued in the order they were stored, a reaction after its message");
});

test("keys the account already has are kept", async () => {
  const { store, client, sent } = await setUp();
  await turnServerHistoryOn(client, 1_000);
  await store.transaction(() => history.adopt(store, undefined, false));
  assert.equal(await serverHistoryOn(store), false);
  await turnServerHistoryOn(client, 2_000);
  assert.equal(sent.length, 2);
  assert.deepEqual(sent[1]!.keys.idKey, sent[0]!.keys.idKey);
  assert.deepEqual(sent[1]!.keys.epochs.map((e) => e.number), sent[0]!.keys.epochs.map((e) => e.number));
});
