/** The disappearing-message default (src/app/retention.ts): kept in the sealed store,
 * bounded, and applied only to a 1:1 conversation with no message and no timer ever set,
 * once. */

import assert from "node:assert/strict";
import { test } from "node:test";

import type { Client } from "../src/app/client.js";
import { applyDefaultTimer, defaultExpireTimer, setDefaultExpireTimer } from "../src/app/retention.js";
import { TEST_PARAMS } from "../src/app/store/crypto.js";
import { DeviceStore } from "../src/app/store/device.js";
import { MemoryKv } from "../src/app/store/kv.js";

const ME = "aaaaaaaa-0000-4000-8000-000000000001";
const NEW = "bbbbbbbb-0000-4000-8000-000000000002";
const CHATTED = "cccccccc-0000-4000-8000-000000000003";
const TIMED = "dddddddd-0000-4000-8000-000000000004";

test("the default is kept, bounded, and off unless set", async () => {
  const store = await DeviceStore.create(new MemoryKv(), "pw", TEST_PARAMS);
  assert.equal(await defaultExpireTimer(store), 0);
  await setDefaultExpireTimer(store, 3600);
  assert.equal(await defaultExpireTimer(store), 3600);
  for (const bad of [-1, 1.5, 2 ** 32, Number.NaN]) {
    await assert.rejects(setDefaultExpireTimer(store, bad), RangeError);
  }
  assert.equal(await defaultExpireTimer(store), 3600);
  await store.transaction(() => store.putJson("default_expire_timer", "3600"));
  assert.equal(await defaultExpireTimer(store), 0, "a malformed stored value is off");
});

test("only a new 1:1 conversation gets the default, once", async () => {
  const store = await DeviceStore.create(new MemoryKv(), "pw", TEST_PARAMS);
  const set: [string, number][] = [];
  const client = { accountId: ME, store, setExpireTimer: async (conversation: string, seconds: number) => {
    set.push([conversation, seconds]);
    await store.transaction(() => store.putJson(`timer:${conversation}`, { seconds, version: 1 }));
  } } as unknown as Client;
  await store.transaction(async () => {
    await store.putJson(`msg:${CHATTED}:0000000000000001:${ME}`, { text: "hi" });
    await store.putJson(`timer:${TIMED}`, { seconds: 0, version: 2 });
  });
  await applyDefaultTimer(client, NEW);
  assert.deepEqual(set, [], "no default set: nothing");
  await setDefaultExpireTimer(store, 86_400);
  for (const conversation of [NEW, NEW, CHATTED, TIMED, `group:${"ab".repeat(32)}`, ME]) {
    await applyDefaultTimer(client, conversation);
  }
  assert.deepEqual(set, [[NEW, 86_400]]);
});
