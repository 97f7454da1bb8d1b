/** Sealed-sender envelopes (no sender, type 6) reaching the browser client's inbox: one
 * under a certificate the pinned root signed is opened and handled as the identified
 * message it wraps, and its author's profile key is kept; one that fails (no pinned root,
 * another root, expired, a revoked server key id, from this very device, garbage) is
 * reported, acknowledged once, and touches no session. Also the access key's derivation. */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";

import { create } from "@bufbuild/protobuf";

import { ProtocolAddress } from "../src/protocol/address.js";
import { generatePreKeyBundle } from "../src/protocol/bundles.js";
import { systemRandom, toHex } from "../src/protocol/bytes.js";
import { SenderCertificate, ServerCertificate } from "../src/protocol/certificates.js";
import { IdentityKeyPair, PrivateKey } from "../src/protocol/keys.js";
import { encrypt, processPreKeyBundle } from "../src/protocol/session.js";
import { InMemoryProtocolStore } from "../src/protocol/stores.js";
import { parseEnvelope, type Envelope } from "../src/app/api.js";
import { encodeContent } from "../src/app/content.js";
import { Inbox, SEALED_TYPE } from "../src/app/inbox.js";
import type { ClientEvent } from "../src/app/model.js";
import { ContentSchema } from "../src/app/proto/cipherpost/app/v1/app_pb.js";
import * as sealed from "../src/app/sealed.js";
import { TEST_PARAMS } from "../src/app/store/crypto.js";
import { DeviceStore } from "../src/app/store/device.js";
import { MemoryKv } from "../src/app/store/kv.js";
import { NOW } from "./helpers.js";

const ALICE = "aaaaaaaa-0000-4000-8000-000000000001";
const BOB = "bbbbbbbb-0000-4000-8000-000000000002";
const NOW_MS = NOW * 1000;
const HOUR = 3_600_000;

async function setUp() {
  const store = await DeviceStore.create(new MemoryKv(), "pw", TEST_PARAMS);
  await store.transaction(() => store.setIdentity(IdentityKeyPair.generate(systemRandom), 42));
  store.ownAccountId = BOB;
  const bundle = await store.transaction(() => generatePreKeyBundle(store, {
    deviceId: 1, signedPreKeyId: 1, kyberPreKeyId: 1, preKeyId: 1, rng: systemRandom, nowMs: NOW_MS }));
  const aliceIdentity = IdentityKeyPair.generate(systemRandom);
  const alice = new InMemoryProtocolStore(aliceIdentity, 7);
  await processPreKeyBundle(alice, new ProtocolAddress(BOB, 1), bundle, { now: NOW });
  const root = PrivateKey.generate(systemRandom);
  const serverKey = PrivateKey.generate(systemRandom);
  const server = ServerCertificate.create(9, serverKey.publicKey(), root);
  const certificate = (options: { account?: string; device?: number; expires?: number; signer?: ServerCertificate;
    key?: PrivateKey } = {}) => SenderCertificate.create({ senderUuid: options.account ?? ALICE,
    senderDeviceId: options.device ?? 1, identityKey: aliceIdentity.publicKey, expires: options.expires ?? NOW_MS + HOUR },
  options.signer ?? server, options.key ?? serverKey);
  const inbox = new Inbox(store, BOB, 1, () => NOW_MS);
  /** A sealed envelope as the relay delivers it: no sender, client timestamp 0, the hour only. */
  async function envelope(plaintext: Uint8Array, cert = certificate()): Promise<Envelope> {
    const message = await encrypt(alice, new ProtocolAddress(BOB, 1), plaintext, { now: NOW });
    const content = await sealed.sealMessage(aliceIdentity, store.getIdentityKeyPair().publicKey, cert,
      message.messageType, message.serialized);
    return parseEnvelope({ id: randomUUID(), sender_account_id: null, sender_device_id: null, type: SEALED_TYPE,
      content: Buffer.from(content).toString("base64"), client_timestamp: 0, server_timestamp: NOW_MS - (NOW_MS % HOUR) });
  }
  return { store, inbox, envelope, certificate, root, server, serverKey };
}

function text(timestamp: number, body: string, profileKey: Uint8Array = new Uint8Array(0)): Uint8Array {
  return encodeContent(create(ContentSchema, { body: { case: "data", value: {
    timestamp: BigInt(timestamp), text: body, profileKey: new Uint8Array(profileKey) } } }));
}

const summary = (events: ClientEvent[]) => events.map((e) => e.kind === "sealed_rejected" ? `rejected:${e.error}`
  : e.kind === "message" ? `message:${e.message.author}:${e.message.text}` : e.kind);

test("the access key is AES-256-GCM of 16 zero bytes under the profile key, as in the SDK", async () => {
  // Computed with cipherpost.client.sealed.access_key(bytes(range(32))).
  const key = await sealed.accessKey(Uint8Array.from({ length: 32 }, (_, i) => i));
  assert.equal(toHex(key), "0ebcb5deb52c83bd08a8a935182c9199");
  assert.notEqual(toHex(await sealed.accessKey(new Uint8Array(32))), toHex(key));
  await assert.rejects(sealed.accessKey(new Uint8Array(16)), RangeError);
});

test("a sealed envelope without a pinned root is refused once and touches no session", async () => {
  const { store, inbox, envelope } = await setUp();
  const sealedEnvelope = await envelope(text(1000, "hello"));
  assert.equal(sealedEnvelope.senderAccountId, undefined);
  assert.deepEqual(summary((await inbox.process(sealedEnvelope)).events), ["rejected:invalid_certificate"]);
  assert.deepEqual((await inbox.process(sealedEnvelope)).events, []);
  assert.equal(await store.loadSession(new ProtocolAddress(ALICE, 1)), undefined);
});

test("a sealed message under the pinned root is handled as the message it wraps", async () => {
  const { store, inbox, envelope, root } = await setUp();
  await store.transaction(() => sealed.pinTrustRoot(store, root.publicKey()));
  const profileKey = systemRandom(32);
  const first = await envelope(text(1000, "hello sealed", profileKey));
  assert.deepEqual(summary((await inbox.process(first)).events), [`message:${ALICE}:hello sealed`]);
  assert.deepEqual((await inbox.process(first)).events, []);
  assert.equal(toHex((await sealed.contactProfileKey(store, ALICE))!), toHex(profileKey));
  // The delivery receipt goes to the certificate's sender.
  assert.deepEqual((await store.scanJson("followup:")).map(([, w]) => w),
    [{ kind: "receipt", account: ALICE, type: "delivery", timestamps: [1000] }]);
  // Garbage after the session exists: refused, the session still works.
  const garbage = parseEnvelope({ id: randomUUID(), sender_account_id: null, sender_device_id: null, type: SEALED_TYPE,
    content: Buffer.from([0x11, 1, 2, 3]).toString("base64"), client_timestamp: 0, server_timestamp: 0 });
  assert.deepEqual(summary((await inbox.process(garbage)).events), ["rejected:invalid_message"]);
  assert.deepEqual(summary((await inbox.process(await envelope(text(1001, "still fine")))).events),
    [`message:${ALICE}:still fine`]);
});

test("another root, an expired certificate, a revoked key id and our own device are refused", async () => {
  const { store, inbox, envelope, certificate, root } = await setUp();
  await store.transaction(() => sealed.pinTrustRoot(store, root.publicKey()));
  const otherRoot = PrivateKey.generate(systemRandom);
  const otherKey = PrivateKey.generate(systemRandom);
  const forged = certificate({ signer: ServerCertificate.create(9, otherKey.publicKey(), otherRoot), key: otherKey });
  const cases: [Envelope, string][] = [
    [await envelope(text(1, "a"), forged), "rejected:invalid_certificate"],
    [await envelope(text(2, "b"), certificate({ expires: NOW_MS - 1 })), "rejected:invalid_certificate"],
    [await envelope(text(3, "c"), certificate({ account: BOB, device: 1 })), "rejected:sealed_sender_self_send"],
  ];
  for (const [e, expected] of cases) assert.deepEqual(summary((await inbox.process(e)).events), [expected]);
  assert.equal(await store.loadSession(new ProtocolAddress(ALICE, 1)), undefined);
  // The relay said server key 9 leaked: its certificates are refused from now on.
  await store.transaction(() => sealed.addRevokedKeyIds(store, [9], NOW_MS));
  assert.deepEqual(summary((await inbox.process(await envelope(text(4, "d")))).events), ["rejected:invalid_certificate"]);
  assert.equal(await store.loadSession(new ProtocolAddress(ALICE, 1)), undefined);
});

test("our sender certificate is cached, refreshed when it runs short, and must name us", async () => {
  const { store, root, server, serverKey } = await setUp();
  await store.transaction(() => sealed.pinTrustRoot(store, root.publicKey()));
  const identity = store.getIdentityKeyPair().publicKey;
  let fetched = 0;
  const issue = (expires: number, account = BOB) => async () => {
    fetched += 1;
    return SenderCertificate.create({ senderUuid: account, senderDeviceId: 1, identityKey: identity, expires },
      server, serverKey).serialized;
  };
  const first = await sealed.senderCertificate(store, NOW_MS, issue(NOW_MS + 24 * HOUR), BOB, 1);
  assert.equal(fetched, 1);
  assert.equal((await sealed.senderCertificate(store, NOW_MS + HOUR, issue(NOW_MS + 48 * HOUR), BOB, 1)).expires,
    first.expires);
  assert.equal(fetched, 1); // cached
  const later = await sealed.senderCertificate(store, NOW_MS + 19 * HOUR, issue(NOW_MS + 48 * HOUR), BOB, 1);
  assert.equal(fetched, 2);
  assert.equal(later.expires, NOW_MS + 48 * HOUR);
  await assert.rejects(sealed.senderCertificate(store, NOW_MS + 47 * HOUR, issue(NOW_MS + 72 * HOUR, ALICE), BOB, 1),
    (e: unknown) => e instanceof sealed.SealedError && e.kind === "invalid_certificate");
});

test("the access key is registered again after a day, or when the clock went back", async () => {
  const { store } = await setUp();
  assert.ok(await sealed.accessKeyDue(store, NOW_MS));
  await store.transaction(() => sealed.markAccessKeyRegistered(store, NOW_MS));
  assert.ok(!(await sealed.accessKeyDue(store, NOW_MS + sealed.ACCESS_KEY_REFRESH_MS - 1)));
  assert.ok(await sealed.accessKeyDue(store, NOW_MS + sealed.ACCESS_KEY_REFRESH_MS));
  assert.ok(await sealed.accessKeyDue(store, NOW_MS - 1));
  // A new profile key (adopted from a sibling device) is registered at once.
  await store.transaction(() => sealed.adoptOwnProfileKey(store, systemRandom(32)));
  assert.ok(await sealed.accessKeyDue(store, NOW_MS + 1));
});
