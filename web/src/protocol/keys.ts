/**
 * Curve25519 keys in libsignal's serialized forms (digest §1.1, §1.3); mirrors
 * cipherpost.protocol.keys.
 *
 * Randomness is never drawn here: every generator takes `rng` (see {@link Random}).
 * X25519 comes from @noble/curves; point validation uses noble's Edwards arithmetic.
 */

import { ed25519, x25519 } from "@noble/curves/ed25519.js";
import { bytesToNumberLE, numberToBytesLE } from "@noble/curves/utils.js";

import { bytesEqual, concat, toHex, type Random } from "./bytes.js";
import { InvalidKey } from "./errors.js";
import * as pb from "./protobuf.js";

export type { Random } from "./bytes.js";

export const DJB_TYPE = 0x05;
const P = ed25519.Point.Fp.ORDER;
const Fp = ed25519.Point.Fp;

/** Clamp a 32-byte Curve25519 scalar the way libsignal stores it. */
export function clamp(privateKey: Uint8Array): Uint8Array {
  if (privateKey.length !== 32) throw new InvalidKey("private key must be 32 bytes");
  const k = Uint8Array.from(privateKey);
  k[0]! &= 0xf8;
  k[31] = (k[31]! & 0x7f) | 0x40;
  return k;
}

/** A Curve25519 public key; `serialize()` gives the 33-byte `0x05 || u` form. */
export class PublicKey {
  readonly raw: Uint8Array;
  private readonly serialized: Uint8Array;

  constructor(raw: Uint8Array) {
    if (raw.length !== 32) throw new InvalidKey("public key must be 32 bytes");
    this.raw = Uint8Array.from(raw);
    this.serialized = concat(Uint8Array.of(DJB_TYPE), this.raw);
  }

  /**
   * Parse `0x05 || u`; trailing bytes are ignored as libsignal does.
   * @throws InvalidKey empty input, wrong type byte, or fewer than 32 key bytes.
   */
  static deserialize(data: Uint8Array): PublicKey {
    if (data.length === 0) throw new InvalidKey("empty public key");
    if (data[0] !== DJB_TYPE) throw new InvalidKey(`bad key type 0x${data[0]!.toString(16).padStart(2, "0")}`);
    if (data.length < 33) throw new InvalidKey("public key too short");
    return new PublicKey(data.subarray(1, 33));
  }

  /** The 33-byte serialized form (do not mutate). */
  serialize(): Uint8Array {
    return this.serialized;
  }

  /**
   * True when u < p, bit 255 is clear and the point is in the prime-order subgroup.
   * libsignal requires this of the PQXDH base key a responder receives (digest §1.1).
   */
  isCanonical(): boolean {
    const u = bytesToNumberLE(this.raw);
    if (u >= P) return false;
    if (Fp.create(u + 1n) === 0n) return false;
    const y = Fp.div(Fp.sub(u, 1n), Fp.add(u, 1n));
    try {
      const point = ed25519.Point.fromBytes(numberToBytesLE(y, 32));
      return point.isTorsionFree() && !point.isSmallOrder();
    } catch {
      return false;
    }
  }

  equals(other: PublicKey): boolean {
    return bytesEqual(this.raw, other.raw);
  }

  toString(): string {
    return `PublicKey(${toHex(this.raw)})`;
  }
}

/** A clamped Curve25519 private key. Its string form never shows the key. */
export class PrivateKey {
  readonly #raw: Uint8Array;
  #public: PublicKey | undefined;

  constructor(raw: Uint8Array) {
    this.#raw = clamp(raw);
  }

  /** A fresh private key from `rng`. */
  static generate(rng: Random): PrivateKey {
    return new PrivateKey(rng(32));
  }

  /** The 32 clamped scalar bytes. */
  serialize(): Uint8Array {
    return this.#raw;
  }

  /** The matching public key (cached). */
  publicKey(): PublicKey {
    if (this.#public === undefined) this.#public = new PublicKey(x25519.getPublicKey(this.#raw));
    return this.#public;
  }

  /**
   * X25519 with `publicKey`.
   * @throws InvalidKey the agreement is all zeros (a small-order public key).
   */
  agree(publicKey: PublicKey): Uint8Array {
    try {
      return x25519.getSharedSecret(this.#raw, publicKey.raw);
    } catch (cause) {
      throw new InvalidKey("invalid key agreement", { cause });
    }
  }

  toString(): string {
    return "PrivateKey(<redacted>)";
  }

  toJSON(): string {
    return this.toString();
  }
}

/** A Curve25519 key pair. */
export class KeyPair {
  constructor(readonly publicKey: PublicKey, readonly privateKey: PrivateKey) {}

  static generate(rng: Random): KeyPair {
    const privateKey = PrivateKey.generate(rng);
    return new KeyPair(privateKey.publicKey(), privateKey);
  }

  /** Rebuild a pair from its 32 private bytes. */
  static fromPrivate(privateKey: Uint8Array): KeyPair {
    const key = new PrivateKey(privateKey);
    return new KeyPair(key.publicKey(), key);
  }

  toString(): string {
    return `KeyPair(public=${this.publicKey}, private=<redacted>)`;
  }
}

export type IdentityKey = PublicKey;

/** An identity key pair; serializes as libsignal's IdentityKeyPairStructure. */
export class IdentityKeyPair {
  constructor(readonly publicKey: PublicKey, readonly privateKey: PrivateKey) {}

  static generate(rng: Random): IdentityKeyPair {
    const pair = KeyPair.generate(rng);
    return new IdentityKeyPair(pair.publicKey, pair.privateKey);
  }

  /** The 69-byte protobuf `{1: public(33), 2: private(32)}`. */
  serialize(): Uint8Array {
    return concat(pb.fieldBytes(1, this.publicKey.serialize()), pb.fieldBytes(2, this.privateKey.serialize()));
  }

  /** @throws InvalidKey malformed structure or keys. */
  static deserialize(data: Uint8Array): IdentityKeyPair {
    let publicBytes: Uint8Array | undefined;
    let privateBytes: Uint8Array | undefined;
    try {
      const fields = pb.decode(data);
      publicBytes = pb.getBytes(fields, 1);
      privateBytes = pb.getBytes(fields, 2);
    } catch (cause) {
      throw new InvalidKey("malformed identity key pair", { cause });
    }
    if (publicBytes === undefined || privateBytes === undefined || privateBytes.length !== 32) {
      throw new InvalidKey("malformed identity key pair");
    }
    const key = new PrivateKey(privateBytes);
    const pub = PublicKey.deserialize(publicBytes);
    if (!key.publicKey().equals(pub)) throw new InvalidKey("identity key pair halves do not match");
    return new IdentityKeyPair(pub, key);
  }

  toString(): string {
    return `IdentityKeyPair(public=${this.publicKey}, private=<redacted>)`;
  }
}
