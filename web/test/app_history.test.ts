/** Server-stored history (src/app/history.ts): an entry sealed by the Python SDK opens here
 * under the same event id, ours open again, and the relay's pages are checked. */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import { create } from "@bufbuild/protobuf";

import { fromHex, toHex } from "../src/protocol/bytes.js";
import { currentEpoch, eventId, HistoryError, openBlob, parsePage, seal, type Keys } from "../src/app/history.js";
import { HistoryEventSchema } from "../src/app/proto/cipherpost/app/v1/app_pb.js";

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
});
