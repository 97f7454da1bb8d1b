/**
 * Making and changing the account's recovery secrets from the browser, as the SDK's
 * cipherpost.client.recovery does (create_key, set_passphrase, update_blob): the same
 * RecoveryBlob, sealed the same way, stored with the same relay routes, so a blob this
 * browser writes restores the account in the SDK and the other way round
 * (docs/spec/history.md, "Recovery"; ./recovery.ts restores).
 *
 * - Recovery key: 32 random bytes, shown once in the SDK's display format (Crockford
 *   base32 in groups of four with a check). PUT /v1/recovery takes the lookup id, the
 *   release secret and the blob sealed under the derived key; the relay keeps one key
 *   per account, so a new one makes the old one useless.
 * - Recovery passphrase: Argon2id (DEFAULT_PARAMS, the SDK's Argon2Params()) over a new
 *   16-byte salt gives 64 bytes: the blob's sealing key and the verifier the relay keeps
 *   a hash of (PUT /v1/recovery/passphrase). A new passphrase replaces the old one. It
 *   must pass the SDK's zxcvbn check (./passphrase_rating.ts; zxcvbn comes in strength.js).
 *
 * Both are second-factor actions on the relay: the api's prompt asks for the code. Like
 * an SDK device, this browser keeps the derived values (never the key or passphrase) in
 * its sealed store, so it can seal the blobs again when what they carry changes (an
 * identity reset, ./identity_reset.ts); sealing again under the same secrets needs no
 * second factor.
 */

import { create, toBinary } from "@bufbuild/protobuf";
import { argon2id } from "hash-wasm";

import { concat, fromHex, systemRandom, utf8 } from "../protocol/bytes.js";
import { RelayError } from "./api.js";
import type { Client } from "./client.js";
import * as history from "./history.js";
import type { Contact } from "./model.js";
import { checkPassphrase, type Rate } from "./passphrase_rating.js";
import {
  ProvisionMessage_ContactSchema, RecoveryBlobSchema, type RecoveryBlob,
} from "./proto/cipherpost/app/v1/app_pb.js";
import { deriveSecrets, formatKey, KEY_SECRETS, PASSPHRASE_SECRETS, type Secrets } from "./recovery.js";
import * as sealed from "./sealed.js";
import { checkParams, DEFAULT_PARAMS, encodeParams, type Argon2Params } from "./store/crypto.js";
import type { TrustRecord } from "./store/device.js";
import { loadRater, StrengthUnavailable } from "./strength.js";
import { toBase64 } from "./wire.js";

const BLOB_AAD = utf8("Cipherpost recovery blob v1");
const PASSPHRASE_AAD = utf8("Cipherpost recovery passphrase blob v1");
export const KEY_BYTES = 32;

/** A passphrase too easy to guess, or an account this cannot be done for. */
export class RecoverySecretError extends Error {
  override readonly name = "RecoverySecretError";
}

/** What a restored device needs, from this browser's store (the SDK's _blob). */
export async function recoveryBlob(client: Client): Promise<RecoveryBlob> {
  const store = client.store;
  const contacts = [];
  for (const [key, trust] of await store.scanJson<TrustRecord>("trust:")) {
    const account = key.slice("trust:".length);
    if (account === client.accountId) continue;
    const contact = await store.getJson<Contact>(`contact:${account}`);
    contacts.push(create(ProvisionMessage_ContactSchema, {
      accountId: account, username: contact?.username ?? "", identityKey: fromHex(trust.key),
      verified: trust.verified, sendBlocked: trust.changed,
      profileKey: new Uint8Array(await sealed.contactProfileKey(store, account) ?? []),
    }));
  }
  const groupStates = (await store.scanJson<string>("group:")).map(([, state]) => fromHex(state));
  return create(RecoveryBlobSchema, {
    accountId: client.accountId, identityKeyPair: store.getIdentityKeyPair().serialize(),
    username: client.username, contacts, groupStates, ...(await history.provisionFields(store)),
  });
}

async function sealBlob(key: Uint8Array, aad: Uint8Array, blob: RecoveryBlob): Promise<Uint8Array> {
  const aes = await crypto.subtle.importKey("raw", key as Uint8Array<ArrayBuffer>, "AES-GCM", false, ["encrypt"]);
  const nonce = systemRandom(12);
  const plain = toBinary(RecoveryBlobSchema, blob);
  try {
    return concat(nonce, new Uint8Array(await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: nonce as Uint8Array<ArrayBuffer>, additionalData: aad as Uint8Array<ArrayBuffer> },
      aes, plain as Uint8Array<ArrayBuffer>)));
  } finally {
    plain.fill(0);
  }
}

/** A new recovery key: its bytes (kept only until saved) and the text the user writes down. */
export function newRecoveryKey(random: (n: number) => Uint8Array = systemRandom): { key: Uint8Array; text: string } {
  const key = random(KEY_BYTES);
  return { key, text: formatKey(key) };
}

function secretsBytes(s: Secrets): Uint8Array {
  return concat(s.lookupId, s.auth, s.sealKey);
}

function secretsFrom(data: Uint8Array): Secrets {
  if (data.length !== 80) throw new RecoverySecretError("malformed recovery secrets in this browser's store");
  return { lookupId: data.slice(0, 16), auth: data.slice(16, 48), sealKey: data.slice(48, 80) };
}

async function putKeyBlob(client: Client, secrets: Secrets, reseal = false): Promise<void> {
  const sealedBlob = await sealBlob(secrets.sealKey, concat(BLOB_AAD, secrets.lookupId), await recoveryBlob(client));
  await client.api.request("PUT", "/v1/recovery", {
    lookup_id: toBase64(secrets.lookupId), auth: toBase64(secrets.auth), blob: toBase64(sealedBlob),
    ...(reseal ? { reseal: true } : {}) });
}

/**
 * Make `key` the account's recovery key (the user confirmed they wrote it down): its
 * sealed blob replaces the earlier key's on the relay, which then refuses the old key.
 * The key's bytes are wiped.
 * @throws RelayError refused (the second factor, for one; nothing changed).
 */
export async function saveRecoveryKey(client: Client, key: Uint8Array): Promise<void> {
  if (key.length !== KEY_BYTES) throw new RecoverySecretError("a recovery key is 32 bytes");
  const secrets = deriveSecrets(key);
  key.fill(0);
  await putKeyBlob(client, secrets);
  await client.store.transaction(() => client.store.put(KEY_SECRETS, secretsBytes(secrets)));
}

/**
 * zxcvbn from strength.js (./strength.ts); a file that does not load refuses the
 * passphrase rather than take it unchecked.
 * @throws RecoverySecretError
 */
export async function passphraseRater(): Promise<Rate> {
  try {
    return await loadRater();
  } catch (e) {
    if (!(e instanceof StrengthUnavailable)) throw e;
    throw new RecoverySecretError(`the passphrase strength check could not be loaded (${e.message}), so no `
      + "passphrase was set: reload the page and try again");
  }
}

interface PassphraseSecrets { key: Uint8Array; verifier: Uint8Array; salt: Uint8Array; params: string }

function passphraseBytes(p: PassphraseSecrets): Uint8Array {
  return concat(p.key, p.verifier, p.salt, utf8(p.params));
}

function passphraseFrom(data: Uint8Array): PassphraseSecrets {
  if (data.length < 81) throw new RecoverySecretError("malformed recovery passphrase values in this browser's store");
  return { key: data.slice(0, 32), verifier: data.slice(32, 64), salt: data.slice(64, 80),
    params: new TextDecoder().decode(data.slice(80)) };
}

async function putPassphraseBlob(client: Client, p: PassphraseSecrets, reseal = false): Promise<void> {
  const sealedBlob = await sealBlob(p.key, concat(PASSPHRASE_AAD, p.salt), await recoveryBlob(client));
  await client.api.request("PUT", "/v1/recovery/passphrase", {
    salt: toBase64(p.salt), params: p.params, verifier: toBase64(p.verifier), blob: toBase64(sealedBlob),
    ...(reseal ? { reseal: true } : {}) });
}

/**
 * Let `passphrase` (with the username) recover the account too; replaces an earlier
 * passphrase. `params` are for tests only: the SDK and this browser refuse to restore
 * with less than DEFAULT_PARAMS.
 * @throws WeakPassphrase too easy to guess. @throws RecoverySecretError no username, or the
 * strength check did not load. @throws RelayError refused.
 */
export async function setRecoveryPassphrase(client: Client, passphrase: string,
  params: Argon2Params = DEFAULT_PARAMS): Promise<void> {
  if (client.username === "") throw new RecoverySecretError("set a username first: a recovery passphrase is found by it");
  checkPassphrase(passphrase, [client.username], await passphraseRater());
  checkParams(params);
  const salt = systemRandom(16);
  const raw = await argon2id({ password: utf8(passphrase), salt, iterations: params.timeCost, memorySize: params.memoryKib,
    parallelism: params.parallelism, hashLength: 64, outputType: "binary" });
  const secrets = { key: raw.slice(0, 32), verifier: raw.slice(32), salt, params: encodeParams(params) };
  raw.fill(0);
  await putPassphraseBlob(client, secrets);
  await client.store.transaction(() => client.store.put(PASSPHRASE_SECRETS, passphraseBytes(secrets)));
}

/** Which recovery secrets this browser made or restored with (and so can seal again). */
export async function heldSecrets(client: Client): Promise<{ key: boolean; passphrase: boolean }> {
  return { key: (await client.store.get(KEY_SECRETS)) !== undefined,
    passphrase: (await client.store.get(PASSPHRASE_SECRETS)) !== undefined };
}

/**
 * Seal the blobs again under the secrets this browser holds, from what it holds now (the
 * SDK's update_blob); how many were stored. The relay asks no second factor for it, and
 * takes no new secret that way: when another device has since replaced (or deleted) a
 * secret, it answers 409 `recovery_changed` and this browser forgets its stale copy,
 * which would otherwise bring the replaced secret back.
 */
export async function resealRecovery(client: Client): Promise<number> {
  let count = 0;
  const keyData = await client.store.get(KEY_SECRETS);
  if (keyData !== undefined && await staleUnless(client, KEY_SECRETS, putKeyBlob(client, secretsFrom(keyData), true))) {
    count += 1;
  }
  const passphraseData = await client.store.get(PASSPHRASE_SECRETS);
  if (passphraseData !== undefined
    && await staleUnless(client, PASSPHRASE_SECRETS, putPassphraseBlob(client, passphraseFrom(passphraseData), true))) {
    count += 1;
  }
  return count;
}

/** True once `put` is stored; false (and the record `name` deleted) on `recovery_changed`. */
async function staleUnless(client: Client, name: string, put: Promise<void>): Promise<boolean> {
  try {
    await put;
    return true;
  } catch (error) {
    if (!(error instanceof RelayError && error.status === 409 && error.code === "recovery_changed")) throw error;
    console.warn("cipherpost: a recovery secret was replaced on another device; this browser's copy is forgotten");
    await client.store.transaction(() => client.store.put(name, null));
    return false;
  }
}

/**
 * resealRecovery after a change the blobs carry (server history on or off, the SDK's
 * _update_recovery); a failure is only logged: the blob keeps opening, with the older
 * contents, and the next change seals it again.
 */
export async function resealAfterChange(client: Client): Promise<void> {
  try {
    await resealRecovery(client);
  } catch (error) {
    console.warn("cipherpost: the recovery blobs could not be sealed again: %s", (error as Error).name);
  }
}
