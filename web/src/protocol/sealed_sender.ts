/**
 * Sealed sender v1: messages whose sender only the recipient learns (digest §8); mirrors
 * cipherpost.protocol.sealed_sender, byte for byte.
 *
 * The sender wraps an ordinary 1:1 ciphertext, with its *sender certificate*, in an
 * `UnidentifiedSenderMessageContent` (USMC) and encrypts that to the recipient's identity
 * key in two layers: an ephemeral key `E` agrees with the recipient's identity `IK_R` and
 * HKDF gives a chain key and the keys that encrypt the sender's identity key `IK_S` (the
 * static layer); then `IK_S` agrees with `IK_R` and HKDF over the chain key and the static
 * ciphertext gives the keys that encrypt the USMC. Both layers are AES-256-CTR from a zero
 * counter (WebCrypto: native, constant-time) followed by a 10-byte HMAC-SHA256 tag,
 * checked in constant time before anything is decrypted. The decrypted static key must be
 * the one the certificate names.
 *
 * {@link decrypt} opens the envelope, validates the certificate, refuses a message from
 * this very device, and only then hands the inner message to ./session.ts, whose
 * decryption is all-or-nothing: a rejected sealed message changes no session state.
 */

import { concat, constantTimeEqual, systemRandom, type Random } from "./bytes.js";
import { fieldBytes, fieldInt, readFields, SenderCertificate, uint32 } from "./certificates.js";
import { InvalidKey, InvalidMessage, NoSession, SealedSenderSelfSend, UnknownVersion } from "./errors.js";
import type { KemRegistry } from "./kem.js";
import { IdentityKeyPair, KeyPair, PrivateKey, PublicKey } from "./keys.js";
import { PLAINTEXT_TYPE, PREKEY_TYPE, SENDERKEY_TYPE, WHISPER_TYPE } from "./messages.js";
import * as pb from "./protobuf.js";
import { hkdf, hmacSha256 } from "./ratchet.js";
import * as session from "./session.js";
import type { SpqrSettings } from "./spqr/ratchet.js";
import { ProtocolAddress } from "./address.js";
import type { IdentityKeyStore, ProtocolStore } from "./stores.js";

/** The full version byte libsignal writes (major 1, minor 1). */
export const VERSION_BYTE = 0x11;
/** Length of the truncated HMAC-SHA256 tag of each layer. */
export const TAG_LENGTH = 10;
const EPHEMERAL_SALT_PREFIX = new TextEncoder().encode("UnidentifiedDelivery");
const EMPTY = new Uint8Array(0);
const ZERO_COUNTER = new Uint8Array(16);

// USMC `type` values on the wire, and CiphertextMessageType: only PreKey differs.
const WIRE_TO_TYPE = new Map([[1, PREKEY_TYPE], [2, WHISPER_TYPE], [7, SENDERKEY_TYPE], [8, PLAINTEXT_TYPE]]);
const TYPE_TO_WIRE = new Map([...WIRE_TO_TYPE].map(([wire, type]) => [type, wire]));

// -- the inner content ----------------------------------------------------------------

/**
 * The sealed payload: an inner ciphertext and its sender's certificate (digest §8.3).
 * `messageType` is a CiphertextMessageType (3 PreKey, 2 whisper, 7 sender key, 8
 * plaintext); `contentHint` 0 is the default.
 */
export class UnidentifiedSenderMessageContent {
  private constructor(
    readonly messageType: number,
    readonly sender: SenderCertificate,
    readonly contents: Uint8Array,
    readonly contentHint: number,
    readonly groupId: Uint8Array | undefined,
    readonly serialized: Uint8Array,
  ) {}

  /**
   * Build the content as libsignal serializes it.
   * @throws RangeError an unknown message type, or a hint outside 0..2^31-1 (larger ones
   *   are written sign-extended by libsignal; nothing here sends them).
   */
  static create(messageType: number, sender: SenderCertificate, contents: Uint8Array,
    options: { contentHint?: number; groupId?: Uint8Array | undefined } = {}): UnidentifiedSenderMessageContent {
    const wireType = TYPE_TO_WIRE.get(messageType);
    if (wireType === undefined) throw new RangeError(`message type ${messageType} cannot be sealed`);
    const hint = options.contentHint ?? 0;
    if (!Number.isInteger(hint) || hint < 0 || hint >= 2 ** 31) throw new RangeError("contentHint out of range");
    const groupId = options.groupId !== undefined && options.groupId.length > 0 ? options.groupId : undefined;
    const parts = [pb.fieldVarint(1, wireType), pb.fieldBytes(2, sender.serialized), pb.fieldBytes(3, contents)];
    if (hint) parts.push(pb.fieldVarint(4, hint));
    if (groupId !== undefined) parts.push(pb.fieldBytes(5, groupId));
    return new UnidentifiedSenderMessageContent(messageType, sender, contents, hint, groupId, concat(...parts));
  }

  /**
   * Parse serialized content.
   * @throws InvalidMessage malformed, a required field missing, an unknown type, or a malformed certificate.
   * @throws InvalidKey a key in the certificate is not a Curve25519 key.
   */
  static deserialize(data: Uint8Array): UnidentifiedSenderMessageContent {
    let fields: ReturnType<typeof readFields>;
    try {
      fields = readFields(data, { 1: pb.VARINT, 2: pb.LENGTH, 3: pb.LENGTH, 4: pb.VARINT, 5: pb.LENGTH });
    } catch (cause) {
      throw new InvalidMessage("malformed sealed sender content", { cause });
    }
    const wireType = fieldInt(fields, 1);
    const certificate = fieldBytes(fields, 2);
    const contents = fieldBytes(fields, 3);
    if (wireType === undefined || certificate === undefined || contents === undefined) {
      throw new InvalidMessage("sealed sender content lacks a required field");
    }
    const messageType = WIRE_TO_TYPE.get(uint32(wireType));
    if (messageType === undefined) throw new InvalidMessage("unknown sealed sender content type");
    const hint = fieldInt(fields, 4);
    const groupId = fieldBytes(fields, 5);
    return new UnidentifiedSenderMessageContent(messageType, SenderCertificate.deserialize(certificate),
      Uint8Array.from(contents), hint === undefined ? 0 : uint32(hint),
      groupId === undefined ? undefined : Uint8Array.from(groupId), Uint8Array.from(data));
  }
}

// -- the two encryption layers --------------------------------------------------------

/** AES-256-CTR with a zero initial counter block (WebCrypto copies of the inputs). */
async function ctr(key: Uint8Array, data: Uint8Array): Promise<Uint8Array> {
  const cryptoKey = await crypto.subtle.importKey("raw", new Uint8Array(key), "AES-CTR", false, ["encrypt"]);
  return new Uint8Array(await crypto.subtle.encrypt({ name: "AES-CTR", counter: ZERO_COUNTER, length: 128 }, cryptoKey,
    new Uint8Array(data)));
}

/** AES-256-CTR from a zero counter, then a 10-byte HMAC-SHA256 tag (digest §8.2). */
export async function aes256CtrHmacEncrypt(cipherKey: Uint8Array, macKey: Uint8Array,
  plaintext: Uint8Array): Promise<Uint8Array> {
  const ciphertext = await ctr(cipherKey, plaintext);
  return concat(ciphertext, hmacSha256(macKey, ciphertext).subarray(0, TAG_LENGTH));
}

/**
 * Check the tag in constant time, then decrypt.
 * @throws InvalidMessage too short for a tag, or the tag does not match.
 */
export async function aes256CtrHmacDecrypt(cipherKey: Uint8Array, macKey: Uint8Array,
  data: Uint8Array): Promise<Uint8Array> {
  if (data.length < TAG_LENGTH) throw new InvalidMessage("invalid sealed sender message");
  const ciphertext = data.subarray(0, data.length - TAG_LENGTH);
  const tag = data.subarray(data.length - TAG_LENGTH);
  if (!constantTimeEqual(hmacSha256(macKey, ciphertext).subarray(0, TAG_LENGTH), tag)) {
    throw new InvalidMessage("invalid sealed sender message");
  }
  return ctr(cipherKey, ciphertext);
}

function agree(privateKey: PrivateKey, publicKey: PublicKey): Uint8Array {
  try {
    return privateKey.agree(publicKey);
  } catch (cause) {
    // A small-order key: nothing can authenticate.
    if (cause instanceof InvalidKey) throw new InvalidMessage("invalid sealed sender message", { cause });
    throw cause;
  }
}

function ephemeralKeys(shared: Uint8Array, recipient: PublicKey, ephemeral: PublicKey): Uint8Array[] {
  const okm = hkdf(shared, concat(EPHEMERAL_SALT_PREFIX, recipient.serialize(), ephemeral.serialize()), EMPTY, 96);
  return [okm.subarray(0, 32), okm.subarray(32, 64), okm.subarray(64)];
}

function staticKeys(shared: Uint8Array, chainKey: Uint8Array, encryptedStatic: Uint8Array): Uint8Array[] {
  const okm = hkdf(shared, concat(chainKey, encryptedStatic), EMPTY, 96);
  return [okm.subarray(32, 64), okm.subarray(64)];
}

/**
 * Encrypt `content` to `recipient`'s identity key (digest §8.2); the wire bytes.
 * @throws InvalidMessage `recipient` is a small-order key.
 */
export async function seal(identity: IdentityKeyPair, recipient: PublicKey, content: UnidentifiedSenderMessageContent,
  rng: Random = systemRandom): Promise<Uint8Array> {
  const ephemeral = KeyPair.generate(rng);
  const [chainKey, cipherKey, macKey] = ephemeralKeys(agree(ephemeral.privateKey, recipient), recipient,
    ephemeral.publicKey);
  const encryptedStatic = await aes256CtrHmacEncrypt(cipherKey!, macKey!, identity.publicKey.serialize());
  const [staticCipher, staticMac] = staticKeys(agree(identity.privateKey, recipient), chainKey!, encryptedStatic);
  const encryptedMessage = await aes256CtrHmacEncrypt(staticCipher!, staticMac!, content.serialized);
  return concat(Uint8Array.of(VERSION_BYTE), pb.fieldBytes(1, ephemeral.publicKey.serialize()),
    pb.fieldBytes(2, encryptedStatic), pb.fieldBytes(3, encryptedMessage));
}

/**
 * Seal `content` for `destination`, whose identity the store holds.
 * @throws NoSession the store holds no identity key for `destination`.
 */
export async function encrypt(store: IdentityKeyStore, destination: ProtocolAddress,
  content: UnidentifiedSenderMessageContent, rng: Random = systemRandom): Promise<Uint8Array> {
  const recipient = await store.getIdentity(destination);
  if (recipient === undefined) throw new NoSession(`no identity for ${destination}`);
  return seal(await store.getIdentityKeyPair(), recipient, content, rng);
}

/**
 * Encrypt `plaintext` on the 1:1 session and seal it (libsignal's
 * `sealedSenderEncryptMessage`). `now` is in seconds, as for session.encrypt, and
 * `spqr` is passed on to it (a session without SPQR that `spqr` requires is NoSession).
 * The recipient's identity is looked up first, so a failure leaves the session as it was.
 *
 * @throws NoSession no identity or no session for `destination`.
 */
export async function encryptMessage(store: ProtocolStore, destination: ProtocolAddress, sender: SenderCertificate,
  plaintext: Uint8Array, options: { now: number; rng?: Random; spqr?: SpqrSettings }): Promise<Uint8Array> {
  const recipient = await store.getIdentity(destination);
  if (recipient === undefined) throw new NoSession(`no identity for ${destination}`);
  const sessionOptions: { now: number; rng?: Random; spqr?: SpqrSettings; localAddress?: ProtocolAddress } =
    { now: options.now };
  if (options.rng !== undefined) sessionOptions.rng = options.rng;
  if (options.spqr !== undefined) sessionOptions.spqr = options.spqr;
  // Field 6 of a PreKey message names us as the certificate does (libsignal 0.91+).
  const local = localAddressOf(sender.senderUuid, sender.senderDeviceId);
  if (local !== undefined) sessionOptions.localAddress = local;
  const message = await session.encrypt(store, destination, plaintext, sessionOptions);
  const content = UnidentifiedSenderMessageContent.create(message.messageType, sender, message.serialized);
  return seal(await store.getIdentityKeyPair(), recipient, content, options.rng ?? systemRandom);
}

function parseEnvelope(data: Uint8Array): [PublicKey, Uint8Array, Uint8Array] {
  if (data.length === 0) throw new InvalidMessage("empty sealed sender message");
  const version = data[0]! >> 4;
  if (version !== 0 && version !== 1) throw new UnknownVersion(`sealed sender version ${version} is not supported`);
  let fields: ReturnType<typeof readFields>;
  try {
    fields = readFields(data.subarray(1), { 1: pb.LENGTH, 2: pb.LENGTH, 3: pb.LENGTH });
  } catch (cause) {
    throw new InvalidMessage("malformed sealed sender message", { cause });
  }
  const ephemeral = fieldBytes(fields, 1);
  const encryptedStatic = fieldBytes(fields, 2);
  const encryptedMessage = fieldBytes(fields, 3);
  if (ephemeral === undefined || encryptedStatic === undefined || encryptedMessage === undefined) {
    throw new InvalidMessage("sealed sender message lacks a required field");
  }
  return [PublicKey.deserialize(ephemeral), encryptedStatic, encryptedMessage];
}

/**
 * Open a sealed message addressed to `identity`; the certificate is *not* validated yet
 * (libsignal's `sealedSenderDecryptToUsmc`).
 *
 * @throws UnknownVersion a version other than 0 or 1 (v2 is not supported).
 * @throws InvalidMessage malformed, a tag mismatch, or the sealed identity key is not the certificate's.
 * @throws InvalidKey a malformed key inside.
 */
export async function openSealed(identity: IdentityKeyPair, data: Uint8Array): Promise<UnidentifiedSenderMessageContent> {
  const [ephemeral, encryptedStatic, encryptedMessage] = parseEnvelope(data);
  const [chainKey, cipherKey, macKey] = ephemeralKeys(agree(identity.privateKey, ephemeral), identity.publicKey,
    ephemeral);
  const staticBytes = await aes256CtrHmacDecrypt(cipherKey!, macKey!, encryptedStatic);
  const staticKey = PublicKey.deserialize(staticBytes);
  const [staticCipher, staticMac] = staticKeys(agree(identity.privateKey, staticKey), chainKey!, encryptedStatic);
  const content = UnidentifiedSenderMessageContent.deserialize(
    await aes256CtrHmacDecrypt(staticCipher!, staticMac!, encryptedMessage));
  if (!constantTimeEqual(staticBytes, content.sender.identityKey.serialize())) {
    throw new InvalidMessage("sender certificate key does not match the sealed key");
  }
  return content;
}

/** A decrypted sealed message: who sent it, and the plaintext. */
export interface DecryptionResult {
  readonly senderUuid: string;
  readonly senderE164: string | undefined;
  readonly deviceId: number;
  readonly messageType: number;
  readonly plaintext: Uint8Array;
}

/** Who runs {@link decrypt}: the certificate's sender must not be this very device. */
export interface LocalIdentity {
  readonly uuid: string;
  readonly deviceId: number;
  readonly e164?: string | undefined;
}

/**
 * Open, validate and decrypt a sealed 1:1 message (libsignal's
 * `sealedSenderDecryptMessage`, digest §8.4). The certificate is validated at `nowMs`
 * against `trustRoots`; a message from this device (same uuid, or same E.164 when both are
 * known, and same device id) is refused; then the inner whisper or PreKey message is
 * decrypted on the session with `(sender uuid, sender device)`; `spqr` applies to a
 * session that a PreKey message creates. Nothing changes unless everything succeeds.
 *
 * @throws InvalidMessage, UnknownVersion, InvalidKey see {@link openSealed}; also a sealed
 *   sender-key or plaintext content (not a 1:1 message).
 * @throws InvalidCertificate see SenderCertificate.validate.
 * @throws SealedSenderSelfSend the message claims to come from this device.
 */
export async function decrypt(store: ProtocolStore, data: Uint8Array, options: {
  trustRoots: readonly PublicKey[]; nowMs: number; local: LocalIdentity; rng?: Random; kems?: KemRegistry;
  spqr?: SpqrSettings;
}): Promise<DecryptionResult> {
  const content = await openSealed(await store.getIdentityKeyPair(), data);
  const sender = content.sender;
  sender.validate(options.trustRoots, options.nowMs);
  const { local } = options;
  const sameAccount = sender.senderUuid === local.uuid
    || (local.e164 !== undefined && sender.senderE164 === local.e164);
  if (sameAccount && sender.senderDeviceId === local.deviceId) {
    throw new SealedSenderSelfSend("sealed sender message from this device");
  }
  if (content.messageType !== WHISPER_TYPE && content.messageType !== PREKEY_TYPE) {
    throw new InvalidMessage(`sealed message type ${content.messageType} is not 1:1`);
  }
  let address: ProtocolAddress;
  try {
    address = new ProtocolAddress(sender.senderUuid, sender.senderDeviceId);
  } catch (cause) {
    throw new InvalidMessage("sender certificate names no usable address", { cause });
  }
  const sessionOptions: session.DecryptOptions = {};
  if (options.rng !== undefined) sessionOptions.rng = options.rng;
  if (options.kems !== undefined) sessionOptions.kems = options.kems;
  if (options.spqr !== undefined) sessionOptions.spqr = options.spqr;
  // A PreKey message's field 6 must name this device as the recipient.
  const localAddress = localAddressOf(local.uuid, local.deviceId);
  if (localAddress !== undefined) sessionOptions.localAddress = localAddress;
  const plaintext = await session.decrypt(store, address, content.messageType, content.contents, sessionOptions);
  return { senderUuid: sender.senderUuid, senderE164: sender.senderE164, deviceId: sender.senderDeviceId,
    messageType: content.messageType, plaintext };
}

/** This device's address for field 6, or `undefined` where the name or id cannot be one. */
function localAddressOf(name: string, deviceId: number): ProtocolAddress | undefined {
  try {
    return new ProtocolAddress(name, deviceId);
  } catch {
    return undefined;
  }
}
