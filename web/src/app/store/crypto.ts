/**
 * Encryption at rest for the browser's store; the same scheme and parameters as
 * cipherpost.client.store.crypto.
 *
 * Every private value is sealed with AES-256-GCM (WebCrypto, a non-extractable key) under
 * the local key, with the record's key as associated data so that a value cannot be moved
 * to another record. The local key is Argon2id of the user's password (hash-wasm: the
 * RFC 9106 reference code compiled to WebAssembly), 64 MiB, 3 passes, 2 lanes, 32 bytes,
 * a 16-byte random salt; the salt, the parameters and a sealed check value are stored
 * beside the data, never the key.
 */

import { argon2id } from "hash-wasm";

export const KEY_BYTES = 32;
export const NONCE_BYTES = 12;
export const SALT_BYTES = 16;
const CHECK_AAD = new TextEncoder().encode("cipherpost local key check");

/** The password does not open this store. */
export class WrongKey extends Error {
  override readonly name = "WrongKey";
}

/** A sealed value failed authentication: the store was tampered with or damaged. */
export class CorruptValue extends Error {
  override readonly name = "CorruptValue";
}

/** Argon2id cost; stored with the salt so a store always reopens with its own. */
export interface Argon2Params {
  timeCost: number;
  memoryKib: number;
  parallelism: number;
}

/** cipherpost.client.store.crypto.Argon2Params() */
export const DEFAULT_PARAMS: Argon2Params = Object.freeze({ timeCost: 3, memoryKib: 64 * 1024, parallelism: 2 });

/** Cheap parameters for tests only (a store made with them is easy to brute-force). */
export const TEST_PARAMS: Argon2Params = Object.freeze({ timeCost: 1, memoryKib: 8, parallelism: 1 });

/**
 * The costliest Argon2id this client derives a key with: four times each default (12
 * passes, 256 MiB, 8 lanes), the Python SDK's `store.crypto.MAX_PARAMS`. The parameters
 * are read from the store's own header, which whoever can write to this origin's storage
 * could change: past this cap a tampered header would make the page spend gigabytes and
 * minutes before the password is even tried. Nothing is written above it either.
 */
export const MAX_PARAMS: Argon2Params = Object.freeze({ timeCost: 12, memoryKib: 256 * 1024, parallelism: 8 });

/**
 * `p` when Argon2 takes them (a pass, a lane, 8 KiB per lane) and they cost no more than
 * {@link MAX_PARAMS}; checked before any key derivation.
 * @throws RangeError naming the bound crossed.
 */
export function checkParams(p: Argon2Params): Argon2Params {
  const { timeCost: t, memoryKib: m, parallelism: l } = p;
  if (![t, m, l].every(Number.isSafeInteger) || t < 1 || l < 1 || m < 8 * l) {
    throw new RangeError(`Argon2 parameters ${t} passes, ${m} KiB, ${l} lanes are invalid`);
  }
  if (t > MAX_PARAMS.timeCost || m > MAX_PARAMS.memoryKib || l > MAX_PARAMS.parallelism) {
    throw new RangeError(`Argon2 parameters ${t} passes, ${m} KiB, ${l} lanes cost more than this client derives `
      + `keys with (at most ${MAX_PARAMS.timeCost} passes, ${MAX_PARAMS.memoryKib} KiB, ${MAX_PARAMS.parallelism} lanes)`);
  }
  return p;
}

/** "t,m,p" as Python stores them. */
export function encodeParams(p: Argon2Params): string {
  return `${p.timeCost},${p.memoryKib},${p.parallelism}`;
}

/** @throws RangeError not three integers in Argon2's ranges, or past {@link MAX_PARAMS}. */
export function decodeParams(text: string): Argon2Params {
  const parts = text.split(",");
  if (parts.length !== 3 || !parts.every((x) => /^[0-9]{1,9}$/.test(x))) throw new RangeError("bad Argon2 parameters");
  const [timeCost, memoryKib, parallelism] = parts.map(Number) as [number, number, number];
  return checkParams({ timeCost, memoryKib, parallelism });
}

/**
 * Argon2id of the password: the 32-byte local key.
 * @throws RangeError an empty password, or parameters {@link checkParams} refuses.
 */
export async function deriveKey(password: string, salt: Uint8Array, params: Argon2Params): Promise<Uint8Array> {
  if (!password) throw new RangeError("the password must not be empty");
  checkParams(params);
  return argon2id({
    password: new TextEncoder().encode(password), salt, iterations: params.timeCost,
    memorySize: params.memoryKib, parallelism: params.parallelism, hashLength: KEY_BYTES, outputType: "binary",
  });
}

function buffer(data: Uint8Array): ArrayBuffer {
  return data.slice().buffer as ArrayBuffer;
}

/** Seals and opens values; its key is a non-extractable WebCrypto key. */
export class LocalKey {
  private constructor(readonly key: CryptoKey) {}

  /** Import `raw` (32 bytes) and wipe the caller's copy. */
  static async fromRaw(raw: Uint8Array): Promise<LocalKey> {
    if (raw.length !== KEY_BYTES) throw new RangeError("a local key is 32 bytes");
    const key = await crypto.subtle.importKey("raw", buffer(raw), "AES-GCM", false, ["encrypt", "decrypt"]);
    raw.fill(0);
    return new LocalKey(key);
  }

  async seal(value: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
    const nonce = crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
    const sealed = new Uint8Array(await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: nonce, additionalData: buffer(aad) }, this.key, buffer(value)));
    const out = new Uint8Array(NONCE_BYTES + sealed.length);
    out.set(nonce);
    out.set(sealed, NONCE_BYTES);
    return out;
  }

  /** @throws CorruptValue the value does not authenticate. */
  async open(sealed: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
    if (sealed.length < NONCE_BYTES + 16) throw new CorruptValue("a stored value failed authentication");
    try {
      return new Uint8Array(await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: buffer(sealed.subarray(0, NONCE_BYTES)), additionalData: buffer(aad) },
        this.key, buffer(sealed.subarray(NONCE_BYTES))));
    } catch {
      throw new CorruptValue("a stored value failed authentication");
    }
  }

  /** A sealed constant stored with the store to recognise the right key. */
  checkValue(): Promise<Uint8Array> {
    return this.seal(new TextEncoder().encode("ok"), CHECK_AAD);
  }

  /** @throws WrongKey `check` was made with another key. */
  async verify(check: Uint8Array): Promise<void> {
    try {
      await this.open(check, CHECK_AAD);
    } catch {
      throw new WrongKey("wrong password for this store");
    }
  }

  /**
   * Wrap a key WebCrypto made (the passkey's unwrapKey, ./passkey.ts).
   * @throws RangeError not a non-extractable AES-256-GCM key that encrypts and decrypts.
   */
  static fromCryptoKey(key: CryptoKey): LocalKey {
    const algorithm = key.algorithm as AesKeyAlgorithm;
    if (algorithm.name !== "AES-GCM" || algorithm.length !== 8 * KEY_BYTES || key.extractable
      || !key.usages.includes("encrypt") || !key.usages.includes("decrypt")) {
      throw new RangeError("a local key is a non-extractable AES-256-GCM key");
    }
    return new LocalKey(key);
  }

  toString(): string {
    return "LocalKey(<redacted>)";
  }

  toJSON(): string {
    return this.toString();
  }
}
