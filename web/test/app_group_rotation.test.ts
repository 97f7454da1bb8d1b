/** Sender-key rotation when a member's device list changes (src/app/outbox.ts, docs/spec/groups.md "Rotation"). */

import assert from "node:assert/strict";
import { test } from "node:test";

import { toHex } from "../src/protocol/bytes.js";
import { RelayError, type RelayApi } from "../src/app/api.js";
import { ADMIN, encodeState, MEMBER } from "../src/app/groups.js";
import { Outbox } from "../src/app/outbox.js";
import { TEST_PARAMS } from "../src/app/store/crypto.js";
import { DeviceStore } from "../src/app/store/device.js";
import { MemoryKv } from "../src/app/store/kv.js";

const ALICE = "aaaaaaaa-0000-4000-8000-000000000001";
const BOB = "bbbbbbbb-0000-4000-8000-000000000002";
const CAROL = "cccccccc-0000-4000-8000-000000000003";
const WITH_BOB = new Uint8Array(32).fill(1);
const WITHOUT_BOB = new Uint8Array(32).fill(2);

async function setUp(): Promise<{ store: DeviceStore; outbox: Outbox }> {
  const store = await DeviceStore.create(new MemoryKv(), "pw", TEST_PARAMS);
  await store.transaction(async () => {
    for (const [id, other] of [[WITH_BOB, BOB], [WITHOUT_BOB, CAROL]] as const) {
      await store.putJson(`group:${toHex(id)}`, toHex(encodeState(id, 0, "g", new Map([[ALICE, ADMIN], [other, MEMBER]]))));
      await store.putJson(`gdist:${toHex(id)}`, { id: "d", sent: {} });
    }
  });
  return { store, outbox: new Outbox(store, {} as RelayApi, ALICE, 1, () => 0) };
}

const chain = (store: DeviceStore, id: Uint8Array) => store.getJson(`gdist:${toHex(id)}`);

test("a device of a member gone (409 extra devices): every group shared with that member gets a new chain, no other", async () => {
  const { store, outbox } = await setUp();
  assert.equal(await outbox.repair(BOB, new RelayError(409, "mismatched_devices", "x", { missing_devices: [], extra_devices: [2] })), true);
  assert.equal(await chain(store, WITH_BOB), undefined);
  assert.deepEqual(await chain(store, WITHOUT_BOB), { id: "d", sent: {} });
});

test("a 409 that only adds devices keeps the chains (a new device gets the key when it is sent to)", async () => {
  const { store, outbox } = await setUp();
  await outbox.repair(BOB, new RelayError(409, "mismatched_devices", "x", { missing_devices: [], extra_devices: [] }));
  assert.deepEqual(await chain(store, WITH_BOB), { id: "d", sent: {} });
});

test("a change of our own devices rotates nothing (they never hold our chains)", async () => {
  const { store, outbox } = await setUp();
  await outbox.rotateGroupsWith(ALICE);
  assert.deepEqual(await chain(store, WITH_BOB), { id: "d", sent: {} });
  await outbox.rotateGroupsWith(CAROL);
  assert.equal(await chain(store, WITHOUT_BOB), undefined);
});
