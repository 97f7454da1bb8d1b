/** Prekey upkeep (src/app/keys.ts): replenish below the low-water mark with back-off, weekly rotation, old keys dropped, when it runs. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { systemRandom } from "../src/protocol/bytes.js";
import { IdentityKeyPair } from "../src/protocol/keys.js";
import { PREKEY_TYPE, WHISPER_TYPE } from "../src/protocol/messages.js";
import {
  DEFAULT_POLICY, KeyUpkeep, maintainKeys, newDeviceBody, RECHECK_AFTER_PREKEY_MS, republishKeys, type KeyPolicy,
} from "../src/app/keys.js";
import { SEALED_TYPE } from "../src/app/sealed.js";
import { TEST_PARAMS } from "../src/app/store/crypto.js";
import { DeviceStore } from "../src/app/store/device.js";
import { MemoryKv } from "../src/app/store/kv.js";
import type { Json } from "../src/app/wire.js";

const DAY = 24 * 3600 * 1000;
const T0 = 1_800_000_000_000;
const POLICY: KeyPolicy = { ...DEFAULT_POLICY, oneTimeBatch: 3, kyberBatch: 2, lowWater: 2 };

/** The relay's side: counts it reports, bodies it was sent. */
class FakeRelay {
  oneTime = POLICY.oneTimeBatch;
  kyber = POLICY.kyberBatch;
  uploads: Record<string, Json>[] = [];
  counted = 0;

  async keyCounts(): Promise<{ oneTime: number; kyber: number }> {
    this.counted++;
    return { oneTime: this.oneTime, kyber: this.kyber };
  }

  async uploadKeys(body: Json): Promise<void> {
    const b = body as Record<string, Json>;
    this.uploads.push(b);
    this.oneTime += (b.one_time_prekeys as Json[] | undefined)?.length ?? 0;
    this.kyber += (b.kyber_prekeys as Json[] | undefined)?.length ?? 0;
  }
}

async function device(): Promise<DeviceStore> {
  const store = await DeviceStore.create(new MemoryKv(), "pw", TEST_PARAMS);
  await store.transaction(() => newDeviceBody(store, IdentityKeyPair.generate(systemRandom), 7, T0, POLICY));
  return store;
}

describe("prekey upkeep", () => {
  test("nothing to do while the relay holds enough keys and the signed prekey is fresh", async () => {
    const store = await device();
    const relay = new FakeRelay();
    assert.equal(await maintainKeys(relay, store, T0 + DAY, POLICY), false);
    assert.equal(relay.counted, 1);
    assert.deepEqual(relay.uploads, []);
  });

  test("below the low-water mark: a batch of the low kind, saved before it is uploaded; then back-off until healthy", async () => {
    const store = await device();
    const relay = new FakeRelay();
    relay.oneTime = 1;
    assert.equal(await maintainKeys(relay, store, T0, POLICY), true);
    const [first] = relay.uploads;
    const sent = first!.one_time_prekeys as { key_id: number }[];
    assert.equal(sent.length, POLICY.oneTimeBatch);
    assert.equal(first!.kyber_prekeys, undefined);
    assert.equal(first!.signed_prekey, undefined);
    for (const { key_id } of sent) assert.equal((await store.getPreKey(key_id)).id, key_id);
    assert.deepEqual(sent.map((k) => k.key_id), [4, 5, 6]); // after the 3 made at registration
    assert.equal(relay.oneTime, 4);

    relay.oneTime = 0; // used up again at once: the next replenish waits a minute, then two
    assert.equal(await maintainKeys(relay, store, T0 + 30_000, POLICY), false);
    assert.equal(await maintainKeys(relay, store, T0 + 60_000, POLICY), true);
    relay.oneTime = 0;
    assert.equal(await maintainKeys(relay, store, T0 + 60_000 + 119_000, POLICY), false);
    assert.equal(await maintainKeys(relay, store, T0 + 60_000 + 120_000, POLICY), true);
    // a healthy count resets the back-off: the next low count is answered at once
    relay.oneTime = 10;
    assert.equal(await maintainKeys(relay, store, T0 + 200_000, POLICY), false);
    relay.kyber = 0;
    assert.equal(await maintainKeys(relay, store, T0 + 201_000, POLICY), true);
    assert.equal((relay.uploads.at(-1)!.kyber_prekeys as Json[]).length, POLICY.kyberBatch);
    assert.equal(relay.uploads.at(-1)!.one_time_prekeys, undefined);
  });

  test("the signed and last-resort prekeys rotate weekly; replaced ones go after the grace period", async () => {
    const store = await device();
    const relay = new FakeRelay();
    assert.equal(await maintainKeys(relay, store, T0 + 7 * DAY - 1, POLICY), false);
    assert.equal(await maintainKeys(relay, store, T0 + 7 * DAY, POLICY), true);
    const rotated = relay.uploads[0]!;
    assert.equal((rotated.signed_prekey as { key_id: number }).key_id, 2);
    assert.equal((rotated.last_resort_kyber_prekey as { key_id: number }).key_id, 1 + POLICY.kyberBatch + 1);
    assert.equal((await store.getSignedPreKey(1)).id, 1); // kept for messages in flight
    // the next rotations; the first signed key's replacement (day 7) is past 30 days at day 42
    await maintainKeys(relay, store, T0 + 14 * DAY, POLICY);
    await maintainKeys(relay, store, T0 + 21 * DAY, POLICY);
    await maintainKeys(relay, store, T0 + 28 * DAY, POLICY);
    await maintainKeys(relay, store, T0 + 35 * DAY, POLICY);
    assert.equal((await store.getSignedPreKey(1)).id, 1);
    await maintainKeys(relay, store, T0 + 42 * DAY, POLICY);
    await assert.rejects(store.getSignedPreKey(1));
    await assert.rejects(store.getKyberPreKey(1)); // the first last-resort key
    assert.equal((await store.getSignedPreKey(2)).id, 2); // replaced on day 14: still kept
    assert.equal((await store.getKyberPreKey(2)).id, 2); // a one-time Kyber key stays until used
  });

  test("republish: a complete set replacing the relay's one-time keys, at most hourly unless the identity changed", async () => {
    const store = await device();
    const relay = new FakeRelay();
    assert.equal(await republishKeys(relay, store, T0, POLICY), true);
    const [body] = relay.uploads;
    assert.equal(body!.replace_one_time, true);
    assert.equal((body!.signed_prekey as { key_id: number }).key_id, 2);
    assert.equal((body!.last_resort_kyber_prekey as { key_id: number }).key_id, 1 + POLICY.kyberBatch + 1);
    const oneTime = (body!.one_time_prekeys as { key_id: number }[]).map((k) => k.key_id);
    const kyber = (body!.kyber_prekeys as { key_id: number }[]).map((k) => k.key_id);
    assert.deepEqual(oneTime, [4, 5, 6]);
    assert.equal(kyber.length, POLICY.kyberBatch);
    for (const id of oneTime) assert.equal((await store.getPreKey(id)).id, id); // saved before the upload
    for (const id of kyber) assert.equal((await store.getKyberPreKey(id)).id, id);

    // a flood of PreKey messages naming unknown keys: one republish an hour
    assert.equal(await republishKeys(relay, store, T0 + POLICY.republishIntervalMs - 1, POLICY), false);
    assert.equal(relay.uploads.length, 1);
    assert.equal(await republishKeys(relay, store, T0 + POLICY.republishIntervalMs, POLICY), true);
    // a new identity key republishes at once
    await store.transaction(() => store.setIdentity(IdentityKeyPair.generate(systemRandom), 7));
    assert.equal(await republishKeys(relay, store, T0 + POLICY.republishIntervalMs + 1, POLICY), true);
    assert.equal(relay.uploads.length, 3);

    // a failed upload is not counted: the next trigger publishes
    const failing = { uploadKeys: async () => { throw new Error("relay down"); } };
    const other = await device();
    await assert.rejects(republishKeys(failing, other, T0, POLICY), /relay down/);
    assert.equal(await republishKeys(relay, other, T0 + 1, POLICY), true);
  });

  test("republish: a failed upload is sent again at the next trigger without its one-time keys, no new keys made for each try", async () => {
    const store = await device();
    const counters = async () => [await store.peekId("prekey"), await store.peekId("kyber_prekey"),
      await store.peekId("signed_prekey")];
    const before = await counters();
    let down = true;
    const relay = new FakeRelay();
    const flaky = { uploadKeys: async (body: Json) => {
      if (down) {
        relay.uploads.push(body as Record<string, Json>); // seen by the relay, refused
        throw new Error("relay down");
      }
      return relay.uploadKeys(body);
    } };
    for (let i = 0; i < 5; i++) await assert.rejects(republishKeys(flaky, store, T0 + i, POLICY), /relay down/);
    assert.deepEqual(await counters(), [before[0]! + POLICY.oneTimeBatch, before[1]! + POLICY.kyberBatch + 1, before[2]! + 1],
      "one set made");
    assert.equal(relay.uploads.length, 5);
    // Each retry: the same signed and last-resort keys, no one-time key (the first try may
    // have reached the relay and its keys been handed out), the relay's dropped.
    const retry = { ...relay.uploads[0], one_time_prekeys: [], kyber_prekeys: [] };
    for (const body of relay.uploads.slice(1)) assert.deepEqual(body, retry);
    assert.equal((relay.uploads[0]!.one_time_prekeys as Json[]).length, POLICY.oneTimeBatch);
    assert.equal(relay.uploads[0]!.replace_one_time, true);
    down = false;
    assert.equal(await republishKeys(flaky, store, T0 + 10, POLICY), true);
    assert.deepEqual(relay.uploads[5], retry);
    // published: the hourly limit holds, and the next one makes a new set
    assert.equal(await republishKeys(flaky, store, T0 + 11, POLICY), false);
    assert.equal(await republishKeys(flaky, store, T0 + 10 + POLICY.republishIntervalMs, POLICY), true);
    assert.notDeepEqual(relay.uploads[6]!.one_time_prekeys, relay.uploads[0]!.one_time_prekeys);
  });

  test("republish: a retried set never uploads a one-time key again; a new identity or a rotation makes a new set", async () => {
    const store = await device();
    const failing = { uploadKeys: async () => { throw new Error("relay down"); } };
    const relay = new FakeRelay();
    await assert.rejects(republishKeys(failing, store, T0, POLICY), /relay down/);
    // The upload reached the relay before it failed, and the relay handed key 4 out to a
    // sender whose message has not arrived yet: the device still holds key 4. Sent again,
    // key 4 would be served a second time to another sender.
    await republishKeys(relay, store, T0 + 1, POLICY);
    const sent = relay.uploads.pop()!;
    assert.deepEqual(sent.one_time_prekeys, []);
    assert.deepEqual(sent.kyber_prekeys, []);
    assert.equal(sent.replace_one_time, true);
    assert.notEqual(await store.get("prekey:4"), undefined, "kept for the sender's message");

    // a rotation after the failed upload: the pending set's signed prekey is old, a new set is made
    const rotated = await device();
    await assert.rejects(republishKeys(failing, rotated, T0, POLICY), /relay down/);
    await maintainKeys(relay, rotated, T0 + POLICY.rotateAfterMs, POLICY);
    const signed = await rotated.peekId("signed_prekey");
    await republishKeys(relay, rotated, T0 + POLICY.rotateAfterMs + 1, POLICY);
    assert.equal((relay.uploads.pop()!.signed_prekey as { key_id: number }).key_id, signed + 1);

    // a new identity: a new set
    const reset = await device();
    await assert.rejects(republishKeys(failing, reset, T0, POLICY), /relay down/);
    const oneTime = await reset.peekId("prekey");
    await reset.transaction(() => reset.setIdentity(IdentityKeyPair.generate(systemRandom), 7));
    await republishKeys(relay, reset, T0 + 1, POLICY);
    assert.equal(await reset.peekId("prekey"), oneTime + POLICY.oneTimeBatch);
  });

  test("one-time keys a republish replaced go after the grace period; the new ones and the last-resort key stay", async () => {
    const store = await device();
    const relay = new FakeRelay();
    await republishKeys(relay, store, T0, POLICY);
    const [body] = relay.uploads;
    const fresh = (body!.one_time_prekeys as { key_id: number }[]).map((k) => k.key_id);
    const freshKyber = (body!.kyber_prekeys as { key_id: number }[]).map((k) => k.key_id);
    // rotations (weekly) drop old keys; within the grace period the replaced ones stay
    await maintainKeys(relay, store, T0 + 7 * DAY, POLICY);
    assert.equal((await store.getPreKey(1)).id, 1);
    assert.equal((await store.getKyberPreKey(2)).id, 2);
    for (let day = 14; day <= 35; day += 7) await maintainKeys(relay, store, T0 + day * DAY, POLICY);
    for (const id of [1, 2, 3]) await assert.rejects(store.getPreKey(id));
    for (let id = 2; id <= 1 + POLICY.kyberBatch; id++) await assert.rejects(store.getKyberPreKey(id));
    for (const id of fresh) assert.equal((await store.getPreKey(id)).id, id);
    for (const id of freshKyber) assert.equal((await store.getKyberPreKey(id)).id, id);
    const lastResort = (body!.last_resort_kyber_prekey as { key_id: number }).key_id;
    assert.equal((await store.getKyberPreKey(lastResort)).lastResort, true);
  });

  test("KeyUpkeep: every connection checks; received envelopes only when one may carry a prekey, not twice in 10 s", async () => {
    const store = await device();
    const relay = new FakeRelay();
    let now = T0 + DAY;
    const upkeep = new KeyUpkeep(relay, store, () => now, POLICY);
    await upkeep.connected();
    assert.equal(relay.counted, 1);
    await upkeep.received([PREKEY_TYPE]); // right after the connection's check
    assert.equal(relay.counted, 1);
    now += RECHECK_AFTER_PREKEY_MS;
    await upkeep.received([WHISPER_TYPE]);
    assert.equal(relay.counted, 1);
    await upkeep.received([WHISPER_TYPE, SEALED_TYPE]);
    assert.equal(relay.counted, 2);
    relay.oneTime = 0;
    now += RECHECK_AFTER_PREKEY_MS;
    await upkeep.received([PREKEY_TYPE]);
    assert.equal(relay.counted, 3);
    assert.equal(relay.oneTime, POLICY.oneTimeBatch);
    await upkeep.connected();
    assert.equal(relay.counted, 4);
  });

  test("a failed count is logged and waits for the next trigger", async () => {
    const store = await device();
    const upkeep = new KeyUpkeep({
      keyCounts: () => Promise.reject(new TypeError("offline")), uploadKeys: () => Promise.resolve(),
    }, store, () => T0, POLICY);
    await upkeep.connected(); // does not throw
  });
});
