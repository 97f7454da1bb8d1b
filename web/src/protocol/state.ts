/**
 * Session state and session records (digest §4.5, §4.9); mirrors cipherpost.protocol.state.
 *
 * A {@link SessionRecord} holds the current {@link SessionState} and up to 40 archived
 * ones, newest first. States are plain mutable objects; the session cipher never mutates
 * one until a message has fully verified, so a rejected message changes nothing.
 *
 * Storage: `format byte (1) || protobuf`, with libsignal's SessionStructure and
 * RecordStructure field numbers (digest §4.9). This is the TypeScript client's own
 * format; a later format adds a new format byte and keeps loading this one.
 *
 * A state's SPQR state (./spqr/) is stored in SessionStructure field
 * {@link PQ_RATCHET_FIELD} = 1001, a field number of Cipherpost's own, holding the bytes
 * of ./spqr/storage.ts (Python's SPQR layout, byte for byte); it is left out for a state
 * without SPQR (V0). It is deliberately not libsignal's field 15 (`pq_ratchet_state`),
 * whose content is libsignal's own protobuf, which these bytes are not. A record written
 * before SPQR has no such field and loads as V0, so stored sessions keep working.
 */

import { bytesEqual, concat } from "./bytes.js";
import { ARCHIVED_STATES_MAX_LENGTH, CURRENT_VERSION, MAX_MESSAGE_KEYS, MAX_RECEIVER_CHAINS } from "./constants.js";
import { InvalidMessage } from "./errors.js";
import { KeyPair, PrivateKey, PublicKey, type IdentityKey } from "./keys.js";
import * as pb from "./protobuf.js";
import { V0_STATE, type PqRatchetState } from "./spqr/ratchet.js";
import * as pqStorage from "./spqr/storage.js";

export const RECORD_FORMAT = 1;

/**
 * SessionStructure field of a state's SPQR state (spqr/storage.ts bytes). Cipherpost's
 * own number, far above libsignal's fields (1-15; 15 is libsignal's PqRatchetState).
 */
export const PQ_RATCHET_FIELD = 1001;

/** A receiving chain: their ratchet key, our chain key, and skipped message-key seeds. */
export class ReceiverChain {
  constructor(
    readonly ratchetKey: PublicKey,
    public chainKey: Uint8Array,
    public index: number,
    /** counter -> message-key seed; insertion order is counter order (oldest first). */
    readonly skipped: Map<number, Uint8Array> = new Map(),
  ) {}

  /** Store skipped seeds, keeping only the newest MAX_MESSAGE_KEYS. */
  addSkipped(seeds: Array<[number, Uint8Array]>): void {
    for (const [counter, seed] of seeds.slice(-MAX_MESSAGE_KEYS)) this.skipped.set(counter, seed);
    let excess = this.skipped.size - MAX_MESSAGE_KEYS;
    if (excess > 0) {
      for (const counter of this.skipped.keys()) {
        if (excess-- <= 0) break;
        this.skipped.delete(counter);
      }
    }
  }

  toString(): string {
    return `ReceiverChain(index=${this.index}, <keys redacted>)`;
  }
}

/** Our sending chain: our ratchet key pair and the chain key at `index`. */
export class SenderChain {
  constructor(readonly ratchet: KeyPair, public chainKey: Uint8Array, public index: number) {}

  toString(): string {
    return `SenderChain(index=${this.index}, <keys redacted>)`;
  }
}

/** What an initiator repeats in every PreKey message until the responder answers. */
export interface PendingPreKey {
  readonly preKeyId: number | undefined;
  readonly signedPreKeyId: number;
  readonly baseKey: PublicKey;
  readonly kyberPreKeyId: number;
  readonly kyberCiphertext: Uint8Array;
  /** Seconds. */
  readonly timestamp: number;
}

/** One Double Ratchet session with a remote device. */
export class SessionState {
  version: number;
  readonly localIdentity: IdentityKey;
  readonly remoteIdentity: IdentityKey;
  rootKey: Uint8Array;
  senderChain: SenderChain | undefined;
  /** Receiving chains, oldest first. */
  readonly receiverChains: ReceiverChain[];
  readonly aliceBaseKey: Uint8Array;
  localRegistrationId: number;
  remoteRegistrationId: number;
  previousCounter: number;
  pendingPreKey: PendingPreKey | undefined;
  /** The SPQR state, an immutable value ({@link V0_STATE}: no SPQR). */
  pqRatchet: PqRatchetState;
  #macPrefixes: [Uint8Array, Uint8Array] | undefined;

  constructor(fields: {
    version: number; localIdentity: IdentityKey; remoteIdentity: IdentityKey; rootKey: Uint8Array;
    senderChain: SenderChain | undefined; receiverChains: ReceiverChain[]; aliceBaseKey: Uint8Array;
    localRegistrationId?: number; remoteRegistrationId?: number; previousCounter?: number;
    pendingPreKey?: PendingPreKey | undefined; pqRatchet?: PqRatchetState;
  }) {
    this.version = fields.version;
    this.localIdentity = fields.localIdentity;
    this.remoteIdentity = fields.remoteIdentity;
    this.rootKey = fields.rootKey;
    this.senderChain = fields.senderChain;
    this.receiverChains = fields.receiverChains;
    this.aliceBaseKey = fields.aliceBaseKey;
    this.localRegistrationId = fields.localRegistrationId ?? 0;
    this.remoteRegistrationId = fields.remoteRegistrationId ?? 0;
    this.previousCounter = fields.previousCounter ?? 0;
    this.pendingPreKey = fields.pendingPreKey;
    this.pqRatchet = fields.pqRatchet ?? V0_STATE;
  }

  /** Whether the local and remote identities are the same (a note-to-self session). */
  isSelfSession(): boolean {
    return this.localIdentity.equals(this.remoteIdentity);
  }

  /** The receiving chain for a ratchet key, if we still hold it. */
  receiverChain(ratchetKey: PublicKey): ReceiverChain | undefined {
    return this.receiverChains.find((chain) => chain.ratchetKey.equals(ratchetKey));
  }

  /** `sender || receiver` serialized identity keys, the MAC's prefix. */
  macIdentities(sending: boolean): Uint8Array {
    if (this.#macPrefixes === undefined) {
      const local = this.localIdentity.serialize();
      const remote = this.remoteIdentity.serialize();
      this.#macPrefixes = [concat(local, remote), concat(remote, local)];
    }
    return sending ? this.#macPrefixes[0] : this.#macPrefixes[1];
  }

  /** Append a chain, dropping the oldest beyond MAX_RECEIVER_CHAINS. */
  addReceiverChain(chain: ReceiverChain): void {
    this.receiverChains.push(chain);
    if (this.receiverChains.length > MAX_RECEIVER_CHAINS) this.receiverChains.shift();
  }

  toString(): string {
    const spqr = this.pqRatchet.braid === null ? 0 : 1;
    return `SessionState(version=${this.version}, remote=${this.remoteIdentity}, spqr=V${spqr}, <keys redacted>)`;
  }

  toJSON(): string {
    return this.toString();
  }
}

/** The current session with a device plus archived ones (newest first). */
export class SessionRecord {
  constructor(public current: SessionState | undefined = undefined, readonly previous: SessionState[] = []) {}

  /** Make `state` current, archiving the old current state. */
  promoteState(state: SessionState): void {
    this.archiveCurrentState();
    this.current = state;
  }

  /** Make archived state `index` current again. */
  promotePrevious(index: number): void {
    const [state] = this.previous.splice(index, 1);
    if (state === undefined) throw new RangeError("no archived state at that index");
    this.promoteState(state);
  }

  /** Move the current state to the archive (it never sends PreKey messages again). */
  archiveCurrentState(): void {
    if (this.current === undefined) return;
    this.current.pendingPreKey = undefined;
    this.previous.unshift(this.current);
    this.previous.splice(ARCHIVED_STATES_MAX_LENGTH);
    this.current = undefined;
  }

  /** Current (if any) then archived states. */
  states(): SessionState[] {
    return this.current !== undefined ? [this.current, ...this.previous] : [...this.previous];
  }

  toString(): string {
    return `SessionRecord(current=${this.current ?? "none"}, archived=${this.previous.length})`;
  }

  toJSON(): string {
    return this.toString();
  }

  // -- storage ------------------------------------------------------------------------

  /** `format byte || RecordStructure { current_session = 1; previous_sessions = 2 }`. */
  serialize(): Uint8Array {
    const parts: Uint8Array[] = [Uint8Array.of(RECORD_FORMAT)];
    if (this.current !== undefined) parts.push(pb.fieldBytes(1, encodeState(this.current)));
    for (const state of this.previous) parts.push(pb.fieldBytes(2, encodeState(state)));
    return concat(...parts);
  }

  /** @throws InvalidMessage the bytes are not a record of a known format. */
  static deserialize(data: Uint8Array): SessionRecord {
    if (data.length === 0) throw new InvalidMessage("empty session record");
    if (data[0] !== RECORD_FORMAT) throw new InvalidMessage("unknown session record format");
    try {
      const fields = pb.decode(data.subarray(1));
      const current = pb.getBytes(fields, 1);
      return new SessionRecord(current !== undefined ? decodeState(current) : undefined,
        pb.getRepeatedBytes(fields, 2).map(decodeState));
    } catch (cause) {
      throw new InvalidMessage("malformed session record", { cause });
    }
  }
}

function chainKeyField(index: number, key: Uint8Array): Uint8Array {
  return concat(pb.fieldVarint(1, index), pb.fieldBytes(2, key));
}

function encodeState(s: SessionState): Uint8Array {
  const parts: Uint8Array[] = [
    pb.fieldVarint(1, s.version),
    pb.fieldBytes(2, s.localIdentity.serialize()),
    pb.fieldBytes(3, s.remoteIdentity.serialize()),
    pb.fieldBytes(4, s.rootKey),
    pb.fieldVarint(5, s.previousCounter),
  ];
  const sender = s.senderChain;
  if (sender !== undefined) {
    parts.push(pb.fieldBytes(6, concat(
      pb.fieldBytes(1, sender.ratchet.publicKey.serialize()),
      pb.fieldBytes(2, sender.ratchet.privateKey.serialize()),
      pb.fieldBytes(3, chainKeyField(sender.index, sender.chainKey)),
    )));
  }
  for (const chain of s.receiverChains) {
    const chainParts = [
      pb.fieldBytes(1, chain.ratchetKey.serialize()),
      pb.fieldBytes(3, chainKeyField(chain.index, chain.chainKey)),
    ];
    for (const [counter, seed] of chain.skipped) {
      chainParts.push(pb.fieldBytes(4, concat(pb.fieldVarint(1, counter), pb.fieldBytes(5, seed))));
    }
    parts.push(pb.fieldBytes(7, concat(...chainParts)));
  }
  const pending = s.pendingPreKey;
  if (pending !== undefined) {
    parts.push(pb.fieldBytes(9, concat(
      pending.preKeyId !== undefined ? pb.fieldVarint(1, pending.preKeyId) : new Uint8Array(0),
      pb.fieldBytes(2, pending.baseKey.serialize()),
      pb.fieldVarint(3, pending.signedPreKeyId),
      pb.fieldVarint(4, pending.timestamp),
    )));
  }
  parts.push(pb.fieldVarint(10, s.remoteRegistrationId), pb.fieldVarint(11, s.localRegistrationId),
    pb.fieldBytes(13, s.aliceBaseKey));
  if (pending !== undefined) {
    parts.push(pb.fieldBytes(14, concat(pb.fieldVarint(1, pending.kyberPreKeyId),
      pb.fieldBytes(2, pending.kyberCiphertext))));
  }
  const pq = pqStorage.serialize(s.pqRatchet); // empty for V0: the field is left out
  if (pq.length > 0) parts.push(pb.fieldBytes(PQ_RATCHET_FIELD, pq));
  return concat(...parts);
}

function reqBytes(f: pb.Fields, n: number, length?: number): Uint8Array {
  const v = pb.getBytes(f, n);
  if (v === undefined) throw new pb.DecodeError(`missing field ${n}`);
  if (length !== undefined && v.length !== length) throw new pb.DecodeError(`field ${n} has a bad length`);
  return Uint8Array.from(v);
}

function reqInt(f: pb.Fields, n: number): number {
  const v = pb.getUint32(f, n);
  if (v === undefined) throw new pb.DecodeError(`missing field ${n}`);
  return v;
}

function storedKey(data: Uint8Array): PublicKey {
  if (data.length !== 33 || data[0] !== 0x05) throw new pb.DecodeError("bad stored public key");
  return new PublicKey(data.subarray(1));
}

function decodeChainKey(data: Uint8Array): [number, Uint8Array] {
  const f = pb.decode(data);
  return [pb.getUint32(f, 1) ?? 0, reqBytes(f, 2, 32)];
}

function decodeState(data: Uint8Array): SessionState {
  const f = pb.decode(data);
  if ((pb.getInt(f, 1) ?? 2) !== CURRENT_VERSION) throw new pb.DecodeError("unsupported session version");
  let senderChain: SenderChain | undefined;
  const senderBytes = pb.getBytes(f, 6);
  if (senderBytes !== undefined) {
    const sf = pb.decode(senderBytes);
    const [index, key] = decodeChainKey(reqBytes(sf, 3));
    const privateKey = new PrivateKey(reqBytes(sf, 2, 32));
    const publicKey = storedKey(reqBytes(sf, 1));
    if (!privateKey.publicKey().equals(publicKey)) throw new pb.DecodeError("sender key pair halves differ");
    senderChain = new SenderChain(new KeyPair(publicKey, privateKey), key, index);
  }
  const receiverChains: ReceiverChain[] = [];
  for (const chainBytes of pb.getRepeatedBytes(f, 7)) {
    const cf = pb.decode(chainBytes);
    const [index, key] = decodeChainKey(reqBytes(cf, 3));
    const skipped = new Map<number, Uint8Array>();
    for (const mk of pb.getRepeatedBytes(cf, 4)) {
      const mf = pb.decode(mk);
      skipped.set(pb.getUint32(mf, 1) ?? 0, reqBytes(mf, 5, 32));
    }
    receiverChains.push(new ReceiverChain(storedKey(reqBytes(cf, 1)), key, index, skipped));
  }
  let pendingPreKey: PendingPreKey | undefined;
  const pendingBytes = pb.getBytes(f, 9);
  const kyberBytes = pb.getBytes(f, 14);
  if ((pendingBytes === undefined) !== (kyberBytes === undefined)) {
    throw new pb.DecodeError("pending prekey data is incomplete");
  }
  if (pendingBytes !== undefined && kyberBytes !== undefined) {
    const pf = pb.decode(pendingBytes);
    const kf = pb.decode(kyberBytes);
    pendingPreKey = {
      preKeyId: pb.getUint32(pf, 1),
      signedPreKeyId: reqInt(pf, 3),
      baseKey: storedKey(reqBytes(pf, 2)),
      kyberPreKeyId: reqInt(kf, 1),
      kyberCiphertext: reqBytes(kf, 2),
      timestamp: pb.getInt(pf, 4) ?? 0,
    };
  }
  return new SessionState({
    version: CURRENT_VERSION,
    localIdentity: storedKey(reqBytes(f, 2)),
    remoteIdentity: storedKey(reqBytes(f, 3)),
    rootKey: reqBytes(f, 4, 32),
    senderChain,
    receiverChains,
    aliceBaseKey: Uint8Array.from(pb.getBytes(f, 13) ?? new Uint8Array(0)),
    localRegistrationId: pb.getUint32(f, 11) ?? 0,
    remoteRegistrationId: pb.getUint32(f, 10) ?? 0,
    previousCounter: pb.getUint32(f, 5) ?? 0,
    pendingPreKey,
    pqRatchet: decodePqRatchet(pb.getBytes(f, PQ_RATCHET_FIELD)),
  });
}

/** A stored SPQR state; absent (a record from before SPQR) or empty is V0. */
function decodePqRatchet(data: Uint8Array | undefined): PqRatchetState {
  if (data === undefined || data.length === 0) return V0_STATE;
  return pqStorage.deserialize(Uint8Array.from(data));
}

/** True when two records hold the same state (for tests: compares serialized forms). */
export function sameRecord(a: SessionRecord | undefined, b: SessionRecord | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return bytesEqual(a.serialize(), b.serialize());
}

