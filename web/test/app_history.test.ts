/** Server-stored history (src/app/history.ts): an entry sealed by the Python SDK opens here
 * under the same event id, ours open again, and the relay's pages are checked. */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import { create } from "@bufbuild/protobuf";

import { fromHex, toHex } from "../src/protocol/bytes.js";
import type { RelayApi } from "../src/app/api.js";
import {
  adopt, currentEpoch, download, eventId, flush, HistoryError, markReplayPending, openBlob, parsePage, recordDeleted,
  recordMessage, replayPending, seal, type Keys,
} from "../src/app/history.js";
import { HistoryMessageSchema } from "../src/app/proto/cipherpost/app/v1/app_pb.js";
import { DataMessageSchema, HistoryEventSchema, HistoryKeysSchema } from "../src/app/proto/cipherpost/app/v1/app_pb.js";
import { TEST_PARAMS } from "../src/app/store/crypto.js";
import { DeviceStore } from "../src/app/store/device.js";
import { MemoryKv } from "../src/app/store/kv.js";

const vector = JSON.parse(readFileSync(new URL("./fixtures/history-python.json", import.meta.url), "utf8")) as {
  id_key: string; epochs: [number, string, number][]; conversation: string; author: string; timestamp: number;
  event_id: string; blob: string; text: string };
const keys: Keys = { idKey: fromHex(vector.id_key),
  epochs: new Map(vector.epochs.map(([n, k, t]) => [n, { key: fromHex(k), startedAt: t }])) };

describe("history", () => {
  test("the event id and the entry of the Python SDK", async () => {
    const name = eventId(keys, "message", vector.conversation, vector.author, vector.timestamp);
    assert.equal(toHex(name), vector.event_id);
    const event = await openBlob(keys, name, fromHex(vector.blob));
    assert.equal(event.body.case, "message");
    if (event.body.case === "message") {
      assert.equal(event.body.value.data?.text, vector.text);
      assert.equal(event.body.value.authorDevice, 2);
    }
  });

  test("sealed under the newest epoch, bound to its name", async () => {
    assert.equal(currentEpoch(keys), 0xfffffffe);
    const name = eventId(keys, "message", "c", "a", 1);
    const event = create(HistoryEventSchema, { body: { case: "groupState", value: new Uint8Array([1, 2, 3]) } });
    const blob = await seal(keys, name, event);
    assert.equal(toHex(blob.slice(1, 5)), "fffffffe");
    const opened = await openBlob(keys, name, blob);
    assert.deepEqual(opened.body.value, new Uint8Array([1, 2, 3]));
    await assert.rejects(openBlob(keys, eventId(keys, "message", "c", "a", 2), blob), HistoryError);
    const unknown = blob.slice();
    unknown[4] ^= 1;
    await assert.rejects(openBlob(keys, name, unknown), /no key for history epoch/);
    await assert.rejects(openBlob({ ...keys, idKey: new Uint8Array(32) }, name, blob.slice(0, 20)), HistoryError);
  });

  test("a relay page is taken only in its documented shape", () => {
    const page = parsePage({ entries: [{ seq: 3, event_id: "ab".repeat(16), day: 1, blob: "AQID" },
      { seq: 4, event_id: "cd".repeat(16), day: 1, blob: null }], more: true });
    assert.equal(page.more, true);
    assert.deepEqual(page.entries.map((e) => [e.seq, e.blob === undefined]), [[3, false], [4, true]]);
    for (const bad of [null, { entries: [] }, { entries: [{ seq: -1, event_id: "ab".repeat(16), blob: null }], more: false },
      { entries: [{ seq: 1, event_id: "AB".repeat(16), blob: null }], more: false },
      { entries: [{ seq: 1, event_id: "ab".repeat(16), blob: "not base64!" }], more: false }]) {
      assert.throws(() => parsePage(bad), HistoryError);
    }
  });

  test("what a device stores is queued sealed, an expired message's entry queued for deletion, and flushed", async () => {
    const store = await DeviceStore.create(new MemoryKv(), "correct horse", TEST_PARAMS);
    const sent: [string, string, number][] = [];
    const api = { request: async (method: string, path: string, body?: unknown) => {
      sent.push([method, path, body instanceof Uint8Array ? body.length : -1]);
      return undefined;
    } } as unknown as RelayApi;
    const data = create(DataMessageSchema, { timestamp: 42n, text: "kept a while" });
    await store.transaction(() => recordMessage(store, "conv", "me", 1, 42, true, data));
    assert.equal(await flush(api, store), 0, "history is off: nothing queued");
    const proto = create(HistoryKeysSchema, { idKey: keys.idKey,
      epochs: [...keys.epochs].map(([number, e]) => ({ number, key: e.key, startedAt: BigInt(e.startedAt) })) });
    await store.transaction(() => adopt(store, proto, true));
    await store.transaction(() => recordMessage(store, "conv", "me", 1, 42, true, data));
    const name = toHex(eventId(keys, "message", "conv", "me", 42));
    assert.equal(await flush(api, store), 1);
    assert.equal(sent.length, 1);
    assert.deepEqual(sent[0]!.slice(0, 2), ["PUT", `/v1/history/${name}`]);
    assert.ok(sent[0]![2] > 17);
    await store.transaction(() => recordDeleted(store, "conv", "me", 42));
    assert.equal(await flush(api, store), 1);
    assert.deepEqual(sent[1], ["DELETE", `/v1/history/${name}`, -1]);
    assert.equal(await flush(api, store), 0, "the queue is empty once flushed");
    await store.transaction(() => adopt(store, undefined, false));
    await store.transaction(() => recordDeleted(store, "conv", "me", 42));
    assert.equal(await flush(api, store), 0, "history off: nothing queued");
  });

  test("the log is replayed page by page; cut off, it goes on from the last page committed", async () => {
    const store = await DeviceStore.create(new MemoryKv(), "correct horse", TEST_PARAMS);
    const proto = create(HistoryKeysSchema, { idKey: keys.idKey,
      epochs: [...keys.epochs].map(([number, e]) => ({ number, key: e.key, startedAt: BigInt(e.startedAt) })) });
    await store.transaction(async () => {
      await adopt(store, proto, true);
      await markReplayPending(store);
    });
    const log: { seq: number; event_id: string; day: number; blob: string | null }[] = [];
    for (let i = 1; i <= 5; i++) {
      const name = eventId(keys, "message", "conv", "them", i);
      const event = create(HistoryEventSchema, { body: { case: "message", value: create(HistoryMessageSchema, {
        conversation: "conv", author: "them", authorDevice: 1, receivedAt: BigInt(i),
        data: create(DataMessageSchema, { timestamp: BigInt(i), text: `entry ${i}` }) }) } });
      log.push({ seq: i * 10, event_id: toHex(name), day: 1,
        blob: Buffer.from(await seal(keys, name, event)).toString("base64") });
    }
    log.push({ seq: 60, event_id: log[0]!.event_id, day: 1, blob: null }); // entry 1 deleted since
    const asked: string[] = [];
    let failAfter = 2;
    const api = { request: async (_method: string, path: string) => {
      if (path === "/v1/history/settings") return { retention_days: null, stored_bytes: 1000 };
      asked.push(path);
      if (failAfter-- === 0) throw new Error("the connection dropped");
      const after = Number(new URL(path, "http://x").searchParams.get("after"));
      const rest = log.filter((e) => e.seq > after);
      return { entries: rest.slice(0, 2), more: rest.length > 2 };
    } } as unknown as RelayApi;
    const seen: number[] = [];
    await assert.rejects(download(api, store, 0, (entries) => seen.push(entries)), /dropped/);
    assert.ok(await replayPending(store));
    assert.deepEqual(asked, ["/v1/history?after=0&limit=200", "/v1/history?after=20&limit=200",
      "/v1/history?after=40&limit=200"]);
    failAfter = -1;
    const replayed = await download(api, store, 0);
    assert.equal(asked[3], "/v1/history?after=40&limit=200", "it went on from the committed position");
    assert.deepEqual([replayed.entries, replayed.messages, replayed.deleted], [2, 1, 1]);
    assert.equal(await replayPending(store), false);
    const texts = (await store.scanJson<{ text: string }>("msg:conv:")).map(([, m]) => m.text).sort();
    assert.deepEqual(texts, ["entry 2", "entry 3", "entry 4", "entry 5"]);
    assert.deepEqual(seen, [0, 2, 4]);
  });
});
