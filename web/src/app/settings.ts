/**
 * This device's privacy settings: delivery receipts, read receipts and typing indicators,
 * each on or off. As in the SDK (ClientOptions, shown under "this_device" by the privacy
 * dashboard) they are kept by the device, sealed in its store, and never reach the
 * relay. Off means: no such receipt or indicator is sent from this browser, and, as
 * Signal does, read receipts and typing indicators of others are not shown either.
 */

import { create } from "@bufbuild/protobuf";

import type { Client } from "./client.js";
import { encodeContent, u64 } from "./content.js";
import { ContentSchema, TypingMessage_Action } from "./proto/cipherpost/app/v1/app_pb.js";
import type { DeviceStore } from "./store/device.js";

export interface Settings {
  deliveryReceipts: boolean;
  readReceipts: boolean;
  typingIndicators: boolean;
}

/** The SDK's defaults: everything on. */
export const DEFAULT_SETTINGS: Readonly<Settings> = Object.freeze({
  deliveryReceipts: true, readReceipts: true, typingIndicators: true,
});

const KEY = "settings";

export async function loadSettings(store: DeviceStore): Promise<Settings> {
  const stored = await store.getJson<Partial<Settings>>(KEY);
  const pick = (name: keyof Settings) => typeof stored?.[name] === "boolean" ? stored[name] : DEFAULT_SETTINGS[name];
  return { deliveryReceipts: pick("deliveryReceipts"), readReceipts: pick("readReceipts"),
    typingIndicators: pick("typingIndicators") };
}

export async function saveSettings(store: DeviceStore, settings: Settings): Promise<void> {
  const { deliveryReceipts, readReceipts, typingIndicators } = settings;
  await store.transaction(() => store.putJson(KEY, { deliveryReceipts, readReceipts, typingIndicators }));
}

/** Whether a receipt of this type may leave this device now. */
export async function receiptAllowed(store: DeviceStore, type: "delivery" | "read"): Promise<boolean> {
  const settings = await loadSettings(store);
  return type === "read" ? settings.readReceipts : settings.deliveryReceipts;
}

/** How often "typing" is said again while the user keeps typing (the SDK's peers time out). */
export const TYPING_REPEAT_MS = 5_000;

const lastTyping = new Map<string, number>();

/**
 * The user typed in a 1:1 conversation (`stopped`: they sent or cleared it): tell the
 * contact, at most every {@link TYPING_REPEAT_MS} while typing, and nothing when typing
 * indicators are off. Best effort: nothing is queued when offline.
 */
export async function noteTyping(client: Client, conversation: string, stopped = false): Promise<void> {
  if (conversation.startsWith("group:") || !(await loadSettings(client.store)).typingIndicators) return;
  const now = Date.now();
  const last = lastTyping.get(conversation);
  if (stopped ? last === undefined : last !== undefined && now - last < TYPING_REPEAT_MS) return;
  if (stopped) lastTyping.delete(conversation);
  else lastTyping.set(conversation, now);
  const content = create(ContentSchema, { body: { case: "typing", value: {
    timestamp: u64(now), action: stopped ? TypingMessage_Action.STOPPED : TypingMessage_Action.STARTED } } });
  try {
    await client.outbox.deliver(conversation, encodeContent(content), now);
  } catch (error) {
    console.warn("cipherpost: typing indicator not sent:", (error as Error).name);
  }
}

/** Whether others' typing indicators are shown here (off: none are sent either). */
export async function typingShown(store: DeviceStore): Promise<boolean> {
  return (await loadSettings(store)).typingIndicators;
}

/** How long a "typing" lasts without news (Signal's 15 s), when no "stopped" comes. */
export const TYPING_SHOWN_MS = 15_000;
