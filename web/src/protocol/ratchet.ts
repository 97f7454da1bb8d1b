/**
 * Double Ratchet key derivation as libsignal does it (digest §4.1); mirrors
 * cipherpost.protocol.ratchet.
 *
 * The KDFs (HKDF-SHA256, HMAC-SHA256) are synchronous, from @noble/hashes. The body
 * cipher, AES-256-CBC with PKCS#7, is WebCrypto's (`crypto.subtle`, in every browser and
 * in Node 20): native and constant-time, where the pure-JS AES of @noble/ciphers uses
 * T-tables that leak cache timings. The price is that encryption and decryption are
 * asynchronous; the session code serializes its operations to keep compute-then-commit.
 */

import { hkdf as nobleHkdf } from "@noble/hashes/hkdf.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";

import { MESSAGE_KEYS_INFO, ROOT_INFO } from "./constants.js";
import { InvalidMessage } from "./errors.js";

const ZERO_SALT = new Uint8Array(32);
const MESSAGE_KEY_SEED = Uint8Array.of(0x01);
const CHAIN_KEY_SEED = Uint8Array.of(0x02);

/** RFC 5869 HKDF-SHA256; an undefined salt means 32 zero bytes. */
export function hkdf(ikm: Uint8Array, salt: Uint8Array | undefined, info: Uint8Array, length: number): Uint8Array {
  return nobleHkdf(sha256, ikm, salt ?? ZERO_SALT, info, length);
}

/** HMAC-SHA256. */
export function hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array {
  return hmac(sha256, key, data);
}

/** KDF_RK: return `[new root key, new chain key]`. */
export function rootStep(rootKey: Uint8Array, dhOutput: Uint8Array): [Uint8Array, Uint8Array] {
  const okm = hkdf(dhOutput, rootKey, ROOT_INFO, 64);
  return [okm.slice(0, 32), okm.slice(32, 64)];
}

/** The seed of the message key at this chain position. */
export function messageKeySeed(chainKey: Uint8Array): Uint8Array {
  return hmac(sha256, chainKey, MESSAGE_KEY_SEED);
}

/** The chain key one step on. */
export function nextChainKey(chainKey: Uint8Array): Uint8Array {
  return hmac(sha256, chainKey, CHAIN_KEY_SEED);
}

/** Cipher key, MAC key and IV of one message. */
export interface MessageKeys {
  readonly cipherKey: Uint8Array;
  readonly macKey: Uint8Array;
  readonly iv: Uint8Array;
}

/** Derive from a chain's message-key seed; `salt` is the SPQR key when present (never, here). */
export function messageKeys(seed: Uint8Array, salt?: Uint8Array): MessageKeys {
  const okm = hkdf(seed, salt, MESSAGE_KEYS_INFO, 80);
  return { cipherKey: okm.slice(0, 32), macKey: okm.slice(32, 64), iv: okm.slice(64, 80) };
}

function own(data: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(data);
}

async function aesKey(key: Uint8Array, usage: "encrypt" | "decrypt"): Promise<CryptoKey> {
  if (key.length !== 32) throw new RangeError("AES-256 needs a 32-byte key");
  return crypto.subtle.importKey("raw", own(key), { name: "AES-CBC" }, false, [usage]);
}

/** AES-256-CBC with PKCS#7 padding (WebCrypto). */
export async function aesCbcEncrypt(key: Uint8Array, iv: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
  const cryptoKey = await aesKey(key, "encrypt");
  const out = await crypto.subtle.encrypt({ name: "AES-CBC", iv: own(iv) }, cryptoKey, own(plaintext));
  return new Uint8Array(out);
}

/**
 * Inverse of {@link aesCbcEncrypt}.
 * @throws InvalidMessage bad length or padding (callers check a MAC or signature first).
 */
export async function aesCbcDecrypt(key: Uint8Array, iv: Uint8Array, ciphertext: Uint8Array): Promise<Uint8Array> {
  if (ciphertext.length === 0 || ciphertext.length % 16 !== 0) {
    throw new InvalidMessage("invalid ciphertext length");
  }
  const cryptoKey = await aesKey(key, "decrypt");
  try {
    const out = await crypto.subtle.decrypt({ name: "AES-CBC", iv: own(iv) }, cryptoKey, own(ciphertext));
    return new Uint8Array(out);
  } catch {
    throw new InvalidMessage("invalid padding");
  }
}
