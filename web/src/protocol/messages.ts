/**
 * Wire messages of the 1:1 protocol and of sender keys (digest §5, §6.1, §6.2); mirrors
 * cipherpost.protocol.messages.
 *
 * Each class parses from bytes (strictly: anything malformed throws a ProtocolError) and
 * keeps the exact bytes it came from, because MACs and signatures cover the bytes
 * received, never a re-encoding.
 */

import { concat, constantTimeEqual } from "./bytes.js";
import { CURRENT_VERSION, MAC_LENGTH, SENDER_KEY_VERSION } from "./constants.js";
import { InvalidKey, InvalidMessage, UnknownVersion } from "./errors.js";
import { PublicKey, type IdentityKey } from "./keys.js";
import * as pb from "./protobuf.js";
import { hmacSha256 } from "./ratchet.js";
import { formatUuid, parseUuid } from "./uuid.js";

export const WHISPER_TYPE = 2;
export const PREKEY_TYPE = 3;
export const SENDERKEY_TYPE = 7;
export const PLAINTEXT_TYPE = 8;

function versionByte(version: number): Uint8Array {
  return Uint8Array.of((version << 4) | CURRENT_VERSION);
}

/** High nibble of a version byte; legacy and future versions are refused. */
function checkVersion(first: number, exact?: number): number {
  const version = first >> 4;
  if (exact !== undefined) {
    if (version !== exact) throw new UnknownVersion(`unsupported message version ${version}`);
    return version;
  }
  if (version < 3 || version > CURRENT_VERSION) throw new UnknownVersion(`unsupported message version ${version}`);
  return version;
}

function decodeFields(data: Uint8Array, what: string): pb.Fields {
  try {
    return pb.decode(data);
  } catch (cause) {
    throw new InvalidMessage(`malformed ${what}`, { cause });
  }
}

function optionalBytes(fields: pb.Fields, number: number, what: string): Uint8Array | undefined {
  try {
    return pb.getBytes(fields, number);
  } catch (cause) {
    throw new InvalidMessage(`malformed ${what}`, { cause });
  }
}

function requiredBytes(fields: pb.Fields, number: number, what: string): Uint8Array {
  const value = optionalBytes(fields, number, what);
  if (value === undefined) throw new InvalidMessage(`${what} lacks field ${number}`);
  return value;
}

function optionalUint32(fields: pb.Fields, number: number, what: string): number | undefined {
  try {
    return pb.getUint32(fields, number);
  } catch (cause) {
    throw new InvalidMessage(`malformed ${what}`, { cause });
  }
}

function requiredUint32(fields: pb.Fields, number: number, what: string): number {
  const value = optionalUint32(fields, number, what);
  if (value === undefined) throw new InvalidMessage(`${what} lacks field ${number}`);
  return value;
}

function messageKey(data: Uint8Array): PublicKey {
  try {
    return PublicKey.deserialize(data);
  } catch (cause) {
    if (cause instanceof InvalidKey) throw new InvalidMessage("invalid key in message", { cause });
    throw cause;
  }
}

/** The 8-byte MAC over `sender || receiver` identities and a message body. */
export function macPrefixed(macKey: Uint8Array, identities: Uint8Array, body: Uint8Array): Uint8Array {
  return hmacSha256(macKey, concat(identities, body)).subarray(0, MAC_LENGTH);
}

/** The 8-byte MAC of a SignalMessage body (version byte + protobuf). */
export function computeMac(macKey: Uint8Array, sender: IdentityKey, receiver: IdentityKey, body: Uint8Array): Uint8Array {
  return macPrefixed(macKey, concat(sender.serialize(), receiver.serialize()), body);
}

/** A ratchet ("whisper") message: `version || protobuf || mac(8)`. */
export class SignalMessage {
  private constructor(
    readonly version: number,
    readonly ratchetKey: PublicKey,
    readonly counter: number,
    readonly previousCounter: number,
    readonly ciphertext: Uint8Array,
    /** SPQR field 5 (empty when absent); the session hands it to SPQR's recv. */
    readonly pqRatchet: Uint8Array,
    readonly serialized: Uint8Array,
    /** Field 6 (libsignal 0.91+): sender and recipient addresses, 36 bytes, if present. */
    readonly addresses: Uint8Array | undefined = undefined,
  ) {}

  /**
   * Version byte and protobuf, fields in libsignal's order 1, 2, 3, 4, then 5 (the SPQR
   * bytes, covered by the MAC) only when `pqRatchet` is not empty, and 6 (addresses) when
   * given.
   */
  static encodeBody(version: number, ratchetKey: PublicKey, counter: number, previousCounter: number,
    ciphertext: Uint8Array, pqRatchet: Uint8Array = new Uint8Array(0), addresses?: Uint8Array): Uint8Array {
    return concat(
      versionByte(version),
      pb.fieldBytes(1, ratchetKey.serialize()),
      pb.fieldVarint(2, counter),
      pb.fieldVarint(3, previousCounter),
      pb.fieldBytes(4, ciphertext),
      pqRatchet.length > 0 ? pb.fieldBytes(5, pqRatchet) : new Uint8Array(0),
      addresses !== undefined ? pb.fieldBytes(6, addresses) : new Uint8Array(0),
    );
  }

  /** Encode and MAC a message. */
  static build(args: {
    macKey: Uint8Array; ratchetKey: PublicKey; counter: number; previousCounter: number;
    ciphertext: Uint8Array; senderIdentity: IdentityKey; receiverIdentity: IdentityKey; version?: number;
  }): SignalMessage {
    const version = args.version ?? CURRENT_VERSION;
    const body = SignalMessage.encodeBody(version, args.ratchetKey, args.counter, args.previousCounter, args.ciphertext);
    const mac = computeMac(args.macKey, args.senderIdentity, args.receiverIdentity, body);
    return new SignalMessage(version, args.ratchetKey, args.counter, args.previousCounter, args.ciphertext,
      new Uint8Array(0), concat(body, mac));
  }

  /**
   * Parse a serialized SignalMessage.
   * @throws UnknownVersion a version nibble below 3 or above 4.
   * @throws InvalidMessage anything else malformed.
   */
  static parse(input: Uint8Array): SignalMessage {
    if (input.length < 1 + MAC_LENGTH) throw new InvalidMessage("message too short");
    const version = checkVersion(input[0]!);
    const data = Uint8Array.from(input);
    const what = "SignalMessage";
    const fields = decodeFields(data.subarray(1, data.length - MAC_LENGTH), what);
    const ratchetKey = messageKey(requiredBytes(fields, 1, what));
    const counter = requiredUint32(fields, 2, what);
    const previous = optionalUint32(fields, 3, what) ?? 0;
    const ciphertext = requiredBytes(fields, 4, what);
    const pq = optionalBytes(fields, 5, what) ?? new Uint8Array(0);
    const addresses = optionalBytes(fields, 6, what); // checked by the PreKey path's receiver
    return new SignalMessage(version, ratchetKey, counter, previous, ciphertext, pq, data, addresses);
  }

  /** Constant-time check of the trailing MAC over the bytes received. */
  verifyMac(macKey: Uint8Array, sender: IdentityKey, receiver: IdentityKey): boolean {
    return this.verifyMacPrefixed(macKey, concat(sender.serialize(), receiver.serialize()));
  }

  /** As {@link verifyMac}, given `sender || receiver` serialized identities. */
  verifyMacPrefixed(macKey: Uint8Array, identities: Uint8Array): boolean {
    const data = this.serialized;
    const end = data.length - MAC_LENGTH;
    return constantTimeEqual(macPrefixed(macKey, identities, data.subarray(0, end)), data.subarray(end));
  }

  toString(): string {
    return `SignalMessage(v${this.version}, counter=${this.counter}, ${this.ciphertext.length} ciphertext bytes)`;
  }
}

/** The first messages of a session: PQXDH parameters around a SignalMessage. */
export class PreKeySignalMessage {
  private constructor(
    readonly version: number,
    readonly registrationId: number,
    readonly preKeyId: number | undefined,
    readonly signedPreKeyId: number,
    readonly kyberPreKeyId: number,
    readonly kyberCiphertext: Uint8Array,
    readonly baseKey: PublicKey,
    readonly identityKey: IdentityKey,
    readonly message: SignalMessage,
    readonly serialized: Uint8Array,
  ) {}

  /** Encode in libsignal's field order 1..8. */
  static build(args: {
    registrationId: number; preKeyId: number | undefined; signedPreKeyId: number; kyberPreKeyId: number;
    kyberCiphertext: Uint8Array; baseKey: PublicKey; identityKey: IdentityKey; message: SignalMessage;
    version?: number;
  }): PreKeySignalMessage {
    const version = args.version ?? CURRENT_VERSION;
    const body = concat(
      versionByte(version),
      args.preKeyId !== undefined ? pb.fieldVarint(1, args.preKeyId) : new Uint8Array(0),
      pb.fieldBytes(2, args.baseKey.serialize()),
      pb.fieldBytes(3, args.identityKey.serialize()),
      pb.fieldBytes(4, args.message.serialized),
      pb.fieldVarint(5, args.registrationId),
      pb.fieldVarint(6, args.signedPreKeyId),
      pb.fieldVarint(7, args.kyberPreKeyId),
      pb.fieldBytes(8, args.kyberCiphertext),
    );
    return new PreKeySignalMessage(version, args.registrationId, args.preKeyId, args.signedPreKeyId,
      args.kyberPreKeyId, args.kyberCiphertext, args.baseKey, args.identityKey, args.message, body);
  }

  /**
   * Parse a serialized PreKeySignalMessage.
   * @throws UnknownVersion a version nibble below 3 or above 4.
   * @throws InvalidMessage anything else malformed, including an X3DH (v3) message, which
   *   libsignal no longer accepts, and missing Kyber fields.
   */
  static parse(input: Uint8Array): PreKeySignalMessage {
    if (input.length === 0) throw new InvalidMessage("empty message");
    const version = checkVersion(input[0]!);
    const data = Uint8Array.from(input);
    const what = "PreKeySignalMessage";
    const fields = decodeFields(data.subarray(1), what);
    const registrationId = optionalUint32(fields, 5, what) ?? 0;
    const preKeyId = optionalUint32(fields, 1, what);
    const signedPreKeyId = requiredUint32(fields, 6, what);
    const kyberId = optionalUint32(fields, 7, what);
    const kyberCt = optionalBytes(fields, 8, what);
    if ((kyberId === undefined) !== (kyberCt === undefined)) {
      throw new InvalidMessage("both or neither Kyber pre key id and ciphertext");
    }
    if (version === CURRENT_VERSION && (kyberId === undefined || kyberCt === undefined)) {
      throw new InvalidMessage("Kyber pre key must be present for this session version");
    }
    if (version < CURRENT_VERSION || kyberId === undefined || kyberCt === undefined) {
      throw new InvalidMessage("X3DH no longer supported");
    }
    const baseKey = messageKey(requiredBytes(fields, 2, what));
    const identityKey = messageKey(requiredBytes(fields, 3, what));
    const message = SignalMessage.parse(requiredBytes(fields, 4, what));
    return new PreKeySignalMessage(version, registrationId, preKeyId, signedPreKeyId, kyberId, kyberCt,
      baseKey, identityKey, message, data);
  }
}

const SENDER_KEY_VERSION_BYTE = Uint8Array.of((SENDER_KEY_VERSION << 4) | SENDER_KEY_VERSION);

/** Carries a sender's chain key and signing key to a group member (digest §6.1). */
export class SenderKeyDistributionMessage {
  private constructor(
    /** The distribution id, lowercase 8-4-4-4-12. */
    readonly distributionId: string,
    readonly chainId: number,
    readonly iteration: number,
    readonly chainKey: Uint8Array,
    readonly signingKey: PublicKey,
    readonly serialized: Uint8Array,
  ) {}

  /** Encode as `0x33 || protobuf`. */
  static build(distributionId: string, chainId: number, iteration: number, chainKey: Uint8Array,
    signingKey: PublicKey): SenderKeyDistributionMessage {
    const body = concat(
      SENDER_KEY_VERSION_BYTE,
      pb.fieldBytes(1, parseUuid(distributionId)),
      pb.fieldVarint(2, chainId),
      pb.fieldVarint(3, iteration),
      pb.fieldBytes(4, chainKey),
      pb.fieldBytes(5, signingKey.serialize()),
    );
    return new SenderKeyDistributionMessage(formatUuid(parseUuid(distributionId)), chainId, iteration,
      chainKey, signingKey, body);
  }

  /**
   * Parse an SKDM.
   * @throws UnknownVersion the version nibble is not 3.
   * @throws InvalidMessage malformed or missing fields.
   */
  static parse(input: Uint8Array): SenderKeyDistributionMessage {
    if (input.length < 65) throw new InvalidMessage("sender key distribution message too short");
    checkVersion(input[0]!, SENDER_KEY_VERSION);
    const data = Uint8Array.from(input);
    const what = "SenderKeyDistributionMessage";
    const fields = decodeFields(data.subarray(1), what);
    const dist = requiredBytes(fields, 1, what);
    const chainId = requiredUint32(fields, 2, what);
    const iteration = requiredUint32(fields, 3, what);
    const chainKey = requiredBytes(fields, 4, what);
    const signing = requiredBytes(fields, 5, what);
    if (dist.length !== 16 || chainKey.length !== 32 || signing.length !== 33) {
      throw new InvalidMessage(`malformed ${what}`);
    }
    return new SenderKeyDistributionMessage(formatUuid(dist), chainId, iteration, Uint8Array.from(chainKey),
      messageKey(signing), data);
  }
}

export const SENDER_KEY_SIGNATURE_LENGTH = 64;

/** A group message: `0x33 || protobuf || XEdDSA signature(64)` (digest §6.2). */
export class SenderKeyMessage {
  private constructor(
    readonly distributionId: string,
    readonly chainId: number,
    readonly iteration: number,
    readonly ciphertext: Uint8Array,
    readonly serialized: Uint8Array,
  ) {}

  /** The signed part of a message. */
  static encodeBody(distributionId: string, chainId: number, iteration: number, ciphertext: Uint8Array): Uint8Array {
    return concat(
      SENDER_KEY_VERSION_BYTE,
      pb.fieldBytes(1, parseUuid(distributionId)),
      pb.fieldVarint(2, chainId),
      pb.fieldVarint(3, iteration),
      pb.fieldBytes(4, ciphertext),
    );
  }

  /**
   * Parse (the signature is checked by the caller, who knows the key).
   * @throws UnknownVersion the version nibble is not 3.
   * @throws InvalidMessage malformed or missing fields.
   */
  static parse(input: Uint8Array): SenderKeyMessage {
    if (input.length < 1 + SENDER_KEY_SIGNATURE_LENGTH) throw new InvalidMessage("sender key message too short");
    checkVersion(input[0]!, SENDER_KEY_VERSION);
    const data = Uint8Array.from(input);
    const what = "SenderKeyMessage";
    const fields = decodeFields(data.subarray(1, data.length - SENDER_KEY_SIGNATURE_LENGTH), what);
    const dist = requiredBytes(fields, 1, what);
    if (dist.length !== 16) throw new InvalidMessage(`malformed ${what}`);
    return new SenderKeyMessage(formatUuid(dist), requiredUint32(fields, 2, what), requiredUint32(fields, 3, what),
      requiredBytes(fields, 4, what), data);
  }

  /** The bytes the signature covers. */
  get signedPart(): Uint8Array {
    return this.serialized.subarray(0, this.serialized.length - SENDER_KEY_SIGNATURE_LENGTH);
  }

  /** The trailing XEdDSA signature. */
  get signature(): Uint8Array {
    return this.serialized.subarray(this.serialized.length - SENDER_KEY_SIGNATURE_LENGTH);
  }
}
