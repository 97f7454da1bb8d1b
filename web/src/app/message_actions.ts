/**
 * What the person does to a message from the conversation view, as the SDK's
 * Client.react, edit and delete_for_everyone do: a reaction to any message held in the
 * conversation (or taking one's own back), and, of one's own messages only, a new text
 * or a deletion for everyone. This module checks the action and gives the DataMessage
 * fields that carry it (Reaction / edit + text / delete, the message named by author and
 * timestamp); the client sends it like any message of ours (./client.ts) and applies it
 * here at once as our other devices apply its sync copy (./changes.ts).
 */

import { create } from "@bufbuild/protobuf";

import { u64 } from "./content.js";
import { messageKey, type StoredMessage } from "./model.js";
import { MessageRefSchema, ReactionSchema, type DataMessage } from "./proto/cipherpost/app/v1/app_pb.js";
import { isReactionEmoji, reactionsOf } from "./reactions.js";
import type { DeviceStore } from "./store/device.js";

/** Longest edited text, as the longest message (Client.sendText). */
export const MAX_EDIT_TEXT = 16 * 1024;

/** A message by its name (spec §4): its author and their timestamp. */
export interface MessageName {
  author: string;
  timestamp: number;
}

export type MessageAction =
  /** React with `emoji`; `remove`: take one's reaction back (its emoji is then the one held). */
  | { kind: "react"; target: MessageName; emoji: string; remove?: boolean }
  | { kind: "edit"; timestamp: number; text: string }
  | { kind: "delete"; timestamp: number };

/** What a DataMessage carries for `action`, besides what every message of ours carries. */
export type ActionFields = Pick<DataMessage, "text"> & Partial<Pick<DataMessage, "reaction" | "edit" | "delete">>;

/**
 * Check `action` by `me` in `conversation` against the messages held and give its
 * DataMessage fields.
 * @throws RangeError a message not held in the conversation, another's message to edit
 * or delete, an empty or over-long edit, no emoji or one too long.
 */
export async function actionFields(store: DeviceStore, me: string, conversation: string,
  action: MessageAction): Promise<ActionFields> {
  if (action.kind === "react") {
    const { author, timestamp } = action.target;
    const key = messageKey(conversation, timestamp, author);
    if ((await store.get(key)) === undefined) throw new RangeError("that message is not in this conversation");
    let emoji = action.emoji;
    if (action.remove) {
      const held = (await reactionsOf(store, key))[me];
      if (held === undefined) throw new RangeError("you have not reacted to that message");
      emoji = held;
    } else if (!isReactionEmoji(emoji)) {
      throw new RangeError("a reaction is one emoji");
    }
    return { text: "", reaction: create(ReactionSchema, { emoji, remove: action.remove === true,
      target: create(MessageRefSchema, { author, timestamp: u64(timestamp) }) }) };
  }
  const message = await store.getJson<StoredMessage>(messageKey(conversation, action.timestamp, me));
  if (message === undefined) {
    throw new RangeError(action.kind === "edit" ? "only your own messages can be edited"
      : "only your own messages can be deleted for everyone");
  }
  const ref = create(MessageRefSchema, { author: me, timestamp: u64(action.timestamp) });
  if (action.kind === "delete") return { text: "", delete: ref };
  if (action.text.trim() === "") throw new RangeError("the new text is empty: delete the message instead");
  if (action.text.length > MAX_EDIT_TEXT) throw new RangeError(`the new text is longer than ${MAX_EDIT_TEXT} characters`);
  return { text: action.text, edit: ref };
}
