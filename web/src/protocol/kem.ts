/**
 * Post-quantum KEM keys and backends (digest §1.2); mirrors cipherpost.protocol.kem.
 *
 * Two key types travel on the wire, each prefixed by its type byte:
 * - `0x08` Kyber1024, round 3: the default everywhere, the only one libsignal accepts;
 * - `0x0A` ML-KEM-1024 (FIPS 203): optional.
 *
 * Both run on @noble/post-quantum's ML-KEM-1024. Round-3 Kyber differs from ML-KEM only
 * in how the shared secret is finalised, which the bridge below reproduces exactly:
 * `K = SHAKE256(K_mlkem || SHA3-256(c), 32)` on both sides (encapsulating a uniform `m`
 * equals encapsulating `H(m0)`, and any ML-KEM key pair is a valid Kyber pair).
 *
 * Backends are injected: a {@link KemBackend} per type byte. Private keys are kept as the
 * 64-byte ML-KEM seed `d || z`; the expanded secret key is made once per key pair.
 */

import { ml_kem1024 } from "@noble/post-quantum/ml-kem.js";
import { sha3_256, shake256 } from "@noble/hashes/sha3.js";

import { concat, toHex, type Random } from "./bytes.js";
import { InvalidKey } from "./errors.js";

export const KYBER1024 = 0x08;
export const MLKEM1024 = 0x0a;

export const PUBLIC_KEY_LENGTH = 1568;
export const CIPHERTEXT_LENGTH = 1568;
export const SHARED_SECRET_LENGTH = 32;
export const SEED_LENGTH = 64;

/** One KEM algorithm. Raw keys and ciphertexts, without type bytes. */
export interface KemBackend {
  readonly keyType: number;
  /** A fresh key pair: `[public, secret (the stored form)]`. */
  generate(rng: Random): [Uint8Array, Uint8Array];
  /** The backend's ready-to-use form of `secret` (key expansion done once). */
  load(secret: Uint8Array): Uint8Array;
  /** Recompute the public key of `secret`. */
  publicFromSecret(secret: Uint8Array): Uint8Array;
  /** `[shared secret, ciphertext]` for `publicKey`. */
  encapsulate(publicKey: Uint8Array): [Uint8Array, Uint8Array];
  /** The shared secret of `ciphertext` for a key from {@link load}. */
  decapsulate(loaded: Uint8Array, ciphertext: Uint8Array): Uint8Array;
}

/**
 * FIPS 203 ML-KEM-1024 from @noble/post-quantum; secrets are 64-byte seeds.
 * `encapsulationRandom` (tests only) replaces the library's own randomness.
 */
export class MLKem1024Backend implements KemBackend {
  readonly keyType: number = MLKEM1024;

  constructor(protected readonly encapsulationRandom?: Random) {}

  generate(rng: Random): [Uint8Array, Uint8Array] {
    const seed = rng(SEED_LENGTH);
    return [this.publicFromSecret(seed), seed];
  }

  load(secret: Uint8Array): Uint8Array {
    if (secret.length !== SEED_LENGTH) throw new InvalidKey("invalid ML-KEM-1024 seed");
    return ml_kem1024.keygen(Uint8Array.from(secret)).secretKey;
  }

  publicFromSecret(secret: Uint8Array): Uint8Array {
    if (secret.length !== SEED_LENGTH) throw new InvalidKey("invalid ML-KEM-1024 seed");
    return ml_kem1024.keygen(Uint8Array.from(secret)).publicKey;
  }

  /** The 32-byte message ML-KEM encapsulates, or undefined for the library's own. */
  protected message(): Uint8Array | undefined {
    return this.encapsulationRandom?.(32);
  }

  encapsulate(publicKey: Uint8Array): [Uint8Array, Uint8Array] {
    const msg = this.message();
    try {
      const { sharedSecret, cipherText } = msg === undefined
        ? ml_kem1024.encapsulate(publicKey)
        : ml_kem1024.encapsulate(publicKey, msg);
      return [sharedSecret, cipherText];
    } catch (cause) {
      throw new InvalidKey("invalid ML-KEM-1024 public key", { cause });
    }
  }

  decapsulate(loaded: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    try {
      return ml_kem1024.decapsulate(ciphertext, loaded);
    } catch (cause) {
      throw new InvalidKey("invalid ML-KEM-1024 ciphertext", { cause });
    }
  }
}

function round3Finish(shared: Uint8Array, ciphertext: Uint8Array): Uint8Array {
  return shake256(concat(shared, sha3_256(ciphertext)), { dkLen: 32 });
}

/** Round-3 Kyber1024 bridged onto ML-KEM-1024 (digest §1.2). */
export class Kyber1024Backend extends MLKem1024Backend {
  override readonly keyType: number = KYBER1024;

  /** Round 3 encapsulates `m = SHA3-256(m0)`; with test randomness, do exactly that. */
  protected override message(): Uint8Array | undefined {
    const m0 = this.encapsulationRandom?.(32);
    return m0 === undefined ? undefined : sha3_256(m0);
  }

  override encapsulate(publicKey: Uint8Array): [Uint8Array, Uint8Array] {
    const [shared, ciphertext] = super.encapsulate(publicKey);
    return [round3Finish(shared, ciphertext), ciphertext];
  }

  override decapsulate(loaded: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    return round3Finish(super.decapsulate(loaded, ciphertext), ciphertext);
  }
}

export type KemRegistry = ReadonlyMap<number, KemBackend>;

export const DEFAULT_KEMS: KemRegistry = new Map<number, KemBackend>([
  [KYBER1024, new Kyber1024Backend()],
  [MLKEM1024, new MLKem1024Backend()],
]);

function typeName(keyType: number): string {
  return `0x${keyType.toString(16).padStart(2, "0")}`;
}

/** A KEM public key with its type byte. */
export class KemPublicKey {
  constructor(readonly keyType: number, readonly raw: Uint8Array) {}

  /**
   * Parse `type || key`; the length is checked exactly.
   * @throws InvalidKey unknown or unsupported type byte, or wrong length.
   */
  static deserialize(data: Uint8Array, kems: KemRegistry = DEFAULT_KEMS): KemPublicKey {
    if (data.length === 0) throw new InvalidKey("empty KEM key");
    const keyType = data[0]!;
    if (!kems.has(keyType)) throw new InvalidKey(`bad KEM key type ${typeName(keyType)}`);
    if (data.length !== 1 + PUBLIC_KEY_LENGTH) throw new InvalidKey("bad KEM public key length");
    return new KemPublicKey(keyType, data.slice(1));
  }

  /** `type || key` (1569 bytes). */
  serialize(): Uint8Array {
    return concat(Uint8Array.of(this.keyType), this.raw);
  }

  /** `[shared secret, serialized ciphertext with type byte]`. */
  encapsulate(kems: KemRegistry = DEFAULT_KEMS): [Uint8Array, Uint8Array] {
    const backend = kems.get(this.keyType);
    if (backend === undefined) throw new InvalidKey(`bad KEM key type ${typeName(this.keyType)}`);
    const [shared, ciphertext] = backend.encapsulate(this.raw);
    return [shared, concat(Uint8Array.of(this.keyType), ciphertext)];
  }

  toString(): string {
    return `KemPublicKey(type=${typeName(this.keyType)}, ${toHex(this.raw.subarray(0, 8))}...)`;
  }
}

/** A KEM key pair; `secret` is the backend's stored private form (an ML-KEM seed). */
export class KemKeyPair {
  #loaded: Uint8Array | undefined;

  constructor(readonly publicKey: KemPublicKey, readonly secret: Uint8Array) {}

  /** A fresh key pair of `keyType`. */
  static generate(rng: Random, keyType: number = KYBER1024, kems: KemRegistry = DEFAULT_KEMS): KemKeyPair {
    const backend = kems.get(keyType);
    if (backend === undefined) throw new RangeError(`unsupported KEM type ${typeName(keyType)}`);
    const [publicKey, secret] = backend.generate(rng);
    return new KemKeyPair(new KemPublicKey(keyType, publicKey), secret);
  }

  /**
   * Decapsulate a serialized (type-prefixed) ciphertext.
   * @throws InvalidKey the type byte differs from this key's, or the length is wrong.
   */
  decapsulate(ciphertext: Uint8Array, kems: KemRegistry = DEFAULT_KEMS): Uint8Array {
    if (ciphertext.length === 0 || ciphertext[0] !== this.publicKey.keyType) {
      throw new InvalidKey("KEM ciphertext type does not match the key");
    }
    if (ciphertext.length !== 1 + CIPHERTEXT_LENGTH) throw new InvalidKey("bad KEM ciphertext length");
    const backend = kems.get(this.publicKey.keyType);
    if (backend === undefined) throw new InvalidKey("unsupported KEM key type");
    if (this.#loaded === undefined) this.#loaded = backend.load(this.secret);
    return backend.decapsulate(this.#loaded, ciphertext.subarray(1));
  }

  toString(): string {
    return `KemKeyPair(public=${this.publicKey}, secret=<redacted>)`;
  }
}
