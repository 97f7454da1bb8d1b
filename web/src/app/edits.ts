/**
 * An edit applied to a stored message, as cipherpost.client.inbox and history's replay
 * apply one: only its author's own message, held in that conversation; the text is
 * replaced (and the conversation list's preview of the old text dropped). Shared by what
 * arrives (./changes.ts) and what a replay of the server-stored history reads
 * (./history.ts).
 */

import { MAX_TEXT, messageKey, type Contact, type StoredMessage } from "./model.js";
import type { DataMessage } from "./proto/cipherpost/app/v1/app_pb.js";
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
  await store.putJson(key, message);
  return message;
}

/** The conversation list's preview must not outlive the text it showed. */
export async function forgetPreview(store: DeviceStore, message: StoredMessage): Promise<void> {
  const contact = await store.getJson<Contact>(`contact:${message.conversation}`);
  if (contact !== undefined && contact.lastText !== "" && contact.lastText === message.text.slice(0, 200)) {
    contact.lastText = "";
    await store.putJson(`contact:${message.conversation}`, contact);
  }
}
