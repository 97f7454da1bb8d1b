/**
 * Unlocking the browser's store with a passkey: the local key (Argon2id of the password,
 * ./crypto.ts) wrapped under a key derived from a WebAuthn credential's PRF output. The
 * password keeps opening the store; a passkey is one more way in. Nothing here goes to
 * the relay: the record lives beside the store, in the same IndexedDB database.
 *
 * Theory of operation. Registering asks the authenticator (user verification required)
 * for PRF(credential, salt), a 32-byte secret only that credential yields for that salt.
 * HKDF-SHA-256 of it (salt: the PRF salt; info: {@link WRAP_LABEL}) gives a
 * non-extractable AES-256-GCM wrapping key, and WebCrypto's wrapKey seals the local key
 * under it. Unlocking asks for the same PRF output and unwrapKey makes the local key
 * again, straight into a non-extractable CryptoKey: its bytes are never in JavaScript.
 * No server checks the WebAuthn signature; what makes the passkey necessary is that
 * without the PRF output the wrapped key does not open.
 *
 * Record `meta:passkey` (unsealed; `meta:` keys are never written by the device store),
 * version 1, big-endian:
 *
 *     version u8 = 1 | created u64 (ms) | id length u16 (1..1023) | credential id
 *     | PRF salt (32) | SHA-256 of the store's check value (32) | nonce (12)
 *     | wrapped local key (32 + 16-byte GCM tag)
 *
 * Everything before the nonce is the wrapping's associated data (after the label), so
 * no field can be changed without the unwrap failing. The check value's hash ties the
 * record to the store's key: a store sealed again under another key (a new password)
 * finds it stale and says the passkey must be added again. Any other version, a length
 * off by one byte, or trailing bytes is refused before any cryptography.
 *
 * Adding a passkey takes a while (the user touches the authenticator), and the password
 * may change meanwhile in another tab. The record is bound to the check value read when
 * the password was checked, and written only if that check value and the record found
 * then are still the stored ones, in one IndexedDB transaction (saveRecord): else
 * PasskeyConflict and nothing is stored.
 */

import { bytesEqual } from "../../protocol/bytes.js";
import { KEY_BYTES, LocalKey, NONCE_BYTES } from "./crypto.js";
import { CHECK_RECORD, DeviceStore } from "./device.js";
import { KvConflict, type Kv } from "./kv.js";

export const RECORD_KEY = "meta:passkey";
export const VERSION = 1;
export const PRF_SALT_BYTES = 32;
export const PRF_OUTPUT_BYTES = 32;
/** WebAuthn's bound on a credential id. */
export const MAX_CREDENTIAL_ID = 1023;
/** HKDF info and the first bytes of the associated data: this key wraps nothing else. */
export const WRAP_LABEL = "cipherpost passkey unlock v1: local store key wrapping";
const TAG_BYTES = 16;
const HASH_BYTES = 32;
const encoder = new TextEncoder();

/** The stored record is not one this client reads (another version, damaged). */
export class PasskeyRecordInvalid extends Error {
  override readonly name = "PasskeyRecordInvalid";
}

/** The PRF output does not unwrap the key: another credential, or the record was changed. */
export class PasskeyMismatch extends Error {
  override readonly name = "PasskeyMismatch";
}

/** No passkey is registered in this browser. */
export class NoPasskey extends Error {
  override readonly name = "NoPasskey";
}

/** The browser or the authenticator gave no PRF output: nothing was stored. */
export class PrfUnavailable extends Error {
  override readonly name = "PrfUnavailable";
}

/** The WebAuthn ceremony did not complete (cancelled, timed out, no such credential here). */
export class PasskeyNotUsed extends Error {
  override readonly name = "PasskeyNotUsed";
}

/** The store's key changed (a new password) since the passkey was added. */
export class PasskeyStale extends Error {
  override readonly name = "PasskeyStale";
}

/**
 * While a passkey was being added, the password was changed or another passkey added or
 * removed (another tab): the new record would wrap a key the store no longer has, or
 * undo the other change. Nothing was stored; adding it again works.
 */
export class PasskeyConflict extends Error {
  override readonly name = "PasskeyConflict";
}

export interface PasskeyRecord {
  version: number;
  created: number;
  credentialId: Uint8Array;
  prfSalt: Uint8Array;
  checkHash: Uint8Array;
  nonce: Uint8Array;
  wrapped: Uint8Array;
}

function buffer(data: Uint8Array): ArrayBuffer {
  return data.slice().buffer as ArrayBuffer;
}

function header(r: Omit<PasskeyRecord, "nonce" | "wrapped">): Uint8Array {
  const out = new Uint8Array(1 + 8 + 2 + r.credentialId.length + PRF_SALT_BYTES + HASH_BYTES);
  const view = new DataView(out.buffer);
  view.setUint8(0, r.version);
  view.setBigUint64(1, BigInt(r.created));
  view.setUint16(9, r.credentialId.length);
  out.set(r.credentialId, 11);
  out.set(r.prfSalt, 11 + r.credentialId.length);
  out.set(r.checkHash, 11 + r.credentialId.length + PRF_SALT_BYTES);
  return out;
}

function associatedData(r: Omit<PasskeyRecord, "nonce" | "wrapped">): Uint8Array {
  const label = encoder.encode(WRAP_LABEL);
  const head = header(r);
  const out = new Uint8Array(label.length + head.length);
  out.set(label);
  out.set(head, label.length);
  return out;
}

function checkFields(r: Omit<PasskeyRecord, "nonce" | "wrapped">): void {
  if (r.version !== VERSION) throw new PasskeyRecordInvalid(`passkey record version ${r.version} is not supported`);
  if (!Number.isSafeInteger(r.created) || r.created < 0) throw new PasskeyRecordInvalid("bad passkey record date");
  if (r.credentialId.length < 1 || r.credentialId.length > MAX_CREDENTIAL_ID) {
    throw new PasskeyRecordInvalid("a credential id is 1 to 1023 bytes");
  }
  if (r.prfSalt.length !== PRF_SALT_BYTES || r.checkHash.length !== HASH_BYTES) {
    throw new PasskeyRecordInvalid("bad passkey record field length");
  }
}

export function encodeRecord(r: PasskeyRecord): Uint8Array {
  checkFields(r);
  if (r.nonce.length !== NONCE_BYTES || r.wrapped.length !== KEY_BYTES + TAG_BYTES) {
    throw new PasskeyRecordInvalid("bad passkey record field length");
  }
  const head = header(r);
  const out = new Uint8Array(head.length + NONCE_BYTES + KEY_BYTES + TAG_BYTES);
  out.set(head);
  out.set(r.nonce, head.length);
  out.set(r.wrapped, head.length + NONCE_BYTES);
  return out;
}

/** @throws PasskeyRecordInvalid anything but a whole version-1 record. */
export function decodeRecord(data: Uint8Array): PasskeyRecord {
  if (data.length < 11) throw new PasskeyRecordInvalid("the passkey record is truncated");
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const version = view.getUint8(0);
  if (version !== VERSION) throw new PasskeyRecordInvalid(`passkey record version ${version} is not supported`);
  const created = view.getBigUint64(1);
  const idLength = view.getUint16(9);
  const expected = 11 + idLength + PRF_SALT_BYTES + HASH_BYTES + NONCE_BYTES + KEY_BYTES + TAG_BYTES;
  if (data.length !== expected) {
    throw new PasskeyRecordInvalid(`the passkey record is ${data.length} bytes where ${expected} were expected`);
  }
  if (created > BigInt(Number.MAX_SAFE_INTEGER)) throw new PasskeyRecordInvalid("bad passkey record date");
  let at = 11;
  const take = (n: number) => data.slice(at, (at += n));
  const record: PasskeyRecord = {
    version, created: Number(created), credentialId: take(idLength), prfSalt: take(PRF_SALT_BYTES),
    checkHash: take(HASH_BYTES), nonce: take(NONCE_BYTES), wrapped: take(KEY_BYTES + TAG_BYTES),
  };
  checkFields(record);
  return record;
}

/** HKDF-SHA-256 of the PRF output: the non-extractable key that wraps the local key. */
export async function wrappingKey(prfOutput: Uint8Array, prfSalt: Uint8Array): Promise<CryptoKey> {
  if (prfOutput.length !== PRF_OUTPUT_BYTES) throw new RangeError(`a PRF output is ${PRF_OUTPUT_BYTES} bytes`);
  const ikm = await crypto.subtle.importKey("raw", buffer(prfOutput), "HKDF", false, ["deriveKey"]);
  return crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: buffer(prfSalt), info: buffer(encoder.encode(WRAP_LABEL)) },
    ikm, { name: "AES-GCM", length: 8 * KEY_BYTES }, false, ["wrapKey", "unwrapKey"]);
}

async function checkHash(check: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", buffer(check)));
}

/**
 * The record for `rawKey` (the store's 32-byte local key; wiped here) under a
 * credential's PRF output for `prfSalt`. `check` is the store's check value.
 */
export async function sealRecord(rawKey: Uint8Array, check: Uint8Array, credentialId: Uint8Array,
  prfSalt: Uint8Array, prfOutput: Uint8Array, created: number): Promise<Uint8Array> {
  try {
    if (rawKey.length !== KEY_BYTES) throw new RangeError("a local key is 32 bytes");
    const fields = { version: VERSION, created, credentialId: credentialId.slice(), prfSalt: prfSalt.slice(),
      checkHash: await checkHash(check) };
    checkFields(fields);
    // Extractable only for the one wrapKey call; the bytes it holds are the caller's anyway.
    const local = await crypto.subtle.importKey("raw", buffer(rawKey), "AES-GCM", true, ["encrypt", "decrypt"]);
    const nonce = crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
    const wrapped = new Uint8Array(await crypto.subtle.wrapKey("raw", local, await wrappingKey(prfOutput, prfSalt),
      { name: "AES-GCM", iv: buffer(nonce), additionalData: buffer(associatedData(fields)) }));
    return encodeRecord({ ...fields, nonce, wrapped });
  } finally {
    rawKey.fill(0);
  }
}

/**
 * The local key the record wraps, as a non-extractable key, under `prfOutput`.
 * @throws PasskeyRecordInvalid, PasskeyStale (`check` is not the one the record was made
 * for), PasskeyMismatch (the PRF output does not unwrap it).
 */
export async function openRecord(data: Uint8Array, check: Uint8Array, prfOutput: Uint8Array): Promise<LocalKey> {
  const record = decodeRecord(data);
  if (!bytesEqual(record.checkHash, await checkHash(check))) {
    throw new PasskeyStale("this browser's password changed since the passkey was added");
  }
  const wrapping = await wrappingKey(prfOutput, record.prfSalt);
  let key: CryptoKey;
  try {
    key = await crypto.subtle.unwrapKey("raw", buffer(record.wrapped), wrapping,
      { name: "AES-GCM", iv: buffer(record.nonce), additionalData: buffer(associatedData(record)) },
      { name: "AES-GCM", length: 8 * KEY_BYTES }, false, ["encrypt", "decrypt"]);
  } catch {
    throw new PasskeyMismatch("this passkey does not unlock this browser");
  }
  return LocalKey.fromCryptoKey(key);
}

/** The record stored in `kv`, or undefined. @throws PasskeyRecordInvalid */
export async function readRecord(kv: Kv): Promise<PasskeyRecord | undefined> {
  const data = await kv.get(RECORD_KEY);
  return data === undefined ? undefined : decodeRecord(data);
}

/** The store as an addition of a passkey started from: its check value and the record then (if any). */
export interface RecordBase {
  check: Uint8Array;
  previous: Uint8Array | undefined;
}

/**
 * Store `data` (a record made for `base.check`) if the store still holds `base`'s check
 * value and record, checked in the transaction that writes it.
 * @throws PasskeyRecordInvalid, RangeError (`data` is not for `base.check`), PasskeyConflict.
 */
export async function saveRecord(kv: Kv, data: Uint8Array, base: RecordBase): Promise<void> {
  if (!bytesEqual(decodeRecord(data).checkHash, await checkHash(base.check))) {
    throw new RangeError("the passkey record was made for another store key");
  }
  try {
    await kv.commit(new Map([[RECORD_KEY, data]]), new Map([[CHECK_RECORD, base.check], [RECORD_KEY, base.previous]]));
  } catch (error) {
    if (!(error instanceof KvConflict)) throw error;
    throw new PasskeyConflict("the password or the passkey of this browser was changed while the passkey was being "
      + "added: nothing was stored; add it again");
  }
}

export async function deleteRecord(kv: Kv): Promise<void> {
  await kv.commit(new Map([[RECORD_KEY, null]]));
}

// -- WebAuthn ceremonies -----------------------------------------------------------------

/** navigator.credentials, or a stand-in in tests. */
export interface Credentials {
  create(options: CredentialCreationOptions): Promise<Credential | null>;
  get(options: CredentialRequestOptions): Promise<Credential | null>;
}

/** How long the browser waits for the user to use the passkey. */
const CEREMONY_TIMEOUT_MS = 120_000;

function prfFirst(credential: PublicKeyCredential): Uint8Array | undefined {
  const first = credential.getClientExtensionResults().prf?.results?.first;
  if (first === undefined) return undefined;
  return ArrayBuffer.isView(first) ? new Uint8Array(first.buffer, first.byteOffset, first.byteLength).slice()
    : new Uint8Array(first).slice();
}

function asPublicKey(credential: Credential | null): PublicKeyCredential {
  if (credential === null || credential.type !== "public-key") throw new PasskeyNotUsed("no passkey was used");
  return credential as PublicKeyCredential;
}

/** A refusal of the browser (DOMException) as one of ours; other errors pass through. */
function ceremonyError(error: unknown): unknown {
  if (!(error instanceof DOMException)) return error;
  if (error.name === "NotAllowedError" || error.name === "AbortError") {
    return new PasskeyNotUsed("the passkey was not used: cancelled, timed out, or not on this device");
  }
  if (error.name === "InvalidStateError") return new PasskeyNotUsed("this authenticator holds this passkey already");
  if (error.name === "SecurityError") return new PasskeyNotUsed("passkeys need a secure page (https or localhost)");
  if (error.name === "NotSupportedError") return new PrfUnavailable("this browser offers no suitable passkey");
  return new PasskeyNotUsed(`the browser refused the passkey (${error.name})`);
}

async function assertion(credentials: Credentials, rpId: string, credentialId: Uint8Array,
  prfSalt: Uint8Array, signal?: AbortSignal): Promise<PublicKeyCredential> {
  try {
    return asPublicKey(await credentials.get({ ...(signal === undefined ? {} : { signal }), publicKey: {
      challenge: buffer(crypto.getRandomValues(new Uint8Array(32))), rpId, timeout: CEREMONY_TIMEOUT_MS,
      userVerification: "required", allowCredentials: [{ type: "public-key", id: buffer(credentialId) }],
      extensions: { prf: { eval: { first: buffer(prfSalt) } } },
    } }));
  } catch (error) {
    throw ceremonyError(error);
  }
}

/** A WebAuthn user handle for the account that names nothing (16 bytes of a labelled hash). */
async function userHandle(accountId: string): Promise<ArrayBuffer> {
  const digest = await crypto.subtle.digest("SHA-256", buffer(encoder.encode(`cipherpost local unlock:${accountId}`)));
  return digest.slice(0, 16);
}

export interface PasskeyAccount {
  accountId: string;
  username: string;
}

/**
 * Register a passkey that unlocks the store in `kv`, which `password` opens (it is asked
 * again: the local key is only ever derived from it, never read back from WebCrypto).
 * Replaces a passkey registered before. Without a PRF output stores nothing.
 * @throws WrongKey the password, PrfUnavailable, PasskeyNotUsed, PasskeyConflict (the
 * password or passkey changed meanwhile: nothing stored).
 */
export async function addPasskey(kv: Kv, password: string, account: PasskeyAccount, rpId: string,
  credentials: Credentials, now: number = Date.now()): Promise<PasskeyRecord> {
  // Read before the key is derived: a password changed in between fails the derivation
  // (WrongKey) or the compare-and-set, never binds the record to a key it does not wrap.
  const base: RecordBase = { check: await DeviceStore.checkValue(kv), previous: await kv.get(RECORD_KEY) };
  const raw = await DeviceStore.rawKey(kv, password);
  try {
    const prfSalt = crypto.getRandomValues(new Uint8Array(PRF_SALT_BYTES));
    let created: PublicKeyCredential;
    try {
      created = asPublicKey(await credentials.create({ publicKey: {
        rp: { id: rpId, name: "Cipherpost" },
        user: { id: await userHandle(account.accountId), name: account.username,
          displayName: `${account.username} (Cipherpost in this browser)` },
        challenge: buffer(crypto.getRandomValues(new Uint8Array(32))),
        pubKeyCredParams: [{ type: "public-key", alg: -7 }, { type: "public-key", alg: -257 }],
        authenticatorSelection: { userVerification: "required", residentKey: "preferred" },
        timeout: CEREMONY_TIMEOUT_MS, attestation: "none",
        extensions: { prf: { eval: { first: buffer(prfSalt) } } },
      } }));
    } catch (error) {
      throw ceremonyError(error);
    }
    const credentialId = new Uint8Array(created.rawId);
    if (created.getClientExtensionResults().prf?.enabled !== true && prfFirst(created) === undefined) {
      await forgetCredential(rpId, credentialId);
      throw new PrfUnavailable("this browser or authenticator does not offer the PRF extension");
    }
    // Some authenticators evaluate the PRF only when the credential is used, not at creation.
    const prfOutput = prfFirst(created) ?? prfFirst(await assertion(credentials, rpId, credentialId, prfSalt));
    if (prfOutput === undefined || prfOutput.length !== PRF_OUTPUT_BYTES) {
      await forgetCredential(rpId, credentialId);
      throw new PrfUnavailable("the authenticator returned no PRF output");
    }
    const data = await sealRecord(raw, base.check, credentialId, prfSalt, prfOutput, now);
    prfOutput.fill(0);
    try {
      await saveRecord(kv, data, base);
    } catch (error) {
      if (error instanceof PasskeyConflict) await forgetCredential(rpId, credentialId); // it unlocks nothing
      throw error;
    }
    return decodeRecord(data);
  } finally {
    raw.fill(0);
  }
}

/**
 * The store's local key, unwrapped with the registered passkey. `signal` stops waiting
 * for it (a browser whose authenticator is gone may wait for one until the timeout).
 * @throws NoPasskey, PasskeyRecordInvalid, PasskeyStale (checked before the browser asks
 * for the passkey), PasskeyNotUsed, PrfUnavailable, PasskeyMismatch.
 */
export async function unlockWithPasskey(kv: Kv, rpId: string, credentials: Credentials,
  signal?: AbortSignal): Promise<LocalKey> {
  const data = await kv.get(RECORD_KEY);
  if (data === undefined) throw new NoPasskey("no passkey unlocks this browser");
  const record = decodeRecord(data);
  const check = await DeviceStore.checkValue(kv);
  if (!bytesEqual(record.checkHash, await checkHash(check))) {
    throw new PasskeyStale("this browser's password changed since the passkey was added");
  }
  const used = await assertion(credentials, rpId, record.credentialId, record.prfSalt, signal);
  if (!bytesEqual(new Uint8Array(used.rawId), record.credentialId)) {
    throw new PasskeyMismatch("another passkey than this browser's was used");
  }
  const prfOutput = prfFirst(used);
  if (prfOutput === undefined || prfOutput.length !== PRF_OUTPUT_BYTES) {
    throw new PrfUnavailable("the authenticator returned no PRF output");
  }
  try {
    return await openRecord(data, check, prfOutput);
  } finally {
    prfOutput.fill(0);
  }
}

/**
 * Change the store's password: everything sealed again under the new one (see
 * DeviceStore.changePassword), the passkey record deleted in the same transaction. The
 * passkey wrapped the old key, so it must be added again; the return value says whether
 * there was one.
 */
export async function changePassword(store: DeviceStore, oldPassword: string, newPassword: string): Promise<boolean> {
  const had = (await store.kv.get(RECORD_KEY)) !== undefined;
  await store.changePassword(oldPassword, newPassword, [RECORD_KEY]);
  return had;
}

function base64url(data: Uint8Array): string {
  let s = "";
  for (const b of data) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * Forget the passkey: delete the record (the wrapped key with it), then tell the browser
 * the credential is no longer used where it offers that (signalUnknownCredential), so its
 * passkey manager may drop it. Returns whether a record was there.
 */
export async function removePasskey(kv: Kv, rpId: string): Promise<boolean> {
  const data = await kv.get(RECORD_KEY);
  await deleteRecord(kv);
  if (data === undefined) return false;
  let credentialId: Uint8Array | undefined;
  try {
    credentialId = decodeRecord(data).credentialId;
  } catch {
    // a record this client cannot read names no credential to forget
  }
  if (credentialId !== undefined) await forgetCredential(rpId, credentialId);
  return true;
}

/** Best effort: where the browser offers signalUnknownCredential, say the credential is unused. */
async function forgetCredential(rpId: string, credentialId: Uint8Array): Promise<void> {
  const api = globalThis.PublicKeyCredential as unknown as {
    signalUnknownCredential?: (o: { rpId: string; credentialId: string }) => Promise<void>;
  } | undefined;
  try {
    await api?.signalUnknownCredential?.({ rpId, credentialId: base64url(credentialId) });
  } catch {
    // the record is what lets a passkey unlock; the browser's list is only tidied
  }
}
