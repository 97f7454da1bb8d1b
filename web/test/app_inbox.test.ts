/** The inbox on hostile and repeated input: nothing is stored twice, a bad envelope is
 * acknowledged without touching the session, bad content keeps the session's advance,
 * and only our own account may send sync messages. No network: envelopes are built here. */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, test } from "node:test";

import { create, toBinary } from "@bufbuild/protobuf";

import { ProtocolAddress } from "../src/protocol/address.js";
import { generatePreKeyBundle } from "../src/protocol/bundles.js";
import { systemRandom } from "../src/protocol/bytes.js";
import { IdentityKeyPair } from "../src/protocol/keys.js";
import { encrypt, processPreKeyBundle } from "../src/protocol/session.js";
import { Direction, InMemoryProtocolStore } from "../src/protocol/stores.js";
import type { Envelope } from "../src/app/api.js";
import { encodeContent } from "../src/app/content.js";
import { Inbox } from "../src/app/inbox.js";
import { messageKey, type ClientEvent, type StoredMessage } from "../src/app/model.js";
import { pad } from "../src/app/padding.js";
import { ContentSchema, ReceiptMessage_Type } from "../src/app/proto/cipherpost/app/v1/app_pb.js";
import { TEST_PARAMS } from "../src/app/store/crypto.js";
import { DeviceStore } from "../src/app/store/device.js";
import { MemoryKv } from "../src/app/store/kv.js";
import { NOW } from "./helpers.js";

const ALICE = "aaaaaaaa-0000-4000-8000-000000000001";
const BOB = "bbbbbbbb-0000-4000-8000-000000000002";

async function setUp() {
  const store = await DeviceStore.create(new MemoryKv(), "pw", TEST_PARAMS);
  await store.transaction(() => store.setIdentity(IdentityKeyPair.generate(systemRandom), 42));
  store.ownAccountId = BOB;
  const bundle = await store.transaction(() => generatePreKeyBundle(store, {
    deviceId: 1, signedPreKeyId: 1, kyberPreKeyId: 1, preKeyId: 1, rng: systemRandom, nowMs: NOW * 1000 }));
  const alice = new InMemoryProtocolStore(IdentityKeyPair.generate(systemRandom), 7);
  await processPreKeyBundle(alice, new ProtocolAddress(BOB, 1), bundle, { now: NOW });
  const inbox = new Inbox(store, BOB, 1, () => NOW * 1000);
  let clientTimestamp = NOW * 1000;
  async function envelope(plaintext: Uint8Array, sender = ALICE, from = alice, senderDevice = 1): Promise<Envelope> {
    const message = await encrypt(from, new ProtocolAddress(BOB, 1), plaintext, { now: NOW });
    clientTimestamp += 1;
    return { id: randomUUID(), senderAccountId: sender, senderDeviceId: senderDevice, type: message.messageType,
      content: message.serialized, clientTimestamp, serverTimestamp: clientTimestamp };
  }
  /** Another sender session from a fresh bundle of ours, under `identity`. */
  let nextKeyId = 2;
  async function peer(identity: IdentityKeyPair): Promise<InMemoryProtocolStore> {
    const id = nextKeyId++;
    const fresh = await store.transaction(() => generatePreKeyBundle(store, {
      deviceId: 1, signedPreKeyId: id, kyberPreKeyId: id, preKeyId: id, rng: systemRandom, nowMs: NOW * 1000 }));
    const other = new InMemoryProtocolStore(identity, 8);
    await processPreKeyBundle(other, new ProtocolAddress(BOB, 1), fresh, { now: NOW });
    return other;
  }
  return { store, inbox, envelope, peer };
}

function text(timestamp: number, body: string): Uint8Array {
  return encodeContent(create(ContentSchema, { body: { case: "data", value: { timestamp: BigInt(timestamp), text: body } } }));
}

const kinds = (events: ClientEvent[]) => events.map((e) => e.kind);

describe("inbox", () => {
  test("a message is stored once, with a delivery receipt to send; repeats are dropped", async () => {
    const { store, inbox, envelope } = await setUp();
    const first = await envelope(text(1000, "hello"));
    assert.deepEqual(kinds((await inbox.process(first)).events), ["message"]);
    const stored = await store.getJson<StoredMessage>(messageKey(ALICE, 1000, ALICE));
    assert.equal(stored?.text, "hello");
    assert.deepEqual((await store.scanJson("followup:")).map(([, w]) => w),
      [{ kind: "receipt", account: ALICE, type: "delivery", timestamps: [1000] }]);
    assert.deepEqual((await inbox.process(first)).events, []); // same envelope id
    assert.deepEqual((await inbox.process(await envelope(text(1000, "hello again")))).events, []); // same name
    assert.equal((await store.getJson<StoredMessage>(messageKey(ALICE, 1000, ALICE)))?.text, "hello");
  });

  test("a PreKey message naming a key we do not hold asks for a republish before the resend", async () => {
    for (const missing of ["prekey:1", "kyber:1"]) {
      const { store, inbox, envelope } = await setUp();
      await store.transaction(() => store.put(missing, null)); // lost, e.g. a relay restored from a backup
      const message = await envelope(text(1, "one"));
      assert.deepEqual(kinds((await inbox.process(message)).events), ["decryption_failed"], missing);
      assert.deepEqual((await store.scanJson("followup:")).map(([, w]) => w), [
        { kind: "republish" },
        { kind: "decryption_error", account: ALICE, device: 1, timestamp: message.clientTimestamp }], missing);
    }
  });

  test("an undecryptable envelope is reported and answered; the session is untouched", async () => {
    const { store, inbox, envelope } = await setUp();
    const good = await envelope(text(1, "one"));
    const bad = { ...good, id: randomUUID(), content: good.content.slice() };
    bad.content[Math.floor(bad.content.length / 2)]! ^= 0x10; // inside the Kyber ciphertext
    assert.deepEqual(kinds((await inbox.process(bad)).events), ["decryption_failed"]);
    assert.equal(await store.loadSession(new ProtocolAddress(ALICE, 1)), undefined);
    assert.deepEqual((await store.scanJson("followup:")).map(([, w]) => w),
      [{ kind: "decryption_error", account: ALICE, device: 1, timestamp: good.clientTimestamp }]);
    for (const garbage of [new Uint8Array(0), Uint8Array.of(0x33, 1, 2), new Uint8Array(300).fill(0x41)]) {
      const junk = { ...(await envelope(text(9, "x"))), content: garbage };
      assert.deepEqual(kinds((await inbox.process(junk)).events), ["decryption_failed"]);
    }
    assert.equal(await store.loadSession(new ProtocolAddress(ALICE, 1)), undefined);
    assert.deepEqual(kinds((await inbox.process(good)).events), ["message"]);
    assert.deepEqual(kinds((await inbox.process(await envelope(text(3, "three")))).events), ["message"]);
  });

  test("bad content after a good decrypt keeps the session's advance and stores nothing", async () => {
    const { store, inbox, envelope } = await setUp();
    assert.deepEqual(kinds((await inbox.process(await envelope(new TextEncoder().encode("no padding")))).events),
      ["invalid_content"]);
    const huge = pad(toBinary(ContentSchema, create(ContentSchema, {
      body: { case: "data", value: { timestamp: 2n ** 60n, text: "far future" } } })));
    assert.deepEqual(kinds((await inbox.process(await envelope(huge))).events), ["invalid_content"]);
    assert.deepEqual(await store.scan("msg:"), []);
    assert.deepEqual(kinds((await inbox.process(await envelope(text(5, "fine")))).events), ["message"]);
  });

  test("sync messages from another account and data from our own are refused, writes undone", async () => {
    const { store, inbox, envelope } = await setUp();
    const sync = encodeContent(create(ContentSchema, { body: { case: "sync", value: { body: { case: "sent",
      value: { destination: ALICE, message: { timestamp: 7n, text: "forged copy" } } } } } }));
    assert.deepEqual(kinds((await inbox.process(await envelope(sync))).events), ["unsupported"]);
    assert.deepEqual(await store.scan("msg:"), []);
    assert.deepEqual(await store.scan("contact:"), []);
  });

  test("receipts move our messages' status forward only", async () => {
    const { store, inbox, envelope } = await setUp();
    const key = messageKey(ALICE, 100, BOB);
    await store.transaction(() => store.putJson(key, { conversation: ALICE, author: BOB, authorDevice: 1,
      timestamp: 100, text: "mine", outgoing: true, status: "sent", receivedAt: 100 } satisfies StoredMessage));
    const receipt = (type: ReceiptMessage_Type) => encodeContent(create(ContentSchema, {
      body: { case: "receipt", value: { type, timestamps: [100n, 555n] } } }));
    assert.deepEqual((await inbox.process(await envelope(receipt(ReceiptMessage_Type.READ)))).events,
      [{ kind: "status", conversation: ALICE, timestamp: 100, status: "read" }]);
    assert.deepEqual((await inbox.process(await envelope(receipt(ReceiptMessage_Type.DELIVERY)))).events, []);
    assert.equal((await store.getJson<StoredMessage>(key))?.status, "read");
  });

  test("an envelope without a sender or of an unknown type is acknowledged as unsupported", async () => {
    const { inbox, envelope } = await setUp();
    const sealedSender = { ...(await envelope(text(1, "x"))), senderAccountId: undefined };
    assert.deepEqual(kinds((await inbox.process(sealedSender)).events), ["unsupported"]);
    const unknown = { ...(await envelope(text(2, "y"))), type: 9 };
    assert.deepEqual(kinds((await inbox.process(unknown)).events), ["unsupported"]);
  });

  test("a sender-key envelope that does not open is reported, not answered over 1:1", async () => {
    const { store, inbox, envelope } = await setUp();
    const notGroup = { ...(await envelope(text(2, "y"))), type: 7 };
    assert.deepEqual(kinds((await inbox.process(notGroup)).events), ["decryption_failed"]);
    assert.deepEqual(await store.scanJson("followup:"), []);
  });

  test("a contact's new identity key is reported; receiving goes on, sending is blocked", async () => {
    const { store, inbox, envelope, peer } = await setUp();
    assert.deepEqual(kinds((await inbox.process(await envelope(text(1, "old key")))).events), ["message"]);
    assert.equal((await store.getTrust(ALICE))?.changed, false);
    const newKey = IdentityKeyPair.generate(systemRandom);
    const reinstalled = await peer(newKey);
    const events = (await inbox.process(await envelope(text(2, "new key"), ALICE, reinstalled))).events;
    assert.deepEqual(events.map((e) => e.kind), ["identity_changed", "message"]);
    assert.equal((await store.getTrust(ALICE))?.changed, true);
    const alice1 = new ProtocolAddress(ALICE, 1);
    assert.equal(await store.isTrustedIdentity(alice1, newKey.publicKey, Direction.SENDING), false);
    assert.equal(await store.isTrustedIdentity(alice1, newKey.publicKey, Direction.RECEIVING), true);
    // the same key again is no news
    assert.deepEqual(kinds((await inbox.process(await envelope(text(3, "again"), ALICE, reinstalled))).events),
      ["message"]);
  });

  test("our other device read messages: they are read here and the unread count drops", async () => {
    const { store, inbox, envelope, peer } = await setUp();
    for (const ts of [10, 11, 12]) await inbox.process(await envelope(text(ts, `m${ts}`)));
    assert.equal((await store.getJson<{ unread: number }>(`contact:${ALICE}`))?.unread, 3);
    const laptop = await peer(store.getIdentityKeyPair());
    const read = encodeContent(create(ContentSchema, { body: { case: "sync", value: { body: { case: "read",
      value: { messages: [{ author: ALICE, timestamp: 10n }, { author: ALICE, timestamp: 11n },
        { author: ALICE, timestamp: 999n }] } } } } }));
    const events = (await inbox.process(await envelope(read, BOB, laptop, 2))).events;
    assert.deepEqual(events, [{ kind: "seen", conversation: ALICE }]);
    assert.equal((await store.getJson<{ unread: number }>(`contact:${ALICE}`))?.unread, 1);
    assert.equal((await store.getJson<StoredMessage>(messageKey(ALICE, 11, ALICE)))?.read, true);
    assert.equal((await store.getJson<StoredMessage>(messageKey(ALICE, 12, ALICE)))?.read, undefined);
    // the same read again changes nothing
    assert.deepEqual((await inbox.process(await envelope(read, BOB, laptop, 2))).events, []);
    // another account cannot claim to be our device
    assert.deepEqual(kinds((await inbox.process(await envelope(read))).events), ["unsupported"]);
  });

  test("disappearing timers: newer versions win, an update is not a message, messages carry the timer", async () => {
    const { store, inbox, envelope } = await setUp();
    const data = (timestamp: number, fields: Record<string, unknown>) => encodeContent(create(ContentSchema, {
      body: { case: "data", value: { timestamp: BigInt(timestamp), ...fields } } }));
    const on = await inbox.process(await envelope(data(1, { expireTimer: 30, expireTimerVersion: 2, expireTimerUpdate: true })));
    assert.deepEqual(on.events, [{ kind: "timer", conversation: ALICE, author: ALICE, seconds: 30 }]);
    assert.deepEqual(await store.scan("msg:"), []);
    const stale = await inbox.process(await envelope(data(2, { text: "old", expireTimer: 0, expireTimerVersion: 1 })));
    assert.deepEqual(kinds(stale.events), ["message"]); // stored, the timer unchanged
    assert.deepEqual(await store.getJson(`timer:${ALICE}`), { seconds: 30, version: 2 });
    await inbox.process(await envelope(data(3, { text: "timed", expireTimer: 30, expireTimerVersion: 2 })));
    const timed = await store.getJson<StoredMessage>(messageKey(ALICE, 3, ALICE));
    assert.equal(timed?.expireTimer, 30);
    assert.equal(timed?.expiresAt, undefined); // starts when read
  });
});
