/**
 * The ML-KEM braid: SPQR V1's eleven SCKA states (spqr-digest §4); mirrors
 * cipherpost.protocol.spqr.braid.
 *
 * Epochs start at 1 and alternate roles: in odd epochs Alice is the *EK sender* (she
 * samples an ML-KEM-768 key pair and trickles out its header, then its ek), Bob the *CT
 * sender* (he encapsulates as soon as the header is complete, trickles out ct1, and ct2
 * once he has ek and knows ct1 arrived). Every message carries at most one 32-byte chunk.
 * The CT sender learns the epoch secret S_e when it sends its first ct1 chunk; the EK
 * sender when ct2 is complete and its MAC, keyed by S_e, verifies. The CT sender of epoch
 * e becomes the EK sender of e+1 on the first message of e+1.
 *
 * Receive rules common to all states: a message of a later epoch is an error (except
 * exactly e+1 in Ct2Sampled), one of an earlier epoch leaves the state as it is, and
 * payloads a state does not expect are ignored.
 *
 * States are immutable plain objects tagged by `kind`, the state numbers of the digest's
 * table (and of the stored form); {@link send} and {@link recv} return the next state.
 * Randomness comes in as `rng`; `keygen` exists so that tests can replay recorded key
 * pairs.
 */

import { concat, type Random } from "../bytes.js";
import { Authenticator, MAC_SIZE } from "./authenticator.js";
import { Decoder, Encoder } from "./erasure.js";
import { SpqrEpochOutOfRange, SpqrErroneousData } from "./errors.js";
import * as incremental from "./incremental.js";
import { CT1_SIZE, CT2_SIZE, EK_SIZE, HEADER_SIZE, type EncapsState, type KeyPair } from "./incremental.js";
import { sckaKey } from "./kdf.js";
import { PayloadType, type Chunk } from "./wire.js";

export type KeyGen = (rng: Random) => KeyPair;

export const Kind = {
  KeysUnsampled: 1,
  KeysSampled: 2,
  HeaderSent: 3,
  Ct1Received: 4,
  EkSentCt1Received: 5,
  NoHeaderReceived: 6,
  HeaderReceived: 7,
  Ct1Sampled: 8,
  EkReceivedCt1Sampled: 9,
  Ct1Acknowledged: 10,
  Ct2Sampled: 11,
} as const;

export const KIND_NAMES: readonly string[] = ["", ...Object.keys(Kind)];

interface Base {
  readonly epoch: number;
  readonly auth: Authenticator;
}

// -- EK-sender states ---------------------------------------------------------------------

/** 1: no key pair yet; the next send samples one. */
export interface KeysUnsampled extends Base { readonly kind: 1 }
/** 2: sending header chunks, waiting for the first ct1 chunk. */
export interface KeysSampled extends Base { readonly kind: 2; readonly keys: KeyPair; readonly sendingHdr: Encoder }
/** 3: sending ek chunks, collecting ct1. */
export interface HeaderSent extends Base {
  readonly kind: 3; readonly dk: Uint8Array; readonly sendingEk: Encoder; readonly receivingCt1: Decoder;
}
/** 4: has ct1; sending ek chunks that also acknowledge ct1. */
export interface Ct1Received extends Base {
  readonly kind: 4; readonly dk: Uint8Array; readonly ct1: Uint8Array; readonly sendingEk: Encoder;
}
/** 5: ct2 started arriving (so ek arrived); acknowledging ct1, collecting ct2. */
export interface EkSentCt1Received extends Base {
  readonly kind: 5; readonly dk: Uint8Array; readonly ct1: Uint8Array; readonly receivingCt2: Decoder;
}

// -- CT-sender states ---------------------------------------------------------------------

/** 6: collecting the header. */
export interface NoHeaderReceived extends Base { readonly kind: 6; readonly receivingHdr: Decoder }
/** 7: has an authenticated header; the next send encapsulates. */
export interface HeaderReceived extends Base { readonly kind: 7; readonly header: Uint8Array }
/** 8: sending ct1 chunks, collecting ek. */
export interface Ct1Sampled extends Base {
  readonly kind: 8; readonly encaps: EncapsState; readonly ct1: Uint8Array; readonly sendingCt1: Encoder;
  readonly receivingEk: Decoder;
}
/** 9: has ek, still sending ct1 until the peer acknowledges it. */
export interface EkReceivedCt1Sampled extends Base {
  readonly kind: 9; readonly encaps: EncapsState; readonly ek: Uint8Array; readonly ct1: Uint8Array;
  readonly sendingCt1: Encoder;
}
/** 10: the peer has ct1; collecting the rest of ek. */
export interface Ct1Acknowledged extends Base {
  readonly kind: 10; readonly encaps: EncapsState; readonly ct1: Uint8Array; readonly receivingEk: Decoder;
}
/** 11: sending ct2 chunks until the peer's first message of the next epoch. */
export interface Ct2Sampled extends Base { readonly kind: 11; readonly sendingCt2: Encoder }

export type BraidState =
  | KeysUnsampled | KeysSampled | HeaderSent | Ct1Received | EkSentCt1Received
  | NoHeaderReceived | HeaderReceived | Ct1Sampled | EkReceivedCt1Sampled | Ct1Acknowledged | Ct2Sampled;

/** A short description without key material (for logs and errors). */
export function describe(state: BraidState): string {
  return `${KIND_NAMES[state.kind]}(epoch=${state.epoch}, <keys redacted>)`;
}

export const HEADER_VALUE_SIZE = HEADER_SIZE + MAC_SIZE; // 96
export const CT2_VALUE_SIZE = CT2_SIZE + MAC_SIZE; // 160

/** Alice's (A2B) first state. */
export function initialA(authKey: Uint8Array): KeysUnsampled {
  return { kind: 1, epoch: 1, auth: Authenticator.initial(authKey) };
}

/** Bob's (B2A) first state. */
export function initialB(authKey: Uint8Array): NoHeaderReceived {
  return { kind: 6, epoch: 1, auth: Authenticator.initial(authKey), receivingHdr: new Decoder(HEADER_VALUE_SIZE) };
}

/** What {@link send} produced: the next state, the payload, maybe an epoch secret. */
export interface Sent {
  readonly state: BraidState;
  readonly epoch: number;
  readonly payload: PayloadType;
  readonly chunk: Chunk | null;
  /** The epoch secret, if one was made here. */
  readonly secret: Uint8Array | null;
}

// -- transitions ----------------------------------------------------------------------------

/**
 * One message's worth of braid: the payload to send and the state after. `rng` is drawn
 * from only in KeysUnsampled (through `keygen`, 64 bytes) and in HeaderReceived (the
 * 32-byte encapsulation message).
 */
export function send(state: BraidState, rng: Random, keygen: KeyGen = incremental.generate): Sent {
  const e = state.epoch;
  const out = (after: BraidState, payload: PayloadType, chunk: Chunk | null = null, secret: Uint8Array | null = null): Sent =>
    ({ state: after, epoch: e, payload, chunk, secret });
  switch (state.kind) {
    case 1: {
      const keys = keygen(rng);
      const mac = state.auth.macHeader(e, keys.header);
      const [encoder, chunk] = new Encoder(concat(keys.header, mac)).next();
      return out({ kind: 2, epoch: e, auth: state.auth, keys, sendingHdr: encoder }, PayloadType.HDR, chunk);
    }
    case 2: {
      const [encoder, chunk] = state.sendingHdr.next();
      return out({ ...state, sendingHdr: encoder }, PayloadType.HDR, chunk);
    }
    case 3: {
      const [encoder, chunk] = state.sendingEk.next();
      return out({ ...state, sendingEk: encoder }, PayloadType.EK, chunk);
    }
    case 4: {
      const [encoder, chunk] = state.sendingEk.next();
      return out({ ...state, sendingEk: encoder }, PayloadType.EK_CT1_ACK, chunk);
    }
    case 5:
      return out(state, PayloadType.CT1_ACK);
    case 6:
    case 10:
      return out(state, PayloadType.NONE);
    case 7: {
      const [ct1, encaps, shared] = incremental.encaps1(state.header, rng);
      const secret = sckaKey(shared, e);
      const auth = state.auth.update(e, secret);
      const [encoder, chunk] = new Encoder(ct1).next();
      return out({ kind: 8, epoch: e, auth, encaps, ct1, sendingCt1: encoder, receivingEk: new Decoder(EK_SIZE) },
        PayloadType.CT1, chunk, secret);
    }
    case 8: {
      const [encoder, chunk] = state.sendingCt1.next();
      return out({ ...state, sendingCt1: encoder }, PayloadType.CT1, chunk);
    }
    case 9: {
      const [encoder, chunk] = state.sendingCt1.next();
      return out({ ...state, sendingCt1: encoder }, PayloadType.CT1, chunk);
    }
    case 11: {
      const [encoder, chunk] = state.sendingCt2.next();
      return out({ ...state, sendingCt2: encoder }, PayloadType.CT2, chunk);
    }
  }
}

function sendCt2(epoch: number, auth: Authenticator, encaps: EncapsState, ek: Uint8Array, ct1: Uint8Array): Ct2Sampled {
  const ct2 = incremental.encaps2(ek, encaps);
  const mac = auth.macCiphertext(epoch, concat(ct1, ct2));
  return { kind: 11, epoch, auth, sendingCt2: new Encoder(concat(ct2, mac)) };
}

function checkEk(encaps: EncapsState, ek: Uint8Array): void {
  if (!incremental.ekMatchesHeader(ek, encaps.header)) {
    throw new SpqrErroneousData("SPQR encapsulation key does not match its header");
  }
}

/** The payload types each state takes in; others leave it as it is. */
export const CONSUMES: Readonly<Record<BraidState["kind"], readonly PayloadType[]>> = {
  1: [], 2: [PayloadType.CT1], 3: [PayloadType.CT1], 4: [PayloadType.CT2], 5: [PayloadType.CT2],
  6: [PayloadType.HDR], 7: [], 8: [PayloadType.EK, PayloadType.EK_CT1_ACK],
  9: [PayloadType.CT1_ACK, PayloadType.EK_CT1_ACK], 10: [PayloadType.EK, PayloadType.EK_CT1_ACK], 11: [],
};

/**
 * The state after receiving a message of `epoch` with `payload` (and its chunk, if any),
 * and the epoch secret if one completed here.
 * @throws SpqrEpochOutOfRange `epoch` is ahead of this state.
 * @throws SpqrAuthenticationFailed a completed header or ciphertext fails its MAC.
 * @throws SpqrErroneousData a completed ek does not match the authenticated header.
 */
export function recv(state: BraidState, epoch: number, payload: PayloadType, chunk: Chunk | null): [BraidState, Uint8Array | null] {
  const e = state.epoch;
  if (epoch !== e) {
    if (state.kind === 11 && epoch === e + 1) return [{ kind: 1, epoch: e + 1, auth: state.auth }, null];
    if (epoch > e) throw new SpqrEpochOutOfRange(`SPQR message epoch ${epoch} ahead of ${e}`);
    return [state, null];
  }
  if (!CONSUMES[state.kind].includes(payload)) return [state, null];
  return consume(state, payload, chunk);
}

/** The transitions on a payload of the state's own epoch. */
export function consume(state: BraidState, payload: PayloadType, chunk: Chunk | null): [BraidState, Uint8Array | null] {
  const e = state.epoch;
  switch (state.kind) {
    case 2:
      if (payload === PayloadType.CT1 && chunk !== null) {
        return [{
          kind: 3, epoch: e, auth: state.auth, dk: state.keys.dk, sendingEk: new Encoder(state.keys.ek),
          receivingCt1: new Decoder(CT1_SIZE).add(chunk),
        }, null];
      }
      break;
    case 3:
      if (payload === PayloadType.CT1 && chunk !== null) {
        const decoder = state.receivingCt1.add(chunk);
        const ct1 = decoder.decoded();
        if (ct1 === null) return [{ ...state, receivingCt1: decoder }, null];
        return [{ kind: 4, epoch: e, auth: state.auth, dk: state.dk, ct1, sendingEk: state.sendingEk }, null];
      }
      break;
    case 4:
      if (payload === PayloadType.CT2 && chunk !== null) {
        return [{
          kind: 5, epoch: e, auth: state.auth, dk: state.dk, ct1: state.ct1,
          receivingCt2: new Decoder(CT2_VALUE_SIZE).add(chunk),
        }, null];
      }
      break;
    case 5:
      if (payload === PayloadType.CT2 && chunk !== null) {
        const decoder = state.receivingCt2.add(chunk);
        const value = decoder.decoded();
        if (value === null) return [{ ...state, receivingCt2: decoder }, null];
        const ct2 = value.slice(0, CT2_SIZE);
        const mac = value.slice(CT2_SIZE);
        const secret = sckaKey(incremental.decapsulate(state.dk, state.ct1, ct2), e);
        const auth = state.auth.update(e, secret);
        auth.verifyCiphertext(e, concat(state.ct1, ct2), mac);
        return [{ kind: 6, epoch: e + 1, auth, receivingHdr: new Decoder(HEADER_VALUE_SIZE) }, secret];
      }
      break;
    case 6:
      if (payload === PayloadType.HDR && chunk !== null) {
        const decoder = state.receivingHdr.add(chunk);
        const value = decoder.decoded();
        if (value === null) return [{ ...state, receivingHdr: decoder }, null];
        const header = value.slice(0, HEADER_SIZE);
        state.auth.verifyHeader(e, header, value.slice(HEADER_SIZE));
        return [{ kind: 7, epoch: e, auth: state.auth, header }, null];
      }
      break;
    case 8:
      if ((payload === PayloadType.EK || payload === PayloadType.EK_CT1_ACK) && chunk !== null) {
        const acked = payload === PayloadType.EK_CT1_ACK;
        const decoder = state.receivingEk.add(chunk);
        const ek = decoder.decoded();
        if (ek === null) {
          if (acked) {
            return [{ kind: 10, epoch: e, auth: state.auth, encaps: state.encaps, ct1: state.ct1, receivingEk: decoder }, null];
          }
          return [{ ...state, receivingEk: decoder }, null];
        }
        checkEk(state.encaps, ek);
        if (acked) return [sendCt2(e, state.auth, state.encaps, ek, state.ct1), null];
        return [{
          kind: 9, epoch: e, auth: state.auth, encaps: state.encaps, ek, ct1: state.ct1, sendingCt1: state.sendingCt1,
        }, null];
      }
      break;
    case 9:
      if (payload === PayloadType.CT1_ACK || payload === PayloadType.EK_CT1_ACK) {
        return [sendCt2(e, state.auth, state.encaps, state.ek, state.ct1), null];
      }
      break;
    case 10:
      if ((payload === PayloadType.EK || payload === PayloadType.EK_CT1_ACK) && chunk !== null) {
        const decoder = state.receivingEk.add(chunk);
        const ek = decoder.decoded();
        if (ek === null) return [{ ...state, receivingEk: decoder }, null];
        checkEk(state.encaps, ek);
        return [sendCt2(e, state.auth, state.encaps, ek, state.ct1), null];
      }
      break;
    default:
      break;
  }
  return [state, null];
}
