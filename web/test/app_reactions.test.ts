/** Reactions kept and shown as the SDK's store keeps them (store.set_reaction): one per
 * person per message, a newer one replacing theirs, a removal taking it away, all of a
 * message's going with it (src/app/reactions.ts, src/app/changes.ts). */

import assert from "node:assert/strict";
import { test } from "node:test";

import { create } from "@bufbuild/protobuf";

import { takeChange } from "../src/app/changes.js";
import { messageKey, type ClientEvent, type StoredMessage } from "../src/app/model.js";
import { DataMessageSchema } from "../src/app/proto/cipherpost/app/v1/app_pb.js";
import {
  applyReaction, forgetReactions, isReactionEmoji, MAX_EMOJI, reactionsOf, setReaction, summarize,
} from "../src/app/reactions.js";
import { TEST_PARAMS } from "../src/app/store/crypto.js";
import { DeviceStore } from "../src/app/store/device.js";
import { MemoryKv } from "../src/app/store/kv.js";

const ALICE = "0f8e2c5a-7d1b-4c3e-9a6f-2b4d8e1c7a90";
const BOB = "5c1d9e7b-3a2f-4e8d-b6c0-9f1a2e3d4c5b";
const CAROL = "9a9a9a9a-1111-4222-8333-444455556666";
const CONVERSATION = BOB; // Alice's conversation with Bob, as Alice holds it
const SENT = 1_780_000_001_000;
const KEY = messageKey(CONVERSATION, SENT, BOB);

async function storeWithMessage(): Promise<DeviceStore> {
  const store = await DeviceStore.create(new MemoryKv(), "correct horse", TEST_PARAMS);
  const message: StoredMessage = { conversation: CONVERSATION, author: BOB, authorDevice: 1, timestamp: SENT,
    text: "lunch?", outgoing: false, status: "received", receivedAt: SENT };
  await store.transaction(() => store.putJson(KEY, message));
  return store;
}

function reaction(emoji: string, remove = false, timestamp = SENT + 10, author = BOB) {
  return create(DataMessageSchema, { timestamp: BigInt(timestamp),
    reaction: { emoji, remove, target: { author, timestamp: BigInt(SENT) } } });
}

test("a person's newer reaction replaces theirs; a removal takes it away; others' stay", async () => {
  const store = await storeWithMessage();
  const events: ClientEvent[] = [];
  await store.transaction(async () => {
    await takeChange(store, CONVERSATION, ALICE, 1, reaction("👍"), SENT + 10, events);
    await takeChange(store, CONVERSATION, BOB, 1, reaction("👍"), SENT + 11, events);
    await takeChange(store, CONVERSATION, ALICE, 1, reaction("❤️"), SENT + 12, events);
  });
  assert.deepEqual(await reactionsOf(store, KEY), { [ALICE]: "❤️", [BOB]: "👍" });
  assert.deepEqual(events, Array(3).fill({ kind: "reaction", conversation: CONVERSATION, timestamp: SENT }));
  await store.transaction(() => takeChange(store, CONVERSATION, BOB, 1, reaction("👍", true), SENT + 13, events));
  assert.deepEqual(await reactionsOf(store, KEY), { [ALICE]: "❤️" });
  await store.transaction(() => takeChange(store, CONVERSATION, ALICE, 1, reaction("", true), SENT + 14, events));
  assert.deepEqual(await reactionsOf(store, KEY), {});
  assert.equal(await store.get(`reactions:${KEY}`), undefined, "nothing is left stored");
});

test("a reaction to a message not held in that conversation is not kept", async () => {
  const store = await storeWithMessage();
  await store.transaction(async () => {
    assert.equal(await applyReaction(store, ALICE, CAROL, reaction("👍")), false, "another conversation");
    assert.equal(await applyReaction(store, CONVERSATION, CAROL, reaction("👍", false, SENT + 10, ALICE)), false,
      "another author's message of that time");
    assert.equal(await applyReaction(store, CONVERSATION, CAROL, create(DataMessageSchema, { timestamp: 5n })), false);
  });
  assert.deepEqual(await reactionsOf(store, KEY), {});
});

/** One emoji each: a ZWJ family, a flag, a skin tone, a heart with VS16, a ZWJ sequence with skin tones. */
const EMOJI = ["👍", "👨‍👩‍👧‍👦", "🇩🇪", "👍🏽", "❤️", "🧑🏻‍🤝‍🧑🏿", "🏳️‍🌈", "©️"];
/** Text, two emoji, direction and other invisible characters, a lone flag half or skin tone, nothing. */
const NOT_EMOJI = ["✅ admin verified", "admin", "👍👍", "🇩🇪🇫🇷", "\u202e👍", "👍\u202e", "\u200b👍", "👍\u2066",
  "\u00ad👍", "👍\u0000", "👍\n", "🇩", "🏽", "", "👍\u0301", "1️⃣", "🏴\u{e0067}\u{e0062}\u{e007f}", "😀".repeat(MAX_EMOJI + 1)];

test("a reaction is one emoji: text, two emoji and invisible characters are not", () => {
  for (const segmenter of [undefined, null]) { // (null: a browser without Intl.Segmenter)
    for (const emoji of EMOJI) assert.ok(isReactionEmoji(emoji, segmenter), `${emoji} is one emoji (${segmenter})`);
    for (const text of NOT_EMOJI) {
      assert.ok(!isReactionEmoji(text, segmenter), `${JSON.stringify(text)} is not one emoji (${segmenter})`);
    }
  }
});

test("a received or replayed reaction that is not one emoji is ignored: not kept, not shown", async () => {
  const store = await storeWithMessage();
  const events: ClientEvent[] = [];
  await store.transaction(async () => {
    for (const [i, emoji] of EMOJI.entries()) {
      await takeChange(store, CONVERSATION, CAROL, 1, reaction(emoji), SENT + 10 + i, events);
      assert.deepEqual(await reactionsOf(store, KEY), { [CAROL]: emoji });
    }
    for (const [i, text] of NOT_EMOJI.entries()) {
      await takeChange(store, CONVERSATION, ALICE, 1, reaction(text), SENT + 100 + i, events);
      assert.equal(await applyReaction(store, CONVERSATION, ALICE, reaction(text)), false, "as a history replay applies it");
    }
  });
  assert.deepEqual(await reactionsOf(store, KEY), { [CAROL]: EMOJI[EMOJI.length - 1] }, "Alice's texts were not kept");
  assert.equal(events.filter((e) => e.kind === "reaction").length, EMOJI.length, "nor redrawn");
  assert.deepEqual(new Set(events.filter((e) => e.kind === "unsupported").map((e) => e.kind === "unsupported" && e.reason)),
    new Set(["a reaction that is not one emoji"]));
  await assert.rejects(store.transaction(() => setReaction(store, KEY, ALICE, "✅ admin verified")), RangeError);
  // One stored before this check (by an older version of this page) is not shown.
  await store.transaction(() => store.putJson(`reactions:${KEY}`, { [ALICE]: "✅ admin verified", [CAROL]: "👍" }));
  assert.deepEqual(await reactionsOf(store, KEY), { [CAROL]: "👍" });
});

test("a message deleted or expired takes its reactions with it", async () => {
  const store = await storeWithMessage();
  await store.transaction(() => setReaction(store, KEY, ALICE, "🎉"));
  await store.transaction(() => takeChange(store, CONVERSATION, BOB, 1,
    create(DataMessageSchema, { timestamp: BigInt(SENT + 20), delete: { author: BOB, timestamp: BigInt(SENT) } }), SENT + 20, []));
  assert.equal(await store.get(KEY), undefined);
  assert.deepEqual(await reactionsOf(store, KEY), {});
  await store.transaction(() => setReaction(store, KEY, ALICE, "🎉"));
  await store.transaction(() => forgetReactions(store, KEY));
  assert.deepEqual(await reactionsOf(store, KEY), {});
});

test("shown by emoji with who chose it, the most chosen first", () => {
  assert.deepEqual(summarize({ [CAROL]: "👍", [ALICE]: "❤️", [BOB]: "👍" }),
    [{ emoji: "👍", reactors: [BOB, CAROL] }, { emoji: "❤️", reactors: [ALICE] }]);
  assert.deepEqual(summarize({}), []);
});
