/**
 * Edits, reactions and deletions for everyone that reach this browser (from a contact, or
 * from another of our devices as a sync copy), taken as cipherpost.client.inbox's
 * store_data takes them: only for a message held in the same conversation, an edit or a
 * deletion only by the message's own author. A deletion removes the message here, an
 * edit replaces its text; each goes into the server-stored history as the SDK records it
 * (a `change` entry for an edit or a reaction, the message's entry removed for a
 * deletion), so a device restoring the log holds them (a replay here applies the
 * edits, ./history.ts). Reactions are kept one per person per message (./reactions.ts)
 * and shown under it.
 */

import { fromHex, toHex } from "../protocol/bytes.js";
import { decodeContent, encodeContent } from "./content.js";
import { applyEdit, forgetPreview } from "./edits.js";
import * as history from "./history.js";
import { messageKey, queueKey, type ClientEvent, type QueuedSend, type StoredMessage } from "./model.js";
import type { Content, DataMessage } from "./proto/cipherpost/app/v1/app_pb.js";
import { applyReaction, forgetReactions, isReactionEmoji } from "./reactions.js";
import type { DeviceStore } from "./store/device.js";

/** Whether `data` is an edit, a reaction or a deletion rather than a message to store. */
export function isChange(data: DataMessage): boolean {
  return changeKind(data) !== undefined;
}

/** Which change `data` is, if it is one. */
export function changeKind(data: DataMessage): "edit" | "delete" | "reaction" | undefined {
  return data.delete !== undefined ? "delete" : data.edit !== undefined ? "edit"
    : data.reaction !== undefined ? "reaction" : undefined;
}

/**
 * Apply the change `data` by `author` in `conversation` and record it (inside the
 * caller's unit). `now` is when it arrived, the `received_at` of its history entry.
 */
export async function takeChange(store: DeviceStore, conversation: string, author: string, authorDevice: number,
  data: DataMessage, now: number, events: ClientEvent[]): Promise<void> {
  if (data.delete !== undefined) {
    const timestamp = Number(data.delete.timestamp);
    const key = messageKey(conversation, timestamp, author);
    const message = data.delete.author === author ? await store.getJson<StoredMessage>(key) : undefined;
    if (message === undefined) return; // another's message, or one we do not hold: as the SDK, nothing
    await forgetMessage(store, message, { unsent: "drop" });
    events.push({ kind: "expired", conversation, timestamp });
    return;
  }
  if (data.edit !== undefined) {
    const message = await applyEdit(store, conversation, author, data);
    if (message === undefined) return;
    if (message.outgoing) {
      await reviseUnsent(store, conversation, message.timestamp, data.text);
      await reviseSent(store, conversation, message.timestamp, data.text);
    }
    await history.recordChange(store, conversation, author, authorDevice, now, data);
    events.push({ kind: "message", message });
    return;
  }
  if (!(await applyReaction(store, conversation, author, data))) {
    const reaction = data.reaction;
    events.push({ kind: "unsupported", sender: author, reason: reaction !== undefined && !reaction.remove
      && !isReactionEmoji(reaction.emoji) ? "a reaction that is not one emoji" : "a reaction to a message not in its conversation" });
    return;
  }
  await history.recordChange(store, conversation, author, authorDevice, now, data);
  const ref = data.reaction!.target!;
  events.push({ kind: "reaction", conversation, timestamp: Number(ref.timestamp) });
}

/**
 * Our message sent at `timestamp` in `conversation` is deleted for everyone while its
 * send still waits in this device's queue and the relay took none of it (of a group
 * send, for no member yet): the send is dropped (its resend log entry goes too,
 * reviseSent), so the text never leaves (the deletion still goes, and finds nothing there). A group send the
 * relay took for some members goes on to the rest, the deletion after it.
 */
async function dropUnsent(store: DeviceStore, conversation: string, timestamp: number): Promise<void> {
  const key = queueKey(timestamp);
  const queued = await store.getJson<QueuedSend>(key);
  if (queued === undefined || queued.conversation !== conversation || queued.stage !== "members"
    || queued.reached === true || ourContent(queued.data, timestamp) === undefined) return;
  await store.put(key, null);
}

/**
 * A message deleted for everyone or whose disappearing timer ran out (inside a unit): it
 * goes with its reactions, the conversation list's preview of it and its history entries
 * and, ours, the text a contact's resend request would get. With `unsent: "drop"` (a
 * deletion) a send of it that no one had yet leaves the queue too; an expired one that
 * waits for the connection is still sent (its recipients' timers run from reading it).
 */
export async function forgetMessage(store: DeviceStore, message: StoredMessage,
  options: { unsent: "drop" | "send" }): Promise<void> {
  const { conversation, author, timestamp } = message;
  const key = messageKey(conversation, timestamp, author);
  await store.put(key, null);
  await forgetReactions(store, key);
  if (message.outgoing) {
    await store.put(`mine:${timestamp}`, null);
    if (options.unsent === "drop") await dropUnsent(store, conversation, timestamp);
    await reviseSent(store, conversation, timestamp, undefined);
  }
  await forgetPreview(store, message);
  await history.recordDeleted(store, conversation, author, timestamp);
}

/**
 * Our message sent at `timestamp` in `conversation` is edited while its send still waits
 * in this device's queue: the queued send carries the new text, so the old one never
 * leaves this device if no one had it yet (the edit still goes after it). Members a group
 * send reached already, and our other devices, get the edit as usual.
 */
async function reviseUnsent(store: DeviceStore, conversation: string, timestamp: number, text: string): Promise<void> {
  const key = queueKey(timestamp);
  const queued = await store.getJson<QueuedSend>(key);
  if (queued === undefined || queued.conversation !== conversation) return;
  const content = ourContent(queued.data, timestamp);
  if (content === undefined || content.body.case !== "data") return;
  content.body.value.text = text;
  await store.putJson(key, { ...queued, data: toHex(encodeContent(content)) } satisfies QueuedSend);
}

/**
 * Our message sent at `timestamp` in `conversation` was deleted for everyone (`text`
 * undefined) or edited to `text`, here or on another of our devices: what a contact's
 * resend request gets (resend:<timestamp>, the Content as sent, ./client.ts) must not
 * undo it on their side. A deleted message's entry goes; an edited one's carries the
 * new text (the SDK's revise_sent_text). Only when this device sent it.
 */
async function reviseSent(store: DeviceStore, conversation: string, timestamp: number,
  text: string | undefined): Promise<void> {
  const key = `resend:${timestamp}`;
  const entry = await store.getJson<{ account: string; data: string; at: number }>(key);
  if (entry === undefined || entry.account !== conversation) return;
  const content = ourContent(entry.data, timestamp);
  if (content === undefined || content.body.case !== "data") return;
  if (text === undefined) {
    await store.put(key, null);
    return;
  }
  content.body.value.text = text;
  await store.putJson(key, { ...entry, data: toHex(encodeContent(content)) });
}

/** The Content (padded, hex) `data` when it holds a message (not an edit, reaction or deletion) sent at `timestamp`. */
function ourContent(data: string, timestamp: number): Content | undefined {
  let content;
  try {
    content = decodeContent(fromHex(data));
  } catch {
    return undefined;
  }
  const body = content.body;
  return body.case === "data" && Number(body.value.timestamp) === timestamp && !isChange(body.value) ? content : undefined;
}
