/**
 * The stored form of a {@link PqRatchetState}: Cipherpost's own, versioned, byte for byte
 * the layout of cipherpost.protocol.spqr.storage, so that a state written by the Python
 * client loads here and the other way round.
 *
 * Empty bytes are V0, a session without SPQR. Otherwise the bytes start with a format
 * byte; format 1, little-endian:
 *
 *     state       = u8 format(1) | u8 flags (1 braid, 2 chain, 4 negotiation)
 *                   | [negotiation] | [chain] | [braid]
 *     negotiation = 32s auth key | u8 direction | u8 min version | params
 *     params      = u32 max_jump | u32 max_ooo_keys
 *     chain       = u8 direction | u64 current epoch | u64 send epoch | 32s next root | params
 *                   | u16 n | n * (half send | half recv)
 *     half        = u32 ctr | u8 len (0 wiped, or 32) + next key | u32 n | n * (u32 index | 32s key)
 *     braid       = u8 tag (1..11, the state numbers of braid.ts) | u64 epoch
 *                   | 32s root key | 32s mac key | the state's own fields in order:
 *     bytes       = u16 len + bytes (exact sizes checked per field)
 *     encoder     = u32 next index | u16 len + value
 *     decoder     = u16 value length | u16 n | n * (u16 index | 32s chunk), sorted by index
 *     key pair    = 64s header | 1152s ek | u16 len + dk (64 or 2400)
 *     encaps      = 64s header | 32s m
 *
 * Everything is checked on load (sizes, tags, epochs, limits), so that a corrupt record
 * fails there, as {@link InvalidSpqrState}, and never later as some other error. One
 * difference from Python: epochs are JavaScript numbers, so a stored epoch beyond 2^53 - 1
 * (no conversation can reach one) is refused as malformed.
 */

import { Authenticator } from "./authenticator.js";
import type * as b from "./braid.js";
import { Chain, ChainHalf, ChainParams, type Direction, type Link } from "./chain.js";
import { Decoder, Encoder } from "./erasure.js";
import { InvalidSpqrState } from "./errors.js";
import {
  CT1_SIZE, CT2_SIZE, EK_SIZE, EXPANDED_DK_SIZE, EncapsState, HEADER_SIZE, KeyPair, SEED_SIZE,
} from "./incremental.js";
import { Negotiation, V0_STATE, type PqRatchetState } from "./ratchet.js";
import { CHUNK_SIZE, V0, V1 } from "./wire.js";

export const STORAGE_FORMAT = 1;

const HAS_BRAID = 1;
const HAS_CHAIN = 2;
const HAS_NEGOTIATION = 4;
const MAC = 32;
const U64_MAX = (1n << 64n) - 1n;

type FieldKind = "bytes" | "encoder" | "decoder" | "keys" | "encaps";

/** Each state's own fields after epoch and auth: [property, stored name, kind]. */
const FIELDS: Readonly<Record<number, readonly (readonly [string, string, FieldKind])[]>> = {
  1: [],
  2: [["keys", "keys", "keys"], ["sendingHdr", "sending_hdr", "encoder"]],
  3: [["dk", "dk", "bytes"], ["sendingEk", "sending_ek", "encoder"], ["receivingCt1", "receiving_ct1", "decoder"]],
  4: [["dk", "dk", "bytes"], ["ct1", "ct1", "bytes"], ["sendingEk", "sending_ek", "encoder"]],
  5: [["dk", "dk", "bytes"], ["ct1", "ct1", "bytes"], ["receivingCt2", "receiving_ct2", "decoder"]],
  6: [["receivingHdr", "receiving_hdr", "decoder"]],
  7: [["header", "header", "bytes"]],
  8: [["encaps", "encaps", "encaps"], ["ct1", "ct1", "bytes"], ["sendingCt1", "sending_ct1", "encoder"],
    ["receivingEk", "receiving_ek", "decoder"]],
  9: [["encaps", "encaps", "encaps"], ["ek", "ek", "bytes"], ["ct1", "ct1", "bytes"], ["sendingCt1", "sending_ct1", "encoder"]],
  10: [["encaps", "encaps", "encaps"], ["ct1", "ct1", "bytes"], ["receivingEk", "receiving_ek", "decoder"]],
  11: [["sendingCt2", "sending_ct2", "encoder"]],
};

/** The only sizes each byte string, encoder value and decoder value may have. */
const SIZES: Readonly<Record<string, readonly number[]>> = {
  dk: [SEED_SIZE, EXPANDED_DK_SIZE], ct1: [CT1_SIZE], header: [HEADER_SIZE], ek: [EK_SIZE],
  sending_hdr: [HEADER_SIZE + MAC], receiving_hdr: [HEADER_SIZE + MAC],
  sending_ek: [EK_SIZE], receiving_ek: [EK_SIZE], sending_ct1: [CT1_SIZE], receiving_ct1: [CT1_SIZE],
  sending_ct2: [CT2_SIZE + MAC], receiving_ct2: [CT2_SIZE + MAC],
};

// -- writing ------------------------------------------------------------------------------

class Writer {
  private buf = new Uint8Array(4096);
  private view = new DataView(this.buf.buffer);
  at = 0;

  private room(n: number): void {
    if (this.at + n <= this.buf.length) return;
    const bigger = new Uint8Array(Math.max(2 * this.buf.length, this.at + n));
    bigger.set(this.buf.subarray(0, this.at));
    this.buf = bigger;
    this.view = new DataView(bigger.buffer);
  }

  u8(v: number): void { this.room(1); this.view.setUint8(this.at, v); this.at += 1; }
  u16(v: number): void { this.room(2); this.view.setUint16(this.at, v, true); this.at += 2; }
  u32(v: number): void { this.room(4); this.view.setUint32(this.at, v, true); this.at += 4; }
  u64(v: number): void { this.room(8); this.view.setBigUint64(this.at, BigInt(v), true); this.at += 8; }
  raw(data: Uint8Array): void { this.room(data.length); this.buf.set(data, this.at); this.at += data.length; }
  short(data: Uint8Array): void { this.u16(data.length); this.raw(data); }
  done(): Uint8Array { return this.buf.slice(0, this.at); }
}

/** The stored bytes of `state`; empty for V0. */
export function serialize(state: PqRatchetState): Uint8Array {
  if (state.braid === null) return new Uint8Array(0);
  const w = new Writer();
  let flags = HAS_BRAID;
  if (state.negotiation !== null) flags |= HAS_NEGOTIATION;
  if (state.chain !== null) flags |= HAS_CHAIN;
  w.u8(STORAGE_FORMAT);
  w.u8(flags);
  const n = state.negotiation;
  if (n !== null) {
    w.raw(n.authKey);
    w.u8(n.direction);
    w.u8(n.minVersion);
    w.u32(n.params.maxJump);
    w.u32(n.params.maxOooKeys);
  }
  if (state.chain !== null) writeChain(w, state.chain);
  writeBraid(w, state.braid);
  return w.done();
}

function writeHalf(w: Writer, half: ChainHalf): void {
  w.u32(half.ctr);
  w.u8(half.nextKey.length);
  w.raw(half.nextKey);
  w.u32(half.skipped.size);
  for (const [i, k] of half.skipped) {
    w.u32(i);
    w.raw(k);
  }
}

function writeChain(w: Writer, chain: Chain): void {
  w.u8(chain.direction);
  w.u64(chain.currentEpoch);
  w.u64(chain.sendEpoch);
  w.raw(chain.nextRoot);
  w.u32(chain.params.maxJump);
  w.u32(chain.params.maxOooKeys);
  w.u16(chain.links.length);
  for (const link of chain.links) {
    writeHalf(w, link.send);
    writeHalf(w, link.recv);
  }
}

function writeField(w: Writer, kind: FieldKind, value: unknown): void {
  switch (kind) {
    case "bytes":
      w.short(value as Uint8Array);
      break;
    case "encoder": {
      const e = value as Encoder;
      w.u32(e.nextIndex);
      w.short(e.message);
      break;
    }
    case "decoder": {
      const d = value as Decoder;
      w.u16(d.length);
      w.u16(d.chunks.size);
      for (const i of [...d.chunks.keys()].sort((x, y) => x - y)) {
        w.u16(i);
        w.raw(d.chunks.get(i)!);
      }
      break;
    }
    case "keys": {
      const k = value as KeyPair;
      w.raw(k.header);
      w.raw(k.ek);
      w.short(k.dk);
      break;
    }
    case "encaps": {
      const s = value as EncapsState;
      w.raw(s.header);
      w.raw(s.m);
      break;
    }
  }
}

function writeBraid(w: Writer, state: b.BraidState): void {
  w.u8(state.kind);
  w.u64(state.epoch);
  w.raw(state.auth.rootKey);
  w.raw(state.auth.macKey);
  const fields = state as unknown as Record<string, unknown>;
  for (const [property, , kind] of FIELDS[state.kind]!) writeField(w, kind, fields[property]);
}

// -- reading ------------------------------------------------------------------------------

/** A malformed record; turned into InvalidSpqrState at the top. */
class Malformed extends Error {}

class Reader {
  private readonly view: DataView;
  at = 0;

  constructor(readonly data: Uint8Array) {
    this.view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  }

  private need(n: number): number {
    if (this.at + n > this.data.length) throw new Malformed("truncated");
    const at = this.at;
    this.at += n;
    return at;
  }

  u8(): number { return this.view.getUint8(this.need(1)); }
  u16(): number { return this.view.getUint16(this.need(2), true); }
  u32(): number { return this.view.getUint32(this.need(4), true); }
  u64(): bigint { return this.view.getBigUint64(this.need(8), true); }
  take(n: number): Uint8Array { const at = this.need(n); return this.data.slice(at, at + n); }
  short(): Uint8Array { return this.take(this.u16()); }
}

/**
 * Load what {@link serialize} (or Python's storage.serialize) wrote; empty bytes: V0.
 * @throws InvalidSpqrState malformed, an unknown format, or values no state can hold.
 */
export function deserialize(data: Uint8Array): PqRatchetState {
  if (data.length === 0) return V0_STATE;
  try {
    return readState(new Reader(Uint8Array.from(data)));
  } catch (exc) {
    if (exc instanceof InvalidSpqrState) throw exc;
    if (exc instanceof Malformed || exc instanceof RangeError) {
      throw new InvalidSpqrState("malformed stored SPQR state", { cause: exc });
    }
    throw exc;
  }
}

function direction(v: number): Direction {
  if (v !== 0 && v !== 1) throw new Malformed("bad direction");
  return v;
}

function safe(v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Malformed("epoch beyond 2^53 - 1");
  return Number(v);
}

function readState(r: Reader): PqRatchetState {
  const fmt = r.u8();
  const flags = r.u8();
  if (fmt !== STORAGE_FORMAT) throw new InvalidSpqrState("unknown stored SPQR state format");
  if ((flags & ~(HAS_BRAID | HAS_CHAIN | HAS_NEGOTIATION)) !== 0 || !(flags & HAS_BRAID)
    || !(flags & (HAS_CHAIN | HAS_NEGOTIATION))) {
    throw new Malformed("bad flags");
  }
  let negotiation: Negotiation | null = null;
  let chain: Chain | null = null;
  if (flags & HAS_NEGOTIATION) {
    const authKey = r.take(32);
    const dir = direction(r.u8());
    const minVersion = r.u8();
    if (minVersion !== V0 && minVersion !== V1) throw new Malformed("bad minimum version");
    const params = new ChainParams(r.u32(), r.u32());
    negotiation = new Negotiation(authKey, dir, minVersion, params);
  }
  if (flags & HAS_CHAIN) chain = readChain(r);
  const state = readBraid(r);
  if (r.at !== r.data.length) throw new Malformed("trailing bytes");
  return { braid: state, chain, negotiation };
}

function readHalf(r: Reader): ChainHalf {
  const ctr = r.u32();
  const length = r.u8();
  if (length !== 0 && length !== 32) throw new Malformed("bad chain key");
  const nextKey = r.take(length);
  const count = r.u32();
  if (count > r.data.length) throw new Malformed("bad skipped count"); // cheap bound before allocating
  const skipped = new Map<number, Uint8Array>();
  for (let n = 0; n < count; n++) {
    const i = r.u32();
    skipped.set(i, r.take(32));
  }
  if (skipped.size !== count || [...skipped.keys()].some((i) => i >= ctr)) throw new Malformed("bad skipped keys");
  return new ChainHalf(ctr, nextKey, skipped);
}

function readChain(r: Reader): Chain {
  const dir = direction(r.u8());
  const current = safe(r.u64());
  const sendEpoch = safe(r.u64());
  const nextRoot = r.take(32);
  const params = new ChainParams(r.u32(), r.u32());
  const count = r.u16();
  if (!(count > 0 && count <= current + 1) || sendEpoch > current) throw new Malformed("bad chain epochs");
  const links: Link[] = [];
  for (let n = 0; n < count; n++) {
    const send = readHalf(r);
    links.push({ send, recv: readHalf(r) });
  }
  return new Chain(dir, current, sendEpoch, links, nextRoot, params);
}

function sized(value: Uint8Array, name: string): Uint8Array {
  if (!SIZES[name]!.includes(value.length)) throw new Malformed(`bad ${name} size`);
  return value;
}

function readField(r: Reader, name: string, kind: FieldKind): unknown {
  switch (kind) {
    case "bytes":
      return sized(r.short(), name);
    case "encoder": {
      const nextIndex = r.u32();
      return new Encoder(sized(r.short(), name), nextIndex);
    }
    case "decoder": {
      const length = r.u16();
      const count = r.u16();
      if (!SIZES[name]!.includes(length)) throw new Malformed(`bad ${name} size`);
      const chunks = new Map<number, Uint8Array>();
      for (let n = 0; n < count; n++) {
        const i = r.u16();
        chunks.set(i, r.take(CHUNK_SIZE));
      }
      if (chunks.size !== count) throw new Malformed("repeated chunk index");
      return new Decoder(length, chunks);
    }
    case "keys": {
      const header = r.take(HEADER_SIZE);
      const ek = r.take(EK_SIZE);
      return new KeyPair(header, ek, sized(r.short(), "dk"));
    }
    case "encaps": {
      const header = r.take(HEADER_SIZE);
      return new EncapsState(header, r.take(32));
    }
  }
}

function readBraid(r: Reader): b.BraidState {
  const tag = r.u8();
  const epoch = r.u64();
  const rootKey = r.take(32);
  const macKey = r.take(32);
  if (!(tag >= 1 && tag <= 11) || !(epoch >= 1n && epoch < U64_MAX)) throw new Malformed("bad braid state");
  const state: Record<string, unknown> = { kind: tag, epoch: safe(epoch), auth: new Authenticator(rootKey, macKey) };
  for (const [property, name, kind] of FIELDS[tag]!) state[property] = readField(r, name, kind);
  return state as unknown as b.BraidState;
}
