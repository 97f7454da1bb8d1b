/**
 * The facade the web app uses: one Client is one device of one account, over an
 * encrypted DeviceStore. Mirrors cipherpost.client.Client for what the browser does so
 * far: register, reopen with the password, send and receive 1:1 text with delivery
 * state, safety numbers.
 */

import { create, type MessageInitShape } from "@bufbuild/protobuf";

import { IdentityKeyPair, PublicKey } from "../protocol/keys.js";
import { Fingerprint } from "../protocol/fingerprint.js";
import { ProtocolAddress } from "../protocol/address.js";
import { fromHex, systemRandom } from "../protocol/bytes.js";
import { RelayApi, RelayError, RelayUnavailable, type DeviceInfo, type Envelope } from "./api.js";
import { decodeContent, encodeContent, u64 } from "./content.js";
import * as archive from "./archive.js";
import * as history from "./history.js";
import { blobBound, decryptAttachment, encryptAttachment } from "./attachments.js";
import { changeKind, forgetMessage, takeChange } from "./changes.js";
import { LinkError } from "./linking.js";
import {
  ADMIN, editedState, encodeState, Group, GROUP_ID_BYTES, GroupChangeRejected, type GroupEdit, groupTitle, MEMBER, signChange,
  verifyChange,
} from "./groups.js";
import { Inbox } from "./inbox.js";
import { DEFAULT_POLICY, KeyUpkeep, newDeviceBody, newRegistrationId, type KeyPolicy } from "./keys.js";
import { actionFields, type MessageAction, type MessageName } from "./message_actions.js";
import { reactionsOf } from "./reactions.js";
import { resealRecovery } from "./recovery_secrets.js";
import {
  advance, conversationTimer, messageKey, queueKey, startExpiry, type AttachmentInfo, type ClientEvent,
  type ConversationTimer, type Contact, type FollowUp, type QueuedSend, type Status,
  type StoredMessage,
} from "./model.js";
import type { AccountNotice } from "./notices.js";
import { Outbox } from "./outbox.js";
import { applyDefaultTimer } from "./retention.js";
import * as sealed from "./sealed.js";
import { receiptAllowed } from "./settings.js";
import {
  ContentSchema, DataMessageSchema, GroupContextSchema, ReceiptMessage_Type, type DataMessage, type GroupState_Role,
  type ProvisionMessage,
} from "./proto/cipherpost/app/v1/app_pb.js";
import type { SecondFactorPrompt } from "./second_factor.js";
import { RelaySocket, SocketLost } from "./socket.js";
import { DEFAULT_PARAMS, type Argon2Params, type LocalKey } from "./store/crypto.js";
import { DeviceStore } from "./store/device.js";
import type { Kv } from "./store/kv.js";
import { withdraw, withdrawAccount } from "./withdraw.js";

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
/** At most this many recent messages answer a request that names no message (timestamp 0). */
export const RECENT_RESENDS = 20;

export interface ClientOptions {
  clock?: () => number;
  argon2?: Argon2Params;
  keys?: KeyPolicy;
  /** An invite code from the relay's operators, for a relay that registers by invitation. */
  invite?: string;
}

function hex(data: Uint8Array): string {
  return Array.from(data, (b) => b.toString(16).padStart(2, "0")).join("");
}

function unhex(text: string): Uint8Array {
  return Uint8Array.from(text.match(/../g) ?? [], (h) => parseInt(h, 16));
}

/** Worth trying again later: no connection, or the relay is busy or failing. */
export function isTransient(error: unknown): boolean {
  if (error instanceof RelayUnavailable || error instanceof SocketLost) return true;
  return error instanceof RelayError && (error.status >= 500 || error.status === 429);
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
  /** Prekey replenishing and rotation (./keys.ts), at each connection and after PreKey messages. */
  readonly keyUpkeep: KeyUpkeep;
  /** When the relay's copy of our access key was last checked or registered (ms); undefined: not since this page loaded. */
  #accessChecked: number | undefined;

  private constructor(readonly store: DeviceStore, readonly account: AccountRecord, private readonly clock: () => number) {
    store.ownAccountId = account.accountId;
    this.api = new RelayApi(account.server, account.token);
    this.inbox = new Inbox(store, account.accountId, account.deviceId, clock);
    this.outbox = new Outbox(store, this.api, account.accountId, account.deviceId, clock);
    this.keyUpkeep = new KeyUpkeep(this.api, store, clock);
    // A contact's access key refused (401): the relay may have lost every key, ours too.
    this.outbox.afterSealedRefused = () => this.sealedSenderUpkeep(sealed.ACCESS_KEY_RECHECK_MS);
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
   * @throws JoinUndone the account could not be stored after the relay made it (it is
   * deleted again, ./withdraw.ts).
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
    const invite = options.invite?.trim();
    // The relay's sealed-sender root, pinned now (docs/spec/sealed-sender.md); a relay
    // without sealed sender is pinned on first use by the upkeep instead.
    const root = await api.trustRoot().then((r) => r.trustRoot, () => undefined);
    const credentials = await api.register({ ...body, username, name: "browser", ...(invite ? { invite } : {}) });
    const account: AccountRecord = { ...credentials, server: api.server, username };
    await store.transaction(async () => {
      await store.putJson("account", account);
      await sealed.ownProfileKey(store); // the account's, shared with its contacts
      if (root !== undefined) await sealed.pinTrustRoot(store, root);
    }).catch((error: unknown) => withdrawAccount(api.server, credentials, username, error)); // no orphan account
    return new Client(store, account, clock);
  }

  /**
   * Join the account a provisioning message names as a new device of it (this browser):
   * a store under `password` with the account's identity key pair and new device keys,
   * the link code spent at the relay, the contacts (keys, trust) and groups taken over,
   * then the one-time archive of the conversations replayed with `progress` (mirrors
   * cipherpost.client.devices._join). The archive resumes on the next unlock if the
   * page is closed meanwhile.
   * @throws LinkError a malformed message. @throws RelayError the link code was refused.
   * @throws JoinUndone the account could not be stored after the relay took the device
   * (./withdraw.ts: it is removed again).
   */
  static async link(kv: Kv, server: string, password: string, message: ProvisionMessage,
    options: ClientOptions & { progress?: (done: number, total: number) => void;
      historyProgress?: (entries: number, fraction: number) => void;
      /** Join by recovery (src/app/recovery.ts) instead of the message's link code: where, and with what. */
      join?: { path: string; fields: Record<string, string>; secondFactor?: SecondFactorPrompt };
      /** What the caller stores with the account, in the same unit (./withdraw.ts: all or nothing). */
      keep?: (store: DeviceStore) => Promise<void> } = {}): Promise<Client> {
    if (password.length < 8) throw new RangeError("choose a password of at least 8 characters");
    let identity: IdentityKeyPair;
    try {
      identity = IdentityKeyPair.deserialize(message.identityKeyPair);
    } catch {
      throw new LinkError("the provisioning message is malformed");
    }
    const clock = options.clock ?? Date.now;
    const api = new RelayApi(server);
    api.secondFactor = options.join?.secondFactor; // a joining route the relay guards with the second factor
    const store = await DeviceStore.create(kv, password, options.argon2 ?? DEFAULT_PARAMS);
    const body = await store.transaction(() => newDeviceBody(store, identity, newRegistrationId(), clock(),
      options.keys ?? DEFAULT_POLICY));
    const credentials = await api.linkDevice({ ...body, ...(options.join?.fields ?? { link_code: message.linkCode }),
      name: "browser" }, options.join?.path);
    if (credentials.accountId !== message.accountId) {
      await withdraw(api.server, credentials, new LinkError("the link code joined another account than announced"));
    }
    const account: AccountRecord = { ...credentials, server: api.server, username: message.username };
    await store.transaction(async () => {
      await store.putJson("account", account);
      // Sealed sender: the account's profile key (this device makes none of its own) and
      // the root the existing device pinned, over what the relay would answer.
      if (message.profileKey.length === sealed.PROFILE_KEY_BYTES) await sealed.adoptOwnProfileKey(store, message.profileKey);
      else await sealed.awaitProfileKey(store);
      if (message.trustRoot.length === 33) {
        try {
          await sealed.pinTrustRoot(store, PublicKey.deserialize(message.trustRoot));
        } catch {
          // a malformed root: pinned on first use instead, as for an old store
        }
      }
      for (const contact of message.contacts) {
        if (contact.accountId === account.accountId || contact.identityKey.length !== 33) continue;
        await sealed.setContactProfileKey(store, contact.accountId, contact.profileKey);
        await store.putJson(`trust:${contact.accountId}`,
          { key: hex(contact.identityKey), verified: contact.verified, changed: contact.sendBlocked });
        if (contact.username !== "") {
          const existing = await store.getJson<Contact>(`contact:${contact.accountId}`);
          await store.putJson(`contact:${contact.accountId}`,
            { ...(existing ?? { accountId: contact.accountId, lastAt: 0, lastText: "", unread: 0 }), username: contact.username });
        }
      }
      // Server-stored history: the account's keys, to read the log and add to it.
      if (message.historyKeys !== undefined) {
        await history.adopt(store, message.historyKeys, message.historyEnabled);
        if (message.historyEnabled) await history.markReplayPending(store);
      }
      for (const state of message.groupStates) {
        try {
          const group = Group.fromBytes(state);
          await store.putJson(`group:${hex(group.id)}`, hex(group.stateBytes));
          await store.putJson(`contact:${group.conversation}`,
            { accountId: group.conversation, username: group.title || "Group", lastAt: 0, lastText: "", unread: 0 });
        } catch {
          // a malformed state is skipped, as in the SDK
        }
      }
      // The archive's reference too: stored with the account, the next unlock resumes it.
      if (message.archive !== undefined) await archive.keep(store, message.archive);
      await options.keep?.(store);
    }).catch((error: unknown) => withdraw(api.server, credentials, error)); // no account stored: no orphan device
    const client = new Client(store, account, clock);
    if (message.historyEnabled && message.historyKeys !== undefined) {
      try {
        await client.restoreHistory(options.historyProgress);
      } catch (error) {
        // the position is kept: Client.restoreHistory goes on from there
        console.warn("cipherpost: the server-stored history is not complete yet:", (error as Error).name);
      }
    }
    if (message.archive !== undefined) {
      try {
        await client.takeArchive(options.progress);
      } catch (error) {
        // kept: the next unlock resumes where this stopped
        console.warn("cipherpost: the history archive is not complete yet:", (error as Error).name);
      }
    }
    return client;
  }

  /**
   * Read the account's server-stored history from where this device stopped
   * (docs/spec/history.md); `progress(entries read, fraction of the relay's bytes)`.
   */
  async restoreHistory(progress?: (entries: number, fraction: number) => void): Promise<history.Replayed> {
    return history.download(this.api, this.store, this.clock(), progress);
  }

  /** Go on replaying the server-stored history where an interrupted link or recovery stopped; new messages. */
  async resumeHistory(progress?: (entries: number, fraction: number) => void): Promise<number> {
    if (!(await history.replayPending(this.store))) return 0;
    return (await this.restoreHistory(progress)).messages;
  }

  #historyFlush: Promise<void> = Promise.resolve();

  /** Upload the queued history entries (one run at a time; what fails stays queued). */
  flushHistory(): Promise<void> {
    this.#historyFlush = this.#historyFlush.then(() => history.flush(this.api, this.store)).then(() => undefined, (error) => {
      console.warn("cipherpost: history upload postponed:", (error as Error).name);
    });
    return this.#historyFlush;
  }

  /** Replay what is left of the archive this device was linked with (progress: events). */
  async takeArchive(progress?: (done: number, total: number) => void): Promise<number> {
    return archive.receive(this.api, this.store, this.clock(), progress);
  }

  /**
   * Reopen this browser's device. @throws NoStore, WrongKey, or NoStore when the store
   * was never registered.
   */
  static async open(kv: Kv, password: string | LocalKey, options: ClientOptions = {}): Promise<Client> {
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
      if (event.kind === "message" || event.kind === "seen") this.#expiryDirty = true;
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
          // A new connection: the relay may have restarted from a restore.
          void this.sealedSenderUpkeep(sealed.ACCESS_KEY_RECHECK_MS);
          void this.keyUpkeep.connected();
          void this.#runFollowUps();
          void this.flushQueue();
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
      void this.keyUpkeep.received(envelopes.map((e) => e.type));
      this.#runFollowUps();
      // A connection may stay open for days: the daily access-key and hourly revocation
      // checks run here too (store reads only unless one is due).
      void this.sealedSenderUpkeep();
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
      await this.keyUpkeep.received(envelopes.map((e) => e.type));
      if (!more) break;
    }
    this.#emit(all);
    await this.#runFollowUps();
    return all;
  }

  #runFollowUps(): Promise<void> {
    void this.flushHistory(); // what the last envelopes stored
    this.#followUps = this.#followUps.then(async () => {
      for (const [key, work] of await this.store.scanJson<FollowUp>("followup:")) {
        try {
          await this.#followUp(work);
        } catch (error) {
          if (isTransient(error)) {
            console.warn("cipherpost: follow-up postponed:", (error as Error).name);
            return; // try again on the next connection
          }
          console.warn("cipherpost: follow-up dropped:", (error as Error).name);
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
        if (!(await receiptAllowed(this.store, work.type))) return; // turned off on this device (./settings.ts)
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
      case "republish":
        await this.keyUpkeep.republish();
        return;
      case "reseal":
        await resealRecovery(this); // when this browser holds recovery secrets (./recovery_secrets.ts)
        return;
      case "sync_read": {
        const content = create(ContentSchema, { body: { case: "sync", value: { body: { case: "read", value: {
          messages: work.messages.map((m) => ({ author: m.author, timestamp: u64(m.timestamp) })) } } } } });
        await this.outbox.deliver(this.accountId, encodeContent(content), this.#timestamp());
        return;
      }
      case "resend": {
        if (work.timestamp === 0) {
          await this.#resendRecent(work.account, work.device, nullContent);
          return;
        }
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

  // -- sealed sender ------------------------------------------------------------------

  /**
   * Pin the relay's trust root if none is (a store from before sealed sender: trust on
   * first use), fetch the server key ids the relay revoked (hourly), and register the
   * account's unidentified-access key, which also tells the relay that this device opens
   * sealed envelopes, again once a day (a relay restored from an older backup may have
   * lost it). In between, when the relay's copy was not checked for `checkAfterMs`, it
   * is checked (one read) and the key registered again if the relay lost it or no longer
   * marks this device: contacts' sealed sends get 401 meanwhile, which only they see. A
   * device with no profile key makes one, except a linked one, which waits for the
   * account's. Failures are retried at the next connection. Mirrors
   * Client.sealed_sender_upkeep.
   */
  async sealedSenderUpkeep(checkAfterMs = sealed.ACCESS_KEY_CHECK_MS): Promise<void> {
    try {
      const now = this.clock();
      if ((await sealed.trustRoot(this.store)) === undefined || (await sealed.revocationsDue(this.store, now))) {
        const served = await this.api.trustRoot();
        await this.store.transaction(async () => {
          let pinned = await sealed.trustRoot(this.store);
          if (pinned === undefined) {
            await sealed.pinTrustRoot(this.store, served.trustRoot);
            pinned = served.trustRoot;
          }
          // A list for another root than ours says nothing about our certificates.
          await sealed.addRevokedKeyIds(this.store, pinned.equals(served.trustRoot) ? served.revoked : [], now);
        });
      }
      const due = await sealed.accessKeyDue(this.store, now);
      const checked = this.#accessChecked;
      const check = !due && (checked === undefined || !(now - checked >= 0 && now - checked < checkAfterMs));
      if (!due && !check) return;
      const key = await this.store.transaction(async () => {
        const known = await sealed.knownOwnProfileKey(this.store);
        if (known !== undefined || !(await sealed.mayMakeProfileKey(this.store))) return known;
        return sealed.ownProfileKey(this.store);
      });
      if (key === undefined) return;
      if (check) {
        const { held, marked } = await this.api.accessKeyState();
        this.#accessChecked = now;
        if (marked && await sealed.accessKeyHeld(key, held)) return;
        console.info("cipherpost: the relay lost the access key or this device's mark: registering it again");
      }
      await this.api.setAccessKey(await sealed.accessKey(key));
      await this.store.transaction(() => sealed.markAccessKeyRegistered(this.store, now));
      this.#accessChecked = this.clock();
    } catch (error) {
      console.info("cipherpost: sealed sender set-up postponed:", (error as Error).name);
    }
  }

  /** Our profile key for a DataMessage we write (empty while a linked device waits for it). */
  async #profileKey(): Promise<Uint8Array<ArrayBuffer>> {
    const key = await sealed.knownOwnProfileKey(this.store);
    return key === undefined ? new Uint8Array(0) : new Uint8Array(key);
  }

  /**
   * A sealed envelope of ours failed to decrypt (it carries no client timestamp): resend
   * what we sent that contact lately, to that device only; it drops the copies it holds
   * (spec §4). Each message goes at most once to a device this way, so a contact
   * repeating the request cannot make us encrypt and send 20 messages for each of its
   * own. Mirrors Client._resend.
   */
  async #resendRecent(account: string, device: number, filler: Uint8Array): Promise<void> {
    if (account === this.accountId) return;
    const mark = `resent_recent:${account}.${device}`;
    const since = (await this.store.getJson<number>(mark)) ?? 0;
    const now = this.clock();
    const recent = (await this.store.scanJson<ResendEntry>("resend:"))
      .map(([key, entry]) => [Number(key.slice("resend:".length)), entry] as const)
      .filter(([at, entry]) => entry.account === account && at > since && now - entry.at <= RESEND_LOG_MS)
      .sort((a, b) => a[0] - b[0])
      .slice(-RECENT_RESENDS);
    if (recent.length === 0) {
      this.#emit([{ kind: "resend_unavailable", sender: account, timestamp: 0 }]);
      return;
    }
    for (const [at, entry] of recent) {
      await this.outbox.deliver(account, unhex(entry.data), at, { onlyDevice: device, filler });
    }
    await this.store.transaction(() => this.store.putJson(mark, recent[recent.length - 1]![0]));
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
   * other devices. The message is stored first, with a queue entry, so what is typed
   * offline is kept and sent once the relay can be reached again (`flushQueue`, run on
   * every reconnection). Returns the stored message with its status: "sent", "failed",
   * or "sending" while it waits for the connection.
   * @throws IdentityNotTrusted the contact's key changed and was not accepted (the
   * message stays, marked "not sent").
   */
  async sendText(conversation: string, text: string, attachments: AttachmentInfo[] = []): Promise<StoredMessage> {
    if (conversation === this.accountId) throw new RangeError("notes to self come later");
    if ((text.length === 0 && attachments.length === 0) || text.length > 16 * 1024) {
      throw new RangeError("a message is 1 to 16384 characters");
    }
    const group = await this.#sendingGroup(conversation);
    await applyDefaultTimer(this, conversation); // a new 1:1 conversation: the default timer first (./retention.ts)
    await this.#lastTimestampLoaded();
    const timestamp = this.#timestamp();
    const timer = await conversationTimer(this.store, conversation);
    const data = await this.#newData(timestamp, timer, group, { text,
      attachments: attachments.map((a) => ({ id: a.id, key: fromHex(a.key), digest: fromHex(a.digest), size: u64(a.size),
        contentType: a.contentType, fileName: a.fileName, caption: a.caption })) });
    const plaintext = encodeContent(create(ContentSchema, { body: { case: "data", value: data } }));
    const message: StoredMessage = {
      conversation, author: this.accountId, authorDevice: this.account.deviceId, timestamp, text,
      outgoing: true, status: "sending", receivedAt: timestamp, ...(attachments.length > 0 ? { attachments } : {}),
      ...(timer.seconds > 0 ? { expireTimer: timer.seconds, expiresAt: timestamp + timer.seconds * 1000 } : {}),
    };
    this.#expiryDirty = true;
    const key = messageKey(conversation, timestamp, this.accountId);
    await this.store.transaction(async () => {
      await this.store.putJson(key, message);
      await this.store.putJson(`mine:${timestamp}`, key);
      await history.recordMessage(this.store, conversation, this.accountId, this.account.deviceId, timestamp, true, data);
      await this.store.putJson(`resend:${timestamp}`, { account: conversation, data: hex(plaintext), at: timestamp });
      await this.#enqueue(conversation, timestamp, plaintext);
      const contact = (await this.store.getJson<Contact>(`contact:${conversation}`))
        ?? { accountId: conversation, lastAt: 0, lastText: "", unread: 0 };
      contact.lastAt = timestamp;
      contact.lastText = text.slice(0, 200) || `📎 ${attachments[0]?.fileName || "file"}`;
      await this.store.putJson(`contact:${conversation}`, contact);
    });
    const failures = await this.flushQueue();
    void this.flushHistory();
    const stored = await this.store.getJson<StoredMessage>(key);
    const failure = failures.get(timestamp);
    if (failure !== undefined) throw failure;
    return stored ?? message;
  }

  /** React to the message `target` of `conversation` with `emoji` (replacing our earlier one), or with `remove` take ours back (Client.react). */
  async react(conversation: string, target: MessageName, emoji: string, remove = false): Promise<void> {
    await this.#sendAction(conversation, { kind: "react", target, emoji, remove });
  }

  /** Replace the text of our message sent at `timestamp` on every device of both sides (Client.edit). */
  async editMessage(conversation: string, timestamp: number, text: string): Promise<void> {
    await this.#sendAction(conversation, { kind: "edit", timestamp, text });
  }

  /** Delete our message sent at `timestamp` on every device of both sides (Client.delete_for_everyone). */
  async deleteForEveryone(conversation: string, timestamp: number): Promise<void> {
    await this.#sendAction(conversation, { kind: "delete", timestamp });
  }

  /**
   * Check an action on a message (./message_actions.ts), apply it here and record it in
   * the server-stored history as our other devices do its sync copy (./changes.ts), in
   * one unit with its queue entry; then send it like any message of ours (members, then
   * the copy for our other devices). Offline, it waits in the queue, applied already.
   * @throws RangeError not allowed (see actionFields). @throws what refused the send.
   */
  async #sendAction(conversation: string, action: MessageAction): Promise<void> {
    if (conversation === this.accountId) throw new RangeError("notes to self come later");
    const group = await this.#sendingGroup(conversation);
    await this.#lastTimestampLoaded();
    const timestamp = this.#timestamp();
    const events: ClientEvent[] = [];
    await this.store.transaction(async () => {
      const fields = await actionFields(this.store, this.accountId, conversation, action);
      const data = await this.#newData(timestamp, await conversationTimer(this.store, conversation), group, fields);
      await takeChange(this.store, conversation, this.accountId, this.account.deviceId, data, timestamp, events);
      await this.#enqueue(conversation, timestamp,
        encodeContent(create(ContentSchema, { body: { case: "data", value: data } })));
    });
    this.#emit(events);
    const failures = await this.flushQueue();
    void this.flushHistory();
    const failure = failures.get(timestamp);
    if (failure !== undefined) throw failure;
  }

  /** The group `conversation` is (we must be in it), or undefined for a 1:1 conversation. */
  async #sendingGroup(conversation: string): Promise<Group | undefined> {
    if (!conversation.startsWith("group:")) return undefined;
    const group = await this.inbox.group(fromHex(conversation.slice(6)));
    if (group === undefined || !group.isMember(this.accountId)) throw new RangeError("you are not in this group");
    return group;
  }

  /** A DataMessage of ours with `fields`: the conversation's timer, our profile key, the group (the SDK's _new_data). */
  async #newData(timestamp: number, timer: ConversationTimer, group: Group | undefined,
    fields: MessageInitShape<typeof DataMessageSchema>): Promise<DataMessage> {
    const data = create(DataMessageSchema, fields);
    data.timestamp = u64(timestamp);
    data.profileKey = await this.#profileKey();
    data.expireTimer = timer.seconds;
    data.expireTimerVersion = timer.version;
    if (group !== undefined) data.group = create(GroupContextSchema, { id: group.id, revision: u64(group.revision) });
    return data;
  }

  /** Queue the padded Content of our message sent at `timestamp` (inside the caller's unit; flushQueue sends it). */
  async #enqueue(conversation: string, timestamp: number, plaintext: Uint8Array): Promise<void> {
    await this.store.putJson("last_timestamp", timestamp);
    await this.store.putJson(queueKey(timestamp),
      { conversation, timestamp, data: hex(plaintext), stage: "members" } satisfies QueuedSend);
  }

  #flushing: Promise<Map<number, unknown>> = Promise.resolve(new Map());

  /**
   * Send what waits in the queue, oldest first. It stops at the first message the relay
   * cannot be reached for (the rest keep their order until the next try); a message the
   * relay or the contact's changed key refuses is marked "failed" and leaves the queue.
   * Resolves with the refusals of this run by timestamp.
   */
  flushQueue(): Promise<Map<number, unknown>> {
    this.#flushing = this.#flushing.then(() => this.#flush(), () => this.#flush());
    return this.#flushing;
  }

  async #flush(): Promise<Map<number, unknown>> {
    const failures = new Map<number, unknown>();
    for (const [qkey, entry] of await this.store.scanJson<QueuedSend>("outq:")) {
      const { conversation, timestamp } = entry;
      const key = messageKey(conversation, timestamp, this.accountId);
      let stage = entry.stage;
      try {
        const group = conversation.startsWith("group:") ? await this.inbox.group(fromHex(conversation.slice(6))) : undefined;
        if (stage === "members") {
          if (group !== undefined) {
            // Marked once the relay took it for a member: a deletion for everyone then
            // no longer drops it from the queue (./changes.ts, dropUnsent).
            await this.outbox.sendGroup(group, unhex(entry.data), timestamp, async () => {
              if (entry.reached === true) return;
              entry.reached = true;
              await this.store.transaction(async () => {
                if ((await this.store.get(qkey)) !== undefined) await this.store.putJson(qkey, entry);
              });
            });
          } else if (conversation.startsWith("group:")) throw new RangeError("you are not in this group");
          else await this.outbox.deliver(conversation, unhex(entry.data), timestamp);
          await this.store.transaction(async () => {
            // (not again if a deletion for everyone dropped it meanwhile)
            if ((await this.store.get(qkey)) !== undefined) {
              await this.store.putJson(qkey, { ...entry, stage: "sync" } satisfies QueuedSend);
            }
            await this.#setOwnStatus(key, "sent");
          });
          stage = "sync";
          this.#emit([{ kind: "status", conversation, timestamp, status: "sent" }]);
        }
        const data = decodeContent(unhex(entry.data)).body;
        if (data.case === "data") {
          const sync = create(ContentSchema, { body: { case: "sync", value: {
            body: { case: "sent", value: { destination: group === undefined ? conversation : "", message: data.value } } } } });
          await this.outbox.deliver(this.accountId, encodeContent(sync), timestamp);
        }
        await this.store.transaction(() => this.store.put(qkey, null));
      } catch (error) {
        if (isTransient(error)) break; // offline or the relay is struggling: keep the order, try again later
        // Refused: a message leaves the queue marked "not sent"; a copy for our other
        // devices that cannot go is dropped (the recipient has the message).
        await this.store.transaction(async () => {
          await this.store.put(qkey, null);
          if (stage === "members") await this.#setOwnStatus(key, "failed");
        });
        if (stage === "members") {
          failures.set(timestamp, error);
          const body = decodeContent(unhex(entry.data)).body;
          const action = body.case === "data" ? changeKind(body.value) : undefined;
          this.#emit([action === undefined ? { kind: "status", conversation, timestamp, status: "failed" }
            : { kind: "action_failed", conversation, action, error }]);
        } else {
          console.warn("cipherpost: the copy for our other devices was refused:", (error as Error).name);
        }
      }
    }
    return failures;
  }

  async #setOwnStatus(key: string, status: Status): Promise<void> {
    const stored = await this.store.getJson<StoredMessage>(key);
    if (stored === undefined) return;
    stored.status = stored.status === "sending" ? status : advance(stored.status, status);
    await this.store.putJson(key, stored);
  }

  /** Messages still waiting for the connection. */
  async queued(): Promise<number> {
    return (await this.store.scanJson<QueuedSend>("outq:")).length;
  }

  async #lastTimestampLoaded(): Promise<void> {
    if (this.#lastTimestamp === 0) this.#lastTimestamp = (await this.store.getJson<number>("last_timestamp")) ?? 0;
  }

  // -- reading ------------------------------------------------------------------------

  /** The relay's notices about our account, oldest first (docs/server.md, "Login notices"). */
  async notices(): Promise<AccountNotice[]> {
    return (await this.store.scanJson<AccountNotice>("notice:")).map(([, n]) => n);
  }

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

  /** Who reacted to `message` with what: reactor account id → emoji (./reactions.ts). */
  async reactions(message: StoredMessage): Promise<Record<string, string>> {
    return reactionsOf(this.store, messageKey(message.conversation, message.timestamp, message.author));
  }

  /**
   * The user has seen `conversation`: its unread messages are marked read here, our
   * other devices are told (SyncMessage.Read) and their authors get read receipts. The
   * sending is follow-up work, stored first, so it survives going offline.
   */
  async markRead(conversation: string): Promise<void> {
    const refs = await this.store.transaction(async () => {
      const contact = await this.store.getJson<Contact>(`contact:${conversation}`);
      if (contact !== undefined && contact.unread !== 0) {
        contact.unread = 0;
        await this.store.putJson(`contact:${conversation}`, contact);
      }
      const read: { author: string; timestamp: number }[] = [];
      const now = this.clock();
      for (const [key, message] of await this.store.scanJson<StoredMessage>(`msg:${conversation}:`)) {
        if (message.outgoing || message.read === true) continue;
        message.read = true;
        if (startExpiry(message, now)) this.#expiryDirty = true;
        await this.store.putJson(key, message);
        read.push({ author: message.author, timestamp: message.timestamp });
      }
      if (read.length === 0) return read;
      await this.#storeFollowUp({ kind: "sync_read", messages: read });
      const byAuthor = new Map<string, number[]>();
      for (const { author, timestamp } of read) byAuthor.set(author, [...(byAuthor.get(author) ?? []), timestamp]);
      for (const [author, timestamps] of [...byAuthor].sort()) {
        await this.#storeFollowUp({ kind: "receipt", account: author, type: "read", timestamps });
      }
      return read;
    });
    if (refs.length > 0) void this.#runFollowUps();
  }

  async #storeFollowUp(work: FollowUp): Promise<void> {
    await this.store.putJson(`followup:${String(await this.store.nextId("followup")).padStart(12, "0")}`, work);
  }

  /**
   * What the platform says about the network: offline closes the socket at once (a
   * dead connection can take long to notice), online reconnects without waiting out
   * the back-off.
   */
  networkChanged(online: boolean): void {
    if (this.#stopped) return;
    if (online) this.#wake?.();
    else this.#socket?.close();
  }

  // -- disappearing messages ----------------------------------------------------------

  /** The conversation's disappearing-messages timer in seconds (0: off). */
  async expireTimer(conversation: string): Promise<number> {
    return (await conversationTimer(this.store, conversation)).seconds;
  }

  /**
   * Turn disappearing messages on (seconds after reading) or off (0): in a 1:1
   * conversation a new timer version, announced with an expire_timer_update message
   * (queued like any other); in a group a signed group change, which its rules may keep
   * to admins (mirrors Client.set_expire_timer).
   */
  async setExpireTimer(conversation: string, seconds: number): Promise<void> {
    if (!Number.isInteger(seconds) || seconds < 0 || seconds > 0xffffffff) {
      throw new RangeError("the timer is 0 (off) or a number of seconds");
    }
    if (conversation.startsWith("group:")) {
      const group = await this.#editGroup(await this.#memberGroup(conversation), { expireTimer: seconds });
      this.#emit([{ kind: "timer", conversation, author: this.accountId, seconds: group.expireTimer }]);
      return;
    }
    if (conversation === this.accountId) throw new RangeError("notes to self come later");
    await this.#lastTimestampLoaded();
    const timestamp = this.#timestamp();
    const version = (await conversationTimer(this.store, conversation)).version + 1;
    const data = create(DataMessageSchema, { timestamp: u64(timestamp), expireTimer: seconds,
      expireTimerVersion: version, expireTimerUpdate: true, profileKey: await this.#profileKey() });
    const plaintext = encodeContent(create(ContentSchema, { body: { case: "data", value: data } }));
    await this.store.transaction(async () => {
      await this.store.putJson(`timer:${conversation}`, { seconds, version } satisfies ConversationTimer);
      await this.store.putJson("last_timestamp", timestamp);
      await this.store.putJson(queueKey(timestamp),
        { conversation, timestamp, data: hex(plaintext), stage: "members" } satisfies QueuedSend);
    });
    this.#emit([{ kind: "timer", conversation, author: this.accountId, seconds }]);
    await this.flushQueue();
  }

  /** No message expires before this (ms), unless one was stored or read since the last look. */
  #nextExpiry = 0;
  #expiryDirty = true;

  /** Delete the messages whose disappearing timer ran out (call it every second or so). */
  async expireMessages(): Promise<ClientEvent[]> {
    const now = this.clock();
    if (!this.#expiryDirty && now < this.#nextExpiry) return [];
    this.#expiryDirty = false;
    const gone: ClientEvent[] = [];
    let next = Number.POSITIVE_INFINITY;
    await this.store.transaction(async () => {
      for (const [, message] of await this.store.scanJson<StoredMessage>("msg:")) {
        if (message.expiresAt === undefined) continue;
        if (message.expiresAt > now) {
          next = Math.min(next, message.expiresAt);
          continue;
        }
        await forgetMessage(this.store, message, { unsent: "send" });
        gone.push({ kind: "expired", conversation: message.conversation, timestamp: message.timestamp });
      }
    });
    this.#nextExpiry = next; // a message stored or read meanwhile set #expiryDirty again
    if (gone.length > 0) void this.flushHistory(); // the relay's copies go too
    this.#emit(gone);
    return gone;
  }

  // -- attachments --------------------------------------------------------------------

  /**
   * Encrypt and upload a file here, then send it to `conversation` (the upload needs the
   * connection; the message itself is queued like any other).
   * @throws RangeError too large. @throws RelayError, RelayUnavailable the upload failed.
   */
  async sendFile(conversation: string, data: Uint8Array, fileName: string, contentType: string,
    caption = ""): Promise<StoredMessage> {
    const encrypted = await encryptAttachment(data);
    const id = await this.api.uploadAttachment(encrypted.blob);
    const info: AttachmentInfo = { id, key: hex(encrypted.key), digest: hex(encrypted.digest), size: encrypted.size,
      contentType: contentType.slice(0, 100) || "application/octet-stream", fileName: fileName.slice(0, 255), caption: "" };
    return this.sendText(conversation, caption, [info]);
  }

  /** Download, check (digest, MAC) and decrypt an attachment. @throws AttachmentError, RelayError */
  async download(attachment: AttachmentInfo): Promise<Uint8Array> {
    const blob = await this.api.downloadAttachment(attachment.id, blobBound(attachment.size));
    return decryptAttachment(blob, unhex(attachment.key), unhex(attachment.digest), attachment.size);
  }

  // -- groups -------------------------------------------------------------------------

  /**
   * A new group with us as its admin and `usernames` as members; its signed creation goes
   * to each member (1:1) and to our other devices. Returns its conversation key.
   * @throws RelayError 404 a username nobody has. @throws RangeError a bad title.
   */
  async createGroup(title: string, usernames: string[]): Promise<string> {
    const name = groupTitle(title);
    const roles = new Map<string, GroupState_Role>();
    for (const username of usernames) roles.set(await this.lookup(username), MEMBER);
    if (roles.size === 0) throw new RangeError("name at least one member");
    roles.set(this.accountId, ADMIN);
    const next = await this.#changeGroup(undefined, encodeState(systemRandom(GROUP_ID_BYTES), 0, name, roles));
    return next.conversation;
  }

  /** The group behind a conversation key, if we hold it. */
  async group(conversation: string): Promise<Group | undefined> {
    return conversation.startsWith("group:") ? this.inbox.group(fromHex(conversation.slice(6))) : undefined;
  }

  /**
   * Add members (usernames) to a group (an admin's change; mirrors Client.add_members).
   * Our sender key for it is retired: the next message starts a new chain.
   * @throws RangeError not a member or not allowed. @throws RelayError 404 an unknown username.
   */
  async addGroupMembers(conversation: string, usernames: string[]): Promise<Group> {
    const group = await this.#memberGroup(conversation);
    const roles = new Map(group.members);
    for (const username of usernames) {
      const account = await this.lookup(username);
      if (!roles.has(account)) roles.set(account, MEMBER);
    }
    if (roles.size === group.members.size) throw new RangeError("they are members already");
    return this.#editGroup(group, { roles });
  }

  /** Remove members (account ids) from a group (an admin's change; Client.remove_members). */
  async removeGroupMembers(conversation: string, accounts: string[]): Promise<Group> {
    const group = await this.#memberGroup(conversation);
    const roles = new Map(group.members);
    for (const account of accounts) roles.delete(account);
    return this.#editGroup(group, { roles });
  }

  /** Leave a group: we remove ourselves (Client.leave_group); the others get the change. */
  async leaveGroup(conversation: string): Promise<Group> {
    return this.removeGroupMembers(conversation, [this.accountId]);
  }

  /** Make a member an admin or a member again (an admin's change; Client.set_group_admin). */
  async setGroupAdmin(conversation: string, account: string, admin: boolean): Promise<Group> {
    const group = await this.#memberGroup(conversation);
    if (!group.isMember(account)) throw new RangeError("they are not in this group");
    return this.#editGroup(group, { roles: new Map([...group.members, [account, admin ? ADMIN : MEMBER]]) });
  }

  /** Rename a group (Client.set_group_title). */
  async renameGroup(conversation: string, title: string): Promise<Group> {
    return this.#editGroup(await this.#memberGroup(conversation), { title: groupTitle(title) });
  }

  async #memberGroup(conversation: string): Promise<Group> {
    const group = await this.group(conversation);
    if (group === undefined || !group.isMember(this.accountId)) throw new RangeError("you are not in this group");
    return group;
  }

  async #editGroup(group: Group, edit: GroupEdit): Promise<Group> {
    try {
      return await this.#changeGroup(group, editedState(group, edit));
    } catch (error) {
      if (error instanceof GroupChangeRejected) throw new RangeError(`that group change is not allowed: ${error.message}`);
      throw error;
    }
  }

  /**
   * Sign a change, check it as every member will, apply it, and send it to the old and
   * new members and to our other devices (mirrors Client._change_group).
   */
  async #changeGroup(current: Group | undefined, state: Uint8Array): Promise<Group> {
    await this.#lastTimestampLoaded();
    const timestamp = this.#timestamp();
    const identity = this.store.getIdentityKeyPair();
    const signed = signChange(identity, this.accountId, current, state, timestamp, systemRandom);
    const next = verifyChange(signed, current, identity.publicKey);
    await this.store.transaction(async () => {
      await this.store.putJson("last_timestamp", timestamp);
      await this.inbox.saveGroup(current, next);
    });
    const data = create(DataMessageSchema, { timestamp: u64(timestamp), groupChange: signed,
      group: { id: next.id, revision: u64(next.revision) }, profileKey: await this.#profileKey() });
    const everyone = new Set([...next.members.keys(), ...(current?.members.keys() ?? [])]);
    everyone.delete(this.accountId);
    for (const account of [...everyone].sort()) {
      await this.outbox.deliver(account, encodeContent(create(ContentSchema, { body: { case: "data", value: data } })), timestamp);
    }
    const sync = create(ContentSchema, { body: { case: "sync", value: {
      body: { case: "sent", value: { destination: "", message: data } } } } });
    await this.outbox.deliver(this.accountId, encodeContent(sync), timestamp);
    void this.flushHistory(); // the new state's history entry
    return next;
  }

  // -- devices ------------------------------------------------------------------------

  /** This account's devices, as the relay lists them (this one included). */
  async devices(): Promise<DeviceInfo[]> {
    return this.api.deviceList();
  }

  get deviceId(): number {
    return this.account.deviceId;
  }

  /**
   * Remove another device of this account: the relay kills its token and queue; our
   * session with it goes too.
   * @throws RangeError this device (remove it from another one). @throws RelayError
   */
  async removeDevice(deviceId: number): Promise<void> {
    if (deviceId === this.account.deviceId) throw new RangeError("this browser cannot remove itself");
    await this.api.removeDevice(deviceId);
    await this.store.transaction(() => this.store.deleteSession(new ProtocolAddress(this.accountId, deviceId)));
  }

  /** The relay this account lives on. */
  get server(): string {
    return this.account.server;
  }

  /**
   * Our safety number with `account`: 60 digits, or undefined before its identity key
   * is known (after one message either way).
   */
  async safetyNumber(account: string): Promise<{ digits: string; scannable: Uint8Array; verified: boolean; changed: boolean } | undefined> {
    const trust = await this.store.getTrust(account);
    const theirs = await this.store.getIdentity(new ProtocolAddress(account, 1));
    if (trust === undefined || theirs === undefined) return undefined;
    const encoder = new TextEncoder();
    const fingerprint = Fingerprint.create(encoder.encode(this.accountId), this.store.getIdentityKeyPair().publicKey,
      encoder.encode(account), theirs);
    return { digits: fingerprint.displayable, scannable: fingerprint.scannable, verified: trust.verified, changed: trust.changed };
  }

  /** Accept the contact's current key (after comparing safety numbers: `verified`). */
  async trust(account: string, verified: boolean): Promise<void> {
    await this.store.transaction(() => this.store.trustIdentity(account, verified));
  }
}
