/**
 * The one-time history archive a new device gets when the account keeps no history on
 * the relay (docs/spec/history.md, "Archive"), on the receiving side. Mirrors
 * cipherpost.client.archive: each part is `0x01 || AES-256-GCM(key, nonce = 4 zero
 * bytes || index (u64 BE), padded HistoryArchivePart, aad = "Cipherpost archive v1" ||
 * index (u32 BE) || count (u32 BE))`. Parts are taken in order; each is replayed in one
 * store unit that also records how far it got, then deleted from the relay. Replaying
 * twice changes nothing (messages are named by author and timestamp).
 */

import { fromBinary } from "@bufbuild/protobuf";

import { concat, fromHex, toHex, utf8 } from "../protocol/bytes.js";
import { RelayError, type RelayApi } from "./api.js";
import { attachmentInfos } from "./inbox.js";
import { checkIntegers } from "./content.js";
import { applyEdit } from "./edits.js";
import { Group, GroupChangeRejected } from "./groups.js";
import { messageKey, type Contact, type StoredMessage } from "./model.js";
import { unpad } from "./padding.js";
import { applyReaction } from "./reactions.js";
import {
  HistoryArchivePartSchema, type HistoryArchive, type HistoryArchivePart, type HistoryEvent, type HistoryMessage,
} from "./proto/cipherpost/app/v1/app_pb.js";
import type { DeviceStore } from "./store/device.js";

const VERSION = 1;
const AAD = utf8("Cipherpost archive v1");

/** An archive part that does not open, or one the relay no longer has. */
export class ArchiveError extends Error {
  override readonly name = "ArchiveError";
}

function be(bytes: number, value: number): Uint8Array {
  const out = new Uint8Array(bytes);
  const view = new DataView(out.buffer);
  if (bytes === 4) view.setUint32(0, value);
  else view.setBigUint64(0, BigInt(value));
  return out;
}

/** @throws ArchiveError */
export async function openPart(key: Uint8Array, index: number, count: number, blob: Uint8Array): Promise<HistoryArchivePart> {
  if (blob.length < 1 + 16 || blob[0] !== VERSION) throw new ArchiveError("not a history archive part of this version");
  try {
    const aes = await crypto.subtle.importKey("raw", key as Uint8Array<ArrayBuffer>, "AES-GCM", false, ["decrypt"]);
    const plain = new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM",
      iv: concat(new Uint8Array(4), be(8, index)) as Uint8Array<ArrayBuffer>,
      additionalData: concat(AAD, be(4, index), be(4, count)) as Uint8Array<ArrayBuffer> }, aes,
    blob.slice(1) as Uint8Array<ArrayBuffer>));
    const part = fromBinary(HistoryArchivePartSchema, unpad(plain));
    checkIntegers(HistoryArchivePartSchema, part);
    return part;
  } catch {
    throw new ArchiveError("a history archive part does not open");
  }
}

/**
 * The timestamp that names a message event's message (the SDK's history.message_timestamp).
 * Files, archives and backfills written before 2026-11-30 carried an edited message as its
 * edit: the message is then the one the edit names.
 */
export function messageTimestamp(m: HistoryMessage): number {
  const data = m.data;
  if (data === undefined) return 0;
  return Number(data.edit !== undefined && data.edit.author === m.author ? data.edit.timestamp : data.timestamp);
}

/**
 * Replay events (an archive part's, or the server-stored history's) into the store,
 * inside a unit: messages unless held, group states newer than the one held; the number
 * of new messages.
 */
export async function applyEvents(store: DeviceStore, events: readonly HistoryEvent[], now: number): Promise<number> {
  let stored = 0;
  for (const event of events) {
    const body = event.body;
    if (body.case === "groupState") {
      try {
        const group = Group.fromBytes(body.value);
        const held = await store.getJson<string>(`group:${toHex(group.id)}`);
        // the newest revision wins, as in the SDK: the log holds every revision, in upload order
        if (held !== undefined && Group.fromBytes(fromHex(held)).revision >= group.revision) continue;
        await store.putJson(`group:${toHex(group.id)}`, toHex(group.stateBytes));
        const key = `contact:${group.conversation}`;
        const contact = (await store.getJson<Contact>(key)) ?? { accountId: group.conversation, lastAt: now, lastText: "", unread: 0 };
        contact.username = group.title || "Group";
        await store.putJson(key, contact);
      } catch (error) {
        if (!(error instanceof GroupChangeRejected)) throw error;
      }
      continue;
    }
    if (body.case === "change" && body.value.data !== undefined) { // an edit or a reaction of a message held
      const c = body.value;
      if (await applyEdit(store, c.conversation, c.author, c.data!) === undefined) {
        await applyReaction(store, c.conversation, c.author, c.data!);
      }
      continue;
    }
    if (body.case !== "message" || body.value.data === undefined) continue;
    const m = body.value;
    const data = m.data!;
    const timestamp = messageTimestamp(m);
    if (m.conversation === "" || m.author === "" || data.expireTimerUpdate) continue;
    const key = messageKey(m.conversation, timestamp, m.author);
    if ((await store.get(key)) !== undefined) continue;
    const attachments = attachmentInfos(data);
    const timer = data.expireTimer;
    const message: StoredMessage = {
      conversation: m.conversation, author: m.author, authorDevice: m.authorDevice, timestamp,
      text: data.text.slice(0, 64 * 1024), outgoing: m.outgoing, status: m.outgoing ? "sent" : "received",
      receivedAt: Number(m.receivedAt), read: m.outgoing ? undefined : true,
      ...(attachments.length > 0 ? { attachments } : {}),
      ...(timer > 0 ? { expireTimer: timer, expiresAt: (m.outgoing ? timestamp : now) + timer * 1000 } : {}),
      // an edited message written as its edit (see messageTimestamp)
      ...(timestamp !== Number(data.timestamp) ? { editedAt: Number(data.timestamp) } : {}),
    };
    await store.putJson(key, message);
    if (m.outgoing) await store.putJson(`mine:${timestamp}`, key);
    const contactKey = `contact:${m.conversation}`;
    const contact = (await store.getJson<Contact>(contactKey)) ?? { accountId: m.conversation, lastAt: 0, lastText: "", unread: 0 };
    if (message.receivedAt >= contact.lastAt) {
      contact.lastAt = message.receivedAt;
      contact.lastText = message.text.slice(0, 200);
    }
    await store.putJson(contactKey, contact);
    stored += 1;
  }
  return stored;
}

/** Remember an archive to take (before taking it, so that an interrupted link resumes); inside the caller's unit. */
export async function keep(store: DeviceStore, reference: HistoryArchive): Promise<void> {
  await store.putJson("link_archive", { key: toHex(reference.key), parts: reference.parts, events: reference.events });
  await store.putJson("link_archive_done", 0);
}

/**
 * Take the archive this device was linked with, if any is left: download, replay and
 * delete each part in turn; `progress(events replayed, events in all)`.
 * @throws ArchiveError a part does not open or is gone. RelayError, RelayUnavailable: resumes later.
 */
export async function receive(api: RelayApi, store: DeviceStore, now: number,
  progress?: (done: number, total: number) => void): Promise<number> {
  const reference = await store.getJson<{ key: string; parts: string[]; events: number }>("link_archive");
  if (reference === undefined) return 0;
  const key = Uint8Array.from(reference.key.match(/../g) ?? [], (h) => parseInt(h, 16));
  const count = reference.parts.length;
  const done = (await store.getJson<number>("link_archive_done")) ?? 0;
  let replayed = 0;
  let stored = 0;
  for (let index = 0; index < count; index++) {
    const id = reference.parts[index]!;
    if (!/^[A-Za-z0-9_-]{1,100}$/.test(id)) throw new ArchiveError("a malformed archive part id");
    if (index >= done) {
      let blob: Uint8Array | undefined;
      try {
        blob = await api.requestBytes("GET", `/v1/provisioning/archives/${id}`, true, 4 * 1024 * 1024);
      } catch (error) {
        if (error instanceof RelayError && error.status === 404) {
          throw new ArchiveError("the relay no longer has this device's history archive (it keeps it for a day)");
        }
        throw error;
      }
      const part = await openPart(key, index, count, blob ?? new Uint8Array(0));
      stored += await store.transaction(async () => {
        const n = await applyEvents(store, part.events, now);
        await store.putJson("link_archive_done", index + 1);
        return n;
      });
      replayed += part.events.length;
      progress?.(replayed, reference.events);
    }
    try {
      await api.request("DELETE", `/v1/provisioning/archives/${id}`);
    } catch (error) {
      if (!(error instanceof RelayError)) throw error;
    }
  }
  await store.transaction(async () => {
    await store.put("link_archive", null);
    await store.putJson("link_archive_done", -1);
  });
  progress?.(reference.events, reference.events);
  return stored;
}
