/**
 * The facade the web app uses: one Client is one device of one account, over an
 * encrypted DeviceStore. Mirrors cipherpost.client.Client for what the browser does so
 * far: register, reopen with the password, send and receive 1:1 text with delivery
 * state, safety numbers.
 */

import { create } from "@bufbuild/protobuf";

import { IdentityKeyPair } from "../protocol/keys.js";
import { Fingerprint } from "../protocol/fingerprint.js";
import { ProtocolAddress } from "../protocol/address.js";
import { systemRandom } from "../protocol/bytes.js";
import { RelayApi, RelayError, type Envelope } from "./api.js";
import { encodeContent, u64 } from "./content.js";
import { Inbox } from "./inbox.js";
import { DEFAULT_POLICY, newDeviceBody, newRegistrationId, type KeyPolicy } from "./keys.js";
import { messageKey, type ClientEvent, type Contact, type FollowUp, type StoredMessage } from "./model.js";
import { Outbox } from "./outbox.js";
import {
  ContentSchema, DataMessageSchema, ReceiptMessage_Type,
} from "./proto/cipherpost/app/v1/app_pb.js";
import { RelaySocket } from "./socket.js";
import { DEFAULT_PARAMS, type Argon2Params } from "./store/crypto.js";
import { DeviceStore } from "./store/device.js";
import type { Kv } from "./store/kv.js";

const USERNAME = /^[a-z0-9_][a-z0-9_.]{2,31}$/;

interface AccountRecord {
  accountId: string;
  deviceId: number;
  token: string;
  server: string;
  username: string;
}

/** A message sent from here, kept so a decryption error can be answered (spec §6). */
interface ResendEntry {
  account: string;
  data: string; // hex of the DataMessage's Content, padded
  at: number;
}

export const RESEND_LOG_MS = 24 * 3600 * 1000;

export interface ClientOptions {
  clock?: () => number;
  argon2?: Argon2Params;
  keys?: KeyPolicy;
}

function hex(data: Uint8Array): string {
  return Array.from(data, (b) => b.toString(16).padStart(2, "0")).join("");
}

function unhex(text: string): Uint8Array {
  return Uint8Array.from(text.match(/../g) ?? [], (h) => parseInt(h, 16));
}

export class Client {
  readonly api: RelayApi;
  readonly inbox: Inbox;
  readonly outbox: Outbox;
  readonly #listeners = new Set<(event: ClientEvent) => void>();
  #socket: RelaySocket | undefined;
  #stopped = true;
  #followUps: Promise<void> = Promise.resolve();
  #wake: (() => void) | undefined;

  private constructor(readonly store: DeviceStore, readonly account: AccountRecord, private readonly clock: () => number) {
    store.ownAccountId = account.accountId;
    this.api = new RelayApi(account.server, account.token);
    this.inbox = new Inbox(store, account.accountId, account.deviceId, clock);
    this.outbox = new Outbox(store, this.api, account.accountId, account.deviceId, clock);
  }

  get accountId(): string {
    return this.account.accountId;
  }

  get username(): string {
    return this.account.username;
  }

  toString(): string {
    return `Client(${this.account.username})`;
  }

  /**
   * A new account on `server` with this browser as its first device. Every key is made
   * and saved here first; only public keys leave.
   * @throws RangeError a bad username or password. @throws RelayError the relay refused.
   */
  static async register(kv: Kv, server: string, username: string, password: string,
    options: ClientOptions = {}): Promise<Client> {
    if (!USERNAME.test(username)) throw new RangeError("a username is 3-32 of a-z, 0-9, _ and . (not first)");
    if (password.length < 8) throw new RangeError("choose a password of at least 8 characters");
    const clock = options.clock ?? Date.now;
    const api = new RelayApi(server);
    const store = await DeviceStore.create(kv, password, options.argon2 ?? DEFAULT_PARAMS);
    const body = await store.transaction(() => newDeviceBody(store, IdentityKeyPair.generate(systemRandom),
      newRegistrationId(), clock(), options.keys ?? DEFAULT_POLICY));
    const credentials = await api.register({ ...body, username, name: "browser" });
    const account: AccountRecord = { ...credentials, server: api.server, username };
    await store.transaction(() => store.putJson("account", account));
    return new Client(store, account, clock);
  }

  /**
   * Reopen this browser's device. @throws NoStore, WrongKey, or NoStore when the store
   * was never registered.
   */
  static async open(kv: Kv, password: string, options: ClientOptions = {}): Promise<Client> {
    const store = await DeviceStore.open(kv, password);
    const account = await store.getJson<AccountRecord>("account");
    if (account === undefined) throw new RangeError("this browser's account was never registered");
    return new Client(store, account, options.clock ?? Date.now);
  }

  on(listener: (event: ClientEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #emit(events: ClientEvent[]): void {
    for (const event of events) {
      for (const listener of this.#listeners) {
        try {
          listener(event);
        } catch (error) {
          console.error("cipherpost: a listener failed:", (error as Error).message);
        }
      }
    }
  }

  // -- receiving ----------------------------------------------------------------------

  /** Keep a WebSocket open (reconnecting with back-off) and process what arrives. */
  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    void this.#connectLoop();
  }

  stop(): void {
    this.#stopped = true;
    this.#socket?.close();
    this.#wake?.();
  }

  async #connectLoop(): Promise<void> {
    let delay = 500;
    while (!this.#stopped) {
      let closedCode = 0;
      const closed = new Promise<void>((resolve) => {
        const socket: RelaySocket = new RelaySocket(this.api.server, this.account.token, {
          onEnvelopes: (envelopes): Promise<void> => this.#onEnvelopes(socket, envelopes),
          onClose: (code) => {
            closedCode = code;
            resolve();
          },
        });
        this.#socket = socket;
        socket.ready.then(() => {
          delay = 500;
          this.outbox.socket = socket;
          this.#emit([{ kind: "connection", online: true }]);
          this.#runFollowUps();
        }, () => undefined);
      });
      await closed;
      this.outbox.socket = undefined;
      this.#emit([{ kind: "connection", online: false }]);
      if (closedCode === 4401) {
        this.#stopped = true;
        console.warn("cipherpost: the relay refused this device (removed?)");
        return;
      }
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        setTimeout(resolve, delay + Math.random() * delay / 2);
      });
      delay = Math.min(delay * 2, 30_000);
    }
  }

  async #onEnvelopes(socket: RelaySocket, envelopes: Envelope[]): Promise<void> {
    const done: string[] = [];
    try {
      for (const envelope of envelopes) {
        const { events } = await this.inbox.process(envelope);
        done.push(envelope.id);
        this.#emit(events);
      }
    } finally {
      socket.ack(done);
      this.#runFollowUps();
    }
  }

  /** Drain the queue over HTTP (without a socket). */
  async receive(): Promise<ClientEvent[]> {
    const all: ClientEvent[] = [];
    for (;;) {
      const { envelopes, more } = await this.api.fetch();
      const done: string[] = [];
      for (const envelope of envelopes) {
        all.push(...(await this.inbox.process(envelope)).events);
        done.push(envelope.id);
      }
      if (done.length > 0) await this.api.ack(done);
      if (!more) break;
    }
    this.#emit(all);
    await this.#runFollowUps();
    return all;
  }

  #runFollowUps(): Promise<void> {
    this.#followUps = this.#followUps.then(async () => {
      for (const [key, work] of await this.store.scanJson<FollowUp>("followup:")) {
        try {
          await this.#followUp(work);
        } catch (error) {
          if (!(error instanceof RelayError) || error.status >= 500 || error.status === 429) {
            console.warn("cipherpost: follow-up postponed:", (error as Error).name);
            return; // try again on the next connection
          }
          console.warn("cipherpost: follow-up dropped:", error.code);
        }
        await this.store.transaction(() => this.store.put(key, null));
      }
    }).catch((error) => console.warn("cipherpost: follow-ups failed:", (error as Error).name));
    return this.#followUps;
  }

  async #followUp(work: FollowUp): Promise<void> {
    const nullContent = encodeContent(create(ContentSchema, { body: { case: "nullMessage", value: {} } }));
    switch (work.kind) {
      case "receipt": {
        const content = create(ContentSchema, { body: { case: "receipt", value: {
          type: work.type === "read" ? ReceiptMessage_Type.READ : ReceiptMessage_Type.DELIVERY,
          timestamps: work.timestamps.map(u64) } } });
        await this.outbox.deliver(work.account, encodeContent(content), this.#timestamp());
        return;
      }
      case "decryption_error": {
        // A fresh session from the sender device's bundle (a PreKey message under our
        // identity key), then "I could not decrypt what you sent at <timestamp>".
        await this.outbox.startSession(work.account, work.device);
        const content = create(ContentSchema, { body: { case: "decryptionError", value: {
          timestamp: u64(work.timestamp), deviceId: this.account.deviceId } } });
        await this.outbox.deliver(work.account, encodeContent(content), this.#timestamp(),
          { onlyDevice: work.device, filler: nullContent });
        return;
      }
      case "resend": {
        const entry = await this.store.getJson<ResendEntry>(`resend:${work.timestamp}`);
        if (entry === undefined || entry.account !== work.account || this.clock() - entry.at > RESEND_LOG_MS) {
          this.#emit([{ kind: "resend_unavailable", sender: work.account, timestamp: work.timestamp }]);
          return;
        }
        await this.outbox.deliver(work.account, unhex(entry.data), work.timestamp,
          { onlyDevice: work.device, filler: nullContent });
        return;
      }
    }
  }

  // -- sending ------------------------------------------------------------------------

  /** Strictly increasing millisecond timestamps for this device (spec §4). */
  #lastTimestamp = 0;

  #timestamp(): number {
    this.#lastTimestamp = Math.max(this.clock(), this.#lastTimestamp + 1);
    return this.#lastTimestamp;
  }

  /**
   * The account id of `username` (remembered as a contact).
   * @throws RelayError 404 when nobody has that username.
   */
  async lookup(username: string): Promise<string> {
    const name = username.trim().toLowerCase();
    if (!USERNAME.test(name)) throw new RangeError("not a username");
    const accountId = await this.api.lookupUsername(name);
    await this.store.transaction(async () => {
      const contact = (await this.store.getJson<Contact>(`contact:${accountId}`))
        ?? { accountId, lastAt: this.clock(), lastText: "", unread: 0 };
      contact.username = name;
      await this.store.putJson(`contact:${accountId}`, contact);
    });
    return accountId;
  }

  /**
   * Send `text` to every device of `conversation` (an account id) and a copy to our
   * other devices; returns the stored message with its final status ("sent" or "failed").
   * @throws IdentityNotTrusted the contact's key changed and was not accepted.
   */
  async sendText(conversation: string, text: string): Promise<StoredMessage> {
    if (conversation === this.accountId) throw new RangeError("notes to self come later");
    if (text.length === 0 || text.length > 16 * 1024) throw new RangeError("a message is 1 to 16384 characters");
    await this.#lastTimestampLoaded();
    const timestamp = this.#timestamp();
    const data = create(DataMessageSchema, { timestamp: u64(timestamp), text });
    const plaintext = encodeContent(create(ContentSchema, { body: { case: "data", value: data } }));
    const message: StoredMessage = {
      conversation, author: this.accountId, authorDevice: this.account.deviceId, timestamp, text,
      outgoing: true, status: "sending", receivedAt: timestamp,
    };
    const key = messageKey(conversation, timestamp, this.accountId);
    const record = async () => {
      await this.store.putJson(key, message);
      await this.store.putJson("last_timestamp", timestamp);
      await this.store.putJson(`resend:${timestamp}`, { account: conversation, data: hex(plaintext), at: timestamp });
      const contact = (await this.store.getJson<Contact>(`contact:${conversation}`))
        ?? { accountId: conversation, lastAt: 0, lastText: "", unread: 0 };
      contact.lastAt = timestamp;
      contact.lastText = text.slice(0, 200);
      await this.store.putJson(`contact:${conversation}`, contact);
    };
    let status: "sent" | "failed" = "sent";
    let failure: unknown;
    try {
      await this.outbox.deliver(conversation, plaintext, timestamp, { record });
      const sync = create(ContentSchema, { body: { case: "sync", value: {
        body: { case: "sent", value: { destination: conversation, message: data } } } } });
      await this.outbox.deliver(this.accountId, encodeContent(sync), timestamp);
    } catch (error) {
      status = "failed";
      failure = error;
    }
    await this.store.transaction(async () => {
      const stored = await this.store.getJson<StoredMessage>(key);
      if (stored === undefined) return;
      stored.status = stored.status === "sending" ? status : stored.status;
      await this.store.putJson(key, stored);
      message.status = stored.status;
    });
    this.#emit([{ kind: "status", conversation, timestamp, status: message.status }]);
    if (failure !== undefined && (await this.store.get(key)) === undefined) throw failure;
    return message;
  }

  async #lastTimestampLoaded(): Promise<void> {
    if (this.#lastTimestamp === 0) this.#lastTimestamp = (await this.store.getJson<number>("last_timestamp")) ?? 0;
  }

  // -- reading ------------------------------------------------------------------------

  /** Conversations, the most recent first. */
  async conversations(): Promise<Contact[]> {
    const contacts = (await this.store.scanJson<Contact>("contact:")).map(([, c]) => c);
    return contacts.sort((a, b) => b.lastAt - a.lastAt);
  }

  async contact(accountId: string): Promise<Contact | undefined> {
    return this.store.getJson<Contact>(`contact:${accountId}`);
  }

  /** A conversation's messages in display order (timestamp, then arrival). */
  async messages(conversation: string): Promise<StoredMessage[]> {
    const messages = (await this.store.scanJson<StoredMessage>(`msg:${conversation}:`)).map(([, m]) => m);
    return messages.sort((a, b) => a.timestamp - b.timestamp || a.receivedAt - b.receivedAt);
  }

  async markSeen(conversation: string): Promise<void> {
    await this.store.transaction(async () => {
      const contact = await this.store.getJson<Contact>(`contact:${conversation}`);
      if (contact === undefined || contact.unread === 0) return;
      contact.unread = 0;
      await this.store.putJson(`contact:${conversation}`, contact);
    });
  }

  /**
   * Our safety number with `account`: 60 digits, or undefined before its identity key
   * is known (after one message either way).
   */
  async safetyNumber(account: string): Promise<{ digits: string; verified: boolean; changed: boolean } | undefined> {
    const trust = await this.store.getTrust(account);
    const theirs = await this.store.getIdentity(new ProtocolAddress(account, 1));
    if (trust === undefined || theirs === undefined) return undefined;
    const encoder = new TextEncoder();
    const fingerprint = Fingerprint.create(encoder.encode(this.accountId), this.store.getIdentityKeyPair().publicKey,
      encoder.encode(account), theirs);
    return { digits: fingerprint.displayable, verified: trust.verified, changed: trust.changed };
  }

  /** Accept the contact's current key (after comparing safety numbers: `verified`). */
  async trust(account: string, verified: boolean): Promise<void> {
    await this.store.transaction(() => this.store.trustIdentity(account, verified));
  }
}
