/**
 * An edit applied to a stored message, as cipherpost.client.inbox and history's replay
 * apply one: only its author's own message, held in that conversation; the text is
 * replaced (and the conversation list's preview of the old text dropped). Shared by what
 * arrives (./changes.ts) and what a replay of the server-stored history reads
 * (./history.ts).
 */

import { create } from "@bufbuild/protobuf";

import { MAX_TEXT, messageKey, type Contact, type StoredMessage } from "./model.js";
import { DataMessageSchema, type DataMessage } from "./proto/cipherpost/app/v1/app_pb.js";
import { reactionsOf } from "./reactions.js";
import type { DeviceStore } from "./store/device.js";

/** The message `data` (an edit by `author`) changed, or undefined when it names none we may change. */
export async function applyEdit(store: DeviceStore, conversation: string, author: string,
  data: DataMessage): Promise<StoredMessage | undefined> {
  const target = data.edit;
  if (target === undefined || target.author !== author) return undefined;
  const key = messageKey(conversation, Number(target.timestamp), author);
  const message = await store.getJson<StoredMessage>(key);
  if (message === undefined) return undefined;
  await forgetPreview(store, message);
  message.text = data.text.slice(0, MAX_TEXT);
  message.editedAt = Number(data.timestamp);
  await store.putJson(key, message);
  return message;
}

/**
 * The changes that make a stored message's edit and reactions again on another device (a
 * key file, the backfill when history is turned on; the SDK's history.stored_events),
 * each with its author: the edit that gave an edited message its text, then each
 * reactor's reaction, named by the message's timestamp (a reaction's own is not kept).
 */
export async function messageChanges(store: DeviceStore, message: StoredMessage): Promise<{ author: string; data: DataMessage }[]> {
  const timestamp = BigInt(message.timestamp);
  const changes = message.editedAt === undefined ? [] : [{ author: message.author, data: create(DataMessageSchema, {
    timestamp: BigInt(message.editedAt), text: message.text, edit: { author: message.author, timestamp } }) }];
  const reactions = await reactionsOf(store, messageKey(message.conversation, message.timestamp, message.author));
  for (const reactor of Object.keys(reactions).sort()) {
    changes.push({ author: reactor, data: create(DataMessageSchema, {
      timestamp, reaction: { emoji: reactions[reactor]!, target: { author: message.author, timestamp } } }) });
  }
  return changes;
}

/** The conversation list's preview must not outlive the text it showed. */
export async function forgetPreview(store: DeviceStore, message: StoredMessage): Promise<void> {
  const contact = await store.getJson<Contact>(`contact:${message.conversation}`);
  if (contact !== undefined && contact.lastText !== "" && contact.lastText === message.text.slice(0, 200)) {
    contact.lastText = "";
    await store.putJson(`contact:${message.conversation}`, contact);
  }
}
