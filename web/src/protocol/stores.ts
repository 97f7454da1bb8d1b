/**
 * Store interfaces, with in-memory reference implementations; mirrors
 * cipherpost.protocol.stores.
 *
 * Every real store (the browser's IndexedDB, later) implements these and passes the same
 * contract tests. Unlike Python's, these methods may return promises: the protocol core
 * awaits every store call, so an IndexedDB-backed store needs no preloading. The session
 * and sender-key functions serialize their operations per store and remote address, so a
 * store sees load → store sequences that never interleave for one address.
 */

import type { ProtocolAddress } from "./address.js";
import { keyOf } from "./bytes.js";
import { InvalidKyberPreKeyId, InvalidMessage, InvalidPreKeyId } from "./errors.js";
import type { IdentityKey, IdentityKeyPair } from "./keys.js";
import type { KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord } from "./prekeys.js";
import type { SenderKeyRecord } from "./sender_keys.js";
import { SessionRecord } from "./state.js";

export type Awaitable<T> = T | Promise<T>;

/** Why an identity is being checked. */
export enum Direction {
  SENDING = "sending",
  RECEIVING = "receiving",
}

/** Our identity and the identities we trust. */
export interface IdentityKeyStore {
  getIdentityKeyPair(): Awaitable<IdentityKeyPair>;
  getLocalRegistrationId(): Awaitable<number>;
  /** Remember `identity`; true if it replaced a different key. */
  saveIdentity(address: ProtocolAddress, identity: IdentityKey): Awaitable<boolean>;
  isTrustedIdentity(address: ProtocolAddress, identity: IdentityKey, direction: Direction): Awaitable<boolean>;
  getIdentity(address: ProtocolAddress): Awaitable<IdentityKey | undefined>;
}

/** One-time Curve25519 prekeys. */
export interface PreKeyStore {
  /** @throws InvalidPreKeyId when absent. */
  getPreKey(preKeyId: number): Awaitable<PreKeyRecord>;
  savePreKey(record: PreKeyRecord): Awaitable<void>;
  removePreKey(preKeyId: number): Awaitable<void>;
}

/** Signed prekeys. */
export interface SignedPreKeyStore {
  /** @throws InvalidPreKeyId when absent. */
  getSignedPreKey(signedPreKeyId: number): Awaitable<SignedPreKeyRecord>;
  saveSignedPreKey(record: SignedPreKeyRecord): Awaitable<void>;
}

/** KEM prekeys, one-time and last resort. */
export interface KyberPreKeyStore {
  /** @throws InvalidKyberPreKeyId when absent. */
  getKyberPreKey(kyberPreKeyId: number): Awaitable<KyberPreKeyRecord>;
  saveKyberPreKey(record: KyberPreKeyRecord): Awaitable<void>;
  /**
   * Consume a one-time key; a last-resort key may refuse a reused base key.
   * @throws InvalidMessage this (key, signed prekey, base key) triple was used before.
   */
  markKyberPreKeyUsed(kyberPreKeyId: number, signedPreKeyId: number, baseKey: Uint8Array): Awaitable<void>;
}

/** Session records per remote device. */
export interface SessionStore {
  loadSession(address: ProtocolAddress): Awaitable<SessionRecord | undefined>;
  storeSession(address: ProtocolAddress, record: SessionRecord): Awaitable<void>;
}

/** Sender-key records per (sender, distribution id). */
export interface SenderKeyStore {
  loadSenderKey(sender: ProtocolAddress, distributionId: string): Awaitable<SenderKeyRecord | undefined>;
  storeSenderKey(sender: ProtocolAddress, distributionId: string, record: SenderKeyRecord): Awaitable<void>;
}

/** Everything the 1:1 session code needs. */
export interface ProtocolStore extends IdentityKeyStore, PreKeyStore, SignedPreKeyStore, KyberPreKeyStore,
  SessionStore {}

// -- in-memory reference implementations --------------------------------------------

/** Trust on first use; a changed key is untrusted until replaced by `saveIdentity`. */
export class InMemoryIdentityKeyStore implements IdentityKeyStore {
  readonly #known = new Map<string, IdentityKey>();

  constructor(private readonly identity: IdentityKeyPair, private readonly registrationId: number) {}

  getIdentityKeyPair(): IdentityKeyPair {
    return this.identity;
  }

  getLocalRegistrationId(): number {
    return this.registrationId;
  }

  saveIdentity(address: ProtocolAddress, identity: IdentityKey): boolean {
    const old = this.#known.get(address.key());
    this.#known.set(address.key(), identity);
    return old !== undefined && !old.equals(identity);
  }

  isTrustedIdentity(address: ProtocolAddress, identity: IdentityKey, _direction: Direction): boolean {
    const known = this.#known.get(address.key());
    return known === undefined || known.equals(identity);
  }

  getIdentity(address: ProtocolAddress): IdentityKey | undefined {
    return this.#known.get(address.key());
  }
}

/** Session records kept as objects (no serialization). */
export class InMemorySessionStore implements SessionStore {
  readonly #sessions = new Map<string, SessionRecord>();

  loadSession(address: ProtocolAddress): SessionRecord | undefined {
    return this.#sessions.get(address.key());
  }

  storeSession(address: ProtocolAddress, record: SessionRecord): void {
    this.#sessions.set(address.key(), record);
  }
}

/**
 * Session records kept as bytes, as a database-backed store keeps them: every load
 * parses and every store serializes, so this tests the record format on every message.
 */
export class SerializingSessionStore implements SessionStore {
  readonly #sessions = new Map<string, Uint8Array>();

  loadSession(address: ProtocolAddress): SessionRecord | undefined {
    const data = this.#sessions.get(address.key());
    return data !== undefined ? SessionRecord.deserialize(data) : undefined;
  }

  storeSession(address: ProtocolAddress, record: SessionRecord): void {
    this.#sessions.set(address.key(), record.serialize());
  }
}

/** All 1:1 stores in memory; `sessions` picks object or serializing session storage. */
export class InMemoryProtocolStore extends InMemoryIdentityKeyStore implements ProtocolStore {
  readonly #preKeys = new Map<number, PreKeyRecord>();
  readonly #signedPreKeys = new Map<number, SignedPreKeyRecord>();
  readonly #kyberPreKeys = new Map<number, KyberPreKeyRecord>();
  readonly #usedKyber = new Set<string>();
  /** Replaceable, e.g. by a test that loses its sessions but keeps its prekeys. */
  sessions: SessionStore;

  constructor(identity: IdentityKeyPair, registrationId: number, sessions?: SessionStore) {
    super(identity, registrationId);
    this.sessions = sessions ?? new InMemorySessionStore();
  }

  getPreKey(preKeyId: number): PreKeyRecord {
    const record = this.#preKeys.get(preKeyId);
    if (record === undefined) throw new InvalidPreKeyId(`no prekey with id ${preKeyId}`);
    return record;
  }

  savePreKey(record: PreKeyRecord): void {
    this.#preKeys.set(record.id, record);
  }

  removePreKey(preKeyId: number): void {
    this.#preKeys.delete(preKeyId);
  }

  getSignedPreKey(signedPreKeyId: number): SignedPreKeyRecord {
    const record = this.#signedPreKeys.get(signedPreKeyId);
    if (record === undefined) throw new InvalidPreKeyId(`no signed prekey with id ${signedPreKeyId}`);
    return record;
  }

  saveSignedPreKey(record: SignedPreKeyRecord): void {
    this.#signedPreKeys.set(record.id, record);
  }

  getKyberPreKey(kyberPreKeyId: number): KyberPreKeyRecord {
    const record = this.#kyberPreKeys.get(kyberPreKeyId);
    if (record === undefined) throw new InvalidKyberPreKeyId(`no Kyber prekey with id ${kyberPreKeyId}`);
    return record;
  }

  saveKyberPreKey(record: KyberPreKeyRecord): void {
    this.#kyberPreKeys.set(record.id, record);
  }

  markKyberPreKeyUsed(kyberPreKeyId: number, signedPreKeyId: number, baseKey: Uint8Array): void {
    const record = this.#kyberPreKeys.get(kyberPreKeyId);
    if (record === undefined) return;
    if (!record.lastResort) {
      this.#kyberPreKeys.delete(kyberPreKeyId);
      return;
    }
    const triple = `${kyberPreKeyId}:${signedPreKeyId}:${keyOf(baseKey)}`;
    if (this.#usedKyber.has(triple)) throw new InvalidMessage("reused base key");
    this.#usedKyber.add(triple);
  }

  loadSession(address: ProtocolAddress): Awaitable<SessionRecord | undefined> {
    return this.sessions.loadSession(address);
  }

  storeSession(address: ProtocolAddress, record: SessionRecord): Awaitable<void> {
    return this.sessions.storeSession(address, record);
  }
}

/** Sender-key records in a map. */
export class InMemorySenderKeyStore implements SenderKeyStore {
  readonly #records = new Map<string, SenderKeyRecord>();

  loadSenderKey(sender: ProtocolAddress, distributionId: string): SenderKeyRecord | undefined {
    return this.#records.get(`${sender.key()}\u0000${distributionId.toLowerCase()}`);
  }

  storeSenderKey(sender: ProtocolAddress, distributionId: string, record: SenderKeyRecord): void {
    this.#records.set(`${sender.key()}\u0000${distributionId.toLowerCase()}`, record);
  }
}

