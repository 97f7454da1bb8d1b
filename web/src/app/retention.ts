/**
 * The disappearing-message default of this device (issue #9's retention settings, the
 * SDK's `Client.set_default_expire_timer`, `cipherpost default-timer`): a 1:1
 * conversation this browser starts, one with no message and where nobody ever set a
 * timer, gets the default as an ordinary timer update before its first message, so the
 * contact's devices apply it too. Conversations with messages or a timer, and groups,
 * keep theirs. Kept in the sealed store, as ./settings.ts keeps receipts and typing;
 * never sent to the relay.
 */

import type { Client } from "./client.js";
import { conversationTimer } from "./model.js";
import type { DeviceStore } from "./store/device.js";

const KEY = "default_expire_timer";

/** Conversations seen with a message or a timer since the page loaded: not looked at again. */
const settled = new Set<string>();

/** Seconds after reading that messages of conversations started here disappear (0: off). */
export async function defaultExpireTimer(store: DeviceStore): Promise<number> {
  const stored = await store.getJson<unknown>(KEY);
  return typeof stored === "number" && Number.isInteger(stored) && stored >= 0 && stored <= 0xffffffff ? stored : 0;
}

/** @throws RangeError not 0 (off) or a number of seconds up to 2^32 - 1. */
export async function setDefaultExpireTimer(store: DeviceStore, seconds: number): Promise<void> {
  if (!Number.isInteger(seconds) || seconds < 0 || seconds > 0xffffffff) {
    throw new RangeError("the timer is 0 (off) or a number of seconds");
  }
  await store.transaction(() => store.putJson(KEY, seconds));
}

/**
 * Before a message to `conversation` goes out: give a new 1:1 conversation the default
 * timer (Client.setExpireTimer, announced to the contact and our other devices).
 */
export async function applyDefaultTimer(client: Client, conversation: string): Promise<void> {
  if (conversation.startsWith("group:") || conversation === client.accountId) return;
  const seconds = await defaultExpireTimer(client.store);
  if (seconds === 0) return;
  const seen = `${client.accountId}:${conversation}`;
  if (settled.has(seen)) return;
  const timer = await conversationTimer(client.store, conversation);
  // Keys only: whether any message is stored, without opening them all.
  if (timer.seconds !== 0 || timer.version !== 0 || (await client.store.kv.scan(`msg:${conversation}:`)).length > 0) {
    settled.add(seen);
    return;
  }
  await client.setExpireTimer(conversation, seconds);
  settled.add(seen);
}
