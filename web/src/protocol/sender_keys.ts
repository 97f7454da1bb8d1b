/**
 * Sender Keys for groups (digest §6); mirrors cipherpost.protocol.sender_keys.
 *
 * A sender keeps one chain per distribution id and hands its chain key and public signing
 * key to each member in a SenderKeyDistributionMessage (carried inside 1:1 messages by the
 * application). Group messages are AES-256-CBC under keys from that chain and signed with
 * XEdDSA; the signature is checked before anything else. A rejected message changes no
 * state.
 */

import type { ProtocolAddress } from "./address.js";
import { concat, type Random, systemRandom } from "./bytes.js";
import { GROUP_INFO, MAX_FORWARD_JUMPS, MAX_MESSAGE_KEYS, MAX_SENDER_KEY_STATES, SENDER_KEY_VERSION } from "./constants.js";
import { DuplicatedMessage, InvalidMessage, InvalidSignature, NoSenderKey } from "./errors.js";
import { KeyPair, PrivateKey, PublicKey } from "./keys.js";
import { withLock } from "./lock.js";
import { SenderKeyDistributionMessage, SenderKeyMessage } from "./messages.js";
import * as pb from "./protobuf.js";
import { aesCbcDecrypt, aesCbcEncrypt, hkdf, messageKeySeed, nextChainKey } from "./ratchet.js";
import type { SenderKeyStore } from "./stores.js";
import { formatUuid, parseUuid } from "./uuid.js";
import * as xeddsa from "./xeddsa.js";

export const RECORD_FORMAT = 1;

/** `[cipher key, iv]` from a chain seed; the IV comes first in the HKDF output. */
function groupKeys(seed: Uint8Array): [Uint8Array, Uint8Array] {
  const okm = hkdf(seed, undefined, GROUP_INFO, 48);
  return [okm.slice(16, 48), okm.slice(0, 16)];
}

/** One sender chain: its id, position, signing key, and skipped seeds. */
export class SenderKeyState {
  constructor(
    readonly chainId: number,
    public iteration: number,
    public chainKey: Uint8Array,
    readonly signingKey: PublicKey,
    readonly signingPrivate: PrivateKey | undefined = undefined,
    readonly skipped: Map<number, Uint8Array> = new Map(),
    readonly version: number = SENDER_KEY_VERSION,
  ) {}

  toString(): string {
    return `SenderKeyState(chainId=${this.chainId}, iteration=${this.iteration}, <keys>)`;
  }
}

/** Up to five sender-key states for one (sender, distribution id), newest first. */
export class SenderKeyRecord {
  constructor(public states: SenderKeyState[] = []) {}

  stateForChain(chainId: number): SenderKeyState | undefined {
    return this.states.find((state) => state.chainId === chainId);
  }

  /** Add a state as libsignal does (digest §6.5). */
  addState(state: SenderKeyState): void {
    const existing = this.states.find((s) => s.chainId === state.chainId && s.signingKey.equals(state.signingKey));
    const others = this.states.filter((s) => s.chainId !== state.chainId);
    if (existing !== undefined) {
      this.states = [existing, ...others];
      return;
    }
    this.states = [state, ...others].slice(0, MAX_SENDER_KEY_STATES);
  }

  /** `format byte || SenderKeyRecordStructure` (digest §6.6 field numbers). */
  serialize(): Uint8Array {
    const out: Uint8Array[] = [Uint8Array.of(RECORD_FORMAT)];
    for (const s of this.states) {
      let signing = pb.fieldBytes(1, s.signingKey.serialize());
      if (s.signingPrivate !== undefined) signing = concat(signing, pb.fieldBytes(2, s.signingPrivate.serialize()));
      const keys = [...s.skipped].map(([i, seed]) => pb.fieldBytes(4, concat(pb.fieldVarint(1, i), pb.fieldBytes(2, seed))));
      out.push(pb.fieldBytes(1, concat(
        pb.fieldVarint(1, s.chainId),
        pb.fieldBytes(2, concat(pb.fieldVarint(1, s.iteration), pb.fieldBytes(2, s.chainKey))),
        pb.fieldBytes(3, signing),
        ...keys,
        pb.fieldVarint(5, s.version),
      )));
    }
    return concat(...out);
  }

  /** @throws InvalidMessage malformed or of an unknown format. */
  static deserialize(data: Uint8Array): SenderKeyRecord {
    if (data.length === 0 || data[0] !== RECORD_FORMAT) throw new InvalidMessage("unknown sender key record format");
    try {
      const states: SenderKeyState[] = [];
      for (const raw of pb.getRepeatedBytes(pb.decode(data.subarray(1)), 1)) {
        const f = pb.decode(raw);
        const chain = pb.decode(pb.getBytes(f, 2) ?? new Uint8Array(0));
        const signing = pb.decode(pb.getBytes(f, 3) ?? new Uint8Array(0));
        const privateBytes = pb.getBytes(signing, 2);
        const skipped = new Map<number, Uint8Array>();
        for (const mk of pb.getRepeatedBytes(f, 4)) {
          const mf = pb.decode(mk);
          skipped.set(pb.getUint32(mf, 1) ?? 0, Uint8Array.from(pb.getBytes(mf, 2) ?? new Uint8Array(0)));
        }
        const chainKey = pb.getBytes(chain, 2);
        if (chainKey === undefined || chainKey.length !== 32) throw new pb.DecodeError("bad chain key");
        states.push(new SenderKeyState(
          pb.getUint32(f, 1) ?? 0,
          pb.getUint32(chain, 1) ?? 0,
          Uint8Array.from(chainKey),
          PublicKey.deserialize(pb.getBytes(signing, 1) ?? new Uint8Array(0)),
          privateBytes !== undefined ? new PrivateKey(privateBytes) : undefined,
          skipped,
          pb.getInt(f, 5) || SENDER_KEY_VERSION,
        ));
      }
      return new SenderKeyRecord(states);
    } catch (cause) {
      throw new InvalidMessage("malformed sender key record", { cause });
    }
  }

  toString(): string {
    return `SenderKeyRecord(states=${this.states.length})`;
  }
}

function lockKey(sender: ProtocolAddress, distributionId: string): string {
  return `senderkey\u0000${sender.key()}\u0000${distributionId.toLowerCase()}`;
}

/** Our SKDM for `distributionId`, creating our sending chain on first use. */
export function createDistributionMessage(store: SenderKeyStore, sender: ProtocolAddress, distributionId: string,
  options: { rng?: Random } = {}): Promise<SenderKeyDistributionMessage> {
  const rng = options.rng ?? systemRandom;
  const id = formatUuid(parseUuid(distributionId));
  return withLock(store, lockKey(sender, id), async () => {
    let record = await store.loadSenderKey(sender, id);
    if (record === undefined || record.states.length === 0) {
      const signing = KeyPair.generate(rng);
      const chainIdBytes = rng(4);
      const chainId = new DataView(chainIdBytes.buffer, chainIdBytes.byteOffset, 4).getUint32(0, true) >>> 1;
      const state = new SenderKeyState(chainId, 0, rng(32), signing.publicKey, signing.privateKey);
      record = new SenderKeyRecord([state]);
      await store.storeSenderKey(sender, id, record);
    }
    const state = record.states[0]!;
    return SenderKeyDistributionMessage.build(id, state.chainId, state.iteration, state.chainKey, state.signingKey);
  });
}

/**
 * Accept a member's SKDM.
 * @throws InvalidMessage malformed message.
 * @throws UnknownVersion unsupported version.
 */
export async function processDistributionMessage(store: SenderKeyStore, sender: ProtocolAddress,
  data: Uint8Array): Promise<void> {
  const message = SenderKeyDistributionMessage.parse(data);
  await withLock(store, lockKey(sender, message.distributionId), async () => {
    const record = (await store.loadSenderKey(sender, message.distributionId)) ?? new SenderKeyRecord();
    record.addState(new SenderKeyState(message.chainId, message.iteration, message.chainKey, message.signingKey));
    await store.storeSenderKey(sender, message.distributionId, record);
  });
}

/**
 * Encrypt and sign a group message on our newest chain.
 * @throws NoSenderKey we have not created a chain for `distributionId`.
 */
export function groupEncrypt(store: SenderKeyStore, sender: ProtocolAddress, distributionId: string,
  plaintext: Uint8Array, options: { rng?: Random } = {}): Promise<Uint8Array> {
  const rng = options.rng ?? systemRandom;
  const id = formatUuid(parseUuid(distributionId));
  return withLock(store, lockKey(sender, id), async () => {
    const record = await store.loadSenderKey(sender, id);
    const state = record?.states[0];
    if (record === undefined || state === undefined || state.signingPrivate === undefined) {
      throw new NoSenderKey(`no sender key for ${id}`);
    }
    const [key, iv] = groupKeys(messageKeySeed(state.chainKey));
    const body = SenderKeyMessage.encodeBody(id, state.chainId, state.iteration, await aesCbcEncrypt(key, iv, plaintext));
    const signature = xeddsa.sign(state.signingPrivate, body, rng);
    state.chainKey = nextChainKey(state.chainKey);
    state.iteration += 1;
    await store.storeSenderKey(sender, id, record);
    return concat(body, signature);
  });
}

/**
 * Verify and decrypt a group message from `sender`.
 * @throws NoSenderKey no state for this sender, distribution id and chain.
 * @throws InvalidSignature the signature does not verify (checked first).
 * @throws DuplicatedMessage the message's key was already used.
 * @throws InvalidMessage malformed, too far ahead, or bad padding.
 * @throws UnknownVersion unsupported version.
 */
export async function groupDecrypt(store: SenderKeyStore, sender: ProtocolAddress, data: Uint8Array): Promise<Uint8Array> {
  const message = SenderKeyMessage.parse(data);
  return withLock(store, lockKey(sender, message.distributionId), async () => {
    const record = await store.loadSenderKey(sender, message.distributionId);
    const state = record?.stateForChain(message.chainId);
    if (record === undefined || state === undefined) {
      throw new NoSenderKey(`no sender key state for ${sender} / ${message.distributionId}`);
    }
    if (!xeddsa.verify(state.signingKey, message.signedPart, message.signature)) {
      throw new InvalidSignature("sender key message signature does not verify");
    }
    const target = message.iteration;
    const skipped: Array<[number, Uint8Array]> = [];
    let seed: Uint8Array;
    let nextKey: Uint8Array;
    if (target < state.iteration) {
      const stored = state.skipped.get(target);
      if (stored === undefined) {
        throw new DuplicatedMessage(`duplicate group message (chain at ${state.iteration}, got ${target})`);
      }
      seed = stored;
      nextKey = state.chainKey;
    } else {
      if (target - state.iteration > MAX_FORWARD_JUMPS) throw new InvalidMessage("message from too far into the future");
      let ck = state.chainKey;
      for (let i = state.iteration; i < target; i++) {
        skipped.push([i, messageKeySeed(ck)]);
        ck = nextChainKey(ck);
      }
      seed = messageKeySeed(ck);
      nextKey = nextChainKey(ck);
    }
    const [key, iv] = groupKeys(seed);
    const plaintext = await aesCbcDecrypt(key, iv, message.ciphertext);
    if (target < state.iteration) {
      state.skipped.delete(target);
    } else {
      for (const [i, s] of skipped.slice(-MAX_MESSAGE_KEYS)) state.skipped.set(i, s);
      let excess = state.skipped.size - MAX_MESSAGE_KEYS;
      for (const i of state.skipped.keys()) {
        if (excess-- <= 0) break;
        state.skipped.delete(i);
      }
      state.chainKey = nextKey;
      state.iteration = target + 1;
    }
    await store.storeSenderKey(sender, message.distributionId, record);
    return plaintext;
  });
}
