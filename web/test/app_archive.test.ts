/** The one-time history archive (src/app/archive.ts): a part sealed by the Python SDK opens
 * here, and only under its own number, count and key. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { create, type MessageInitShape } from "@bufbuild/protobuf";

import { fromHex } from "../src/protocol/bytes.js";
import { applyEvents, ArchiveError, openPart } from "../src/app/archive.js";
import { messageKey, type StoredMessage } from "../src/app/model.js";
import { HistoryEventSchema, type DataMessageSchema, type HistoryEvent } from "../src/app/proto/cipherpost/app/v1/app_pb.js";
import { reactionsOf } from "../src/app/reactions.js";
import { TEST_PARAMS } from "../src/app/store/crypto.js";
import { DeviceStore } from "../src/app/store/device.js";
import { MemoryKv } from "../src/app/store/kv.js";

// python: archive.seal_part(bytes(range(32)), 1, 2, HistoryArchivePart(events=[HistoryEvent(message=
//   HistoryMessage(conversation="c", author="a", author_device=1, received_at=5, data=DataMessage(timestamp=7,
//   text="archived")))]))
const SEALED = fromHex("011fccb5e44ef5530c0f4f4938cca308fb1d980e5c05c037ec1a7666bda630735e3a9667f1282c843c59dfc3016ce407332e165392fdee1d47be151d6558b59b08047165fa11499dc6caab34b1403998e9d4a5da17745e8018c3f9cd60345c68094cf7a13a5cdbf6c506e270983bea0f77431a0b4f7454e87cd6b202ccc91149654cb22b5a3913dbcf0777276990a9e67ad2a03ed9a84c6b8d2f391067ea4c10c73af635f6a125d67cc96e93edc4869017");
const KEY = new Uint8Array(32).map((_, i) => i);

describe("archive", () => {
  test("a part sealed by the Python SDK opens", async () => {
    const part = await openPart(KEY, 1, 2, SEALED);
    assert.equal(part.events.length, 1);
    const event = part.events[0]!.body;
    assert.equal(event.case, "message");
    if (event.case === "message") {
      assert.equal(event.value.data?.text, "archived");
      assert.equal(event.value.conversation, "c");
    }
  });

  test("another position, count or key does not open it", async () => {
    await assert.rejects(openPart(KEY, 0, 2, SEALED), ArchiveError);
    await assert.rejects(openPart(KEY, 1, 3, SEALED), ArchiveError);
    await assert.rejects(openPart(new Uint8Array(32), 1, 2, SEALED), ArchiveError);
    await assert.rejects(openPart(KEY, 1, 2, SEALED.subarray(0, 10)), ArchiveError);
  });
});

describe("replaying an archive's or a key file's events", () => {
  const AMY = "aaaaaaaa-0000-4000-8000-000000000001";
  const BOB = "bbbbbbbb-0000-4000-8000-000000000002";
  const message = (author: string, data: MessageInitShape<typeof DataMessageSchema>): HistoryEvent => create(HistoryEventSchema, { body: {
    case: "message", value: { conversation: BOB, author, authorDevice: 1, receivedAt: 5n, outgoing: author === AMY, data } } });
  const change = (author: string, data: MessageInitShape<typeof DataMessageSchema>): HistoryEvent => create(HistoryEventSchema, { body: {
    case: "change", value: { conversation: BOB, author, receivedAt: 5n, data } } });

  async function replayed(events: HistoryEvent[]): Promise<{ store: DeviceStore; stored: number }> {
    const store = await DeviceStore.create(new MemoryKv(), "pw", TEST_PARAMS);
    const stored = await store.transaction(() => applyEvents(store, events, 1_000));
    return { store, stored };
  }

  test("an edit and a reaction that follow a message apply to it; one of a message not held is dropped", async () => {
    const { store, stored } = await replayed([
      message(AMY, { timestamp: 10n, text: "first draft" }),
      change(AMY, { timestamp: 12n, text: "as sent at last", edit: { author: AMY, timestamp: 10n } }),
      change(BOB, { timestamp: 10n, reaction: { emoji: "👍", target: { author: AMY, timestamp: 10n } } }),
      change(BOB, { timestamp: 11n, reaction: { emoji: "🎉", target: { author: AMY, timestamp: 99n } } }),
      change(BOB, { timestamp: 13n, text: "not bob's to edit", edit: { author: AMY, timestamp: 10n } }),
    ]);
    assert.equal(stored, 1);
    const held = await store.getJson<StoredMessage>(messageKey(BOB, 10, AMY));
    assert.deepEqual([held?.text, held?.editedAt], ["as sent at last", 12]);
    assert.deepEqual(await reactionsOf(store, messageKey(BOB, 10, AMY)), { [BOB]: "👍" });
    assert.deepEqual(await reactionsOf(store, messageKey(BOB, 99, AMY)), {});
  });

  test("an edited message written as its edit (before 2026-11-30) is stored under the message's timestamp", async () => {
    const { store } = await replayed([
      message(AMY, { timestamp: 12n, text: "as sent at last", edit: { author: AMY, timestamp: 10n } }),
      change(BOB, { timestamp: 10n, reaction: { emoji: "👍", target: { author: AMY, timestamp: 10n } } }),
    ]);
    const held = await store.getJson<StoredMessage>(messageKey(BOB, 10, AMY));
    assert.deepEqual([held?.text, held?.editedAt], ["as sent at last", 12]);
    assert.equal(await store.get(messageKey(BOB, 12, AMY)), undefined);
    assert.deepEqual(await reactionsOf(store, messageKey(BOB, 10, AMY)), { [BOB]: "👍" });
  });
});
