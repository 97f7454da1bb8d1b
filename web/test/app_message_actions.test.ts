/** Reacting to a message, editing one's own and deleting it for everyone from the browser
 * (src/app/message_actions.ts, Client.react / editMessage / deleteForEveryone): the
 * DataMessage each sends is the SDK's (Client.react, edit, delete_for_everyone: the
 * reaction / edit + text / delete naming the message by author and timestamp), to the
 * contact and as a sync copy to our other devices; it is applied here at once and
 * recorded in the server-stored history as the received ones are; and another's message
 * cannot be edited or deleted. The relay is replaced by the outbox's and the API's seams. */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { create, type MessageInitShape } from "@bufbuild/protobuf";

import { fromHex, toHex } from "../src/protocol/bytes.js";
import { RelayError, RelayUnavailable } from "../src/app/api.js";
import { takeChange } from "../src/app/changes.js";
import { Client } from "../src/app/client.js";
import { decodeContent } from "../src/app/content.js";
import type { Group } from "../src/app/groups.js";
import { adopt, eventId, type Keys } from "../src/app/history.js";
import { actionFields, MAX_EDIT_TEXT } from "../src/app/message_actions.js";
import { messageKey, type ClientEvent, type StoredMessage } from "../src/app/model.js";
import { DataMessageSchema, HistoryKeysSchema, MessageRefSchema, type DataMessage } from "../src/app/proto/cipherpost/app/v1/app_pb.js";
import { reactionsOf } from "../src/app/reactions.js";
import { TEST_PARAMS } from "../src/app/store/crypto.js";
import { DeviceStore } from "../src/app/store/device.js";
import { MemoryKv } from "../src/app/store/kv.js";

const ME = "0f8e2c5a-7d1b-4c3e-9a6f-2b4d8e1c7a90";
const BOB = "5c1d9e7b-3a2f-4e8d-b6c0-9f1a2e3d4c5b";
const MINE = 1_780_000_001_000; // our message to Bob
const HIS = 1_780_000_002_000; // Bob's answer
const NOW = 1_780_000_100_000;

const vector = JSON.parse(readFileSync(new URL("./fixtures/history-events-python.json", import.meta.url), "utf8")) as {
  id_key: string; epochs: [number, string, number][] };
const keys: Keys = { idKey: fromHex(vector.id_key),
  epochs: new Map(vector.epochs.map(([n, k, t]) => [n, { key: fromHex(k), startedAt: t }])) };

function stored(author: string, timestamp: number, text: string): StoredMessage {
  return { conversation: BOB, author, authorDevice: 1, timestamp, text, outgoing: author === ME,
    status: author === ME ? "delivered" : "received", receivedAt: timestamp };
}

interface Sent { account: string; data: DataMessage; sync: boolean; destination: string }

/** A client of ME holding a conversation with Bob (history on), its sends and history uploads caught. */
async function client(): Promise<{ client: Client; sent: Sent[]; uploads: string[]; events: ClientEvent[];
  time: { now: number } }> {
  const kv = new MemoryKv();
  const store = await DeviceStore.create(kv, "correct horse", TEST_PARAMS);
  await store.transaction(async () => {
    await store.putJson("account", { accountId: ME, deviceId: 1, token: "t", server: "http://127.0.0.1:9", username: "lena" });
    await store.putJson(messageKey(BOB, MINE, ME), stored(ME, MINE, "see you at nine"));
    await store.putJson(`mine:${MINE}`, messageKey(BOB, MINE, ME));
    await store.putJson(messageKey(BOB, HIS, BOB), stored(BOB, HIS, "bring snacks"));
    await adopt(store, create(HistoryKeysSchema, { idKey: keys.idKey,
      epochs: [...keys.epochs].map(([number, e]) => ({ number, key: e.key, startedAt: BigInt(e.startedAt) })) }), true);
  });
  const time = { now: NOW };
  const c = await Client.open(kv, "correct horse", { clock: () => time.now++ });
  const sent: Sent[] = [];
  c.outbox.deliver = async (account, plaintext) => {
    const body = decodeContent(plaintext).body;
    if (body.case === "data") sent.push({ account, data: body.value, sync: false, destination: "" });
    else if (body.case === "sync" && body.value.body.case === "sent") {
      const copy = body.value.body.value;
      sent.push({ account, data: copy.message!, sync: true, destination: copy.destination });
    } else assert.fail(`an unexpected send: ${body.case}`);
    return [1];
  };
  const uploads: string[] = [];
  c.api.request = async (method: string, path: string) => {
    uploads.push(`${method} ${path.slice("/v1/history/".length)}`);
    return undefined;
  };
  const events: ClientEvent[] = [];
  c.on((event) => events.push(event));
  return { client: c, sent, uploads, events, time };
}

/** The one message the action sent: to Bob, then the same as a sync copy to our own devices. */
function sentOnce(sent: Sent[]): DataMessage {
  assert.equal(sent.length, 2, "to the contact and a copy to our other devices");
  const [members, copy] = sent as [Sent, Sent];
  assert.deepEqual([members.account, members.sync, copy.account, copy.sync, copy.destination], [BOB, false, ME, true, BOB]);
  assert.deepEqual(copy.data, members.data);
  sent.length = 0;
  return members.data;
}

const name = (kind: "message" | "change", author: string, timestamp: number): string =>
  toHex(eventId(keys, kind, BOB, author, timestamp));

test("a reaction goes as the SDK's Reaction; a new one replaces ours, taking it back removes it", async () => {
  const { client: c, sent, uploads, events } = await client();
  const target = { author: BOB, timestamp: HIS };
  await c.react(BOB, target, "👍");
  const first = sentOnce(sent);
  assert.equal(first.reaction?.emoji, "👍");
  assert.equal(first.reaction?.remove, false);
  assert.deepEqual([first.reaction?.target?.author, first.reaction?.target?.timestamp], [BOB, BigInt(HIS)]);
  assert.deepEqual([first.text, first.edit, first.delete], ["", undefined, undefined]);
  assert.ok(first.timestamp > BigInt(HIS), "a message of its own, with its own timestamp");
  assert.deepEqual(await c.reactions(stored(BOB, HIS, "")), { [ME]: "👍" }, "applied here at once");
  assert.deepEqual(events.filter((e) => e.kind === "reaction"), [{ kind: "reaction", conversation: BOB, timestamp: HIS }]);

  await c.react(BOB, target, "😂");
  assert.equal(sentOnce(sent).reaction?.emoji, "😂");
  assert.deepEqual(await c.reactions(stored(BOB, HIS, "")), { [ME]: "😂" }, "one reaction per person");

  await c.react(BOB, target, "", true);
  const removal = sentOnce(sent);
  assert.deepEqual([removal.reaction?.emoji, removal.reaction?.remove], ["😂", true], "the SDK names the emoji taken back");
  assert.deepEqual(await c.reactions(stored(BOB, HIS, "")), {});
  await assert.rejects(c.react(BOB, target, "", true), /not reacted/);
  await assert.rejects(c.react(BOB, target, ""), /one emoji/);
  await assert.rejects(c.react(BOB, { author: BOB, timestamp: HIS + 1 }, "👍"), /not in this conversation/);
  assert.equal(sent.length, 0, "nothing refused is sent");

  await c.flushHistory();
  const changes = [first.timestamp, removal.timestamp].map((t) => `PUT ${name("change", ME, Number(t))}`);
  assert.ok(changes.every((u) => uploads.includes(u)), "each reaction is a change entry in the history, as the SDK's");
  assert.equal(await c.queued(), 0);
});

test("an edit of our message goes as the SDK's edit with the new text, applied and recorded here", async () => {
  const { client: c, sent, uploads } = await client();
  await c.editMessage(BOB, MINE, "see you at ten");
  const edit = sentOnce(sent);
  assert.deepEqual([edit.text, edit.edit?.author, edit.edit?.timestamp, edit.reaction, edit.delete],
    ["see you at ten", ME, BigInt(MINE), undefined, undefined]);
  assert.equal((await c.store.getJson<StoredMessage>(messageKey(BOB, MINE, ME)))?.text, "see you at ten");
  await c.flushHistory();
  assert.ok(uploads.includes(`PUT ${name("change", ME, Number(edit.timestamp))}`), "a change entry named by the edit");
});

test("an empty or over-long edit, or one of another's message, is refused and nothing is sent or changed", async () => {
  const { client: c, sent } = await client();
  await assert.rejects(c.editMessage(BOB, MINE, "  \n"), (e: Error) => e instanceof RangeError && /empty/.test(e.message));
  await assert.rejects(c.editMessage(BOB, MINE, "x".repeat(MAX_EDIT_TEXT + 1)),
    (e: Error) => e instanceof RangeError && /longer than 16384/.test(e.message));
  await assert.rejects(c.editMessage(BOB, HIS, "mine now"), /only your own messages can be edited/);
  await assert.rejects(c.deleteForEveryone(BOB, HIS), /only your own messages can be deleted/);
  await assert.rejects(c.editMessage(BOB, MINE + 1, "none"), /only your own/);
  assert.equal(sent.length, 0);
  assert.equal(await c.queued(), 0);
  assert.equal((await c.store.getJson<StoredMessage>(messageKey(BOB, MINE, ME)))?.text, "see you at nine");
  assert.equal((await c.store.getJson<StoredMessage>(messageKey(BOB, HIS, BOB)))?.text, "bring snacks");
});

test("a deletion goes as the SDK's delete; the message, its reactions and its history entries go here", async () => {
  const { client: c, sent, uploads, events } = await client();
  await c.editMessage(BOB, MINE, "see you at ten");
  const edit = sentOnce(sent);
  await c.react(BOB, { author: ME, timestamp: MINE }, "🎉");
  const reaction = sentOnce(sent);
  await c.deleteForEveryone(BOB, MINE);
  const deletion = sentOnce(sent);
  assert.deepEqual([deletion.text, deletion.delete?.author, deletion.delete?.timestamp, deletion.edit],
    ["", ME, BigInt(MINE), undefined]);
  assert.equal(await c.store.get(messageKey(BOB, MINE, ME)), undefined);
  assert.equal(await c.store.get(`mine:${MINE}`), undefined);
  assert.deepEqual(await reactionsOf(c.store, messageKey(BOB, MINE, ME)), {});
  assert.deepEqual(events.filter((e) => e.kind === "expired"), [{ kind: "expired", conversation: BOB, timestamp: MINE }]);
  await c.flushHistory();
  for (const entry of [name("message", ME, MINE), name("change", ME, Number(edit.timestamp)),
    name("change", ME, Number(reaction.timestamp))]) {
    assert.ok(uploads.includes(`DELETE ${entry}`), `the entry ${entry} leaves the history`);
  }
  await assert.rejects(c.deleteForEveryone(BOB, MINE), /only your own/, "gone: nothing left to delete");
});

test("actionFields checks on its own store; a group we are not in is refused", async () => {
  const store = await DeviceStore.create(new MemoryKv(), "correct horse", TEST_PARAMS);
  await store.transaction(() => store.putJson(messageKey(BOB, MINE, ME), stored(ME, MINE, "hi")));
  assert.deepEqual(await actionFields(store, ME, BOB, { kind: "delete", timestamp: MINE }).then((f) => f.delete?.timestamp),
    BigInt(MINE));
  await assert.rejects(actionFields(store, BOB, BOB, { kind: "delete", timestamp: MINE }), /only your own/,
    "Bob's device could not delete our message either");
  await assert.rejects((await client()).client.editMessage(`group:${"ab".repeat(32)}`, MINE, "x"), /not in this group/);
});

/** Sends fail as with no connection while `net.offline`; the 1:1 sends as `client()` catches them otherwise. */
function goOffline(c: Client): { offline: boolean } {
  const net = { offline: true };
  const online = c.outbox.deliver.bind(c.outbox);
  c.outbox.deliver = async (...args) => {
    if (net.offline) throw new RelayUnavailable("no connection");
    return online(...args);
  };
  return net;
}

test("our message deleted for everyone while it waits for the connection is never sent; the deletion goes", async () => {
  const { client: c, sent } = await client();
  const net = goOffline(c);
  const message = await c.sendText(BOB, "the door code is 4711");
  assert.equal(message.status, "sending");
  await c.deleteForEveryone(BOB, message.timestamp);
  assert.equal(await c.queued(), 1, "only the deletion waits");
  assert.equal(await c.store.get(`resend:${message.timestamp}`), undefined, "nor can a resend request have it sent");
  net.offline = false;
  await c.flushQueue();
  assert.ok(sent.every((s) => s.data.text !== "the door code is 4711"), "the text never left");
  assert.equal(sentOnce(sent).delete?.timestamp, BigInt(message.timestamp));
  assert.equal(await c.queued(), 0);
});

test("our message edited while it waits for the connection goes with the new text; the edit follows", async () => {
  const { client: c, sent } = await client();
  const net = goOffline(c);
  const message = await c.sendText(BOB, "the door code is 4711");
  assert.equal(message.status, "sending");
  await c.editMessage(BOB, message.timestamp, "call me for the door code");
  assert.equal(await c.queued(), 2, "the message, then its edit");
  net.offline = false;
  await c.flushQueue();
  assert.ok(sent.every((s) => !s.data.text.includes("4711")), "the old text never left");
  assert.equal(sent.length, 4, "each to Bob and as a copy to our other devices");
  const [first, edit] = [sent[0]!.data, sent[2]!.data];
  assert.deepEqual([first.timestamp, first.text, first.edit], [BigInt(message.timestamp), "call me for the door code",
    undefined]);
  assert.deepEqual([edit.edit?.timestamp, edit.text], [BigInt(message.timestamp), "call me for the door code"]);
  assert.equal(await c.queued(), 0);
});

test("our disappearing message takes what a resend request would get along when it expires", async () => {
  const { client: c, time, uploads } = await client();
  await c.store.transaction(() => c.store.putJson(`timer:${BOB}`, { seconds: 5, version: 1 }));
  const message = await c.sendText(BOB, "gone in five seconds");
  assert.equal(message.expireTimer, 5);
  assert.notEqual(await c.store.get(`resend:${message.timestamp}`), undefined);
  assert.deepEqual(await c.expireMessages(), [], "not yet");
  time.now += 6_000;
  assert.deepEqual(await c.expireMessages(), [{ kind: "expired", conversation: BOB, timestamp: message.timestamp }]);
  assert.equal(await c.store.get(messageKey(BOB, message.timestamp, ME)), undefined);
  assert.equal(await c.store.get(`resend:${message.timestamp}`), undefined, "nor can a resend request bring it back");
  await c.flushHistory();
  assert.ok(uploads.includes(`DELETE ${name("message", ME, message.timestamp)}`), "its history entry goes");
});

test("an edit refused after waiting in the queue is reported, not dropped unseen", async () => {
  const { client: c, events } = await client();
  goOffline(c);
  await c.editMessage(BOB, MINE, "see you at eleven");
  assert.equal(await c.queued(), 1, "offline: the edit waits");
  assert.deepEqual(events.filter((e) => e.kind === "action_failed"), []);
  const refusal = new RelayError(403, "forbidden", "not allowed", {});
  c.outbox.deliver = async () => { throw refusal; }; // back online, and the relay refuses it
  const failures = await c.flushQueue();
  assert.equal(await c.queued(), 0);
  assert.equal(failures.size, 1);
  assert.deepEqual(events.filter((e) => e.kind === "action_failed"),
    [{ kind: "action_failed", conversation: BOB, action: "edit", error: refusal }]);
  assert.ok(!events.some((e) => e.kind === "status" && e.status === "failed"), "no message of ours is marked");
});

test("a group message deleted while queued is dropped unless the relay took it for a member already", async () => {
  const { client: c, sent } = await client();
  const net = goOffline(c);
  const conversation = `group:${"ab".repeat(32)}`;
  const group = { id: fromHex("ab".repeat(32)), revision: 1, isMember: () => true } as unknown as Group;
  c.inbox.group = async () => group;
  const members: string[] = [];
  let halfWay = false;
  c.outbox.sendGroup = async (_group, plaintext, _timestamp, reached) => {
    if (halfWay) {
      halfWay = false;
      await reached?.(BOB); // the relay took it for Bob, then the connection went
      throw new RelayUnavailable("no connection");
    }
    if (net.offline) throw new RelayUnavailable("no connection");
    const body = decodeContent(plaintext).body;
    members.push(body.case === "data" ? body.value.text || (body.value.delete ? "(deletion)" : "") : "");
  };

  const unsent = await c.sendText(conversation, "nobody saw this");
  await c.deleteForEveryone(conversation, unsent.timestamp);
  assert.equal(await c.queued(), 1, "never sent to anyone: dropped");
  net.offline = false;
  await c.flushQueue();
  assert.deepEqual(members, ["(deletion)"]);

  halfWay = true;
  const half = await c.sendText(conversation, "half sent");
  assert.equal(half.status, "sending");
  net.offline = true;
  await c.deleteForEveryone(conversation, half.timestamp);
  assert.equal(await c.queued(), 2, "a member has it: the rest get it too, then the deletion");
  net.offline = false;
  await c.flushQueue();
  assert.deepEqual(members, ["(deletion)", "half sent", "(deletion)"]);
  assert.ok(sent.every((s) => s.data.text !== "nobody saw this"), "nor did our other devices get it");
  assert.equal(await c.queued(), 0);
});

test("a resend request gets our edited text, and nothing of a message we deleted for everyone", async () => {
  const { client: c, sent, events } = await client();
  c.api.fetch = async () => ({ envelopes: [], more: false });
  c.keyUpkeep.received = async () => {};
  /** Bob's device 1 asks for what we sent at `timestamp` (0: lately), as after a decryption error. */
  const resendRequest = async (timestamp: number): Promise<string[]> => {
    sent.length = 0;
    await c.store.transaction(() => c.store.putJson(`followup:test-${timestamp}`,
      { kind: "resend", account: BOB, device: 1, timestamp }));
    await c.receive();
    return sent.map((s) => `${s.account} ${s.data.timestamp} ${s.data.text}`);
  };
  const deleted = await c.sendText(BOB, "meet at the old mill");
  const edited = await c.sendText(BOB, "the password is hunter2");
  assert.deepEqual(await resendRequest(deleted.timestamp), [`${BOB} ${deleted.timestamp} meet at the old mill`],
    "the resend log answers before any change");
  await c.editMessage(BOB, edited.timestamp, "the password is in the safe");
  await c.deleteForEveryone(BOB, deleted.timestamp);

  assert.deepEqual(await resendRequest(edited.timestamp), [`${BOB} ${edited.timestamp} the password is in the safe`]);
  assert.deepEqual(await resendRequest(deleted.timestamp), []);
  assert.ok(events.some((e) => e.kind === "resend_unavailable" && e.timestamp === deleted.timestamp));
  assert.deepEqual(await resendRequest(0), [`${BOB} ${edited.timestamp} the password is in the safe`],
    "what we sent lately: the edited text only");

  // The same when the change comes from another of our devices (its sync copy).
  const later = await c.sendText(BOB, "call me at 555-0100");
  const elsewhere = (fields: MessageInitShape<typeof DataMessageSchema>): DataMessage => create(DataMessageSchema,
    { timestamp: BigInt(later.timestamp + 5), ...fields });
  await c.store.transaction(() => takeChange(c.store, BOB, ME, 2,
    elsewhere({ text: "call me tomorrow", edit: create(MessageRefSchema, { author: ME, timestamp: BigInt(later.timestamp) }) }),
    NOW, []));
  assert.deepEqual(await resendRequest(later.timestamp), [`${BOB} ${later.timestamp} call me tomorrow`]);
  await c.store.transaction(() => takeChange(c.store, BOB, ME, 2,
    elsewhere({ delete: create(MessageRefSchema, { author: ME, timestamp: BigInt(later.timestamp) }) }),
    NOW, []));
  assert.deepEqual(await resendRequest(later.timestamp), []);
});

test("only one emoji is sent as a reaction: a flag, a ZWJ family or a skin tone, not text or two", async () => {
  const { client: c, sent } = await client();
  const target = { author: BOB, timestamp: HIS };
  for (const emoji of ["🇩🇪", "👨‍👩‍👧‍👦", "👍🏽"]) {
    await c.react(BOB, target, emoji);
    assert.equal(sentOnce(sent).reaction?.emoji, emoji);
  }
  for (const text of ["✅ admin verified", "👍👍", "\u202e👍", "ok", ""]) {
    await assert.rejects(c.react(BOB, target, text), (e: Error) => e instanceof RangeError && /one emoji/.test(e.message),
      JSON.stringify(text));
  }
  assert.equal(sent.length, 0, "nothing refused is sent");
  assert.deepEqual(await c.reactions(stored(BOB, HIS, "")), { [ME]: "👍🏽" });
});
