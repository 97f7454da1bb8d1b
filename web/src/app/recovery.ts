/**
 * Getting an account back in a fresh browser with its recovery key or recovery
 * passphrase (docs/spec/history.md, "Recovery"); mirrors cipherpost.client.recovery
 * (restore, restore_with_passphrase). Neither the key nor the passphrase leaves the page:
 *
 * - recovery key (32 bytes, Crockford base32 in groups of four, 52 characters and a
 *   4-character check): HKDF-SHA256 (empty salt) gives the blob's lookup id ("Cipherpost
 *   recovery id v1", 16 bytes), the release secret the relay keeps a hash of ("... auth
 *   v1") and the key sealing the blob ("... recovery v1"; AES-256-GCM, nonce ||
 *   ciphertext, AAD "Cipherpost recovery blob v1" || lookup id);
 * - passphrase: Argon2id (the relay says the salt and parameters; weaker than the local
 *   store's defaults or costlier than MAX_PARAMS is refused before deriving) gives 64
 *   bytes: the blob's key (AAD "Cipherpost recovery passphrase blob v1" || salt) and a
 *   verifier the relay checks against its hash.
 *
 * The relay releases the sealed RecoveryBlob for the release secret or the verifier, and
 * lets a new device join with the same; the blob carries the identity key pair, contacts
 * and trust, groups and the history keys, so this browser then joins as Client.link does
 * for a ProvisionMessage and replays the server-stored history.
 */

import { create, fromBinary } from "@bufbuild/protobuf";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { argon2id } from "hash-wasm";

import { concat, constantTimeEqual, utf8 } from "../protocol/bytes.js";
import { RelayApi, RelayError } from "./api.js";
import { Client } from "./client.js";
import { ProvisionMessageSchema, RecoveryBlobSchema, type RecoveryBlob } from "./proto/cipherpost/app/v1/app_pb.js";
import { DEFAULT_PARAMS, decodeParams, encodeParams, type Argon2Params } from "./store/crypto.js";
import type { SecondFactorPrompt } from "./second_factor.js";
import type { Kv } from "./store/kv.js";

const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"; // Crockford base32
const KEY_BYTES = 32;
const KEY_CHARS = Math.ceil((KEY_BYTES * 8) / 5); // 52
const BLOB_AAD = utf8("Cipherpost recovery blob v1");
const PASSPHRASE_AAD = utf8("Cipherpost recovery passphrase blob v1");
/**
 * The store records of a recovery secret's derived values (the SDK's store secrets of the
 * same names): lookup id || release secret || sealing key; the passphrase's key ||
 * verifier || salt || encoded parameters. ./recovery_secrets.ts seals the blobs again
 * with them.
 */
export const KEY_SECRETS = "recovery_secrets";
export const PASSPHRASE_SECRETS = "recovery_passphrase";
/** The costliest Argon2id a relay may ask for (store.crypto.MAX_PARAMS: 4x each default). */
export const MAX_PARAMS: Argon2Params = Object.freeze({ timeCost: 12, memoryKib: 256 * 1024, parallelism: 8 });

/** Not a recovery key, a wrong one, a wrong passphrase, or a relay answer that does not fit. */
export class RecoveryError extends Error {
  override readonly name = "RecoveryError";
}

function decodeChar(c: string): number {
  const index = ALPHABET.indexOf(c === "O" ? "0" : c === "I" || c === "L" ? "1" : c);
  if (index < 0) throw new RecoveryError("that is not a recovery key (it has 56 letters and digits)");
  return index;
}

function encode(data: Uint8Array): string {
  let bits = data.reduce((acc, b) => (acc << 8n) | BigInt(b), 0n);
  const count = Math.ceil((data.length * 8) / 5);
  bits <<= BigInt(count * 5 - data.length * 8);
  let out = "";
  for (let i = count - 1; i >= 0; i--) out += ALPHABET[Number((bits >> BigInt(5 * i)) & 31n)];
  return out;
}

function check(key: Uint8Array): string {
  return encode(sha256(concat(utf8("Cipherpost recovery check\0"), key)).slice(0, 3)).slice(0, 4);
}

/** The recovery key as written down: groups of four characters (the SDK's format_key). */
export function formatKey(key: Uint8Array): string {
  return (encode(key) + check(key)).match(/.{1,4}/g)!.join(" ");
}

/**
 * The 32 bytes of a written-down recovery key: spaces, dashes and case ignored, O/I/L
 * read as 0/1/1 (the SDK's parse_key).
 * @throws RecoveryError wrong length, a character outside the alphabet, a failed check.
 */
export function parseKey(text: string): Uint8Array {
  const cleaned = text.toUpperCase().replace(/[ \t\n-]/g, "");
  if (cleaned.length !== KEY_CHARS + 4) throw new RecoveryError("that is not a recovery key (it has 56 letters and digits)");
  let value = 0n;
  for (const c of cleaned.slice(0, KEY_CHARS)) value = (value << 5n) | BigInt(decodeChar(c));
  value >>= BigInt(KEY_CHARS * 5 - KEY_BYTES * 8);
  const key = new Uint8Array(KEY_BYTES);
  for (let i = KEY_BYTES - 1; i >= 0; i--, value >>= 8n) key[i] = Number(value & 0xffn);
  const written = [...cleaned.slice(KEY_CHARS)].map((c) => ALPHABET[decodeChar(c)]).join("");
  if (!constantTimeEqual(utf8(check(key)), utf8(written))) {
    throw new RecoveryError("the recovery key has a typo (its check does not match)");
  }
  return key;
}

export interface Secrets { lookupId: Uint8Array; auth: Uint8Array; sealKey: Uint8Array }

export function deriveSecrets(key: Uint8Array): Secrets {
  const derive = (info: string) => hkdf(sha256, key, new Uint8Array(0), utf8(info), 32);
  return { lookupId: derive("Cipherpost recovery id v1").slice(0, 16), auth: derive("Cipherpost recovery auth v1"),
    sealKey: derive("Cipherpost recovery v1") };
}

const b64 = (data: Uint8Array): string => btoa(String.fromCharCode(...data));

function unb64(text: unknown, what: string): Uint8Array {
  if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length > 128 * 1024) {
    throw new RecoveryError(`the relay sent a malformed ${what}`);
  }
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

/** AES-256-GCM open of `nonce (12) || ciphertext` into a RecoveryBlob. @throws RecoveryError */
async function openSealed(key: Uint8Array, sealed: Uint8Array, aad: Uint8Array, refused: string): Promise<RecoveryBlob> {
  try {
    const aes = await crypto.subtle.importKey("raw", key as Uint8Array<ArrayBuffer>, "AES-GCM", false, ["decrypt"]);
    const plain = new Uint8Array(await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: sealed.slice(0, 12), additionalData: aad as Uint8Array<ArrayBuffer> }, aes, sealed.slice(12)));
    return fromBinary(RecoveryBlobSchema, plain);
  } catch {
    throw new RecoveryError(refused);
  }
}

/**
 * The Argon2id parameters and salt of the relay's answer for a passphrase, within
 * bounds (the SDK's relay_params).
 * @throws RecoveryError malformed, weaker than `floor`, or costlier than MAX_PARAMS.
 */
export function relayParams(answer: unknown, floor: Argon2Params = DEFAULT_PARAMS): { params: Argon2Params; salt: Uint8Array } {
  const { params: text, salt: saltText } = (answer ?? {}) as { params?: unknown; salt?: unknown };
  let params: Argon2Params;
  try {
    params = decodeParams(String(text));
  } catch {
    throw new RecoveryError("the relay sent malformed passphrase parameters");
  }
  const salt = unb64(saltText, "passphrase salt");
  if (params.timeCost < floor.timeCost || params.memoryKib < floor.memoryKib || salt.length < 16 || salt.length > 32) {
    throw new RecoveryError("the relay asks for weaker passphrase hashing than allowed");
  }
  if (params.timeCost > MAX_PARAMS.timeCost || params.memoryKib > MAX_PARAMS.memoryKib
    || params.parallelism > MAX_PARAMS.parallelism) {
    throw new RecoveryError("the relay asks for costlier passphrase hashing than this browser does");
  }
  return { params, salt };
}

export interface RestoreOptions {
  /** The new local store's Argon2id cost (tests only; DEFAULT_PARAMS otherwise). */
  argon2?: Argon2Params;
  /** The floor for the relay's passphrase parameters (tests only). */
  minParams?: Argon2Params;
  /** Reading the server-stored history: entries read, share of the relay's bytes. */
  historyProgress?: (entries: number, fraction: number) => void;
  /**
   * Asks for a code when the account has a second factor: the relay then wants one
   * before it releases the blob ("Recovering your account"); unset, the refusal ends
   * the recovery.
   */
  secondFactor?: SecondFactorPrompt;
}

async function ask(api: RelayApi, path: string, body: Record<string, string>, refused: string): Promise<Record<string, unknown>> {
  try {
    const found = await api.request("POST", path, body, false);
    if (typeof found !== "object" || found === null) throw new RecoveryError("the relay sent a malformed answer");
    return found as Record<string, unknown>;
  } catch (error) {
    if (error instanceof RelayError && (error.status === 403 || error.status === 404)
      && !error.code.startsWith("second_factor")) {
      throw new RecoveryError(refused);
    }
    throw error;
  }
}

/** Join as a new device of the blob's account and take over what it carries. */
async function join(kv: Kv, api: RelayApi, password: string, found: Record<string, unknown>, blob: RecoveryBlob,
  path: string, release: Record<string, string>, options: RestoreOptions, secret: [string, Uint8Array]): Promise<Client> {
  if (blob.accountId !== found.account_id) throw new RecoveryError("the recovery blob names another account");
  // An account with a second factor spent its code opening the blob: the relay handed
  // out a one-time link code to join with instead.
  const linkCode = typeof found.link_code === "string" && found.link_code !== "" ? found.link_code : undefined;
  const message = create(ProvisionMessageSchema, {
    accountId: blob.accountId, identityKeyPair: blob.identityKeyPair, username: blob.username,
    contacts: blob.contacts, groupStates: blob.groupStates, historyEnabled: blob.historyEnabled,
    historyKeys: blob.historyKeys, linkCode: linkCode ?? "",
  });
  return Client.link(kv, api.server, password, message, {
    ...(options.argon2 === undefined ? {} : { argon2: options.argon2 }),
    ...(options.historyProgress === undefined ? {} : { historyProgress: options.historyProgress }),
    ...(linkCode === undefined ? { join: { path, fields: release } } : {}),
    // Kept as an SDK device keeps them (this browser seals the blob again when it
    // changes), with the account or not at all (./withdraw.ts).
    keep: (store) => store.put(...secret),
  });
}

/**
 * Restore with the recovery key.
 * @throws RecoveryError not a recovery key, or none this relay knows. RelayError: 429
 * after too many wrong keys (the relay slows them down). JoinUndone: the store could not
 * be written after the relay took the device (./withdraw.ts: it is removed again).
 */
export async function restoreWithKey(kv: Kv, server: string, recoveryKey: string, password: string,
  options: RestoreOptions = {}): Promise<Client> {
  const secrets = deriveSecrets(parseKey(recoveryKey));
  const api = new RelayApi(server);
  api.secondFactor = options.secondFactor;
  const release = { lookup_id: b64(secrets.lookupId), auth: b64(secrets.auth) };
  const found = await ask(api, "/v1/recovery/open", release, "this server holds no account for that recovery key");
  const blob = await openSealed(secrets.sealKey, unb64(found.blob, "recovery blob"), concat(BLOB_AAD, secrets.lookupId),
    "the recovery blob does not open with this key");
  return join(kv, api, password, found, blob, "/v1/recovery/devices", release, options,
    [KEY_SECRETS, concat(secrets.lookupId, secrets.auth, secrets.sealKey)]);
}

/**
 * Restore with the username and the recovery passphrase.
 * @throws RecoveryError no passphrase for that username, a wrong passphrase, or
 * parameters out of bounds. RelayError: 429 after wrong ones. JoinUndone: as for
 * {@link restoreWithKey}.
 */
export async function restoreWithPassphrase(kv: Kv, server: string, username: string, passphrase: string,
  password: string, options: RestoreOptions = {}): Promise<Client> {
  if (!/^[a-z0-9_.]{3,32}$/.test(username)) throw new RecoveryError("that is not a username");
  const api = new RelayApi(server);
  api.secondFactor = options.secondFactor;
  let answer: unknown;
  try {
    answer = await api.request("GET", `/v1/recovery/passphrase/${encodeURIComponent(username)}`, undefined, false);
  } catch (error) {
    if (error instanceof RelayError && error.status === 404) throw new RecoveryError("no recovery passphrase is set for that username");
    throw error;
  }
  const { params, salt } = relayParams(answer, options.minParams);
  const raw = await argon2id({ password: utf8(passphrase), salt, iterations: params.timeCost, memorySize: params.memoryKib,
    parallelism: params.parallelism, hashLength: 64, outputType: "binary" });
  const release = { username, verifier: b64(raw.slice(32)) };
  const found = await ask(api, "/v1/recovery/passphrase/open", release, "wrong username or recovery passphrase");
  const blob = await openSealed(raw.slice(0, 32), unb64(found.blob, "recovery blob"), concat(PASSPHRASE_AAD, salt),
    "the recovery blob does not open with this passphrase");
  const kept = concat(raw, salt, utf8(encodeParams(params))); // key, verifier, salt, params
  raw.fill(0);
  return join(kv, api, password, found, blob, "/v1/recovery/passphrase/devices", release, options,
    [PASSPHRASE_SECRETS, kept]);
}
