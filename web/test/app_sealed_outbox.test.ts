/** The browser outbox's sealed sends and their fallback, as in the SDK
 * (docs/spec/sealed-sender.md): sealed to a contact whose profile key we hold, with the
 * recipient's access key and no token; identified after 401 (the key is forgotten), 403
 * (sealed paused for that account) or 429; 409/410 go to the caller; no profile key, our
 * own account or no certificate mean identified. The relay is a stub recording calls. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { ProtocolAddress } from "../src/protocol/address.js";
import { systemRandom, toHex } from "../src/protocol/bytes.js";
import { SenderCertificate, ServerCertificate } from "../src/protocol/certificates.js";
import { IdentityKeyPair, PrivateKey } from "../src/protocol/keys.js";
import { openSealed } from "../src/protocol/sealed_sender.js";
import { RelayError, type Outgoing, type RelayApi } from "../src/app/api.js";
import { Outbox } from "../src/app/outbox.js";
import * as sealed from "../src/app/sealed.js";
import { TEST_PARAMS } from "../src/app/store/crypto.js";
import { DeviceStore } from "../src/app/store/device.js";
import { MemoryKv } from "../src/app/store/kv.js";
import { fromBase64 } from "../src/app/wire.js";
import { NOW } from "./helpers.js";

const ALICE = "aaaaaaaa-0000-4000-8000-000000000001";
const BOB = "bbbbbbbb-0000-4000-8000-000000000002";
const NOW_MS = NOW * 1000;

interface Call { kind: "sealed" | "identified" | "certificate"; account?: string; key?: string; messages?: Outgoing[] }

async function setUp(refuse: number[] = []) {
  const store = await DeviceStore.create(new MemoryKv(), "pw", TEST_PARAMS);
  await store.transaction(() => store.setIdentity(IdentityKeyPair.generate(systemRandom), 42));
  store.ownAccountId = ALICE;
  const bob = IdentityKeyPair.generate(systemRandom);
  await store.transaction(() => store.saveIdentity(new ProtocolAddress(BOB, 1), bob.publicKey));
  const root = PrivateKey.generate(systemRandom);
  const serverKey = PrivateKey.generate(systemRandom);
  const server = ServerCertificate.create(5, serverKey.publicKey(), root);
  const calls: Call[] = [];
  const answers = [...refuse];
  const api = {
    senderCertificate: async () => {
      calls.push({ kind: "certificate" });
      return SenderCertificate.create({ senderUuid: ALICE, senderDeviceId: 1,
        identityKey: store.getIdentityKeyPair().publicKey, expires: NOW_MS + 24 * 3_600_000 }, server, serverKey).serialized;
    },
    sendSealed: async (account: string, key: Uint8Array, messages: Outgoing[]) => {
      calls.push({ kind: "sealed", account, key: toHex(key), messages });
      const status = answers.shift();
      if (status !== undefined) throw new RelayError(status, "refused", "refused", {});
      return messages.length;
    },
    send: async (account: string, _timestamp: number, messages: Outgoing[]) => {
      calls.push({ kind: "identified", account, messages });
      return messages.length;
    },
  } as unknown as RelayApi;
  const outbox = new Outbox(store, api, ALICE, 1, () => NOW_MS);
  const profileKey = systemRandom(32);
  await store.transaction(async () => {
    await sealed.pinTrustRoot(store, root.publicKey());
    await sealed.setContactProfileKey(store, BOB, profileKey);
  });
  const messages: Outgoing[] = [{ device_id: 1, registration_id: 9, type: 2, content: "AAEC" }];
  return { store, outbox, calls, bob, profileKey, messages };
}

const kinds = (calls: Call[]) => calls.map((c) => c.kind);

test("to a contact whose profile key we hold: sealed, with its access key, openable by it", async () => {
  const { outbox, calls, bob, profileKey, messages } = await setUp();
  await outbox.sendToAccount(BOB, NOW_MS, messages);
  assert.deepEqual(kinds(calls), ["certificate", "sealed"]);
  const sent = calls[1]!;
  assert.equal(sent.key, toHex(await sealed.accessKey(profileKey)));
  assert.equal(sent.messages![0]!.type, sealed.SEALED_TYPE);
  const content = await openSealed(bob, fromBase64(sent.messages![0]!.content));
  assert.deepEqual([content.messageType, toHex(content.contents), content.sender.senderUuid], [2, "000102", ALICE]);
  await outbox.sendToAccount(BOB, NOW_MS + 1, messages); // the certificate is cached
  assert.deepEqual(kinds(calls), ["certificate", "sealed", "sealed"]);
});

test("401: the same ciphertexts go identified and the stale profile key is forgotten", async () => {
  const { store, outbox, calls, messages } = await setUp([401]);
  let checks = 0;
  outbox.afterSealedRefused = async () => { checks++; }; // the client checks our own key then
  await outbox.sendToAccount(BOB, NOW_MS, messages);
  assert.deepEqual(kinds(calls), ["certificate", "sealed", "identified"]);
  assert.equal(checks, 1);
  assert.deepEqual(calls[2]!.messages, messages);
  assert.equal(await sealed.contactProfileKey(store, BOB), undefined);
  await outbox.sendToAccount(BOB, NOW_MS, messages);
  assert.deepEqual(kinds(calls).slice(3), ["identified"]);
});

test("403 and 429: identified, and that account stays identified for a while", async () => {
  for (const status of [403, 429]) {
    const { outbox, calls, messages, store } = await setUp([status]);
    await outbox.sendToAccount(BOB, NOW_MS, messages);
    await outbox.sendToAccount(BOB, NOW_MS, messages);
    assert.deepEqual(kinds(calls), ["certificate", "sealed", "identified", "identified"], String(status));
    assert.notEqual(await sealed.contactProfileKey(store, BOB), undefined); // kept
  }
});

test("409 goes to the caller; our own account and no pinned root go identified", async () => {
  const { outbox, calls, messages } = await setUp([409]);
  await assert.rejects(outbox.sendToAccount(BOB, NOW_MS, messages), (e: unknown) => e instanceof RelayError && e.status === 409);
  await outbox.sendToAccount(ALICE, NOW_MS, messages);
  assert.deepEqual(kinds(calls), ["certificate", "sealed", "identified"]);
  const fresh = await setUp();
  await fresh.store.transaction(() => fresh.store.put("trust_root", null));
  await fresh.outbox.sendToAccount(BOB, NOW_MS, fresh.messages);
  assert.deepEqual(kinds(fresh.calls), ["identified"]);
});
