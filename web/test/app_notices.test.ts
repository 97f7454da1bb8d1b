/** Login notices (type-0 envelopes from the relay, no sender): parsed strictly, kept once,
 * described in one sentence as the SDK does; anything malformed is reported. */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";

import { systemRandom } from "../src/protocol/bytes.js";
import { IdentityKeyPair } from "../src/protocol/keys.js";
import { parseEnvelope } from "../src/app/api.js";
import { Inbox } from "../src/app/inbox.js";
import { describeNotice, NOTICE_TYPE, parseNotice } from "../src/app/notices.js";
import { TEST_PARAMS } from "../src/app/store/crypto.js";
import { DeviceStore } from "../src/app/store/device.js";
import { MemoryKv } from "../src/app/store/kv.js";
import { NOW } from "./helpers.js";

const BOB = "bbbbbbbb-0000-4000-8000-000000000002";
const AT = Date.UTC(2026, 10, 29, 8, 41);
const bytes = (text: string) => new TextEncoder().encode(text);

test("a notice is parsed and described as the SDK describes it", () => {
  const notice = parseNotice(bytes(JSON.stringify({ v: 1, kind: "device_added", at: AT, device_id: 2, name: "laptop" })));
  assert.deepEqual(notice, { kind: "device_added", at: AT, deviceId: 2, name: "laptop", via: "" });
  assert.equal(describeNotice(notice!), '2026-11-29 08:41 UTC: a new device joined, device 2 "laptop"');
  const recovery = parseNotice(bytes(JSON.stringify({ kind: "recovery", at: AT, via: "recovery_key" })))!;
  assert.equal(describeNotice(recovery), "2026-11-29 08:41 UTC: its recovery blob was opened (someone restored the "
    + "account), via recovery key");
  for (const bad of ["", "[]", "{}", '{"kind":"x"}', '{"kind":1,"at":2}', '{"kind":"x","at":"2"}', "\xff",
    JSON.stringify({ kind: "x", at: 1, pad: "a".repeat(5000) })]) {
    assert.equal(parseNotice(bytes(bad)), undefined, bad);
  }
  // A device id that is no device id is left out.
  assert.equal(parseNotice(bytes(JSON.stringify({ kind: "x", at: 1, device_id: 500 })))?.deviceId, undefined);
});

test("the inbox keeps each notice once and reports a malformed one", async () => {
  const store = await DeviceStore.create(new MemoryKv(), "pw", TEST_PARAMS);
  await store.transaction(() => store.setIdentity(IdentityKeyPair.generate(systemRandom), 42));
  store.ownAccountId = BOB;
  const inbox = new Inbox(store, BOB, 1, () => NOW * 1000);
  const envelope = (content: string) => parseEnvelope({ id: randomUUID(), sender_account_id: null,
    sender_device_id: null, type: NOTICE_TYPE, content: Buffer.from(content).toString("base64"), client_timestamp: 0,
    server_timestamp: AT });
  const first = envelope(JSON.stringify({ v: 1, kind: "two_factor_enabled", at: AT, device_id: 2 }));
  assert.deepEqual((await inbox.process(first)).events.map((e) => e.kind), ["account_notice"]);
  assert.deepEqual((await inbox.process(first)).events, []);
  assert.deepEqual((await inbox.process(envelope("not json"))).events,
    [{ kind: "unsupported", sender: "", reason: "a malformed server notice" }]);
  assert.deepEqual((await store.scanJson("notice:")).map(([, n]) => n),
    [{ kind: "two_factor_enabled", at: AT, deviceId: 2, name: "", via: "" }]);
});
