/**
 * SPQR's per-message interface: version negotiation, `send` and `recv` (spqr-digest §5,
 * §8); mirrors cipherpost.protocol.spqr.ratchet.
 *
 * A session's SPQR state is one {@link PqRatchetState}: the braid (null once the session
 * fell back to V0, i.e. no SPQR), the chain (made lazily from the auth key), and, until
 * the first V1 message arrives, what negotiation needs (auth key, direction, minimum
 * version, chain limits).
 *
 * Negotiation is in-band and only on receive (§8.2): a V1 message ends it; an empty
 * field 5 (V0) downgrades the session for good if the minimum version allows, else it is
 * an error; after negotiation, V0 is an error; an unknown version byte is ignored (no
 * key). Sending never changes negotiation, and sends a key from the first message on only
 * if the minimum version is V1 (otherwise the chain starts on the first receive).
 *
 * Both functions are pure: `recv` returns a new state that the caller keeps only once the
 * whole message verified (the Double Ratchet MAC needs the SPQR key first).
 */

import type { Random } from "../bytes.js";
import * as braid from "./braid.js";
import { Chain, ChainParams, DEFAULT_PARAMS, Direction } from "./chain.js";
import { InvalidSpqrState, SpqrMinimumVersion, SpqrVersionMismatch } from "./errors.js";
import * as incremental from "./incremental.js";
import { V0, V1, decodeFields, encodeFields, messageVersion, type Version } from "./wire.js";

/** What a session keeps until its first V1 message: enough to start either version. */
export class Negotiation {
  constructor(
    readonly authKey: Uint8Array,
    readonly direction: Direction,
    readonly minVersion: Version,
    readonly params: ChainParams = DEFAULT_PARAMS,
  ) {
    if (authKey.length !== 32) throw new RangeError("the SPQR auth key is 32 bytes");
  }

  chain(): Chain {
    return Chain.start(this.authKey, this.direction, this.params);
  }

  toString(): string {
    return `Negotiation(direction=${this.direction}, minVersion=${this.minVersion}, <key redacted>)`;
  }

  toJSON(): string {
    return this.toString();
  }
}

/** A session's SPQR state; {@link V0_STATE} (all null) is V0, no SPQR. */
export interface PqRatchetState {
  readonly braid: braid.BraidState | null;
  readonly chain: Chain | null;
  readonly negotiation: Negotiation | null;
}

export const V0_STATE: PqRatchetState = Object.freeze({ braid: null, chain: null, negotiation: null });

/** V1 while the braid runs, V0 once (or if) the session has no SPQR. */
export function versionOf(state: PqRatchetState): Version {
  return state.braid === null ? V0 : V1;
}

/** Whether no V1 message has been received yet. */
export function isNegotiating(state: PqRatchetState): boolean {
  return state.negotiation !== null;
}

/**
 * A new session's SPQR state from the 32-byte auth key that PQXDH derived (§8.1).
 * libsignal 0.92+ uses `version = minVersion = V1`; 0.90/0.91 used `minVersion = V0`;
 * `version = V0` gives a session without SPQR.
 */
export function initialState(authKey: Uint8Array, direction: Direction,
  options: { version?: number; minVersion?: number; params?: ChainParams } = {}): PqRatchetState {
  const version = options.version ?? V1;
  const minVersion = options.minVersion ?? V1;
  if (authKey.length !== 32) throw new RangeError("the SPQR auth key is 32 bytes");
  if ((version !== V0 && version !== V1) || (minVersion !== V0 && minVersion !== V1) || minVersion > version) {
    throw new RangeError("versions must be V0 or V1 with minVersion <= version");
  }
  if (version === V0) return V0_STATE;
  const start = direction === Direction.A2B ? braid.initialA(authKey) : braid.initialB(authKey);
  return { braid: start, chain: null, negotiation: new Negotiation(authKey, direction, minVersion, options.params) };
}

const U32_MAX = 0xffffffff;

/**
 * What a new session offers and requires. `OFF` (V0) is a session without SPQR, as
 * Cipherpost before SPQR and libsignal before 0.90; `OFFERED` runs SPQR but downgrades
 * for a peer without it (libsignal 0.90/0.91); `REQUIRED` refuses such a peer (libsignal
 * 0.92 and later).
 */
export class SpqrSettings {
  static readonly OFF = new SpqrSettings(V0, V0);
  static readonly OFFERED = new SpqrSettings(V1, V0);
  static readonly REQUIRED = new SpqrSettings(V1, V1);

  constructor(readonly version: Version = V0, readonly minVersion: Version = V0) {
    if (minVersion > version) throw new RangeError("versions must be V0 or V1 with minVersion <= version");
  }

  /** A new session's state (spqr-digest §8.1); with oneself, jumps are unbounded. */
  initialState(authKey: Uint8Array, direction: Direction, selfSession = false): PqRatchetState {
    const params = selfSession ? new ChainParams(U32_MAX) : DEFAULT_PARAMS;
    return initialState(authKey, direction, { version: this.version, minVersion: this.minVersion, params });
  }
}

/** The state after sending, field 5's bytes, and the message key (null = no salt). */
export interface Sent {
  readonly state: PqRatchetState;
  readonly message: Uint8Array;
  readonly key: Uint8Array | null;
}

/**
 * SPQR's part of encrypting one message.
 * @throws InvalidSpqrState the state cannot send (it has neither chain nor negotiation data).
 */
export function send(state: PqRatchetState, rng: Random, keygen: braid.KeyGen = incremental.generate): Sent {
  const current = state.braid;
  if (current === null) return { state, message: new Uint8Array(0), key: null };
  const sent = braid.send(current, rng, keygen);
  let chain = state.chain;
  if (chain === null) {
    if (state.negotiation === null) throw new InvalidSpqrState("SPQR chain not available");
    if (state.negotiation.minVersion > V0) chain = state.negotiation.chain();
  }
  let index = 0;
  let key: Uint8Array | null = null;
  if (chain !== null) {
    if (sent.secret !== null) chain = chain.addEpoch(sent.epoch, sent.secret);
    [chain, index, key] = chain.sendKey(sent.epoch - 1);
  } else if (sent.secret !== null) {
    throw new InvalidSpqrState("SPQR epoch secret without a chain");
  }
  const message = encodeFields(sent.epoch, index, sent.payload, sent.chunk?.index ?? 0, sent.chunk?.data ?? null);
  return { state: { braid: sent.state, chain, negotiation: state.negotiation }, message, key };
}

/**
 * SPQR's part of decrypting a message with field-5 bytes `data`: the new state and the
 * message key (null: no salt). The caller keeps the new state only if the whole message
 * then verifies.
 * @throws SpqrMinimumVersion `data` is V0 while negotiating with minimum version V1.
 * @throws SpqrVersionMismatch `data` is V0 after the session negotiated V1.
 * @throws MalformedSpqrMessage the V1 bytes do not parse.
 * @throws SpqrError any braid or chain error.
 */
export function recv(state: PqRatchetState, data: Uint8Array): [PqRatchetState, Uint8Array | null] {
  const current = state.braid;
  if (current === null || data.length === 0 || data[0] !== V1) return recvNotV1(state, data);
  const f = decodeFields(data);
  const chunk = f.chunkData === null ? null : { index: f.chunkIndex, data: f.chunkData };
  const [newBraid, secret] = braid.recv(current, f.epoch, f.payload, chunk);
  let chain = state.chain;
  if (chain === null) {
    if (state.negotiation === null) throw new InvalidSpqrState("SPQR chain not available");
    chain = state.negotiation.chain();
  }
  if (secret !== null) chain = chain.addEpoch(f.epoch, secret);
  let key: Uint8Array | null = null;
  if (!(f.epoch === 1 && f.index === 0)) [chain, key] = chain.recvKey(f.epoch - 1, f.index);
  return [{ braid: newBraid, chain, negotiation: null }, key];
}

/** {@link recv} for a V0 state or bytes that are not V1 (§8.2). */
function recvNotV1(state: PqRatchetState, data: Uint8Array): [PqRatchetState, Uint8Array | null] {
  const version = messageVersion(data);
  if (version === null) return [state, null];
  if (version < versionOf(state)) {
    const negotiation = state.negotiation;
    if (negotiation === null) throw new SpqrVersionMismatch("SPQR message version below the negotiated one");
    if (version < negotiation.minVersion) throw new SpqrMinimumVersion("SPQR message version below the minimum version");
    return [V0_STATE, null]; // downgrade to V0 for good
  }
  return [V0_STATE, null]; // a V0 state stays V0, whatever comes
}
