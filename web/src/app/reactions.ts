/**
 * Reactions to the messages held here, as cipherpost.client's store keeps them
 * (store.set_reaction): one per person per message, a newer one replacing theirs, a
 * removal (Reaction.remove) taking it away, and all of a message's going with it when it
 * is deleted or expires. Kept under the message's key (reactions:<message key>) as a
 * map of reactor account id to emoji.
 */

import { messageKey } from "./model.js";
import type { DataMessage } from "./proto/cipherpost/app/v1/app_pb.js";
import type { DeviceStore } from "./store/device.js";

const PREFIX = "reactions:";

/** Longest emoji kept, in code points (a hostile peer cannot store a text as a reaction). */
export const MAX_EMOJI = 16;

/** reactor → emoji for the message stored under `key`. */
export async function reactionsOf(store: DeviceStore, key: string): Promise<Record<string, string>> {
  return (await store.getJson<Record<string, string>>(PREFIX + key)) ?? {};
}

/** Record `reactor`'s reaction to the message under `key` (undefined or empty: take it away). Inside a unit. */
export async function setReaction(store: DeviceStore, key: string, reactor: string, emoji: string | undefined): Promise<void> {
  const held = await reactionsOf(store, key);
  const kept = emoji === undefined ? "" : [...emoji].slice(0, MAX_EMOJI).join("");
  if (kept === "") delete held[reactor];
  else held[reactor] = kept;
  if (Object.keys(held).length === 0) await store.put(PREFIX + key, null);
  else await store.putJson(PREFIX + key, held);
}

/**
 * Apply the reaction `data` by `reactor` in `conversation`; false when it names no
 * message held in that conversation (as the SDK's inbox, nothing is stored then).
 */
export async function applyReaction(store: DeviceStore, conversation: string, reactor: string,
  data: DataMessage): Promise<boolean> {
  const reaction = data.reaction;
  const target = reaction?.target;
  if (reaction === undefined || target === undefined) return false;
  const key = messageKey(conversation, Number(target.timestamp), target.author);
  if ((await store.get(key)) === undefined) return false;
  await setReaction(store, key, reactor, reaction.remove ? undefined : reaction.emoji);
  return true;
}

/** A message deleted or expired: its reactions go with it. Inside a unit. */
export async function forgetReactions(store: DeviceStore, key: string): Promise<void> {
  if ((await store.get(PREFIX + key)) !== undefined) await store.put(PREFIX + key, null);
}

/** A message's reactions as shown: each emoji with who chose it, the most chosen first (then by first reactor). */
export function summarize(reactions: Record<string, string>): { emoji: string; reactors: string[] }[] {
  const byEmoji = new Map<string, string[]>();
  for (const [reactor, emoji] of Object.entries(reactions).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    byEmoji.set(emoji, [...(byEmoji.get(emoji) ?? []), reactor]);
  }
  return [...byEmoji].map(([emoji, reactors]) => ({ emoji, reactors }))
    .sort((a, b) => b.reactors.length - a.reactors.length || (a.reactors[0]! < b.reactors[0]! ? -1 : 1));
}
