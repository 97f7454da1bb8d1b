/**
 * Prekey records and prekey bundles (digest §1.4, §2.1, §3.1); mirrors
 * cipherpost.protocol.prekeys.
 *
 * Records serialize as `format version byte || protobuf` so that later formats can keep
 * loading every earlier one.
 */

import { concat, type Random } from "./bytes.js";
import { InvalidKey, InvalidSignature } from "./errors.js";
import { DEFAULT_KEMS, KemKeyPair, KemPublicKey, KYBER1024, type KemRegistry } from "./kem.js";
import { KeyPair, PublicKey, type IdentityKey, type IdentityKeyPair } from "./keys.js";
import * as pb from "./protobuf.js";
import * as xeddsa from "./xeddsa.js";

export const RECORD_FORMAT = 1;
export const MAX_PREKEY_ID = 0xffffffff;

function checkId(keyId: number): number {
  if (!Number.isInteger(keyId) || keyId < 0 || keyId > MAX_PREKEY_ID) throw new RangeError("prekey ids are u32");
  return keyId;
}

function load(data: Uint8Array, what: string): pb.Fields {
  if (data.length === 0 || data[0] !== RECORD_FORMAT) throw new InvalidKey(`unknown ${what} record format`);
  try {
    return pb.decode(data.subarray(1));
  } catch (cause) {
    throw new InvalidKey(`malformed ${what} record`, { cause });
  }
}

function needBytes(fields: pb.Fields, number: number, what: string): Uint8Array {
  let value: Uint8Array | undefined;
  try {
    value = pb.getBytes(fields, number);
  } catch (cause) {
    throw new InvalidKey(`malformed ${what} record`, { cause });
  }
  if (value === undefined) throw new InvalidKey(`malformed ${what} record`);
  return Uint8Array.from(value);
}

function optInt(fields: pb.Fields, number: number, what: string): number | undefined {
  try {
    return pb.getInt(fields, number);
  } catch (cause) {
    throw new InvalidKey(`malformed ${what} record`, { cause });
  }
}

function needInt(fields: pb.Fields, number: number, what: string): number {
  const value = optInt(fields, number, what);
  if (value === undefined) throw new InvalidKey(`malformed ${what} record`);
  return value;
}

const formatByte = Uint8Array.of(RECORD_FORMAT);

/** A one-time Curve25519 prekey. */
export class PreKeyRecord {
  constructor(readonly id: number, readonly keyPair: KeyPair) {}

  static generate(keyId: number, rng: Random): PreKeyRecord {
    return new PreKeyRecord(checkId(keyId), KeyPair.generate(rng));
  }

  /** Versioned storage form. */
  serialize(): Uint8Array {
    return concat(formatByte, pb.fieldVarint(1, this.id), pb.fieldBytes(2, this.keyPair.publicKey.serialize()),
      pb.fieldBytes(3, this.keyPair.privateKey.serialize()));
  }

  /** @throws InvalidKey the record is malformed. */
  static deserialize(data: Uint8Array): PreKeyRecord {
    const f = load(data, "prekey");
    return new PreKeyRecord(needInt(f, 1, "prekey"), KeyPair.fromPrivate(needBytes(f, 3, "prekey")));
  }
}

/** A medium-term Curve25519 prekey signed by the identity key. */
export class SignedPreKeyRecord {
  constructor(readonly id: number, readonly keyPair: KeyPair, readonly signature: Uint8Array,
    readonly timestamp: number) {}

  /** A fresh signed prekey; `timestamp` in milliseconds. */
  static generate(keyId: number, identity: IdentityKeyPair, timestamp: number, rng: Random): SignedPreKeyRecord {
    const pair = KeyPair.generate(rng);
    const signature = xeddsa.sign(identity.privateKey, pair.publicKey.serialize(), rng);
    return new SignedPreKeyRecord(checkId(keyId), pair, signature, timestamp);
  }

  serialize(): Uint8Array {
    return concat(formatByte, pb.fieldVarint(1, this.id), pb.fieldBytes(2, this.keyPair.publicKey.serialize()),
      pb.fieldBytes(3, this.keyPair.privateKey.serialize()), pb.fieldBytes(4, this.signature),
      pb.fieldFixed64(5, this.timestamp));
  }

  /** @throws InvalidKey the record is malformed. */
  static deserialize(data: Uint8Array): SignedPreKeyRecord {
    const w = "signed prekey";
    const f = load(data, w);
    return new SignedPreKeyRecord(needInt(f, 1, w), KeyPair.fromPrivate(needBytes(f, 3, w)), needBytes(f, 4, w),
      optInt(f, 5, w) ?? 0);
  }
}

/** A KEM prekey signed by the identity key; one-time or last resort. */
export class KyberPreKeyRecord {
  constructor(readonly id: number, readonly keyPair: KemKeyPair, readonly signature: Uint8Array,
    readonly timestamp: number, readonly lastResort: boolean = false) {}

  /** A fresh KEM prekey of `keyType` (Kyber1024 by default). */
  static generate(keyId: number, identity: IdentityKeyPair, timestamp: number, rng: Random,
    options: { keyType?: number; lastResort?: boolean; kems?: KemRegistry } = {}): KyberPreKeyRecord {
    const pair = KemKeyPair.generate(rng, options.keyType ?? KYBER1024, options.kems ?? DEFAULT_KEMS);
    const signature = xeddsa.sign(identity.privateKey, pair.publicKey.serialize(), rng);
    return new KyberPreKeyRecord(checkId(keyId), pair, signature, timestamp, options.lastResort ?? false);
  }

  /** Versioned storage form (the private half is the ML-KEM seed). */
  serialize(): Uint8Array {
    return concat(formatByte, pb.fieldVarint(1, this.id), pb.fieldBytes(2, this.keyPair.publicKey.serialize()),
      pb.fieldBytes(3, this.keyPair.secret), pb.fieldBytes(4, this.signature), pb.fieldFixed64(5, this.timestamp),
      pb.fieldVarint(6, this.lastResort ? 1 : 0));
  }

  /** @throws InvalidKey the record is malformed. */
  static deserialize(data: Uint8Array, kems: KemRegistry = DEFAULT_KEMS): KyberPreKeyRecord {
    const w = "kyber prekey";
    const f = load(data, w);
    const publicKey = KemPublicKey.deserialize(needBytes(f, 2, w), kems);
    const pair = new KemKeyPair(publicKey, needBytes(f, 3, w));
    return new KyberPreKeyRecord(needInt(f, 1, w), pair, needBytes(f, 4, w), optInt(f, 5, w) ?? 0,
      Boolean(optInt(f, 6, w)));
  }
}

/** What an initiator fetches to start a session with one device (digest §3.1). */
export class PreKeyBundle {
  readonly registrationId: number;
  readonly deviceId: number;
  readonly identityKey: IdentityKey;
  readonly signedPreKeyId: number;
  readonly signedPreKey: PublicKey;
  readonly signedPreKeySignature: Uint8Array;
  readonly kyberPreKeyId: number;
  readonly kyberPreKey: KemPublicKey;
  readonly kyberPreKeySignature: Uint8Array;
  readonly preKeyId: number | undefined;
  readonly preKey: PublicKey | undefined;

  constructor(fields: {
    registrationId: number; deviceId: number; identityKey: IdentityKey; signedPreKeyId: number;
    signedPreKey: PublicKey; signedPreKeySignature: Uint8Array; kyberPreKeyId: number;
    kyberPreKey: KemPublicKey; kyberPreKeySignature: Uint8Array; preKeyId?: number | undefined;
    preKey?: PublicKey | undefined;
  }) {
    if ((fields.preKeyId === undefined) !== (fields.preKey === undefined)) {
      throw new RangeError("preKeyId and preKey go together");
    }
    this.registrationId = fields.registrationId;
    this.deviceId = fields.deviceId;
    this.identityKey = fields.identityKey;
    this.signedPreKeyId = fields.signedPreKeyId;
    this.signedPreKey = fields.signedPreKey;
    this.signedPreKeySignature = fields.signedPreKeySignature;
    this.kyberPreKeyId = fields.kyberPreKeyId;
    this.kyberPreKey = fields.kyberPreKey;
    this.kyberPreKeySignature = fields.kyberPreKeySignature;
    this.preKeyId = fields.preKeyId;
    this.preKey = fields.preKey;
  }

  /**
   * Check both prekey signatures against the identity key.
   * @throws InvalidSignature either signature fails.
   */
  verifySignatures(): void {
    if (!xeddsa.verify(this.identityKey, this.signedPreKey.serialize(), this.signedPreKeySignature)) {
      throw new InvalidSignature("signed prekey signature does not verify");
    }
    if (!xeddsa.verify(this.identityKey, this.kyberPreKey.serialize(), this.kyberPreKeySignature)) {
      throw new InvalidSignature("Kyber prekey signature does not verify");
    }
  }
}
