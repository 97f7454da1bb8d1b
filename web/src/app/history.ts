/**
 * Server-stored encrypted history (docs/spec/history.md), in the Python SDK's format
 * (cipherpost.client.history): a device of an account that keeps its history on the relay
 * seals what it stores under the current epoch key and queues it for upload in the same
 * store unit, as the SDK's Recorder does: every message, every edit and reaction (a
 * `change` entry, ./changes.ts), every group state it accepts (a `group` entry per
 * revision), and the removal of a message's entry when it is deleted or expires. A newly
 * linked device pages through the relay's log and replays it, resumably (the position is
 * committed with each page).
 *
 * ```
 * K_enc    = HKDF-SHA256(epoch key, salt = "", "Cipherpost history v1 enc", 32)
 * event_id = HMAC-SHA256(id_key, kind || 0 || conversation || 0 || author || 0 || decimal(ts))[:16]
 * blob     = 0x01 || epoch (u32 BE) || nonce (12) ||
 *            AES-256-GCM(K_enc, nonce, pad(HistoryEvent), aad = event_id || epoch)
 * ```
 *
 * The relay sees padded opaque blobs, their day and their count. On replay here, edits
 * (`change` entries) are applied to the messages held; reactions are skipped (kept for
 * devices that show them).
 */

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { hkdf } from "@noble/hashes/hkdf.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";

import { concat, fromHex, systemRandom, toHex, utf8 } from "../protocol/bytes.js";
import type { RelayApi } from "./api.js";
import { RelayError } from "./api.js";
import { applyEvents, messageTimestamp } from "./archive.js";
import { checkIntegers } from "./content.js";
import { applyEdit } from "./edits.js";
import { applyReaction, forgetReactions } from "./reactions.js";
import type { Group } from "./groups.js";
import { messageKey, type StoredMessage } from "./model.js";
import { pad, unpad } from "./padding.js";
import {
  HistoryEventSchema, HistoryKeysSchema, HistoryMessageSchema, type DataMessage, type HistoryEvent, type HistoryKeys,
} from "./proto/cipherpost/app/v1/app_pb.js";
import type { DeviceStore } from "./store/device.js";

const BLOB_VERSION = 1;
const ENC_INFO = utf8("Cipherpost history v1 enc");
const KEYS = "history_keys";
const ENABLED = "history_enabled";
const CURSOR = "history_cursor";
/** Set when this device was linked or restored with server history, until its replay finished. */
const PENDING = "history_replay_pending";
/**
 * Queued uploads: `histq:<event id hex>` → 0x00 || the order it was queued in (u64 BE) ||
 * the blob (none: a deletion). Uploaded in that order, as the SDK's outbox (created_at,
 * rowid): an edit's entry must not reach the log before the message it edits. A later
 * entry for the same event replaces the earlier one and takes a new place. (A value
 * without the 0x00 mark was queued before the order was kept: it goes first.)
 */
const QUEUE = "histq:";
const QUEUE_ORDER = "history_queue";
/** `histname:<event id hex>` → the key of the message that event names (for tombstones). */
const NAMES = "histname:";
/** `histchanges:<message key>` → the names (hex) of that message's edit and reaction entries. */
const CHANGES = "histchanges:";
/** `histreaction:<message key>|<reactor>` → the name (hex) of the reactor's reaction entry, replaced by their next one. */
const REACTION = "histreaction:";
const PAGE = 200;
const MAX_ENTRY = 64 * 1024;

/** A history entry that does not open, malformed keys, or a relay page that is not one. */
export class HistoryError extends Error {
  override readonly name = "HistoryError";
}

/** The account's history keys: the naming key and each epoch's key and start (ms). */
export interface Keys {
  idKey: Uint8Array;
  epochs: Map<number, { key: Uint8Array; startedAt: number }>;
}

/** @throws HistoryError malformed keys (as the SDK's Keys.from_proto). */
export function keysFromProto(message: HistoryKeys): Keys {
  const epochs = new Map<number, { key: Uint8Array; startedAt: number }>();
  for (const e of message.epochs) epochs.set(e.number, { key: e.key, startedAt: Number(e.startedAt) });
  if (message.idKey.length !== 32 || epochs.size === 0 || epochs.size !== message.epochs.length
    || [...epochs].some(([n, e]) => e.key.length !== 32 || n < 1)) {
    throw new HistoryError("malformed history keys");
  }
  return { idKey: message.idKey, epochs };
}

function keysToProto(keys: Keys): HistoryKeys {
  return create(HistoryKeysSchema, { idKey: keys.idKey, epochs: [...keys.epochs].sort(([a], [b]) => a - b)
    .map(([number, e]) => ({ number, key: e.key, startedAt: BigInt(e.startedAt) })) });
}

/** The newest epoch (started last; numbers are random, so ties go to the larger). */
export function currentEpoch(keys: Keys): number {
  let best = -1;
  let bestAt = -1;
  for (const [n, e] of keys.epochs) {
    if (e.startedAt > bestAt || (e.startedAt === bestAt && n > best)) [best, bestAt] = [n, e.startedAt];
  }
  return best;
}

export function eventId(keys: Keys, kind: "message" | "change" | "group", conversation: string, author: string,
  timestamp: number): Uint8Array {
  const zero = Uint8Array.of(0);
  return hmac(sha256, keys.idKey, concat(utf8(kind), zero, utf8(conversation), zero, utf8(author), zero,
    utf8(String(timestamp)))).slice(0, 16);
}

function u32(value: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value);
  return out;
}

async function aes(epochKey: Uint8Array, use: "encrypt" | "decrypt"): Promise<CryptoKey> {
  const raw = hkdf(sha256, epochKey, new Uint8Array(0), ENC_INFO, 32);
  return crypto.subtle.importKey("raw", raw as Uint8Array<ArrayBuffer>, "AES-GCM", false, [use]);
}

/** Seal an event under the current epoch. */
export async function seal(keys: Keys, name: Uint8Array, event: HistoryEvent): Promise<Uint8Array> {
  const number = currentEpoch(keys);
  const epoch = u32(number);
  const nonce = systemRandom(12);
  const body = new Uint8Array(await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: nonce as Uint8Array<ArrayBuffer>, additionalData: concat(name, epoch) as Uint8Array<ArrayBuffer> },
    await aes(keys.epochs.get(number)!.key, "encrypt"), pad(toBinary(HistoryEventSchema, event)) as Uint8Array<ArrayBuffer>));
  return concat(Uint8Array.of(BLOB_VERSION), epoch, nonce, body);
}

/** @throws HistoryError another version, an epoch we hold no key for, or it does not open. */
export async function openBlob(keys: Keys, name: Uint8Array, blob: Uint8Array): Promise<HistoryEvent> {
  if (blob.length < 1 + 4 + 12 + 16 || blob[0] !== BLOB_VERSION) throw new HistoryError("not a history entry of this version");
  const number = new DataView(blob.buffer, blob.byteOffset + 1, 4).getUint32(0);
  const epoch = keys.epochs.get(number);
  if (epoch === undefined) throw new HistoryError(`no key for history epoch ${number}`);
  try {
    const plain = new Uint8Array(await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: blob.slice(5, 17), additionalData: concat(name, blob.slice(1, 5)) as Uint8Array<ArrayBuffer> },
      await aes(epoch.key, "decrypt"), blob.slice(17)));
    const event = fromBinary(HistoryEventSchema, unpad(plain));
    checkIntegers(HistoryEventSchema, event);
    return event;
  } catch {
    throw new HistoryError("the entry does not open");
  }
}

// -- the account's setting and keys, in the store ---------------------------------------

/** Take the history setting and keys a ProvisionMessage (or sync) carries, merged with ours (inside a unit). */
export async function adopt(store: DeviceStore, message: HistoryKeys | undefined, on: boolean): Promise<void> {
  await store.putJson(ENABLED, on);
  if (message !== undefined) {
    const theirs = keysFromProto(message);
    const held = await keysOf(store);
    if (held !== undefined && toHex(held.idKey) !== toHex(theirs.idKey)) throw new HistoryError("history keys of another account");
    const merged: Keys = { idKey: theirs.idKey, epochs: new Map([...(held?.epochs ?? []), ...theirs.epochs]) };
    await store.put(KEYS, toBinary(HistoryKeysSchema, keysToProto(merged)));
  }
  if (!on) for (const [key] of await store.scan(QUEUE)) await store.put(key, null);
}

async function keysOf(store: DeviceStore): Promise<Keys | undefined> {
  const data = await store.get(KEYS);
  return data === undefined ? undefined : keysFromProto(fromBinary(HistoryKeysSchema, data));
}

/** Remember that the log is to be replayed (inside the unit that adopts the keys), so an interrupted replay goes on later. */
export async function markReplayPending(store: DeviceStore): Promise<void> {
  await store.putJson(PENDING, true);
}

export async function replayPending(store: DeviceStore): Promise<boolean> {
  return (await store.getJson<boolean>(PENDING)) === true;
}

/** The keys when this account keeps history on the relay, else undefined. */
export async function enabledKeys(store: DeviceStore): Promise<Keys | undefined> {
  return (await store.getJson<boolean>(ENABLED)) === true ? keysOf(store) : undefined;
}

/** For a ProvisionMessage: whether the account keeps history on the relay, and the keys. */
export async function provisionFields(store: DeviceStore): Promise<{ historyEnabled: boolean; historyKeys?: HistoryKeys }> {
  const keys = await keysOf(store);
  const enabled = (await store.getJson<boolean>(ENABLED)) === true;
  return keys === undefined ? { historyEnabled: false } : { historyEnabled: enabled, historyKeys: keysToProto(keys) };
}

// -- recording (inside the caller's unit) -------------------------------------------------

/** Queue the sealed entry of a message this device stores, when history is on (the SDK's Recorder.message). */
export async function recordMessage(store: DeviceStore, conversation: string, author: string, authorDevice: number,
  receivedAt: number, outgoing: boolean, data: DataMessage): Promise<void> {
  const keys = await enabledKeys(store);
  if (keys === undefined) return;
  const name = eventId(keys, "message", conversation, author, Number(data.timestamp));
  const event = create(HistoryEventSchema, { body: { case: "message", value: create(HistoryMessageSchema, {
    conversation, author, authorDevice, receivedAt: BigInt(receivedAt), outgoing, data }) } });
  await enqueue(store, name, await seal(keys, name, event));
  await store.putJson(NAMES + toHex(name), messageKey(conversation, Number(data.timestamp), author));
}

/**
 * Queue the sealed entry of an edit or a reaction this device applied or made, named by its
 * own author and timestamp, when history is on (the SDK's Recorder.change). Inside the
 * caller's unit.
 */
export async function recordChange(store: DeviceStore, conversation: string, author: string, authorDevice: number,
  receivedAt: number, data: DataMessage): Promise<void> {
  const keys = await enabledKeys(store);
  if (keys === undefined) return;
  const name = eventId(keys, "change", conversation, author, Number(data.timestamp));
  const event = create(HistoryEventSchema, { body: { case: "change", value: create(HistoryMessageSchema, {
    conversation, author, authorDevice, receivedAt: BigInt(receivedAt), data }) } });
  await enqueue(store, name, await seal(keys, name, event));
  const target = data.reaction?.target;
  if (target !== undefined) { // it replaces the reactor's earlier reaction to the message (the SDK's take_reaction_names)
    const message = messageKey(conversation, Number(target.timestamp), target.author);
    const earlier = await store.getJson<string>(`${REACTION}${message}|${author}`);
    if (earlier !== undefined && earlier !== toHex(name)) {
      await enqueue(store, fromHex(earlier), new Uint8Array(0));
      const names = (await store.getJson<string[]>(CHANGES + message)) ?? [];
      await store.putJson(CHANGES + message, names.filter((n) => n !== earlier));
    }
  }
  await nameChange(store, name, conversation, author, data);
}

/**
 * Remember an edit's or a reaction's entry under the message it changes, so that it is
 * deleted with that message (an edit holds the new text; the SDK's history_names), and a
 * reaction's under its reactor too, so that their next reaction replaces it.
 */
async function nameChange(store: DeviceStore, name: Uint8Array, conversation: string, author: string,
  data: DataMessage): Promise<void> {
  const target = data.edit !== undefined ? messageKey(conversation, Number(data.edit.timestamp), author)
    : data.reaction?.target !== undefined
      ? messageKey(conversation, Number(data.reaction.target.timestamp), data.reaction.target.author) : undefined;
  if (target === undefined) return;
  const names = (await store.getJson<string[]>(CHANGES + target)) ?? [];
  if (!names.includes(toHex(name))) await store.putJson(CHANGES + target, [...names, toHex(name)]);
  if (data.reaction !== undefined) await store.putJson(`${REACTION}${target}|${author}`, toHex(name));
}

/**
 * Queue the sealed entry of a group state this device accepted (made here, received, or
 * held when history was turned on), named by the group's conversation and revision, when
 * history is on (the SDK's Recorder.group). A newer revision is a new entry; a device
 * restoring the log keeps the newest. Inside the caller's unit.
 */
export async function recordGroup(store: DeviceStore, group: Group): Promise<void> {
  const keys = await enabledKeys(store);
  if (keys === undefined) return;
  const name = eventId(keys, "group", group.conversation, "", group.revision);
  await enqueue(store, name, await seal(keys, name,
    create(HistoryEventSchema, { body: { case: "groupState", value: group.stateBytes } })));
}

/**
 * Queue the removal of a message's entry, when history is on: it expired (a disappearing
 * timer) or was deleted for everyone (the SDK's Recorder.deleted). Inside the caller's unit.
 */
export async function recordDeleted(store: DeviceStore, conversation: string, author: string, timestamp: number): Promise<void> {
  const keys = await enabledKeys(store);
  if (keys === undefined) return;
  await enqueue(store, eventId(keys, "message", conversation, author, timestamp), new Uint8Array(0));
  // Its edits' and reactions' entries go too (the SDK's Recorder.deleted).
  const changes = CHANGES + messageKey(conversation, timestamp, author);
  for (const name of (await store.getJson<string[]>(changes)) ?? []) await enqueue(store, fromHex(name), new Uint8Array(0));
  await store.put(changes, null);
  for (const [key] of await store.scan(`${REACTION}${messageKey(conversation, timestamp, author)}|`)) await store.put(key, null);
}

async function enqueue(store: DeviceStore, name: Uint8Array, blob: Uint8Array): Promise<void> {
  const order = new Uint8Array(9);
  new DataView(order.buffer).setBigUint64(1, BigInt(await store.nextId(QUEUE_ORDER)));
  await store.put(QUEUE + toHex(name), concat(order, blob));
}

function unqueue(value: Uint8Array): { order: bigint; blob: Uint8Array } {
  if (value.length < 9 || value[0] !== 0) return { order: 0n, blob: value }; // queued before the order was kept
  return { order: new DataView(value.buffer, value.byteOffset + 1, 8).getBigUint64(0), blob: value.slice(9) };
}

/** The queued entries in the order they were queued: event id (hex) and blob (empty: a deletion). */
export async function pendingEntries(store: DeviceStore): Promise<{ name: string; blob: Uint8Array }[]> {
  return (await store.scan(QUEUE)).map(([key, value]) => ({ name: key.slice(QUEUE.length), ...unqueue(value) }))
    .sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : 0)).map(({ name, blob }) => ({ name, blob }));
}

/**
 * Upload (or delete) the queued entries; the number done. An entry the relay refuses for
 * good (too large, its budget full) is dropped with a warning; no answer, a 429 or a 5xx
 * leaves the rest queued for the next time.
 */
export async function flush(api: RelayApi, store: DeviceStore): Promise<number> {
  let done = 0;
  for (const { name } of await pendingEntries(store)) {
    const key = QUEUE + name;
    const value = await store.get(key); // replaced or gone meanwhile: what is queued now
    if (value === undefined) continue;
    const { order, blob } = unqueue(value);
    const path = `/v1/history/${name}`;
    try {
      if (blob.length === 0) await api.request("DELETE", path);
      else await api.request("PUT", path, blob);
    } catch (error) {
      if (!(error instanceof RelayError) || error.status === 429 || error.status >= 500) throw error;
      console.warn("cipherpost: the relay refused a history entry:", error.code);
    }
    await store.transaction(async () => { // unless a newer entry for it was queued meanwhile
      const now = await store.get(key);
      if (now !== undefined && unqueue(now).order === order) await store.put(key, null);
    });
    done += 1;
  }
  return done;
}

// -- replay on a new device ----------------------------------------------------------------

export interface Replayed {
  entries: number; messages: number; deleted: number; edited: number; reactions: number; skipped: number; unreadable: number;
}

interface Page { entries: { seq: number; name: Uint8Array; blob: Uint8Array | undefined }[]; more: boolean }

/** @throws HistoryError not a history page (a broken or hostile relay). */
export function parsePage(page: unknown): Page {
  const fail = (): never => { throw new HistoryError("the relay sent a malformed history page"); };
  if (typeof page !== "object" || page === null) return fail();
  const { entries, more } = page as { entries?: unknown; more?: unknown };
  if (!Array.isArray(entries) || typeof more !== "boolean") return fail();
  return { more, entries: entries.map((entry: unknown) => {
    const { seq, event_id: name, blob } = (entry ?? {}) as { seq?: unknown; event_id?: unknown; blob?: unknown };
    if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 0 || typeof name !== "string"
      || !/^[0-9a-f]{32}$/.test(name) || !(blob === null || (typeof blob === "string" && /^[A-Za-z0-9+/]*={0,2}$/.test(blob)))) {
      return fail();
    }
    const bytes = blob === null ? undefined : Uint8Array.from(atob(blob), (c) => c.charCodeAt(0));
    if (bytes !== undefined && (bytes.length === 0 || bytes.length > MAX_ENTRY)) return fail();
    return { seq, name: fromHex(name), blob: bytes };
  }) };
}

/**
 * Page through the relay's log from where this device stopped and replay it: messages
 * stored unless held (named by conversation, author and timestamp), a deleted entry's
 * message removed, group states taken through the archive's rules, edits applied to the
 * messages held (./edits.ts) and reactions to them kept (./reactions.ts). `progress(entries
 * read, fraction)`: the fraction of the relay's stored bytes read so far. Once the last
 * page is replayed, the replay is no longer pending.
 * @throws HistoryError no keys, a malformed page. RelayError, RelayUnavailable: resumes later.
 */
export async function download(api: RelayApi, store: DeviceStore, now: number,
  progress?: (entries: number, fraction: number) => void): Promise<Replayed> {
  const keys = await keysOf(store);
  if (keys === undefined) throw new HistoryError("this device holds no history keys");
  const counts: Replayed = { entries: 0, messages: 0, deleted: 0, edited: 0, reactions: 0, skipped: 0, unreadable: 0 };
  const settings = await api.request("GET", "/v1/history/settings") as { stored_bytes?: unknown } | undefined;
  const total = typeof settings?.stored_bytes === "number" && settings.stored_bytes > 0 ? settings.stored_bytes : 0;
  let read = 0;
  let after = (await store.getJson<number>(CURSOR)) ?? 0;
  progress?.(0, 0);
  for (;;) {
    const page = parsePage(await api.request("GET", `/v1/history?after=${after}&limit=${PAGE}`));
    await store.transaction(async () => {
      for (const { seq, name, blob } of page.entries) {
        after = Math.max(after, seq);
        counts.entries += 1;
        if (blob === undefined) {
          const key = await store.getJson<string>(NAMES + toHex(name));
          if (key !== undefined && (await store.get(key)) !== undefined) {
            const message = await store.getJson<StoredMessage>(key);
            await store.put(key, null);
            await forgetReactions(store, key);
            if (message?.outgoing) await store.put(`mine:${message.timestamp}`, null);
            counts.deleted += 1;
          }
          continue;
        }
        read += blob.length;
        let event: HistoryEvent;
        try {
          event = await openBlob(keys, name, blob);
        } catch {
          counts.unreadable += 1;
          continue;
        }
        const body = event.body;
        if (body.case === "message" && body.value.data !== undefined) {
          const m = body.value;
          await store.putJson(NAMES + toHex(name), messageKey(m.conversation, messageTimestamp(m), m.author));
        }
        if (body.case === "change" && body.value.data !== undefined) {
          await nameChange(store, name, body.value.conversation, body.value.author, body.value.data);
        }
        if (body.case === "message" || body.case === "groupState") counts.messages += await applyEvents(store, [event], now);
        else if (body.case === "change" && body.value.data !== undefined
          && await applyEdit(store, body.value.conversation, body.value.author, body.value.data) !== undefined) counts.edited += 1;
        else if (body.case === "change" && body.value.data !== undefined
          && await applyReaction(store, body.value.conversation, body.value.author, body.value.data)) counts.reactions += 1;
        else counts.skipped += 1; // an edit or a reaction of a message not held
      }
      await store.putJson(CURSOR, after);
      if (!page.more) await store.put(PENDING, null);
    });
    progress?.(counts.entries, total === 0 ? 1 : Math.min(read / total, page.more ? 0.99 : 1));
    if (!page.more) return counts;
  }
}
