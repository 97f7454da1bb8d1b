/** What else than messages the browser records into the server-stored history, against
 * the entries the Python SDK's recorder makes (fixtures/history-events-python.json, made
 * by history_events_fixture.py): a group state per revision, an edit or a reaction as a
 * `change`, a deletion as the removal of the message's entry; and the edits, reactions
 * and deletions the browser receives (src/app/changes.ts) taken and recorded as the SDK's
 * inbox takes them. */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";

import { fromHex, toHex } from "../src/protocol/bytes.js";
import { takeChange } from "../src/app/changes.js";
import { reactionsOf } from "../src/app/reactions.js";
import { encodeState, Group } from "../src/app/groups.js";
import {
  adopt, download, enabledKeys, eventId, flush, openBlob, pendingEntries, recordChange, recordDeleted, recordGroup, recordMessage, seal,
  type Keys,
} from "../src/app/history.js";
import type { RelayApi } from "../src/app/api.js";
import { messageKey, type ClientEvent, type Contact, type StoredMessage } from "../src/app/model.js";
import { DataMessageSchema, HistoryEventSchema, HistoryKeysSchema, HistoryMessageSchema } from "../src/app/proto/cipherpost/app/v1/app_pb.js";
import { turnServerHistoryOn } from "../src/app/server_history.js";
import type { Client } from "../src/app/client.js";
import { TEST_PARAMS } from "../src/app/store/crypto.js";
import { DeviceStore } from "../src/app/store/device.js";
import { MemoryKv } from "../src/app/store/kv.js";

interface Entry { kind: "group" | "edit" | "reaction" | "reaction_again" | "reaction_replaced" | "deleted"; event_id: string;
  blob: string | null; plaintext: string | null }
const vector = JSON.parse(readFileSync(new URL("./fixtures/history-events-python.json", import.meta.url), "utf8")) as {
  id_key: string; epochs: [number, string, number][]; alice: string; bob: string; now: number; conversation: string;
  group_state: string; edit: string; reaction: string; reaction_again: string; deleted_timestamp: number;
  deleted_changes: string[]; entries: Entry[] };
const keys: Keys = { idKey: fromHex(vector.id_key),
  epochs: new Map(vector.epochs.map(([n, k, t]) => [n, { key: fromHex(k), startedAt: t }])) };
const sdk = (kind: Entry["kind"]): Entry => vector.entries.find((e) => e.kind === kind)!;

async function storeWithHistory(): Promise<DeviceStore> {
  const store = await DeviceStore.create(new MemoryKv(), "correct horse", TEST_PARAMS);
  const proto = create(HistoryKeysSchema, { idKey: keys.idKey,
    epochs: [...keys.epochs].map(([number, e]) => ({ number, key: e.key, startedAt: BigInt(e.startedAt) })) });
  await store.transaction(() => adopt(store, proto, true));
  return store;
}

/** The queued entries: event id (hex) → the blob (empty: a deletion). */
async function queued(store: DeviceStore): Promise<Map<string, Uint8Array>> {
  return new Map((await pendingEntries(store)).map(({ name, blob }) => [name, blob]));
}

/** Our entry is queued under the SDK's event id and opens to the SDK's plaintext, byte for byte. */
async function assertAsTheSdk(store: DeviceStore, kind: Entry["kind"]): Promise<void> {
  const expected = sdk(kind);
  const ours = (await queued(store)).get(expected.event_id);
  assert.ok(ours !== undefined && ours.length > 0, `a ${kind} entry under the SDK's event id`);
  const name = fromHex(expected.event_id);
  assert.equal(toHex(toBinary(HistoryEventSchema, await openBlob(keys, name, ours))), expected.plaintext);
  assert.equal(toHex(toBinary(HistoryEventSchema, await openBlob(keys, name, fromHex(expected.blob!)))), expected.plaintext,
    "the SDK's entry opens here too");
}

function stored(author: string, timestamp: number, text: string, outgoing = false): StoredMessage {
  return { conversation: vector.conversation, author, authorDevice: 2, timestamp, text, outgoing,
    status: outgoing ? "sent" : "received", receivedAt: timestamp };
}

describe("history entries other than messages", () => {
  test("a group state: named by its conversation and revision, its exact bytes, as the SDK", async () => {
    const store = await storeWithHistory();
    const group = Group.fromBytes(fromHex(vector.group_state));
    assert.equal(group.conversation, vector.conversation);
    await store.transaction(() => recordGroup(store, group));
    await assertAsTheSdk(store, "group");
    const event = await openBlob(keys, fromHex(sdk("group").event_id), (await queued(store)).get(sdk("group").event_id)!);
    assert.equal(event.body.case, "groupState");
    assert.equal(Group.fromBytes(event.body.value as Uint8Array).revision, 3);
  });

  test("an edit and a reaction: change entries named by their own author and timestamp, as the SDK", async () => {
    const store = await storeWithHistory();
    const edit = fromBinary(DataMessageSchema, fromHex(vector.edit));
    const reaction = fromBinary(DataMessageSchema, fromHex(vector.reaction));
    await store.transaction(async () => {
      await recordChange(store, vector.conversation, vector.alice, 2, vector.now, edit);
      await recordChange(store, vector.conversation, vector.bob, 1, vector.now, reaction);
    });
    await assertAsTheSdk(store, "edit");
    await assertAsTheSdk(store, "reaction");
    // the same reactor's next reaction replaces the first in the log, as the SDK's
    await store.transaction(() => recordChange(store, vector.conversation, vector.bob, 1, vector.now,
      fromBinary(DataMessageSchema, fromHex(vector.reaction_again))));
    await assertAsTheSdk(store, "reaction_again");
    assert.equal(sdk("reaction_replaced").event_id, sdk("reaction").event_id);
    assert.deepEqual((await queued(store)).get(sdk("reaction").event_id), new Uint8Array(0), "the first one deleted");
    await store.transaction(() => recordDeleted(store, vector.conversation, vector.alice, vector.deleted_timestamp));
    const deletions = [...(await queued(store))].filter(([, blob]) => blob.length === 0).map(([name]) => name).sort();
    assert.deepEqual(deletions, [sdk("deleted").event_id, sdk("reaction").event_id, ...vector.deleted_changes].sort(),
      "the message's entry and those of its edit and remaining reaction go, as the SDK's");
  });

  test("nothing is recorded while history is off", async () => {
    const store = await DeviceStore.create(new MemoryKv(), "correct horse", TEST_PARAMS);
    await store.transaction(async () => {
      await recordGroup(store, Group.fromBytes(fromHex(vector.group_state)));
      await recordChange(store, vector.conversation, vector.alice, 2, vector.now, fromBinary(DataMessageSchema, fromHex(vector.edit)));
    });
    assert.equal((await queued(store)).size, 0);
  });
});

describe("edits, reactions and deletions received", () => {
  const original = vector.deleted_timestamp; // the message the edit, the reaction and the deletion name

  test("an edit by the author replaces the text and is recorded as the SDK records it", async () => {
    const store = await storeWithHistory();
    const key = messageKey(vector.conversation, original, vector.alice);
    await store.transaction(async () => {
      await store.putJson(key, stored(vector.alice, original, "we meet at nine"));
      await store.putJson(`contact:${vector.conversation}`,
        { accountId: vector.conversation, lastAt: original, lastText: "we meet at nine", unread: 1 } satisfies Contact);
    });
    const events: ClientEvent[] = [];
    await store.transaction(() => takeChange(store, vector.conversation, vector.alice, 2,
      fromBinary(DataMessageSchema, fromHex(vector.edit)), vector.now, events));
    assert.equal((await store.getJson<StoredMessage>(key))?.text, "we meet at ten, not nine");
    assert.equal((await store.getJson<Contact>(`contact:${vector.conversation}`))?.lastText, "", "the old preview is gone");
    assert.deepEqual(events.map((e) => e.kind), ["message"]);
    await assertAsTheSdk(store, "edit");
  });

  test("an edit or a deletion by anyone else, or of a message not held, changes and records nothing", async () => {
    const store = await storeWithHistory();
    const key = messageKey(vector.conversation, original, vector.alice);
    await store.transaction(() => store.putJson(key, stored(vector.alice, original, "mine to change")));
    const edit = fromBinary(DataMessageSchema, fromHex(vector.edit));
    const events: ClientEvent[] = [];
    await store.transaction(async () => {
      await takeChange(store, vector.conversation, vector.bob, 1, edit, vector.now, events); // not its author
      await takeChange(store, "another-conversation", vector.alice, 2, edit, vector.now, events);
      const deletion = create(DataMessageSchema, { timestamp: 5n, delete: { author: vector.alice, timestamp: BigInt(original) } });
      await takeChange(store, vector.conversation, vector.bob, 1, deletion, vector.now, events);
    });
    assert.equal((await store.getJson<StoredMessage>(key))?.text, "mine to change");
    assert.equal((await queued(store)).size, 0);
    assert.deepEqual(events, []);
  });

  test("a deletion by the author removes the message and queues the removal of its entry", async () => {
    const store = await storeWithHistory();
    const key = messageKey(vector.conversation, original, vector.alice);
    await store.transaction(async () => {
      await store.putJson(key, stored(vector.alice, original, "sent by mistake", true));
      await store.putJson(`mine:${original}`, key);
    });
    const events: ClientEvent[] = [];
    const deletion = create(DataMessageSchema, { timestamp: BigInt(original + 5), delete: { author: vector.alice, timestamp: BigInt(original) } });
    await store.transaction(() => takeChange(store, vector.conversation, vector.alice, 2, deletion, vector.now, events));
    assert.equal(await store.get(key), undefined);
    assert.equal(await store.get(`mine:${original}`), undefined);
    assert.deepEqual(events, [{ kind: "expired", conversation: vector.conversation, timestamp: original }]);
    assert.deepEqual((await queued(store)).get(sdk("deleted").event_id), new Uint8Array(0), "the SDK's event id");
  });

  test("a deletion also queues the removal of the message's edit and reaction entries (an edit holds the new text)", async () => {
    const store = await storeWithHistory();
    const key = messageKey(vector.conversation, original, vector.alice);
    await store.transaction(() => store.putJson(key, stored(vector.alice, original, "we meet at nine")));
    const events: ClientEvent[] = [];
    await store.transaction(async () => {
      await takeChange(store, vector.conversation, vector.alice, 2, fromBinary(DataMessageSchema, fromHex(vector.edit)), vector.now, events);
      await takeChange(store, vector.conversation, vector.bob, 1, fromBinary(DataMessageSchema, fromHex(vector.reaction)), vector.now, events);
    });
    assert.ok(((await queued(store)).get(sdk("edit").event_id)?.length ?? 0) > 0);
    const deletion = create(DataMessageSchema, { timestamp: BigInt(original + 5), delete: { author: vector.alice, timestamp: BigInt(original) } });
    assert.deepEqual(Object.values(await reactionsOf(store, key)), ["👍"], "the reaction is shown until then");
    await store.transaction(() => takeChange(store, vector.conversation, vector.alice, 2, deletion, vector.now, events));
    const after = await queued(store);
    for (const kind of ["deleted", "edit", "reaction"] as const) {
      assert.deepEqual(after.get(sdk(kind).event_id), new Uint8Array(0), `the ${kind} entry's removal is queued`);
    }
    assert.equal(await store.get(`histchanges:${key}`), undefined, "nothing left to remember");
    assert.deepEqual(await reactionsOf(store, key), {}, "its reactions went with it");
  });

  test("a reaction to a held message is recorded; to one not in the conversation, it is refused", async () => {
    const store = await storeWithHistory();
    const reaction = fromBinary(DataMessageSchema, fromHex(vector.reaction));
    const events: ClientEvent[] = [];
    await store.transaction(() => takeChange(store, vector.conversation, vector.bob, 1, reaction, vector.now, events));
    assert.deepEqual(events.map((e) => e.kind), ["unsupported"]);
    assert.equal((await queued(store)).size, 0);
    await store.transaction(async () => {
      await store.putJson(messageKey(vector.conversation, original, vector.alice), stored(vector.alice, original, "hello"));
      await takeChange(store, vector.conversation, vector.bob, 1, reaction, vector.now, events);
    });
    assert.deepEqual(events.map((e) => e.kind), ["unsupported", "reaction"]);
    await assertAsTheSdk(store, "reaction");
  });
});

test("turning history on queues the group states held, as the SDK's backfill (a malformed one skipped)", async () => {
  const store = await DeviceStore.create(new MemoryKv(), "pw", TEST_PARAMS);
  const group = Group.fromBytes(fromHex(vector.group_state));
  await store.transaction(async () => {
    await store.putJson(`group:${toHex(group.id)}`, toHex(group.stateBytes));
    await store.putJson(`group:${"ee".repeat(32)}`, "0a0b"); // malformed: skipped, history still turned on
  });
  const client = { accountId: vector.alice, store, outbox: { deliver: async () => undefined },
    flushHistory: async () => undefined } as unknown as Client;
  assert.equal(await turnServerHistoryOn(client, 1_000), 0, "no messages");
  const [entry, ...more] = await pendingEntries(store);
  assert.ok(entry !== undefined && more.length === 0);
  const ours = (await enabledKeys(store))!;
  assert.equal(entry.name, toHex(eventId(ours, "group", group.conversation, "", 3)));
  const event = await openBlob(ours, fromHex(entry.name), entry.blob);
  assert.equal(event.body.case, "groupState");
  assert.equal(toHex(event.body.value as Uint8Array), vector.group_state);
});

describe("the upload queue keeps the order entries were recorded in, as the SDK's outbox", () => {
  const edit = fromBinary(DataMessageSchema, fromHex(vector.edit));
  const message = create(DataMessageSchema, { timestamp: BigInt(vector.deleted_timestamp), text: "I drive at nine" });
  const group = Group.fromBytes(fromHex(vector.group_state));
  const names = {
    message: toHex(eventId(keys, "message", vector.conversation, vector.alice, vector.deleted_timestamp)),
    edit: sdk("edit").event_id, group: sdk("group").event_id,
  };

  async function recorded(): Promise<DeviceStore> {
    const store = await storeWithHistory();
    await store.transaction(async () => {
      await recordGroup(store, group);
      await recordMessage(store, vector.conversation, vector.alice, 2, vector.now, false, message);
      await recordChange(store, vector.conversation, vector.alice, 2, vector.now, edit);
    });
    return store;
  }

  test("entries are uploaded in the order they were recorded, whatever their event ids", async () => {
    const inOrder = [names.group, names.message, names.edit];
    assert.notDeepEqual([...inOrder].sort(), inOrder, "the ids alone would give another order");
    const store = await recorded();
    assert.deepEqual((await pendingEntries(store)).map((e) => e.name), inOrder);
    const sent: string[] = [];
    const api = { request: async (method: string, path: string, body?: Uint8Array) => {
      sent.push(`${method} ${path.slice("/v1/history/".length)}`);
      await openBlob(keys, fromHex(path.slice("/v1/history/".length)), body!); // the blob itself, unmarked
    } } as unknown as RelayApi;
    assert.equal(await flush(api, store), 3);
    assert.deepEqual(sent, inOrder.map((n) => `PUT ${n}`));
    assert.equal((await pendingEntries(store)).length, 0);
  });

  test("a deletion replaces the message's queued upload (and its edit's) and takes the last place", async () => {
    const store = await recorded();
    await store.transaction(() => recordDeleted(store, vector.conversation, vector.alice, vector.deleted_timestamp));
    assert.deepEqual((await pendingEntries(store)).map((e) => [e.name, e.blob.length]),
      [[names.group, (await queued(store)).get(names.group)!.length], [names.message, 0], [names.edit, 0]]);
  });

  test("an entry queued again while its upload is under way stays queued", async () => {
    const store = await recorded();
    const sent: string[] = [];
    const api = { request: async (method: string, path: string) => {
      const name = path.slice("/v1/history/".length);
      sent.push(`${method} ${name}`);
      if (name === names.message && method === "PUT") {
        await store.transaction(() => recordDeleted(store, vector.conversation, vector.alice, vector.deleted_timestamp));
      }
    } } as unknown as RelayApi;
    await flush(api, store);
    // the edit's removal, queued with the message's, is read when its turn comes
    assert.deepEqual(sent, [`PUT ${names.group}`, `PUT ${names.message}`, `DELETE ${names.edit}`]);
    assert.deepEqual(await pendingEntries(store), [{ name: names.message, blob: new Uint8Array(0) }]);
    await flush(api, store);
    assert.equal(sent.at(-1), `DELETE ${names.message}`);
    assert.equal((await pendingEntries(store)).length, 0);
  });

  test("an entry queued before the order was kept goes first, as it was", async () => {
    const store = await recorded();
    const legacy = await seal(keys, fromHex("ab".repeat(16)), create(HistoryEventSchema, { body: { case: "groupState", value: group.stateBytes } }));
    await store.transaction(() => store.put(`histq:${"ab".repeat(16)}`, legacy));
    const entries = await pendingEntries(store);
    assert.deepEqual(entries.map((e) => e.name), ["ab".repeat(16), names.group, names.message, names.edit]);
    assert.deepEqual(entries[0]!.blob, legacy);
  });
});

test("a replay here applies the SDK's edit and reaction, keeps the newest group revision whatever the log order", async () => {
  const store = await storeWithHistory();
  const group = Group.fromBytes(fromHex(vector.group_state));
  const older = Group.fromBytes(encodeState(group.id, 1, "older title", group.members));
  const original = create(HistoryEventSchema, { body: { case: "message", value: create(HistoryMessageSchema, {
    conversation: vector.conversation, author: vector.alice, authorDevice: 2, receivedAt: BigInt(vector.deleted_timestamp),
    data: create(DataMessageSchema, { timestamp: BigInt(vector.deleted_timestamp), text: "I drive at nine",
      group: { id: group.id, revision: 3n } }) }) } });
  const messageName = eventId(keys, "message", vector.conversation, vector.alice, vector.deleted_timestamp);
  const olderName = eventId(keys, "group", vector.conversation, "", 1);
  const log = [
    { event_id: sdk("group").event_id, blob: fromHex(sdk("group").blob!) },
    { event_id: toHex(olderName), blob: await seal(keys, olderName,
      create(HistoryEventSchema, { body: { case: "groupState", value: older.stateBytes } })) },
    { event_id: toHex(messageName), blob: await seal(keys, messageName, original) },
    { event_id: sdk("edit").event_id, blob: fromHex(sdk("edit").blob!) },
    { event_id: sdk("reaction").event_id, blob: fromHex(sdk("reaction").blob!) },
  ].map((e, i) => ({ seq: i + 1, day: 1, event_id: e.event_id, blob: Buffer.from(e.blob).toString("base64") }));
  const api = { request: async (_method: string, path: string) =>
    (path === "/v1/history/settings" ? { stored_bytes: 0 } : { entries: log, more: false }) } as unknown as RelayApi;
  const replayed = await download(api, store, 0);
  assert.deepEqual([replayed.entries, replayed.messages, replayed.edited, replayed.reactions, replayed.skipped], [5, 1, 1, 1, 0]);
  const held = Group.fromBytes(fromHex((await store.getJson<string>(`group:${toHex(group.id)}`))!));
  assert.deepEqual([held.revision, held.title], [3, "Weekend plans"]);
  const message = await store.getJson<StoredMessage>(messageKey(vector.conversation, vector.deleted_timestamp, vector.alice));
  assert.equal(message?.text, "we meet at ten, not nine");
  const reactions = await reactionsOf(store, messageKey(vector.conversation, vector.deleted_timestamp, vector.alice));
  assert.deepEqual(Object.values(reactions), ["👍"], "the reaction is kept under the message it names");
});
