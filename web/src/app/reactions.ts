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

/** Longest emoji taken, in code points (the longest standard ones have 10). */
export const MAX_EMOJI = 16;

/** What an emoji is made of: pictographs, skin-tone modifiers, regional indicators, ZWJ, VS16. */
const EMOJI_PARTS = /^[\p{Extended_Pictographic}\p{Emoji_Modifier}\p{Regional_Indicator}\u200d\ufe0f]+$/u;
const PICTOGRAPH = /\p{Extended_Pictographic}/u;
const FLAG = /^\p{Regional_Indicator}{2}$/u;
/** One emoji by its grammar (a flag, or pictographs joined by ZWJ), where Intl.Segmenter is missing. */
const ONE_EMOJI = /^(?:\p{Regional_Indicator}{2}|\p{Extended_Pictographic}\ufe0f?\p{Emoji_Modifier}?(?:\u200d\p{Extended_Pictographic}\ufe0f?\p{Emoji_Modifier}?)*)$/u;

let segmenter: Intl.Segmenter | null | undefined;

/** The grapheme segmenter, or null in a browser without one (made on first use: loading this never fails). */
function graphemes(): Intl.Segmenter | null {
  if (segmenter === undefined) {
    segmenter = typeof Intl.Segmenter === "function" ? new Intl.Segmenter("en", { granularity: "grapheme" }) : null;
  }
  return segmenter;
}

/**
 * Whether `emoji` is one emoji, as a reaction must be: a single grapheme holding a
 * pictograph (a ZWJ sequence, with skin tones and VS16 included) or a flag (a pair of
 * regional indicators), and nothing else: no text, no second emoji, no control, format
 * (but ZWJ) or direction characters that would let a member write under another's
 * message what looks like a verdict. `segments`: the grapheme segmenter (null: the
 * emoji grammar decides instead).
 */
export function isReactionEmoji(emoji: string, segments: Intl.Segmenter | null = graphemes()): boolean {
  if (emoji === "" || [...emoji].length > MAX_EMOJI || !EMOJI_PARTS.test(emoji)) return false;
  if (segments === null) return ONE_EMOJI.test(emoji);
  const each = segments.segment(emoji)[Symbol.iterator]();
  if (each.next().done || !each.next().done) return false; // one grapheme
  return PICTOGRAPH.test(emoji) || FLAG.test(emoji);
}

/** reactor → emoji for the message stored under `key` (one kept before the check above is not shown). */
export async function reactionsOf(store: DeviceStore, key: string): Promise<Record<string, string>> {
  const held = (await store.getJson<Record<string, string>>(PREFIX + key)) ?? {};
  return Object.fromEntries(Object.entries(held).filter(([, emoji]) => isReactionEmoji(emoji)));
}

/**
 * Record `reactor`'s reaction to the message under `key` (undefined: take it away). Inside a unit.
 * @throws RangeError an `emoji` that is not one emoji (isReactionEmoji).
 */
export async function setReaction(store: DeviceStore, key: string, reactor: string, emoji: string | undefined): Promise<void> {
  if (emoji !== undefined && !isReactionEmoji(emoji)) throw new RangeError("a reaction is one emoji");
  const held = await reactionsOf(store, key);
  if (emoji === undefined) delete held[reactor];
  else held[reactor] = emoji;
  if (Object.keys(held).length === 0) await store.put(PREFIX + key, null);
  else await store.putJson(PREFIX + key, held);
}

/**
 * Apply the reaction `data` by `reactor` in `conversation`; false when it names no
 * message held in that conversation (as the SDK's inbox, nothing is stored then) or
 * is not one emoji (isReactionEmoji: ignored). A removal is taken whatever emoji it names.
 */
export async function applyReaction(store: DeviceStore, conversation: string, reactor: string,
  data: DataMessage): Promise<boolean> {
  const reaction = data.reaction;
  const target = reaction?.target;
  if (reaction === undefined || target === undefined) return false;
  if (!reaction.remove && !isReactionEmoji(reaction.emoji)) return false;
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
