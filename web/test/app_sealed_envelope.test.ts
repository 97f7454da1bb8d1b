/** A sealed-sender envelope (no sender, type 6) reaching the browser client, which cannot
 * open those yet: reported clearly and acknowledged once, nothing else changes. */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";

import { systemRandom } from "../src/protocol/bytes.js";
import { IdentityKeyPair } from "../src/protocol/keys.js";
import { parseEnvelope } from "../src/app/api.js";
import { Inbox, SEALED_TYPE, SEALED_UNSUPPORTED } from "../src/app/inbox.js";
import { TEST_PARAMS } from "../src/app/store/crypto.js";
import { DeviceStore } from "../src/app/store/device.js";
import { MemoryKv } from "../src/app/store/kv.js";
import { NOW } from "./helpers.js";

const BOB = "bbbbbbbb-0000-4000-8000-000000000002";

test("a sealed envelope is reported as such and processed once", async () => {
  const store = await DeviceStore.create(new MemoryKv(), "pw", TEST_PARAMS);
  await store.transaction(() => store.setIdentity(IdentityKeyPair.generate(systemRandom), 42));
  store.ownAccountId = BOB;
  const inbox = new Inbox(store, BOB, 1, () => NOW * 1000);
  // As the relay sends it: null sender fields, client timestamp 0, the hour only.
  const envelope = parseEnvelope({
    id: randomUUID(), sender_account_id: null, sender_device_id: null, type: SEALED_TYPE,
    content: Buffer.from([0x11, 1, 2, 3]).toString("base64"), client_timestamp: 0,
    server_timestamp: 1_790_000_000_000 - (1_790_000_000_000 % 3_600_000),
  });
  assert.equal(envelope.senderAccountId, undefined);
  const first = await inbox.process(envelope);
  assert.deepEqual(first.events, [{ kind: "unsupported", sender: "", reason: SEALED_UNSUPPORTED }]);
  assert.deepEqual((await inbox.process(envelope)).events, []);
});
