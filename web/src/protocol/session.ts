/**
 * The 1:1 session cipher: set-up from a bundle, encrypt, decrypt (digest §3, §4); mirrors
 * cipherpost.protocol.session.
 *
 * Compute, then commit: a message is decrypted on a state without mutating it, and the
 * returned commit applies the changes only once everything verified, so a rejected
 * message changes nothing. Operations on one (store, remote address) never interleave
 * (see ./lock.ts), because the AES step awaits WebCrypto.
 *
 * SPQR (the post-quantum ratchet, ./spqr/) runs beside the Double Ratchet in every state
 * whose settings offered it (spqr-digest §7): `encrypt` asks it for field 5 and a key
 * before deriving the message keys and uses that key as their HKDF salt; decryption runs
 * its `recv` on the state being tried, which returns a new immutable value, and the
 * commit stores it with the Double Ratchet's changes, so both move only when the MAC
 * verified, whichever (current or archived) state decrypts.
 */

import { addressesField, type ProtocolAddress } from "./address.js";
import { constantTimeEqual, type Random, systemRandom } from "./bytes.js";
import { CURRENT_VERSION, MAX_FORWARD_JUMPS, MAX_UNACKNOWLEDGED_SESSION_AGE } from "./constants.js";
import {
  DuplicatedMessage,
  InvalidMessage,
  NoSession,
  ProtocolError,
  UntrustedIdentity,
} from "./errors.js";
import { DEFAULT_KEMS, type KemRegistry } from "./kem.js";
import { KeyPair } from "./keys.js";
import { withLock } from "./lock.js";
import { PREKEY_TYPE, PreKeySignalMessage, SignalMessage, WHISPER_TYPE, macPrefixed } from "./messages.js";
import * as pqxdh from "./pqxdh.js";
import type { PreKeyBundle } from "./prekeys.js";
import { aesCbcDecrypt, aesCbcEncrypt, messageKeySeed, messageKeys, nextChainKey, rootStep } from "./ratchet.js";
import { Direction as PqDirection } from "./spqr/chain.js";
import { recv as pqRecv, send as pqSend, SpqrSettings, type PqRatchetState } from "./spqr/ratchet.js";
import { V0 } from "./spqr/wire.js";
import { ReceiverChain, SenderChain, SessionRecord, SessionState } from "./state.js";
import { Direction, type ProtocolStore } from "./stores.js";

type Commit = () => void;

/**
 * The SPQR settings of sessions started or accepted without explicit ones: REQUIRED, as
 * libsignal 0.92+ and as Python's `cipherpost.protocol.DEFAULT_SPQR` and the SDK's
 * `ClientOptions.spqr`. A peer without SPQR is refused, and a session without it (made
 * before SPQR) is not usable for sending, so a new one is started. OFFERED also talks to
 * libsignal 0.90/0.91 and pre-SPQR Cipherpost; OFF never runs SPQR.
 */
export const DEFAULT_SPQR: SpqrSettings = SpqrSettings.REQUIRED;

/** An encrypted 1:1 message: its type (2 whisper, 3 prekey) and bytes. */
export interface CiphertextMessage {
  readonly messageType: number;
  readonly serialized: Uint8Array;
}

function lockKey(address: ProtocolAddress): string {
  return `session\u0000${address.key()}`;
}

// -- session set-up -------------------------------------------------------------------

/**
 * Start a session with `address` from its bundle (we are Alice). `now` is the time in
 * seconds. The new state becomes current; an older one is archived.
 *
 * @throws InvalidSignature a prekey signature does not verify.
 * @throws UntrustedIdentity the bundle's identity is not the one we trust.
 * @throws InvalidKey unusable keys in the bundle.
 */
export function processPreKeyBundle(store: ProtocolStore, address: ProtocolAddress, bundle: PreKeyBundle,
  options: { rng?: Random; now: number; kems?: KemRegistry; spqr?: SpqrSettings }): Promise<void> {
  const rng = options.rng ?? systemRandom;
  const kems = options.kems ?? DEFAULT_KEMS;
  const spqr = options.spqr ?? DEFAULT_SPQR;
  return withLock(store, lockKey(address), async () => {
    bundle.verifySignatures();
    if (!(await store.isTrustedIdentity(address, bundle.identityKey, Direction.SENDING))) {
      throw new UntrustedIdentity(`untrusted identity for ${address}`);
    }
    const identity = await store.getIdentityKeyPair();
    const result = pqxdh.initiate(identity, bundle, rng, kems);
    const sending = KeyPair.generate(rng);
    const [rootKey, sendingChainKey] = rootStep(result.keys.rootKey, sending.privateKey.agree(bundle.signedPreKey));
    const state = new SessionState({
      version: CURRENT_VERSION,
      localIdentity: identity.publicKey,
      remoteIdentity: bundle.identityKey,
      rootKey,
      senderChain: new SenderChain(sending, sendingChainKey, 0),
      receiverChains: [new ReceiverChain(bundle.signedPreKey, result.keys.chainKey, 0)],
      aliceBaseKey: result.baseKey.publicKey.serialize(),
      localRegistrationId: await store.getLocalRegistrationId(),
      remoteRegistrationId: bundle.registrationId,
      pendingPreKey: {
        preKeyId: bundle.preKeyId,
        signedPreKeyId: bundle.signedPreKeyId,
        baseKey: result.baseKey.publicKey,
        kyberPreKeyId: bundle.kyberPreKeyId,
        kyberCiphertext: result.kyberCiphertext,
        timestamp: options.now,
      },
      pqRatchet: spqr.initialState(result.keys.pqRatchetSeed, PqDirection.A2B,
        identity.publicKey.equals(bundle.identityKey)),
    });
    const record = (await store.loadSession(address)) ?? new SessionRecord();
    record.promoteState(state);
    await store.storeSession(address, record);
    await store.saveIdentity(address, bundle.identityKey);
  });
}

function usable(record: SessionRecord, now: number, requireSpqr = false): boolean {
  const state = record.current;
  if (state === undefined || state.senderChain === undefined) return false;
  if (requireSpqr && state.pqRatchet.braid === null) return false;
  const pending = state.pendingPreKey;
  return pending === undefined || now - pending.timestamp <= MAX_UNACKNOWLEDGED_SESSION_AGE;
}

/**
 * True while a current session usable for sending exists (not stale). `now` in seconds.
 *
 * Where `spqr` requires SPQR (minVersion V1, as {@link SpqrSettings.REQUIRED}), a session
 * without it (made before SPQR, with OFF, or negotiated down to V0) counts as unusable
 * too, as libsignal 0.100+ does: the caller then fetches a bundle and starts a new
 * session, which runs SPQR.
 */
export async function hasSession(store: ProtocolStore, address: ProtocolAddress, now: number,
  options: { spqr?: SpqrSettings } = {}): Promise<boolean> {
  const record = await store.loadSession(address);
  return record !== undefined && usable(record, now, (options.spqr ?? DEFAULT_SPQR).minVersion > V0);
}

/** Archive the current session with `address` (it still decrypts messages sent on it). */
export function archiveSession(store: ProtocolStore, address: ProtocolAddress): Promise<void> {
  return withLock(store, lockKey(address), async () => {
    const record = await store.loadSession(address);
    if (record === undefined) return;
    record.archiveCurrentState();
    await store.storeSession(address, record);
  });
}

// -- encryption -----------------------------------------------------------------------

/**
 * Encrypt `plaintext` for `address` on the current session. `now` in seconds; `rng` (the
 * system's by default) is used by SPQR now and then (a key pair, an encapsulation).
 * Where `spqr` requires SPQR, a session without it is refused as {@link NoSession}, as
 * {@link hasSession} reports it, so the caller starts a new one.
 *
 * @throws NoSession no current session, its PreKey data is older than 30 days, or it
 *   lacks SPQR that `spqr` requires.
 * @throws UntrustedIdentity the session's identity is no longer trusted.
 * @throws InvalidSpqrState the stored SPQR state cannot send.
 */
export function encrypt(store: ProtocolStore, address: ProtocolAddress, plaintext: Uint8Array,
  options: { now: number; rng?: Random; spqr?: SpqrSettings; localAddress?: ProtocolAddress }): Promise<CiphertextMessage> {
  const rng = options.rng ?? systemRandom;
  const requireSpqr = (options.spqr ?? DEFAULT_SPQR).minVersion > V0;
  return withLock(store, lockKey(address), async () => {
    const record = await store.loadSession(address);
    if (record === undefined || !usable(record, options.now, requireSpqr)) {
      throw new NoSession(`no usable session with ${address}`);
    }
    const state = record.current!;
    const chain = state.senderChain!;
    // SPQR first: its key salts the message keys, its bytes go in field 5 (under the MAC).
    const sent = pqSend(state.pqRatchet, rng);
    const { cipherKey, macKey, iv } = messageKeys(messageKeySeed(chain.chainKey), sent.key ?? undefined);
    const pending = state.pendingPreKey;
    // Field 6 (libsignal 0.91+): both addresses under the MAC, on the PreKey path only.
    const addresses = pending !== undefined && options.localAddress !== undefined
      ? addressesField(options.localAddress, address) : undefined;
    const body = SignalMessage.encodeBody(state.version, chain.ratchet.publicKey, chain.index, state.previousCounter,
      await aesCbcEncrypt(cipherKey, iv, plaintext), sent.message, addresses);
    const mac = macPrefixed(macKey, state.macIdentities(true), body);
    const serialized = new Uint8Array(body.length + mac.length);
    serialized.set(body);
    serialized.set(mac, body.length);
    let result: CiphertextMessage;
    if (pending !== undefined) {
      const wrapped = PreKeySignalMessage.build({
        registrationId: state.localRegistrationId,
        preKeyId: pending.preKeyId,
        signedPreKeyId: pending.signedPreKeyId,
        kyberPreKeyId: pending.kyberPreKeyId,
        kyberCiphertext: pending.kyberCiphertext,
        baseKey: pending.baseKey,
        identityKey: state.localIdentity,
        message: SignalMessage.parse(serialized),
        version: state.version,
      });
      result = { messageType: PREKEY_TYPE, serialized: wrapped.serialized };
    } else {
      result = { messageType: WHISPER_TYPE, serialized };
    }
    if (!(await store.isTrustedIdentity(address, state.remoteIdentity, Direction.SENDING))) {
      throw new UntrustedIdentity(`untrusted identity for ${address}`);
    }
    chain.chainKey = nextChainKey(chain.chainKey);
    chain.index += 1;
    state.pqRatchet = sent.state;
    await store.storeSession(address, record);
    await store.saveIdentity(address, state.remoteIdentity);
    return result;
  });
}

// -- decryption -----------------------------------------------------------------------

/**
 * Decrypt with one state without mutating it; return the plaintext and a commit.
 * @throws DuplicatedMessage the message's key was already used.
 * @throws InvalidMessage it does not belong to this state or fails authentication.
 */
async function decryptWithState(state: SessionState, message: SignalMessage, rng: Random): Promise<[Uint8Array, Commit]> {
  if (message.version !== state.version) throw new InvalidMessage("message version does not match the session");
  const sender = state.senderChain;
  if (sender === undefined) throw new InvalidMessage("session has no sending chain");
  const chain = state.receiverChain(message.ratchetKey);
  let newSending: [Uint8Array, SenderChain] | undefined;
  let chainKey: Uint8Array;
  let chainIndex: number;
  if (chain === undefined) {
    // A DH ratchet step: their new ratchet key.
    const [root1, receiveKey] = rootStep(state.rootKey, sender.ratchet.privateKey.agree(message.ratchetKey));
    const ours = KeyPair.generate(rng);
    const [root2, sendKey] = rootStep(root1, ours.privateKey.agree(message.ratchetKey));
    newSending = [root2, new SenderChain(ours, sendKey, 0)];
    chainKey = receiveKey;
    chainIndex = 0;
  } else {
    chainKey = chain.chainKey;
    chainIndex = chain.index;
  }

  const counter = message.counter;
  const skipped: Array<[number, Uint8Array]> = [];
  let usedSkipped = false;
  let seed: Uint8Array;
  let nextKey: Uint8Array;
  if (counter < chainIndex) {
    const stored = chain?.skipped.get(counter);
    if (stored === undefined) {
      throw new DuplicatedMessage(`duplicate message (chain at ${chainIndex}, got ${counter})`);
    }
    seed = stored;
    usedSkipped = true;
    nextKey = chainKey;
  } else {
    const jump = counter - chainIndex;
    if (jump > MAX_FORWARD_JUMPS && !state.isSelfSession()) {
      throw new InvalidMessage("message from too far into the future");
    }
    let ck = chainKey;
    for (let i = chainIndex; i < counter; i++) {
      skipped.push([i, messageKeySeed(ck)]);
      ck = nextChainKey(ck);
    }
    seed = messageKeySeed(ck);
    nextKey = nextChainKey(ck);
  }

  // Tentative: the new SPQR state is kept by the commit only, once the MAC verified.
  let newPq: PqRatchetState = state.pqRatchet;
  let salt: Uint8Array | null = null;
  if (state.pqRatchet.braid !== null || message.pqRatchet.length > 0) {
    [newPq, salt] = pqRecv(state.pqRatchet, message.pqRatchet);
  }
  const { cipherKey, macKey, iv } = messageKeys(seed, salt ?? undefined);
  if (!message.verifyMacPrefixed(macKey, state.macIdentities(false))) throw new InvalidMessage("bad MAC");
  const plaintext = await aesCbcDecrypt(cipherKey, iv, message.ciphertext);

  const commit = (): void => {
    let target = chain;
    if (target === undefined) {
      const [rootKey, senderChain] = newSending!;
      state.rootKey = rootKey;
      state.senderChain = senderChain;
      state.previousCounter = Math.max(sender.index - 1, 0);
      target = new ReceiverChain(message.ratchetKey, chainKey, 0);
      state.addReceiverChain(target);
    }
    if (usedSkipped) {
      target.skipped.delete(counter);
    } else {
      if (skipped.length > 0) target.addSkipped(skipped);
      target.chainKey = nextKey;
      target.index = counter + 1;
    }
    state.pendingPreKey = undefined;
    state.pqRatchet = newPq;
  };
  return [plaintext, commit];
}

/** Find the state that decrypts `message`: -1 for current, else the archive index. */
async function decryptWithRecord(record: SessionRecord, message: SignalMessage,
  rng: Random): Promise<[Uint8Array, Commit, number]> {
  if (record.current !== undefined) {
    try {
      const [plaintext, commit] = await decryptWithState(record.current, message, rng);
      return [plaintext, commit, -1];
    } catch (error) {
      if (error instanceof DuplicatedMessage || !(error instanceof InvalidMessage)) throw error;
    }
  }
  for (const [index, state] of record.previous.entries()) {
    try {
      const [plaintext, commit] = await decryptWithState(state, message, rng);
      return [plaintext, commit, index];
    } catch (error) {
      if (error instanceof DuplicatedMessage || !(error instanceof InvalidMessage)) throw error;
    }
  }
  throw new InvalidMessage("decryption failed");
}

/**
 * Decrypt a whisper message from `address`. Tries the current state, then archived ones;
 * an archived state that decrypts becomes current again.
 *
 * @throws NoSession we hold no session record for `address`.
 * @throws DuplicatedMessage the message's key was already used.
 * @throws InvalidMessage malformed or unauthenticated (no state could decrypt it).
 * @throws UnknownVersion an unsupported version nibble.
 * @throws UntrustedIdentity it decrypted but the sender's identity is not trusted.
 */
export function decryptSignalMessage(store: ProtocolStore, address: ProtocolAddress, data: Uint8Array,
  options: { rng?: Random } = {}): Promise<Uint8Array> {
  const rng = options.rng ?? systemRandom;
  return withLock(store, lockKey(address), async () => {
    const message = SignalMessage.parse(data);
    const record = await store.loadSession(address);
    if (record === undefined) throw new NoSession(`no session with ${address}`);
    const [plaintext, commit, index] = await decryptWithRecord(record, message, rng);
    const state = index < 0 ? record.current! : record.previous[index]!;
    if (!(await store.isTrustedIdentity(address, state.remoteIdentity, Direction.RECEIVING))) {
      throw new UntrustedIdentity(`untrusted identity for ${address}`);
    }
    commit();
    if (index >= 0) record.promotePrevious(index);
    await store.storeSession(address, record);
    await store.saveIdentity(address, state.remoteIdentity);
    return plaintext;
  });
}

async function bobState(store: ProtocolStore, message: PreKeySignalMessage, kems: KemRegistry,
  spqr: SpqrSettings): Promise<SessionState> {
  if (!message.baseKey.isCanonical()) throw new InvalidMessage("incoming base key is invalid");
  const signed = await store.getSignedPreKey(message.signedPreKeyId);
  const kyber = await store.getKyberPreKey(message.kyberPreKeyId);
  const oneTime = message.preKeyId !== undefined ? (await store.getPreKey(message.preKeyId)).keyPair : undefined;
  const identity = await store.getIdentityKeyPair();
  let keys: pqxdh.DerivedKeys;
  try {
    keys = pqxdh.respond(identity, signed.keyPair, kyber.keyPair, oneTime, message.identityKey, message.baseKey,
      message.kyberCiphertext, kems);
  } catch (cause) {
    if (cause instanceof ProtocolError) throw new InvalidMessage("invalid PreKey message", { cause });
    throw cause;
  }
  return new SessionState({
    version: message.version,
    localIdentity: identity.publicKey,
    remoteIdentity: message.identityKey,
    rootKey: keys.rootKey,
    senderChain: new SenderChain(signed.keyPair, keys.chainKey, 0),
    receiverChains: [],
    aliceBaseKey: message.baseKey.serialize(),
    localRegistrationId: await store.getLocalRegistrationId(),
    remoteRegistrationId: message.registrationId,
    pqRatchet: spqr.initialState(keys.pqRatchetSeed, PqDirection.B2A, identity.publicKey.equals(message.identityKey)),
  });
}

/**
 * Decrypt a PreKey message from `address` (we are Bob, or Alice in a crossing). A message
 * whose base key matches a state we hold reuses that state; otherwise a new state is built
 * from our prekeys, with SPQR as `spqr` says ({@link DEFAULT_SPQR} unless given), and
 * becomes current (the old one is archived).
 *
 * @throws UntrustedIdentity the sender's identity key is not trusted.
 * @throws InvalidPreKeyId unknown one-time or signed prekey id.
 * @throws InvalidKyberPreKeyId unknown Kyber prekey id.
 * @throws DuplicatedMessage a repeated message.
 * @throws InvalidMessage malformed, unauthenticated, or a reused last-resort key.
 * @throws UnknownVersion an unsupported version nibble.
 */
export function decryptPreKeyMessage(store: ProtocolStore, address: ProtocolAddress, data: Uint8Array,
  options: DecryptOptions = {}): Promise<Uint8Array> {
  const rng = options.rng ?? systemRandom;
  const kems = options.kems ?? DEFAULT_KEMS;
  const spqr = options.spqr ?? DEFAULT_SPQR;
  return withLock(store, lockKey(address), async () => {
    const message = PreKeySignalMessage.parse(data);
    if (!(await store.isTrustedIdentity(address, message.identityKey, Direction.RECEIVING))) {
      throw new UntrustedIdentity(`untrusted identity for ${address}`);
    }
    let record = await store.loadSession(address);
    const baseKey = message.baseKey.serialize();

    let existing: number | undefined; // -1 current, else archive index
    let state: SessionState | undefined;
    if (record !== undefined) {
      const states = record.states();
      for (const [index, candidate] of states.entries()) {
        if (candidate.version === message.version && equalKeys(candidate.aliceBaseKey, baseKey)) {
          state = candidate;
          existing = record.current !== undefined ? index - 1 : index;
          break;
        }
      }
    }
    if (state === undefined) state = await bobState(store, message, kems, spqr);
    let plaintext: Uint8Array;
    let commit: Commit;
    try {
      [plaintext, commit] = await decryptWithState(state, message.message, rng);
    } catch (error) {
      if (error instanceof DuplicatedMessage) throw error;
      if (error instanceof InvalidMessage) throw new InvalidMessage("decryption failed", { cause: error });
      throw error;
    }
    const addresses = message.message.addresses;
    if (addresses !== undefined && options.localAddress !== undefined) {
      const expected = addressesField(address, options.localAddress);
      if (expected === undefined || !constantTimeEqual(expected, addresses)) {
        throw new InvalidMessage("decryption failed");
      }
    }
    if (existing === undefined) {
      await store.markKyberPreKeyUsed(message.kyberPreKeyId, message.signedPreKeyId, baseKey);
    }
    commit();
    if (record === undefined) record = new SessionRecord();
    if (existing === undefined) {
      record.promoteState(state);
      if (message.preKeyId !== undefined) await store.removePreKey(message.preKeyId);
    } else if (existing >= 0) {
      record.promotePrevious(existing);
    }
    await store.storeSession(address, record);
    await store.saveIdentity(address, message.identityKey);
    return plaintext;
  });
}

function equalKeys(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Options of the decrypt functions. `spqr` applies to a session that a PreKey message
 * creates; `localAddress` (this device) is checked against the addresses a PreKey message
 * carries (field 6, libsignal 0.91+): a message naming another sender or recipient is
 * refused. Messages without field 6 are accepted, as libsignal does.
 */
export interface DecryptOptions { rng?: Random; kems?: KemRegistry; spqr?: SpqrSettings; localAddress?: ProtocolAddress }

/**
 * Decrypt a whisper (2) or PreKey (3) message, with {@link DecryptOptions}.
 * @throws RangeError `messageType` is neither.
 */
export function decrypt(store: ProtocolStore, address: ProtocolAddress, messageType: number, data: Uint8Array,
  options: DecryptOptions = {}): Promise<Uint8Array> {
  if (messageType === WHISPER_TYPE) return decryptSignalMessage(store, address, data, options);
  if (messageType === PREKEY_TYPE) return decryptPreKeyMessage(store, address, data, options);
  return Promise.reject(new RangeError(`not a 1:1 message type: ${messageType}`));
}
