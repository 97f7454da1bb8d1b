/** What the app shows: stored messages, contacts, and the events the client emits. */
import type { AccountNotice } from "./notices.js";

/** Longest text kept from a message (a hostile peer cannot fill the store in one go). */
export const MAX_TEXT = 64 * 1024;

export type Status = "sending" | "sent" | "delivered" | "read" | "failed" | "received";

const RANK: Record<Status, number> = { failed: 0, sending: 1, sent: 2, delivered: 3, read: 4, received: 0 };

/** A status only moves forward (a late "delivered" never undoes "read"). */
export function advance(current: Status, next: Status): Status {
  if (current === "failed" && next === "sent") return next;
  return RANK[next] > RANK[current] ? next : current;
}

export interface StoredMessage {
  conversation: string;
  author: string;
  authorDevice: number;
  /** The author's timestamp (ms): with the author, the message's name (spec §4). */
  timestamp: number;
  text: string;
  outgoing: boolean;
  status: Status;
  receivedAt: number;
  /** An incoming message the user has seen here or on another of our devices. */
  read?: boolean;
  attachments?: AttachmentInfo[];
  /** Disappearing messages: seconds after reading (0 or absent: never). */
  expireTimer?: number;
  /** When it is deleted (ms); set when read (incoming) or sent (outgoing). */
  expiresAt?: number;
  /** Edited by its author: the timestamp of the edit that gave it its text (the edit's own name). */
  editedAt?: number;
}

/** A conversation's disappearing-messages timer: seconds (0: off) and its version. */
export interface ConversationTimer {
  seconds: number;
  version: number;
}

export async function conversationTimer(store: { getJson<T>(key: string): Promise<T | undefined> },
  conversation: string): Promise<ConversationTimer> {
  return (await store.getJson<ConversationTimer>(`timer:${conversation}`)) ?? { seconds: 0, version: 0 };
}

/** The message was read (or sent): its timer starts at `now`, unless it already did. */
export function startExpiry(message: StoredMessage, now: number): boolean {
  if (!message.expireTimer || message.expiresAt !== undefined) return false;
  message.expiresAt = now + message.expireTimer * 1000;
  return true;
}

/** An attachment pointer as stored (the record is sealed; the key is hex). */
export interface AttachmentInfo {
  id: string;
  key: string;
  digest: string;
  size: number;
  contentType: string;
  fileName: string;
  caption: string;
}

export interface Contact {
  accountId: string;
  username?: string;
  lastAt: number;
  lastText: string;
  unread: number;
}

export type ClientEvent =
  | { kind: "message"; message: StoredMessage }
  | { kind: "status"; conversation: string; timestamp: number; status: Status }
  | { kind: "identity_changed"; account: string }
  | { kind: "seen"; conversation: string }
  | { kind: "group"; conversation: string; title: string }
  | { kind: "timer"; conversation: string; author: string; seconds: number }
  /** A message is gone: its disappearing timer ran out, or its author deleted it for everyone. */
  | { kind: "expired"; conversation: string; timestamp: number }
  /** Someone reacted to (or took back their reaction to) a message of the conversation sent at `timestamp`. */
  | { kind: "reaction"; conversation: string; timestamp: number }
  | { kind: "decryption_failed"; sender: string; timestamp: number }
  | { kind: "resend_unavailable"; sender: string; timestamp: number }
  | { kind: "unsupported"; sender: string; reason: string }
  /** A notice from the relay about our own account (a new device, a recovery, ...). */
  | { kind: "account_notice"; notice: AccountNotice }
  /** A sealed envelope that failed before any session was touched (no sender known). */
  | { kind: "sealed_rejected"; error: string; reason: string }
  /** A contact started or stopped typing to us (only while typing indicators are on). */
  | { kind: "typing"; sender: string; started: boolean }
  | { kind: "invalid_content"; sender: string }
  /** An edit, deletion or reaction of ours that waited in the queue was refused (it stays applied here only). */
  | { kind: "action_failed"; conversation: string; action: "edit" | "delete" | "reaction"; error: unknown }
  | { kind: "connection"; online: boolean };

/** Network work an envelope called for, stored with it and done after its ack. */
export type FollowUp =
  | { kind: "receipt"; account: string; type: "delivery" | "read"; timestamps: number[] }
  | { kind: "sync_read"; messages: { author: string; timestamp: number }[] }
  | { kind: "decryption_error"; account: string; device: number; timestamp: number }
  | { kind: "resend"; account: string; device: number; timestamp: number }
  /** A PreKey message named a one-time key we do not hold: the directory needs repair. */
  | { kind: "republish" }
  /** Another device changed what the recovery blobs carry (identity, history): seal ours again. */
  | { kind: "reseal" };

/** A message waiting to be sent (typed offline, or the send was interrupted). */
export interface QueuedSend {
  conversation: string;
  timestamp: number;
  data: string; // hex of the padded Content
  /** "members": not yet delivered to the recipient; "sync": only our other devices' copy left. */
  stage: "members" | "sync";
  /** A group send broken off half-way: the relay took it for some members already. */
  reached?: boolean;
}

/** Queue keys sort by timestamp: the queue is sent in the order it was typed. */
export function queueKey(timestamp: number): string {
  return `outq:${String(timestamp).padStart(16, "0")}`;
}

/** Message record keys sort by conversation, then timestamp, then author. */
export function messageKey(conversation: string, timestamp: number, author: string): string {
  return `msg:${conversation}:${String(timestamp).padStart(16, "0")}:${author}`;
}
