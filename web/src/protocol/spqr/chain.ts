/**
 * The symmetric chains that turn epoch secrets into per-message keys (spqr-digest §5);
 * mirrors cipherpost.protocol.spqr.chain.
 *
 * Epoch 0 comes from the SPQR auth key, every later epoch e from the epoch secret S_e and
 * the previous `nextRoot`; each epoch has one hash chain per direction. A message whose
 * SCKA epoch is E takes a key from chain epoch E-1: the sender the next key of its send
 * chain, the receiver the key of the index the message names, stepping forward and
 * keeping skipped keys (at most `maxOooKeys` behind, at most `maxJump` ahead) for
 * messages that arrive out of order. When the send epoch moves on, epochs older than one
 * before it are dropped and older send halves wiped, so late messages of the previous
 * epoch still decrypt.
 *
 * A {@link Chain} is an immutable value: every operation returns a new chain sharing
 * whatever did not change, so a tentative receive can be thrown away. Skipped keys keep
 * insertion order (as Python's dicts do), so stored states are byte-identical to
 * Python's.
 */

import { concat } from "../bytes.js";
import {
  InvalidSpqrState, SpqrEpochOutOfRange, SpqrKeyAlreadyRequested, SpqrKeyJump, SpqrKeyTrimmed,
} from "./errors.js";
import { CHAIN_ADD_EPOCH, CHAIN_NEXT, CHAIN_START, ZERO_SALT, be32, hkdf } from "./kdf.js";

export const DEFAULT_MAX_JUMP = 25_000;
export const DEFAULT_MAX_OOO_KEYS = 2_000;
/** Epochs kept before the current send epoch (their receive halves stay usable). */
export const EPOCHS_KEPT_BEFORE_SEND_EPOCH = 1;
const U32 = 0xffffffff;

/** Which way this party sends: Alice (the initiator) A2B, Bob B2A. */
export const Direction = { A2B: 0, B2A: 1 } as const;
export type Direction = (typeof Direction)[keyof typeof Direction];

export function otherDirection(d: Direction): Direction {
  return d === Direction.A2B ? Direction.B2A : Direction.A2B;
}

/** Receive limits; libsignal uses the defaults, and maxJump = 2^32-1 with oneself. */
export class ChainParams {
  /** Stored skipped keys from which on old ones are dropped. */
  readonly trimSize: number;

  constructor(readonly maxJump: number = DEFAULT_MAX_JUMP, readonly maxOooKeys: number = DEFAULT_MAX_OOO_KEYS) {
    for (const v of [maxJump, maxOooKeys]) {
      if (!Number.isInteger(v) || v <= 0 || v > U32) throw new RangeError("chain limits must be in 1..2^32-1");
    }
    this.trimSize = Math.floor((maxOooKeys * 11) / 10) + 1;
  }

  equals(other: ChainParams): boolean {
    return this.maxJump === other.maxJump && this.maxOooKeys === other.maxOooKeys;
  }
}

/** libsignal's limits for a session with someone else. */
export const DEFAULT_PARAMS = new ChainParams();

const NO_KEYS: ReadonlyMap<number, Uint8Array> = new Map();

/** One chain step to counter `ctr`: `[new next, key(ctr)]`. */
function step(nextKey: Uint8Array, ctr: number): [Uint8Array, Uint8Array] {
  const out = hkdf(ZERO_SALT, nextKey, concat(be32(ctr), CHAIN_NEXT), 64);
  return [out.slice(0, 32), out.slice(32, 64)];
}

/** One direction of one epoch: the counter, the next chain key (empty once wiped), skipped keys. */
export class ChainHalf {
  constructor(
    readonly ctr: number,
    readonly nextKey: Uint8Array,
    readonly skipped: ReadonlyMap<number, Uint8Array> = NO_KEYS,
  ) {}

  /** `[half after, index, key]` of the next key. */
  send(): [ChainHalf, number, Uint8Array] {
    if (this.nextKey.length !== 32 || this.ctr >= U32) throw new InvalidSpqrState("SPQR send chain exhausted or wiped");
    const ctr = this.ctr + 1;
    const [nextKey, key] = step(this.nextKey, ctr);
    return [new ChainHalf(ctr, nextKey, this.skipped), ctr, key];
  }

  /**
   * `[half after, key(at)]`; each key is handed out once.
   * @throws SpqrKeyJump `at` is more than maxJump ahead.
   * @throws SpqrKeyTrimmed `at` is more than maxOooKeys behind.
   * @throws SpqrKeyAlreadyRequested the key of `at` was used already.
   */
  recv(at: number, params: ChainParams): [ChainHalf, Uint8Array] {
    const maxOoo = params.maxOooKeys;
    if (at < this.ctr) {
      if (at + maxOoo < this.ctr) throw new SpqrKeyTrimmed(`SPQR key ${at} was trimmed`);
      const key = this.skipped.get(at);
      if (key === undefined) throw new SpqrKeyAlreadyRequested(`SPQR key ${at} already requested`);
      const rest = new Map(this.skipped);
      rest.delete(at);
      return [new ChainHalf(this.ctr, this.nextKey, rest), key];
    }
    if (at === this.ctr) throw new SpqrKeyAlreadyRequested(`SPQR key ${at} already requested`);
    if (at - this.ctr > params.maxJump) throw new SpqrKeyJump(`SPQR key ${at} is too far ahead of ${this.ctr}`);
    if (this.nextKey.length !== 32) throw new InvalidSpqrState("SPQR receive chain wiped");
    let ctr = this.ctr;
    let nextKey = this.nextKey;
    let skipped = this.skipped;
    if (at > ctr + 1 || skipped.size >= params.trimSize) {
      let kept = at > ctr + maxOoo ? new Map<number, Uint8Array>() : new Map(skipped);
      while (at > ctr + 1) {
        ctr += 1;
        let key: Uint8Array;
        [nextKey, key] = step(nextKey, ctr);
        if (ctr + maxOoo >= at) kept.set(ctr, key);
      }
      if (kept.size >= params.trimSize) {
        const horizon = ctr - maxOoo;
        kept = new Map([...kept].filter(([i]) => i >= horizon));
      }
      skipped = kept;
    }
    ctr += 1;
    const [after, key] = step(nextKey, ctr);
    return [new ChainHalf(ctr, after, skipped), key];
  }

  /** This half with its next key cleared (no more keys can come from it). */
  wiped(): ChainHalf {
    return new ChainHalf(this.ctr, new Uint8Array(0), this.skipped);
  }

  toString(): string {
    return `ChainHalf(ctr=${this.ctr}, ${this.skipped.size} skipped, <keys redacted>)`;
  }

  toJSON(): string {
    return this.toString();
  }
}

/** One chain epoch: the send half and the receive half. */
export interface Link {
  readonly send: ChainHalf;
  readonly recv: ChainHalf;
}

function makeLink(okm: Uint8Array, direction: Direction): Link {
  const a2b = okm.slice(32, 64);
  const b2a = okm.slice(64, 96);
  return direction === Direction.A2B
    ? { send: new ChainHalf(0, a2b), recv: new ChainHalf(0, b2a) }
    : { send: new ChainHalf(0, b2a), recv: new ChainHalf(0, a2b) };
}

/** All kept chain epochs; `links[links.length - 1]` is `currentEpoch`. */
export class Chain {
  constructor(
    readonly direction: Direction,
    readonly currentEpoch: number,
    readonly sendEpoch: number,
    readonly links: readonly Link[],
    readonly nextRoot: Uint8Array,
    readonly params: ChainParams = DEFAULT_PARAMS,
  ) {}

  /** Chain epoch 0 from the SPQR auth key. */
  static start(authKey: Uint8Array, direction: Direction, params: ChainParams = DEFAULT_PARAMS): Chain {
    const okm = hkdf(ZERO_SALT, authKey, CHAIN_START, 96);
    return new Chain(direction, 0, 0, [makeLink(okm, direction)], okm.slice(0, 32), params);
  }

  /** The chain with epoch `epoch` (which must be the next one) added. */
  addEpoch(epoch: number, secret: Uint8Array): Chain {
    if (epoch !== this.currentEpoch + 1) throw new InvalidSpqrState("SPQR epoch secret out of order");
    const okm = hkdf(this.nextRoot, secret, CHAIN_ADD_EPOCH, 96);
    return new Chain(this.direction, epoch, this.sendEpoch, [...this.links, makeLink(okm, this.direction)],
      okm.slice(0, 32), this.params);
  }

  private position(epoch: number): number {
    const back = this.currentEpoch - epoch;
    if (!(back >= 0 && back < this.links.length)) {
      throw new SpqrEpochOutOfRange(`SPQR chain epoch ${epoch} not available`);
    }
    return this.links.length - 1 - back;
  }

  /**
   * `[chain after, index, key]` for a message sent in chain epoch `epoch`.
   * @throws InvalidSpqrState `epoch` is before the send epoch or not available.
   */
  sendKey(epoch: number): [Chain, number, Uint8Array] {
    if (epoch < this.sendEpoch) throw new InvalidSpqrState("SPQR send epoch decreased");
    let position: number;
    try {
      position = this.position(epoch);
    } catch (exc) {
      if (exc instanceof SpqrEpochOutOfRange) throw new InvalidSpqrState(exc.message);
      throw exc;
    }
    let kept = [...this.links];
    if (epoch !== this.sendEpoch) {
      const drop = Math.max(0, position - EPOCHS_KEPT_BEFORE_SEND_EPOCH);
      kept = kept.slice(drop);
      position -= drop;
      for (let i = 0; i < position; i++) kept[i] = { send: kept[i]!.send.wiped(), recv: kept[i]!.recv };
    }
    const [half, index, key] = kept[position]!.send.send();
    kept[position] = { send: half, recv: kept[position]!.recv };
    return [new Chain(this.direction, this.currentEpoch, epoch, kept, this.nextRoot, this.params), index, key];
  }

  /**
   * `[chain after, key]` for a received message of chain epoch `epoch`.
   * @throws SpqrEpochOutOfRange the epoch is ahead of the chain or already dropped.
   * @throws SpqrKeyJump, SpqrKeyTrimmed, SpqrKeyAlreadyRequested see {@link ChainHalf.recv}.
   */
  recvKey(epoch: number, index: number): [Chain, Uint8Array] {
    const position = this.position(epoch);
    const link = this.links[position]!;
    const [half, key] = link.recv.recv(index, this.params);
    const links = [...this.links];
    links[position] = { send: link.send, recv: half };
    return [new Chain(this.direction, this.currentEpoch, this.sendEpoch, links, this.nextRoot, this.params), key];
  }

  toString(): string {
    return `Chain(${this.direction === Direction.A2B ? "A2B" : "B2A"}, currentEpoch=${this.currentEpoch}, `
      + `sendEpoch=${this.sendEpoch}, ${this.links.length} links, <keys redacted>)`;
  }

  toJSON(): string {
    return this.toString();
  }
}
