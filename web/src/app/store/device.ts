/**
 * One device's encrypted store: the protocol's stores (identity, prekeys, sessions) and
 * the app's records (account, contacts, messages, processed envelope ids, follow-up work)
 * over a Kv, every value sealed under the password-derived LocalKey with its record key
 * as associated data. Mirrors cipherpost.client.store.database.
 *
 * Theory of operation. Work happens in units (`transaction`): reads see the unit's own
 * writes, writes collect in memory, and at the end every value is sealed and the batch
 * is committed in one IndexedDB transaction (nothing asynchronous may run inside one).
 * Units run one at a time (a store-wide lock), so a decrypt, the message it carries and
 * the envelope id it consumed are stored together or not at all; `savepoint`/`rollback`
 * undo part of a unit (a Content whose handling failed keeps the session's advance).
 *
 * Not sealed, as in the Python store: the record keys themselves, which name account
 * ids, message timestamps and envelope ids, and the Argon2 salt and parameters.
 */

import { withLock } from "../../protocol/lock.js";
import { InvalidKyberPreKeyId, InvalidMessage, InvalidPreKeyId } from "../../protocol/errors.js";
import { IdentityKeyPair, PublicKey, type IdentityKey } from "../../protocol/keys.js";
import { KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord } from "../../protocol/prekeys.js";
import { ProtocolAddress } from "../../protocol/address.js";
import { SenderKeyRecord } from "../../protocol/sender_keys.js";
import { SessionRecord } from "../../protocol/state.js";
import { Direction, type ProtocolStore } from "../../protocol/stores.js";
import { bytesEqual, fromHex, toHex } from "../../protocol/bytes.js";
import {
  decodeParams, DEFAULT_PARAMS, deriveKey, encodeParams, LocalKey, SALT_BYTES, type Argon2Params,
} from "./crypto.js";
import type { Kv } from "./kv.js";

const KDF = "meta:kdf";
/** The record of the sealed check value that recognises the store's key (unsealed). */
export const CHECK_RECORD = "meta:check";
const CHECK = CHECK_RECORD;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** No account has been set up in this browser. */
export class NoStore extends Error {
  override readonly name = "NoStore";
}

/** What this device knows of a contact's identity (trust is per account, spec §7). */
export interface TrustRecord {
  key: string; // hex of the serialized identity key
  verified: boolean;
  /** The key changed and the user has not accepted it: sending is blocked. */
  changed: boolean;
}

type Batch = Map<string, Uint8Array | null>;

export class DeviceStore implements ProtocolStore {
  #batch: Batch | undefined;
  #identity: { pair: IdentityKeyPair; registrationId: number } | undefined;

  private constructor(readonly kv: Kv, private key: LocalKey) {}

  /** True when this Kv holds a store. */
  static async exists(kv: Kv): Promise<boolean> {
    return (await kv.get(KDF)) !== undefined;
  }

  /** A new, empty store under `password`. */
  static async create(kv: Kv, password: string, params: Argon2Params = DEFAULT_PARAMS): Promise<DeviceStore> {
    if (await DeviceStore.exists(kv)) throw new RangeError("a store exists already");
    const salt = crypto.getRandomValues(new Uint8Array(SALT_BYTES));
    const key = await LocalKey.fromRaw(await deriveKey(password, salt, params));
    const kdf = encoder.encode(JSON.stringify({ salt: toHex(salt), argon2: encodeParams(params) }));
    await kv.commit(new Map([[KDF, kdf], [CHECK, await key.checkValue()]]));
    return new DeviceStore(kv, key);
  }

  /**
   * Open the store under `password`, or under a local key unwrapped by a passkey.
   * @throws NoStore none here. @throws WrongKey the password (or key) does not open it.
   */
  static async open(kv: Kv, password: string | LocalKey): Promise<DeviceStore> {
    const check = await DeviceStore.checkValue(kv);
    const key = password instanceof LocalKey ? password : await LocalKey.fromRaw(await DeviceStore.rawKey(kv, password));
    await key.verify(check);
    const store = new DeviceStore(kv, key);
    await store.#loadIdentity();
    return store;
  }

  /** The sealed check value that recognises this store's key. @throws NoStore none here. */
  static async checkValue(kv: Kv): Promise<Uint8Array> {
    const check = await kv.get(CHECK);
    if (check === undefined) throw new NoStore("no account in this browser");
    return check;
  }

  /**
   * The 32-byte local key derived from `password` and checked against the store, for
   * wrapping under another secret (a passkey); the caller wipes it.
   * @throws NoStore none here. @throws WrongKey the password does not open it.
   */
  static async rawKey(kv: Kv, password: string): Promise<Uint8Array> {
    const kdf = await kv.get(KDF);
    const check = await DeviceStore.checkValue(kv);
    if (kdf === undefined) throw new NoStore("no account in this browser");
    const meta = JSON.parse(decoder.decode(kdf)) as { salt: string; argon2: string };
    const raw = await deriveKey(password, fromHex(meta.salt), decodeParams(meta.argon2));
    try {
      await (await LocalKey.fromRaw(raw.slice())).verify(check);
    } catch (error) {
      raw.fill(0);
      throw error;
    }
    return raw;
  }

  /**
   * Seal every record again under a key from `newPassword` (a new salt, the store's own
   * Argon2 parameters) in one IndexedDB transaction, once `oldPassword` is checked; the
   * unsealed records named in `drop` (a passkey's wrapped key: the old key) go with it.
   * Runs as a unit: no other unit commits under the old key meanwhile.
   * @throws WrongKey `oldPassword`. @throws RangeError a new password under 8 characters.
   */
  changePassword(oldPassword: string, newPassword: string, drop: string[] = []): Promise<void> {
    return withLock(this, "transaction", async () => {
      if (newPassword.length < 8) throw new RangeError("choose a password of at least 8 characters");
      (await DeviceStore.rawKey(this.kv, oldPassword)).fill(0);
      const kdf = await this.kv.get(KDF);
      if (kdf === undefined) throw new NoStore("no account in this browser");
      const params = decodeParams((JSON.parse(decoder.decode(kdf)) as { argon2: string }).argon2);
      const salt = crypto.getRandomValues(new Uint8Array(SALT_BYTES));
      const key = await LocalKey.fromRaw(await deriveKey(newPassword, salt, params));
      const batch: Batch = new Map();
      for (const [k, sealed] of await this.kv.scan("")) {
        if (k.startsWith("meta:")) continue;
        const aad = encoder.encode(k);
        batch.set(k, await key.seal(await this.key.open(sealed, aad), aad));
      }
      batch.set(KDF, encoder.encode(JSON.stringify({ salt: toHex(salt), argon2: encodeParams(params) })));
      batch.set(CHECK, await key.checkValue());
      for (const k of drop) if (k.startsWith("meta:") && k !== KDF && k !== CHECK) batch.set(k, null);
      await this.kv.commit(batch);
      this.key = key;
    });
  }

  toString(): string {
    return "DeviceStore(<sealed>)";
  }

  // -- units of work ------------------------------------------------------------------

  /**
   * Run `fn` as one unit: all its writes are committed together, or none. Units queue
   * behind each other; `fn` must not start another unit (it would wait for itself).
   */
  transaction<T>(fn: () => Promise<T>): Promise<T> {
    return withLock(this, "transaction", async () => {
      this.#batch = new Map();
      try {
        const result = await fn();
        await this.#commit(this.#batch);
        return result;
      } finally {
        this.#batch = undefined;
        // The committed identity replaces the cached one in one step: a reader outside
        // the unit (the UI drawing a safety number) never sees none.
        await this.#loadIdentity();
      }
    });
  }

  /** A snapshot of the running unit's writes, for `rollback`. */
  savepoint(): Batch {
    return new Map(this.#requireBatch());
  }

  rollback(savepoint: Batch): void {
    const batch = this.#requireBatch();
    batch.clear();
    for (const [k, v] of savepoint) batch.set(k, v);
  }

  #requireBatch(): Batch {
    if (this.#batch === undefined) throw new Error("not inside a transaction");
    return this.#batch;
  }

  async #commit(batch: Batch): Promise<void> {
    if (batch.size === 0) return;
    const sealed: Batch = new Map();
    for (const [k, v] of batch) sealed.set(k, v === null ? null : await this.key.seal(v, encoder.encode(k)));
    await this.kv.commit(sealed);
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const pending = this.#batch?.get(key);
    if (pending !== undefined) return pending === null ? undefined : pending;
    const sealed = await this.kv.get(key);
    return sealed === undefined ? undefined : this.key.open(sealed, encoder.encode(key));
  }

  /** Every [key, value] under `prefix`, the running unit's writes included, in key order. */
  async scan(prefix: string): Promise<[string, Uint8Array][]> {
    const out = new Map<string, Uint8Array>();
    for (const [k, sealed] of await this.kv.scan(prefix)) out.set(k, await this.key.open(sealed, encoder.encode(k)));
    for (const [k, v] of this.#batch ?? []) {
      if (!k.startsWith(prefix)) continue;
      if (v === null) out.delete(k);
      else out.set(k, v);
    }
    return [...out.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /** Write, inside a unit (a write outside one is a bug: it would not be atomic). */
  async put(key: string, value: Uint8Array | null): Promise<void> {
    if (key.startsWith("meta:")) throw new RangeError("reserved key");
    this.#requireBatch().set(key, value);
  }

  async getJson<T>(key: string): Promise<T | undefined> {
    const value = await this.get(key);
    return value === undefined ? undefined : (JSON.parse(decoder.decode(value)) as T);
  }

  async putJson(key: string, value: unknown): Promise<void> {
    await this.put(key, encoder.encode(JSON.stringify(value)));
  }

  async scanJson<T>(prefix: string): Promise<[string, T][]> {
    return (await this.scan(prefix)).map(([k, v]) => [k, JSON.parse(decoder.decode(v)) as T]);
  }

  /** The last value {@link nextId} gave for `name` (0 before the first), without advancing it. */
  async peekId(name: string): Promise<number> {
    return (await this.getJson<number>(`counter:${name}`)) ?? 0;
  }

  /** The next value of a named counter, starting at 1. */
  async nextId(name: string): Promise<number> {
    const key = `counter:${name}`;
    const next = ((await this.getJson<number>(key)) ?? 0) + 1;
    await this.putJson(key, next);
    return next;
  }

  // -- identity -----------------------------------------------------------------------

  async setIdentity(pair: IdentityKeyPair, registrationId: number): Promise<void> {
    await this.putJson("identity", { pair: toHex(pair.serialize()), registrationId });
    this.#identity = { pair, registrationId };
  }

  async #loadIdentity(): Promise<void> {
    const record = await this.getJson<{ pair: string; registrationId: number }>("identity");
    this.#identity = record === undefined ? undefined
      : { pair: IdentityKeyPair.deserialize(fromHex(record.pair)), registrationId: record.registrationId };
  }

  getIdentityKeyPair(): IdentityKeyPair {
    if (this.#identity === undefined) throw new NoStore("this store has no identity yet");
    return this.#identity.pair;
  }

  getLocalRegistrationId(): number {
    if (this.#identity === undefined) throw new NoStore("this store has no identity yet");
    return this.#identity.registrationId;
  }

  /** Our own account id, once registered (own devices must share our identity key). */
  ownAccountId: string | undefined;

  async getTrust(account: string): Promise<TrustRecord | undefined> {
    return this.getJson<TrustRecord>(`trust:${account}`);
  }

  async saveIdentity(address: ProtocolAddress, identity: IdentityKey): Promise<boolean> {
    const key = toHex(identity.serialize());
    const old = await this.getTrust(address.name);
    if (old !== undefined && old.key === key) return false;
    const changed = old !== undefined;
    await this.putJson(`trust:${address.name}`, { key, verified: false, changed } satisfies TrustRecord);
    return changed;
  }

  /**
   * Spec §7: our own devices only under our own identity key, both ways; contacts on
   * first use; a changed key is accepted when receiving (the app shows the change) and
   * blocks sending until the user accepts it.
   */
  async isTrustedIdentity(address: ProtocolAddress, identity: IdentityKey, direction: Direction): Promise<boolean> {
    if (address.name === this.ownAccountId) return identity.equals(this.getIdentityKeyPair().publicKey);
    const known = await this.getTrust(address.name);
    if (known === undefined) return true;
    if (direction === Direction.RECEIVING) return true;
    return known.key === toHex(identity.serialize()) && !known.changed;
  }

  async getIdentity(address: ProtocolAddress): Promise<IdentityKey | undefined> {
    const known = await this.getTrust(address.name);
    return known === undefined ? undefined : PublicKey.deserialize(fromHex(known.key));
  }

  /** The user accepted (and maybe verified) the contact's current key. */
  async trustIdentity(account: string, verified: boolean): Promise<void> {
    const known = await this.getTrust(account);
    if (known === undefined) throw new RangeError("no identity known for that contact");
    await this.putJson(`trust:${account}`, { ...known, changed: false, verified } satisfies TrustRecord);
  }

  // -- sender keys (groups) ------------------------------------------------------------

  async loadSenderKey(sender: ProtocolAddress, distributionId: string): Promise<SenderKeyRecord | undefined> {
    const data = await this.get(`senderkey:${sender.name}:${sender.deviceId}:${distributionId.toLowerCase()}`);
    return data === undefined ? undefined : SenderKeyRecord.deserialize(data);
  }

  async storeSenderKey(sender: ProtocolAddress, distributionId: string, record: SenderKeyRecord): Promise<void> {
    await this.put(`senderkey:${sender.name}:${sender.deviceId}:${distributionId.toLowerCase()}`, record.serialize());
  }

  /**
   * Tie a member device's sender key (distribution id) to the group it came for, for
   * good; false when it is tied to another group already (docs/spec/groups.md).
   */
  async bindSenderKey(sender: ProtocolAddress, distributionId: string, groupHex: string): Promise<boolean> {
    const key = `skbind:${sender.name}:${sender.deviceId}:${distributionId.toLowerCase()}`;
    const bound = await this.getJson<string>(key);
    if (bound !== undefined) return bound === groupHex;
    await this.putJson(key, groupHex);
    return true;
  }

  async senderKeyGroup(sender: ProtocolAddress, distributionId: string): Promise<string | undefined> {
    return this.getJson<string>(`skbind:${sender.name}:${sender.deviceId}:${distributionId.toLowerCase()}`);
  }

  // -- prekeys ------------------------------------------------------------------------

  async getPreKey(id: number): Promise<PreKeyRecord> {
    const data = await this.get(`prekey:${id}`);
    if (data === undefined) throw new InvalidPreKeyId(`no prekey with id ${id}`);
    return PreKeyRecord.deserialize(data);
  }

  async savePreKey(record: PreKeyRecord): Promise<void> {
    await this.put(`prekey:${record.id}`, record.serialize());
  }

  async removePreKey(id: number): Promise<void> {
    await this.put(`prekey:${id}`, null);
  }

  async getSignedPreKey(id: number): Promise<SignedPreKeyRecord> {
    const data = await this.get(`signed:${id}`);
    if (data === undefined) throw new InvalidPreKeyId(`no signed prekey with id ${id}`);
    return SignedPreKeyRecord.deserialize(data);
  }

  async saveSignedPreKey(record: SignedPreKeyRecord): Promise<void> {
    await this.put(`signed:${record.id}`, record.serialize());
  }

  async getKyberPreKey(id: number): Promise<KyberPreKeyRecord> {
    const data = await this.get(`kyber:${id}`);
    if (data === undefined) throw new InvalidKyberPreKeyId(`no Kyber prekey with id ${id}`);
    return KyberPreKeyRecord.deserialize(data);
  }

  async saveKyberPreKey(record: KyberPreKeyRecord): Promise<void> {
    await this.put(`kyber:${record.id}`, record.serialize());
  }

  async markKyberPreKeyUsed(kyberPreKeyId: number, signedPreKeyId: number, baseKey: Uint8Array): Promise<void> {
    const data = await this.get(`kyber:${kyberPreKeyId}`);
    if (data === undefined) return;
    const record = KyberPreKeyRecord.deserialize(data);
    if (!record.lastResort) {
      await this.put(`kyber:${kyberPreKeyId}`, null);
      return;
    }
    const used = `kyberused:${kyberPreKeyId}:${signedPreKeyId}:${toHex(baseKey)}`;
    if ((await this.get(used)) !== undefined) throw new InvalidMessage("reused base key");
    await this.put(used, Uint8Array.of(1));
  }

  // -- sessions -----------------------------------------------------------------------

  async loadSession(address: ProtocolAddress): Promise<SessionRecord | undefined> {
    const data = await this.get(sessionKey(address));
    return data === undefined ? undefined : SessionRecord.deserialize(data);
  }

  async storeSession(address: ProtocolAddress, record: SessionRecord): Promise<void> {
    await this.put(sessionKey(address), record.serialize());
  }

  async deleteSession(address: ProtocolAddress): Promise<void> {
    await this.put(sessionKey(address), null);
  }

  /** Device ids we hold a session with for `account`, ascending. */
  async sessionDevices(account: string): Promise<number[]> {
    const prefix = `session:${account}:`;
    return (await this.scan(prefix)).map(([k]) => Number(k.slice(prefix.length))).sort((a, b) => a - b);
  }

  /** Whether two identity keys (serialized) are the same. */
  static sameKey(a: IdentityKey, b: IdentityKey): boolean {
    return bytesEqual(a.serialize(), b.serialize());
  }
}

function sessionKey(address: ProtocolAddress): string {
  return `session:${address.name}:${address.deviceId}`;
}
