/**
 * Receiving (docs/client.md "Receiving: nothing lost, nothing twice"; spec §4, §6): for
 * each envelope, in one store unit with no network I/O inside: skip it if its id was
 * processed; decrypt (the session advances); parse the padded Content; store what it
 * carries; remember the id; decide the follow-up work (a delivery receipt, a decryption
 * error answer) and store it too. Only after the commit is the envelope acknowledged,
 * and only after that is the follow-up work done. Mirrors cipherpost.client.inbox for
 * 1:1 messages.
 *
 * Whatever fails while acting on a decrypted Content undoes that Content's writes, keeps
 * the session's advance, reports `unsupported` and acknowledges: nothing can jam the queue.
 */

import { ProtocolAddress } from "../protocol/address.js";
import { fromHex, toHex } from "../protocol/bytes.js";
import { DuplicatedMessage, NoSenderKey, ProtocolError } from "../protocol/errors.js";
import {
  PREKEY_TYPE, SENDERKEY_TYPE, SenderKeyDistributionMessage, SenderKeyMessage, WHISPER_TYPE,
} from "../protocol/messages.js";
import { groupDecrypt, processDistributionMessage } from "../protocol/sender_keys.js";
import { decrypt } from "../protocol/session.js";
import {
  changeAuthor, changeGroupId, Group, GROUP_ID_BYTES, GroupChangeRejected, verifyChange,
} from "./groups.js";
import type { Envelope } from "./api.js";
import { KEY_BYTES, MAX_ATTACHMENT } from "./attachments.js";
import { decodeContent, InvalidContent, num } from "./content.js";
import {
  advance, conversationTimer, MAX_TEXT, messageKey, startExpiry, type AttachmentInfo, type ClientEvent, type Contact,
  type ConversationTimer, type FollowUp, type Status, type StoredMessage,
} from "./model.js";
import {
  ReceiptMessage_Type, TypingMessage_Action, type Content, type DataMessage, type SignedGroupChange,
} from "./proto/cipherpost/app/v1/app_pb.js";
import { CorruptValue } from "./store/crypto.js";
import { receiptAllowed, typingShown } from "./settings.js";
import type { DeviceStore } from "./store/device.js";
import { NOTICE_TYPE, parseNotice } from "./notices.js";
import * as history from "./history.js";
import { isChange, takeChange } from "./changes.js";
import { adoptIdentityReset } from "./identity_adopt.js";
import * as sealed from "./sealed.js";

export { MAX_TEXT } from "./model.js";

export { SEALED_TYPE } from "./sealed.js";

/** At most this many attachments are kept from one message. */
export const MAX_ATTACHMENTS = 32;

/** The well-formed attachment pointers of a data message (the others are dropped). */
export function attachmentInfos(data: DataMessage): AttachmentInfo[] {
  return data.attachments.slice(0, MAX_ATTACHMENTS).flatMap((p) => {
    const size = Number(p.size);
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(p.id) || p.key.length !== KEY_BYTES || p.digest.length !== 32
      || !Number.isSafeInteger(size) || size < 0 || size > MAX_ATTACHMENT) return [];
    return [{ id: p.id, key: toHex(p.key), digest: toHex(p.digest), size, contentType: p.contentType.slice(0, 100),
      fileName: p.fileName.slice(0, 255), caption: p.caption.slice(0, 1000) }];
  });
}

export interface Processed {
  events: ClientEvent[];
}

export class Inbox {
  constructor(private readonly store: DeviceStore, readonly accountId: string, readonly deviceId: number,
    private readonly clock: () => number) {}

  /** Process one envelope (see the module comment); the caller acknowledges after. */
  async process(envelope: Envelope): Promise<Processed> {
    const events: ClientEvent[] = [];
    const seen = `env:${envelope.id}`;
    if (envelope.type === sealed.SEALED_TYPE && envelope.senderAccountId === undefined) {
      if ((await this.store.get(seen)) !== undefined) return { events };
      const opened = await this.#openSealed(envelope);
      if (!("type" in opened)) {
        await this.store.transaction(async () => {
          if ((await this.store.get(seen)) !== undefined) return;
          await this.store.putJson(seen, this.clock());
          events.push(opened);
        });
        return { events };
      }
      envelope = opened;
    }
    if (envelope.type === NOTICE_TYPE && envelope.senderAccountId === undefined) {
      // Only the relay writes type 0 (clients cannot send it): a notice about our account.
      await this.store.transaction(async () => {
        if ((await this.store.get(seen)) !== undefined) return;
        await this.store.putJson(seen, this.clock());
        const notice = parseNotice(envelope.content);
        if (notice === undefined) {
          events.push({ kind: "unsupported", sender: "", reason: "a malformed server notice" });
          return;
        }
        await this.store.putJson(`notice:${String(await this.store.nextId("notice")).padStart(12, "0")}`, notice);
        events.push({ kind: "account_notice", notice });
      });
      return { events };
    }
    const sender = envelope.senderAccountId;
    const device = envelope.senderDeviceId;
    const groupCiphertext = envelope.type === SENDERKEY_TYPE;
    if (sender === undefined || device === undefined
      || (envelope.type !== WHISPER_TYPE && envelope.type !== PREKEY_TYPE && !groupCiphertext)) {
      await this.store.transaction(async () => {
        if ((await this.store.get(seen)) !== undefined) return;
        await this.store.putJson(seen, this.clock());
        events.push({ kind: "unsupported", sender: sender ?? "", reason: `envelope type ${envelope.type}` });
      });
      return { events };
    }
    const address = new ProtocolAddress(sender, device);
    let failed: unknown;
    await this.store.transaction(async () => {
      if ((await this.store.get(seen)) !== undefined) return;
      await this.store.putJson(seen, this.clock());
      let plaintext: Uint8Array;
      const knownKey = sender === this.accountId ? undefined : (await this.store.getTrust(sender))?.key;
      const before = this.store.savepoint();
      try {
        plaintext = groupCiphertext
          ? await groupDecrypt(this.store, address, envelope.content)
          : await decrypt(this.store, address, envelope.type, envelope.content,
            { localAddress: new ProtocolAddress(this.accountId, this.deviceId) }); // checks field 6
      } catch (error) {
        this.store.rollback(before);
        await this.store.putJson(seen, this.clock());
        if (error instanceof DuplicatedMessage) return;
        if (groupCiphertext && error instanceof NoSenderKey) {
          // Its sender key never reached us (or came for another group): nothing to answer.
          events.push({ kind: "unsupported", sender, reason: "a group message without its sender key" });
          return;
        }
        // A damaged store leaves the envelope queued; anything else about these bytes is
        // a decryption failure (acknowledged, answered, reported), never a jammed queue.
        if (error instanceof CorruptValue) throw error;
        failed = error;
        events.push({ kind: "decryption_failed", sender, timestamp: envelope.clientTimestamp });
        // A group message cannot be asked for again over a fresh 1:1 session.
        if (!groupCiphertext) {
          if (error instanceof ProtocolError && (error.kind === "invalid_prekey_id" || error.kind === "invalid_kyber_prekey_id")) {
            // The relay served a key we do not hold: the directory disagrees with us.
            await this.#followUp({ kind: "republish" });
          }
          await this.#followUp({ kind: "decryption_error", account: sender, device, timestamp: envelope.clientTimestamp });
        }
        return;
      }
      if (knownKey !== undefined && (await this.store.getTrust(sender))?.key !== knownKey) {
        // A PreKey message under a new identity key: accepted for receiving, sending waits
        // until the user accepts it (spec §7); the app shows a banner.
        events.push({ kind: "identity_changed", account: sender });
      }
      let content: Content;
      try {
        content = decodeContent(plaintext);
      } catch (error) {
        if (!(error instanceof InvalidContent)) throw error;
        events.push({ kind: "invalid_content", sender });
        return;
      }
      const decrypted = this.store.savepoint();
      const mark = events.length;
      try {
        if (groupCiphertext && !(await this.#groupBound(content, address, envelope.content, events))) return;
        await this.#act(content, sender, device, events);
      } catch (error) {
        this.store.rollback(decrypted);
        events.length = mark;
        events.push({ kind: "unsupported", sender, reason: `not handled: ${(error as Error).name}` });
      }
    });
    if (failed !== undefined) {
      const kind = failed instanceof ProtocolError ? failed.kind : "malformed";
      console.warn("cipherpost: a message could not be decrypted:", kind);
    }
    return { events };
  }

  /**
   * A sealed envelope as the identified one it wraps (sender from its validated
   * certificate), or why it was refused. Nothing is stored here: the unwrapped envelope
   * goes through the same all-or-nothing path as any other.
   */
  async #openSealed(envelope: Envelope): Promise<Envelope | ClientEvent> {
    try {
      const opened = await sealed.openEnvelope(this.store, envelope.content, this.clock(), this.accountId, this.deviceId);
      return { ...envelope, senderAccountId: opened.sender, senderDeviceId: opened.device, type: opened.messageType,
        content: opened.contents };
    } catch (error) {
      if (!(error instanceof sealed.SealedError)) throw error;
      console.warn("cipherpost: a sealed envelope was refused:", error.kind);
      return { kind: "sealed_rejected", error: error.kind, reason: error.message };
    }
  }

  async #followUp(work: FollowUp): Promise<void> {
    await this.store.putJson(`followup:${String(await this.store.nextId("followup")).padStart(12, "0")}`, work);
  }

  async #act(content: Content, sender: string, device: number, events: ClientEvent[]): Promise<void> {
    const own = sender === this.accountId;
    const body = content.body;
    if (content.senderKeyDistribution.length > 0) {
      await this.#takeSenderKey(content, new ProtocolAddress(sender, device), events);
      if (body.case === undefined) return;
    }
    switch (body.case) {
      case "data": {
        if (own) throw new InvalidContent("a data message from our own account");
        // Its author's profile key: we may write back sealed (docs/spec/sealed-sender.md).
        if (body.value.profileKey.length > 0) await sealed.setContactProfileKey(this.store, sender, body.value.profileKey);
        let conversation = sender;
        const group = body.value.group;
        if (group !== undefined) {
          if (body.value.groupChange !== undefined) {
            await this.applyGroupChange(body.value.groupChange, sender, events);
            return;
          }
          const known = await this.group(group.id);
          if (known === undefined || !known.isMember(sender) || !known.isMember(this.accountId)) {
            events.push({ kind: "unsupported", sender, reason: "a message for a group we do not share" });
            return;
          }
          conversation = known.conversation;
        }
        const message = await this.#storeData(conversation, sender, device, body.value, false, "received", events);
        if (message !== undefined) {
          await this.#followUp({ kind: "receipt", account: sender, type: "delivery", timestamps: [message.timestamp] });
        }
        return;
      }
      case "sync": {
        if (!own) throw new InvalidContent("a sync message from another account");
        const sync = body.value.body;
        if (sync.case === "sent" && device < this.deviceId && (sync.value.message?.profileKey.length ?? 0) > 0) {
          // All our devices converge on the lowest device's profile key (docs/spec/sealed-sender.md).
          await sealed.adoptOwnProfileKey(this.store, sync.value.message!.profileKey);
        }
        if (sync.case === "sent" && sync.value.message !== undefined && sync.value.destination !== "") {
          await this.#storeData(sync.value.destination, this.accountId, device, sync.value.message, true, "sent", events);
          return;
        }
        if (sync.case === "sent" && sync.value.message?.group !== undefined) {
          // A group message or change we made on another device.
          const message = sync.value.message;
          if (message.groupChange !== undefined) {
            await this.applyGroupChange(message.groupChange, this.accountId, events);
            return;
          }
          const known = await this.group(message.group!.id);
          if (known === undefined || !known.isMember(this.accountId)) {
            events.push({ kind: "unsupported", sender, reason: "a copy for a group we are not in" });
            return;
          }
          await this.#storeData(known.conversation, this.accountId, device, message, true, "sent", events);
          return;
        }
        if (sync.case === "historyKeys") {
          // Another of our devices started a history epoch or turned server history on or off.
          try {
            await history.adopt(this.store, sync.value.historyOff ? undefined : sync.value, !sync.value.historyOff);
            await this.#followUp({ kind: "reseal" }); // the recovery blobs carry history's keys and state
          } catch (error) {
            if (!(error instanceof history.HistoryError)) throw error;
            events.push({ kind: "unsupported", sender, reason: `history keys: ${error.message}` });
          }
          return;
        }
        if (sync.case === "identityReset") {
          // Another of our devices replaced the account's identity key (./identity_adopt.ts).
          if (!(await adoptIdentityReset(this.store, sync.value))) {
            events.push({ kind: "unsupported", sender, reason: "a malformed identity reset" });
            return;
          }
          await this.#followUp({ kind: "republish" });
          await this.#followUp({ kind: "reseal" }); // the recovery blobs carry the identity key pair
          events.push({ kind: "identity_changed", account: this.accountId });
          return;
        }
        if (sync.case === "read") {
          await this.#readElsewhere(sync.value.messages.slice(0, 1000).map((m) => [m.author, num(m.timestamp)]), events);
          return;
        }
        events.push({ kind: "unsupported", sender, reason: `sync ${sync.case ?? "unknown"}` });
        return;
      }
      case "receipt": {
        const status: Status = body.value.type === ReceiptMessage_Type.READ ? "read" : "delivered";
        // Read receipts off on this device: others' are not shown either (./settings.ts).
        if (status === "read" && !(await receiptAllowed(this.store, "read"))) return;
        for (const ts of body.value.timestamps.slice(0, 1000)) {
          await this.#setStatus(sender, num(ts), status, events);
        }
        return;
      }
      case "nullMessage":
        return;
      case "typing":
        // Shown 1:1 only, and only while typing indicators are on here (./settings.ts).
        if (body.value.groupId.length === 0 && sender !== this.accountId && await typingShown(this.store)) {
          events.push({ kind: "typing", sender, started: body.value.action === TypingMessage_Action.STARTED });
        }
        return;
      case "decryptionError": {
        const error = body.value;
        if (error.deviceId !== device) throw new InvalidContent("a decryption error about another device");
        await this.#followUp({ kind: "resend", account: sender, device, timestamp: num(error.timestamp) });
        return;
      }
      default:
        events.push({ kind: "unsupported", sender, reason: body.case ?? "unknown body" });
    }
  }

  /** Store a data message unless one of that name exists (spec §4); undefined if dropped. */
  async #storeData(conversation: string, author: string, authorDevice: number, data: DataMessage, outgoing: boolean,
    status: Status, events: ClientEvent[]): Promise<StoredMessage | undefined> {
    if (isChange(data)) {
      await takeChange(this.store, conversation, author, authorDevice, data, this.clock(), events);
      return undefined;
    }
    const timer = await conversationTimer(this.store, conversation);
    if (data.group === undefined && data.expireTimerVersion > timer.version) {
      // (a group's timer is part of its signed state)
      await this.store.putJson(`timer:${conversation}`,
        { seconds: data.expireTimer, version: data.expireTimerVersion } satisfies ConversationTimer);
      if (data.expireTimer !== timer.seconds || data.expireTimerUpdate) {
        events.push({ kind: "timer", conversation, author, seconds: data.expireTimer });
      }
    }
    if (data.expireTimerUpdate) return undefined;
    const attachments = attachmentInfos(data);
    const timestamp = num(data.timestamp);
    const key = messageKey(conversation, timestamp, author);
    if ((await this.store.get(key)) !== undefined) return undefined;
    const message: StoredMessage = {
      conversation, author, authorDevice, timestamp, text: data.text.slice(0, MAX_TEXT), outgoing, status,
      receivedAt: this.clock(), ...(attachments.length > 0 ? { attachments } : {}),
      ...(data.expireTimer > 0 ? { expireTimer: data.expireTimer } : {}),
      ...(outgoing && data.expireTimer > 0 ? { expiresAt: timestamp + data.expireTimer * 1000 } : {}),
    };
    await this.store.putJson(key, message);
    if (outgoing) await this.store.putJson(`mine:${timestamp}`, key);
    await history.recordMessage(this.store, conversation, author, authorDevice, message.receivedAt, outgoing, data);
    const contactKey = `contact:${conversation}`;
    const contact = (await this.store.getJson<Contact>(contactKey))
      ?? { accountId: conversation, lastAt: 0, lastText: "", unread: 0 };
    contact.lastAt = Math.max(contact.lastAt, message.receivedAt);
    contact.lastText = message.text.slice(0, 200) || (attachments[0] ? `📎 ${attachments[0].fileName || "file"}` : "");
    if (!outgoing) contact.unread += 1;
    await this.store.putJson(contactKey, contact);
    events.push({ kind: "message", message });
    return message;
  }

  /** The group state this device holds, if any. */
  async group(groupId: Uint8Array): Promise<Group | undefined> {
    const state = await this.store.getJson<string>(`group:${toHex(groupId)}`);
    return state === undefined ? undefined : Group.fromBytes(fromHex(state));
  }

  /**
   * Store an accepted group state (and its entry in the conversation list). A change of
   * membership retires our sender key for it: a removed member must not read on.
   */
  async saveGroup(current: Group | undefined, next: Group): Promise<void> {
    const hex = toHex(next.id);
    await this.store.putJson(`group:${hex}`, toHex(next.stateBytes));
    await history.recordGroup(this.store, next);
    const members = (g: Group) => [...g.members.keys()].sort().join(",");
    if (current !== undefined && members(current) !== members(next)) await this.store.put(`gdist:${hex}`, null);
    await this.store.putJson(`timer:${next.conversation}`,
      { seconds: next.expireTimer, version: next.revision } satisfies ConversationTimer);
    const key = `contact:${next.conversation}`;
    const contact = (await this.store.getJson<Contact>(key))
      ?? { accountId: next.conversation, lastAt: this.clock(), lastText: "", unread: 0 };
    contact.username = next.title || "Group";
    await this.store.putJson(key, contact);
  }

  /** Verify and apply a group change sent by `sender` (docs/spec/groups.md). */
  async applyGroupChange(signed: SignedGroupChange, sender: string, events: ClientEvent[]): Promise<void> {
    try {
      const author = changeAuthor(signed);
      if (author !== sender) throw new GroupChangeRejected("a change must come from its author");
      const key = author === this.accountId ? this.store.getIdentityKeyPair().publicKey
        : await this.store.getIdentity(new ProtocolAddress(author, 1));
      if (key === undefined) throw new GroupChangeRejected("the author's identity key is unknown");
      const current = await this.group(changeGroupId(signed));
      const next = verifyChange(signed, current, key);
      if (current === undefined && !next.isMember(this.accountId)) {
        // Storing it would make the real group's changes fail to chain.
        throw new GroupChangeRejected("a group we are not a member of");
      }
      await this.saveGroup(current, next);
      events.push({ kind: "group", conversation: next.conversation, title: next.title });
    } catch (error) {
      if (!(error instanceof GroupChangeRejected)) throw error;
      events.push({ kind: "unsupported", sender, reason: `group change rejected: ${error.message}` });
    }
  }

  /**
   * A member's sender key, tied to the group it names for good. The group may not be
   * known yet (its change can arrive after another member's key); membership is checked
   * for each message.
   */
  async #takeSenderKey(content: Content, address: ProtocolAddress, events: ClientEvent[]): Promise<void> {
    if (content.senderKeyGroup.length !== GROUP_ID_BYTES) {
      events.push({ kind: "unsupported", sender: address.name, reason: "a sender key without its group" });
      return;
    }
    try {
      const distribution = SenderKeyDistributionMessage.parse(content.senderKeyDistribution);
      if (!(await this.store.bindSenderKey(address, distribution.distributionId, toHex(content.senderKeyGroup)))) {
        events.push({ kind: "unsupported", sender: address.name, reason: "a sender key already used for another group" });
        return;
      }
      await processDistributionMessage(this.store, address, content.senderKeyDistribution);
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      events.push({ kind: "unsupported", sender: address.name, reason: `bad sender key: ${error.kind}` });
    }
  }

  /** A group ciphertext must name the group its sender key was given for. */
  async #groupBound(content: Content, address: ProtocolAddress, ciphertext: Uint8Array,
    events: ClientEvent[]): Promise<boolean> {
    const body = content.body;
    const named = body.case === "data" && body.value.group !== undefined ? body.value.group.id
      : body.case === "typing" ? body.value.groupId : new Uint8Array(0);
    if (named.length === 0) {
      events.push({ kind: "unsupported", sender: address.name, reason: "a group ciphertext without a group" });
      return false;
    }
    const bound = await this.store.senderKeyGroup(address, SenderKeyMessage.parse(ciphertext).distributionId);
    if (bound !== toHex(named) || content.senderKeyDistribution.length > 0) {
      events.push({ kind: "unsupported", sender: address.name, reason: "a group ciphertext under another group's key" });
      return false;
    }
    return true;
  }

  /** Another of our devices showed these 1:1 messages: they are read here too. */
  async #readElsewhere(refs: [string, number][], events: ClientEvent[]): Promise<void> {
    const touched = new Map<string, number>();
    for (const [author, timestamp] of refs) {
      const key = messageKey(author, timestamp, author);
      const message = await this.store.getJson<StoredMessage>(key);
      if (message === undefined || message.outgoing || message.read === true) continue;
      message.read = true;
      startExpiry(message, this.clock());
      await this.store.putJson(key, message);
      touched.set(author, (touched.get(author) ?? 0) + 1);
    }
    for (const [conversation, count] of touched) {
      const contact = await this.store.getJson<Contact>(`contact:${conversation}`);
      if (contact === undefined) continue;
      contact.unread = Math.max(0, contact.unread - count);
      await this.store.putJson(`contact:${conversation}`, contact);
      events.push({ kind: "seen", conversation });
    }
  }

  async #setStatus(sender: string, timestamp: number, status: Status, events: ClientEvent[]): Promise<void> {
    // Our messages are named by their timestamp (spec §4): `mine:` finds group ones too.
    const key = (await this.store.getJson<string>(`mine:${timestamp}`)) ?? messageKey(sender, timestamp, this.accountId);
    const message = await this.store.getJson<StoredMessage>(key);
    if (message === undefined || !message.outgoing) return;
    if (message.conversation !== sender && !message.conversation.startsWith("group:")) return;
    const conversation = message.conversation;
    const next = advance(message.status, status);
    if (next === message.status) return;
    message.status = next;
    await this.store.putJson(key, message);
    events.push({ kind: "status", conversation, timestamp, status: next });
  }
}
