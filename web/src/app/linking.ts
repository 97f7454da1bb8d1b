/**
 * Linking a new device to this account from the browser (docs/spec/linking.md): the new
 * device shows a link URI (a QR code or text) with its mailbox, an X25519 public key and
 * a 128-bit secret; this device seals a ProvisionMessage to it (X25519 with an ephemeral
 * key, HKDF-SHA256 salted with the secret, AES-256-GCM with the mailbox address as
 * associated data) and leaves it in the mailbox. Mirrors cipherpost.client.linking
 * (seal, LinkRequest.parse) and cipherpost.client.devices (provision). The relay only
 * sees the mailbox and ciphertext.
 */

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";

import { fromHex, systemRandom, utf8 } from "../protocol/bytes.js";
import { KeyPair, PublicKey } from "../protocol/keys.js";
import { checkServerUrl } from "./api.js";
import {
  ProvisionEnvelopeSchema, ProvisionMessage_ContactSchema, ProvisionMessageSchema, type ProvisionMessage,
} from "./proto/cipherpost/app/v1/app_pb.js";
import type { Client } from "./client.js";
import * as history from "./history.js";
import * as sealed from "./sealed.js";
import type { Contact } from "./model.js";
import type { TrustRecord } from "./store/device.js";

export const LINK_VERSION = 1;
const SECRET_BYTES = 16;
const INFO = "Cipherpost provisioning v1";

/** A link URI that is malformed or not meant for this client. */
export class LinkError extends Error {
  override readonly name = "LinkError";
}

export interface LinkRequest {
  server: string;
  address: string;
  publicKey: Uint8Array;
  secret: Uint8Array;
}

function unb64url(text: string): Uint8Array {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new LinkError("the link code is incomplete or damaged");
  const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

/** @throws LinkError anything but a well-formed version-1 link URI. */
export function parseLinkUri(uri: string): LinkRequest {
  const text = uri.trim();
  if (!text.startsWith("cipherpost://link?")) throw new LinkError("not a Cipherpost link code");
  const query = new URLSearchParams(text.slice("cipherpost://link?".length));
  if (query.get("v") !== String(LINK_VERSION)) throw new LinkError("this link code is from another Cipherpost version");
  const server = query.get("s");
  const address = query.get("a");
  const key = query.get("k");
  const secret = query.get("x");
  if (!server || !address || key === null || secret === null || address.length > 200) {
    throw new LinkError("the link code is incomplete or damaged");
  }
  const request = { server, address, publicKey: unb64url(key), secret: unb64url(secret) };
  if (request.publicKey.length !== 32 || request.secret.length !== SECRET_BYTES) {
    throw new LinkError("the link code is incomplete or damaged");
  }
  return request;
}

function b64url(data: Uint8Array): string {
  return btoa(String.fromCharCode(...data)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** The URI a new device shows (as text or a QR code) for an existing device to read. */
export function linkUri(request: LinkRequest): string {
  const query = new URLSearchParams({ v: String(LINK_VERSION), s: request.server, a: request.address,
    k: b64url(request.publicKey), x: b64url(request.secret) });
  return `cipherpost://link?${query.toString()}`;
}

/** A link request for `address` on `server`, with the private key that opens what arrives. */
export function newLinkRequest(server: string, address: string): { request: LinkRequest; privateKey: KeyPair } {
  const pair = KeyPair.generate(systemRandom);
  return { request: { server, address, publicKey: pair.publicKey.serialize().slice(1), secret: systemRandom(SECRET_BYTES) },
    privateKey: pair };
}

/**
 * Decrypt what arrived in our mailbox.
 * @throws LinkError malformed, another version, or not encrypted to this request.
 */
export async function openEnvelope(request: LinkRequest, pair: KeyPair, data: Uint8Array): Promise<ProvisionMessage> {
  try {
    const envelope = fromBinary(ProvisionEnvelopeSchema, data);
    if (envelope.version !== LINK_VERSION || envelope.publicKey.length !== 32) {
      throw new LinkError("an unsupported provisioning message");
    }
    const shared = pair.privateKey.agree(PublicKey.deserialize(Uint8Array.of(0x05, ...envelope.publicKey)));
    const okm = hkdf(sha256, shared, request.secret, utf8(INFO + request.address), 44);
    const key = await crypto.subtle.importKey("raw", okm.slice(0, 32), "AES-GCM", false, ["decrypt"]);
    const plaintext = new Uint8Array(await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: okm.slice(32), additionalData: utf8(request.address) as Uint8Array<ArrayBuffer> }, key,
      envelope.ciphertext as Uint8Array<ArrayBuffer>));
    okm.fill(0);
    shared.fill(0);
    return fromBinary(ProvisionMessageSchema, plaintext);
  } catch (error) {
    if (error instanceof LinkError) throw error;
    throw new LinkError("the provisioning message does not open with this link code");
  }
}

/** Encrypt a serialized ProvisionMessage to the device that showed `request`. */
export async function seal(request: LinkRequest, message: Uint8Array): Promise<Uint8Array> {
  const ephemeral = KeyPair.generate(systemRandom);
  const theirs = PublicKey.deserialize(Uint8Array.of(0x05, ...request.publicKey));
  const shared = ephemeral.privateKey.agree(theirs);
  const okm = hkdf(sha256, shared, request.secret, utf8(INFO + request.address), 44);
  const key = await crypto.subtle.importKey("raw", okm.slice(0, 32), "AES-GCM", false, ["encrypt"]);
  const ciphertext = new Uint8Array(await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: okm.slice(32), additionalData: utf8(request.address) as Uint8Array<ArrayBuffer> }, key,
    message as Uint8Array<ArrayBuffer>));
  okm.fill(0);
  shared.fill(0);
  return toBinary(ProvisionEnvelopeSchema, create(ProvisionEnvelopeSchema, {
    version: LINK_VERSION, publicKey: ephemeral.publicKey.serialize().slice(1), ciphertext }));
}

/**
 * Send the device that shows `uri` what it needs to join our account: the identity key
 * pair, a one-time link code, and our contacts with their keys and trust. (No archive
 * of the conversations yet: the new device starts with an empty history.)
 * @throws LinkError not a link code, or one for another server. @throws RelayError
 */
export async function provision(client: Client, uri: string): Promise<void> {
  const request = parseLinkUri(uri);
  let server: string;
  try {
    server = checkServerUrl(request.server);
  } catch {
    throw new LinkError("the link code names no usable server");
  }
  if (server !== client.api.server) throw new LinkError("that link code is for another server");
  const plaintext = toBinary(ProvisionMessageSchema, await provisionMessage(client));
  try {
    await client.api.putProvisioning(request.address, await seal(request, plaintext));
  } finally {
    plaintext.fill(0);
  }
}

/**
 * What a new device of our account gets (the SDK's _provision_message, without the
 * archive): the identity key pair, a one-time link code, our contacts with their keys
 * and trust, the account's profile key and pinned trust root, and, when the account
 * keeps its history on the relay, the history keys.
 * @throws RelayError the link code was refused (a second factor, for one).
 */
export async function provisionMessage(client: Client): Promise<ProvisionMessage> {
  const linkCode = await client.api.createLinkCode();
  const contacts = [];
  for (const [key, trust] of await client.store.scanJson<TrustRecord>("trust:")) {
    const account = key.slice("trust:".length);
    if (account === client.accountId) continue;
    const contact = await client.store.getJson<Contact>(`contact:${account}`);
    contacts.push(create(ProvisionMessage_ContactSchema, {
      accountId: account, username: contact?.username ?? "", identityKey: fromHex(trust.key),
      verified: trust.verified, sendBlocked: trust.changed,
      profileKey: new Uint8Array(await sealed.contactProfileKey(client.store, account) ?? []),
    }));
  }
  const root = await sealed.trustRoot(client.store);
  const message = create(ProvisionMessageSchema, {
    accountId: client.accountId,
    identityKeyPair: client.store.getIdentityKeyPair().serialize(),
    linkCode, username: client.username, contacts,
    // Sealed sender: the account's profile key and our pinned root (docs/spec/sealed-sender.md).
    profileKey: new Uint8Array(await sealed.knownOwnProfileKey(client.store) ?? []),
    trustRoot: root === undefined ? new Uint8Array(0) : new Uint8Array(root.serialize()),
    ...(await history.provisionFields(client.store)),
  });
  return message;
}
