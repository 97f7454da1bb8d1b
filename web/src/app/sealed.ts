/**
 * Sealed sender in the browser client (docs/spec/sealed-sender.md); mirrors
 * cipherpost.client.sealed: the profile key and the unidentified-access key (UAK) derived
 * from it, the pinned trust root, the cached sender certificate, and sealing and opening
 * envelopes.
 *
 * Sealed messages hide their sender from the relay: the certificate that names it travels
 * inside the encryption to the recipient's identity key. What the relay needs to accept a
 * sealed send is the recipient's UAK, which only its contacts learn (from the profile key
 * inside its messages to them). Opening a sealed envelope touches no session until the
 * certificate is valid (signed through the server certificate by the pinned root, not
 * expired, not under a revoked key id, not from this very device).
 *
 * Functions that write do so in the caller's store unit (`store.transaction`).
 */

import { sha256 } from "@noble/hashes/sha2.js";

import { constantTimeEqual, fromHex, systemRandom, toHex } from "../protocol/bytes.js";
import { SenderCertificate } from "../protocol/certificates.js";
import { ProtocolError } from "../protocol/errors.js";
import { PublicKey, type IdentityKeyPair } from "../protocol/keys.js";
import { PREKEY_TYPE, SENDERKEY_TYPE, WHISPER_TYPE } from "../protocol/messages.js";
import { openSealed, seal, UnidentifiedSenderMessageContent } from "../protocol/sealed_sender.js";
import type { DeviceStore } from "./store/device.js";
import { isUuid } from "./wire.js";

/** The relay's envelope type for a sealed message (Signal's UNIDENTIFIED_SENDER). */
export const SEALED_TYPE = 6;
export const PROFILE_KEY_BYTES = 32;
export const ACCESS_KEY_BYTES = 16;
/** A cached sender certificate is replaced once less than this is left of it (ms). */
export const REFRESH_BEFORE_MS = 6 * 3600 * 1000;
/** How often the relay's list of revoked server key ids is fetched (ms). */
export const REVOCATION_CHECK_MS = 3600 * 1000;
/** How often the unidentified-access key is registered again (ms; see {@link accessKeyDue}). */
export const ACCESS_KEY_REFRESH_MS = 24 * 3600 * 1000;

const PROFILE_KEY = "profile_key";
const CONTACT_KEY = "profile_key:";
const CERTIFICATE = "sender_certificate";
const TRUST_ROOT = "trust_root";
const ACCESS_KEY_SENT = "access_key_registered";
const AWAITING = "profile_key_from_sibling";
const REVOKED = "revoked_server_key_ids";
const REVOKED_CHECKED = "revoked_server_key_ids_checked";

/** A sealed envelope could not be opened or its certificate is not acceptable;
 * `kind` is the protocol error kind (`invalid_certificate`, ...). */
export class SealedError extends Error {
  override readonly name = "SealedError";
  constructor(readonly kind: string, message: string) {
    super(message);
  }
}

/**
 * The UAK of a profile key, derived as Signal derives it: the first 16 bytes of
 * AES-256-GCM over 16 zero bytes under the profile key with an all-zero nonce (the key is
 * used for this one encryption only, so the fixed nonce is safe). The relay keeps only
 * its SHA-256.
 * @throws RangeError `profileKey` is not 32 bytes.
 */
export async function accessKey(profileKey: Uint8Array): Promise<Uint8Array> {
  if (profileKey.length !== PROFILE_KEY_BYTES) throw new RangeError("a profile key is 32 bytes");
  const key = await crypto.subtle.importKey("raw", new Uint8Array(profileKey), "AES-GCM", false, ["encrypt"]);
  const out = await crypto.subtle.encrypt({ name: "AES-GCM", iv: new Uint8Array(12) }, key, new Uint8Array(16));
  return new Uint8Array(out, 0, ACCESS_KEY_BYTES).slice();
}

async function secret(store: DeviceStore, key: string): Promise<Uint8Array | undefined> {
  const text = await store.getJson<string>(key);
  if (typeof text !== "string" || !/^([0-9a-f]{2})*$/.test(text)) return undefined;
  return fromHex(text);
}

// -- what the store keeps ---------------------------------------------------------------

/** This account's profile key, if this device holds it. */
export async function knownOwnProfileKey(store: DeviceStore): Promise<Uint8Array | undefined> {
  const key = await secret(store, PROFILE_KEY);
  return key?.length === PROFILE_KEY_BYTES ? key : undefined;
}

/** This account's profile key; made now (in the running unit) if this device has none. */
export async function ownProfileKey(store: DeviceStore): Promise<Uint8Array> {
  const known = await knownOwnProfileKey(store);
  if (known !== undefined) return known;
  const key = systemRandom(PROFILE_KEY_BYTES);
  await store.putJson(PROFILE_KEY, toHex(key));
  await store.put(ACCESS_KEY_SENT, null);
  return key;
}

/** This device was linked: it takes the account's profile key from another device of
 * ours (the provisioning message, or a sync copy) and makes none of its own. */
export async function awaitProfileKey(store: DeviceStore): Promise<void> {
  await store.putJson(AWAITING, true);
}

/** False for a linked device still waiting for the account's key (see {@link awaitProfileKey}). */
export async function mayMakeProfileKey(store: DeviceStore): Promise<boolean> {
  return (await store.getJson<boolean>(AWAITING)) !== true;
}

/** Take the account's profile key another device of ours holds (linking, sync copies). */
export async function adoptOwnProfileKey(store: DeviceStore, key: Uint8Array): Promise<void> {
  if (key.length !== PROFILE_KEY_BYTES) return;
  const known = await knownOwnProfileKey(store);
  if (known !== undefined && toHex(known) === toHex(key)) return;
  await store.putJson(PROFILE_KEY, toHex(key));
  await store.put(ACCESS_KEY_SENT, null);
  await store.put(AWAITING, null);
}

/** The profile key a contact shared with us, if any. */
export async function contactProfileKey(store: DeviceStore, account: string): Promise<Uint8Array | undefined> {
  const key = await secret(store, CONTACT_KEY + account);
  return key?.length === PROFILE_KEY_BYTES ? key : undefined;
}

/** Remember a contact's profile key (from their message, or a sibling device). */
export async function setContactProfileKey(store: DeviceStore, account: string, key: Uint8Array): Promise<void> {
  if (key.length !== PROFILE_KEY_BYTES) return;
  const known = await contactProfileKey(store, account);
  if (known === undefined || toHex(known) !== toHex(key)) await store.putJson(CONTACT_KEY + account, toHex(key));
}

/** The relay refused the contact's UAK: identified until they share a new key. */
export async function forgetContactProfileKey(store: DeviceStore, account: string): Promise<void> {
  await store.put(CONTACT_KEY + account, null);
}

/** The relay's pinned trust root. */
export async function trustRoot(store: DeviceStore): Promise<PublicKey | undefined> {
  const raw = await secret(store, TRUST_ROOT);
  if (raw === undefined) return undefined;
  try {
    return PublicKey.deserialize(raw);
  } catch {
    return undefined;
  }
}

export async function pinTrustRoot(store: DeviceStore, key: PublicKey): Promise<void> {
  await store.putJson(TRUST_ROOT, toHex(key.serialize()));
}

/** Server key ids whose certificates we refuse (the relay said they leaked). */
export async function revokedKeyIds(store: DeviceStore): Promise<Set<number>> {
  return new Set((await store.getJson<number[]>(REVOKED)) ?? []);
}

/** True when the relay's revoked key ids were not fetched in the last hour. */
export async function revocationsDue(store: DeviceStore, nowMs: number): Promise<boolean> {
  const checked = await store.getJson<number>(REVOKED_CHECKED);
  return typeof checked !== "number" || nowMs - checked >= REVOCATION_CHECK_MS;
}

/** Remember revoked server key ids for good (a relay cannot take a revocation back). */
export async function addRevokedKeyIds(store: DeviceStore, ids: number[], nowMs: number): Promise<void> {
  const known = await revokedKeyIds(store);
  for (const id of ids) known.add(id);
  await store.putJson(REVOKED, [...known].sort((a, b) => a - b));
  await store.putJson(REVOKED_CHECKED, nowMs);
}

async function checkNotRevoked(store: DeviceStore, certificate: SenderCertificate): Promise<void> {
  const keyId = certificate.serverCertificate().keyId;
  if ((await revokedKeyIds(store)).has(keyId)) {
    throw new SealedError("invalid_certificate", `the server key ${keyId} that signed the certificate is revoked`);
  }
}

/**
 * How often the relay's copy of the access key is checked (ms): at most this long after
 * the relay lost it (a restore), a device registers it again, well before the daily
 * registration. A new WebSocket connection, and a 401 to one of our own sealed sends,
 * check after {@link ACCESS_KEY_RECHECK_MS} already (the relay restarted, or it refused
 * a contact's key: it may have lost ours too). Mirrors sealed.ACCESS_KEY_CHECK_MS.
 */
export const ACCESS_KEY_CHECK_MS = 3600 * 1000;
export const ACCESS_KEY_RECHECK_MS = 60 * 1000;

/**
 * True when the relay's hash of our access key (`held`, undefined: it holds none) is the
 * hash of `profileKey`'s access key (compared in constant time). Mirrors sealed.access_key_held.
 */
export async function accessKeyHeld(profileKey: Uint8Array, held: Uint8Array | undefined): Promise<boolean> {
  return held !== undefined && constantTimeEqual(sha256(await accessKey(profileKey)), held);
}

/**
 * True when the access key was never registered from this device (or the profile key
 * changed since), or not in the last {@link ACCESS_KEY_REFRESH_MS}: registering again
 * brings a relay that lost the key (restored from an older backup) back in line, where
 * contacts' sealed sends would otherwise get 401 for good. A time ahead of the clock
 * counts as due. Mirrors sealed.access_key_due.
 */
export async function accessKeyDue(store: DeviceStore, nowMs: number): Promise<boolean> {
  const sent = await store.getJson<number>(ACCESS_KEY_SENT);
  if (typeof sent !== "number") return true;
  const elapsed = nowMs - sent;
  return elapsed < 0 || elapsed >= ACCESS_KEY_REFRESH_MS;
}

export async function markAccessKeyRegistered(store: DeviceStore, nowMs: number): Promise<void> {
  await store.putJson(ACCESS_KEY_SENT, nowMs);
}

/**
 * Our sender certificate: the cached one while more than {@link REFRESH_BEFORE_MS} of it
 * is left, else a new one from the relay (`fetch`), checked against the pinned root and
 * required to name this account, device and identity key. Runs its own store unit.
 * @throws SealedError no pinned root, or the relay's certificate is not acceptable.
 * @throws RelayError, RelayUnavailable from `fetch`.
 */
export async function senderCertificate(store: DeviceStore, nowMs: number, fetch: () => Promise<Uint8Array>,
  account: string, device: number): Promise<SenderCertificate> {
  const identity = store.getIdentityKeyPair().publicKey;
  const ours = (c: SenderCertificate) => c.identityKey.equals(identity) && c.senderUuid === account
    && c.senderDeviceId === device;
  const cached = await secret(store, CERTIFICATE);
  if (cached !== undefined) {
    try {
      const certificate = SenderCertificate.deserialize(cached);
      // After an identity reset the cached one names the old key: fetch anew.
      if (certificate.expires - nowMs > REFRESH_BEFORE_MS && ours(certificate)) {
        await checkNotRevoked(store, certificate);
        return certificate;
      }
    } catch (error) {
      if (!(error instanceof ProtocolError) && !(error instanceof SealedError)) throw error;
    }
  }
  const root = await trustRoot(store);
  if (root === undefined) throw new SealedError("invalid_certificate", "no trust root is pinned for this relay");
  let certificate: SenderCertificate;
  try {
    certificate = SenderCertificate.deserialize(await fetch());
    certificate.validate([root], nowMs);
  } catch (error) {
    if (error instanceof ProtocolError) throw new SealedError(error.kind, `the relay's sender certificate: ${error.message}`);
    throw error;
  }
  await checkNotRevoked(store, certificate);
  if (!ours(certificate)) {
    // Sealed under it, our messages would be opened as another device's or account's.
    throw new SealedError("invalid_certificate", "the relay's sender certificate names another account, device or identity key");
  }
  await store.transaction(() => store.putJson(CERTIFICATE, toHex(certificate.serialized)));
  return certificate;
}

/** Drop the cached certificate (our identity changed, or the relay refused it). */
export async function forgetSenderCertificate(store: DeviceStore): Promise<void> {
  await store.put(CERTIFICATE, null);
}

// -- sealing and opening ----------------------------------------------------------------

/**
 * Seal one ciphertext (whisper, PreKey or sender key) to `recipient`'s identity.
 * @throws InvalidMessage `recipient` is a small-order key.
 */
export function sealMessage(identity: IdentityKeyPair, recipient: PublicKey, certificate: SenderCertificate,
  messageType: number, contents: Uint8Array, groupId?: Uint8Array): Promise<Uint8Array> {
  return seal(identity, recipient,
    UnidentifiedSenderMessageContent.create(messageType, certificate, contents, { groupId }));
}

/** A sealed envelope opened: who sent it and the inner ciphertext. */
export interface Opened {
  readonly sender: string;
  readonly device: number;
  readonly messageType: number;
  readonly contents: Uint8Array;
}

/**
 * Open a sealed envelope and validate its certificate (no session is touched).
 * @throws SealedError malformed or not for us, a certificate that fails against the
 *   pinned root, has expired or is under a revoked key id (`invalid_certificate`), no
 *   pinned root, a message from this very device (`sealed_sender_self_send`), or an inner
 *   type that is not a whisper, PreKey or sender-key message.
 */
export async function openEnvelope(store: DeviceStore, data: Uint8Array, nowMs: number, localAccount: string,
  localDevice: number): Promise<Opened> {
  const root = await trustRoot(store);
  if (root === undefined) throw new SealedError("invalid_certificate", "no trust root is pinned for this relay");
  let content: UnidentifiedSenderMessageContent;
  try {
    content = await openSealed(store.getIdentityKeyPair(), data);
    content.sender.validate([root], nowMs);
  } catch (error) {
    if (error instanceof ProtocolError) throw new SealedError(error.kind, error.message);
    throw error;
  }
  await checkNotRevoked(store, content.sender);
  const sender = content.sender;
  if (sender.senderUuid === localAccount && sender.senderDeviceId === localDevice) {
    throw new SealedError("sealed_sender_self_send", "a sealed message from this device");
  }
  if (![WHISPER_TYPE, PREKEY_TYPE, SENDERKEY_TYPE].includes(content.messageType)) {
    throw new SealedError("invalid_message", `sealed content of type ${content.messageType}`);
  }
  if (!isUuid(sender.senderUuid)) {
    throw new SealedError("invalid_certificate", "the certificate names no account id");
  }
  return { sender: sender.senderUuid, device: sender.senderDeviceId, messageType: content.messageType,
    contents: content.contents };
}
