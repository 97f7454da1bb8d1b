/**
 * Linking this browser as a new device by a typed code (docs/spec/linking.md, "Typed
 * code"), on the new device's side; mirrors cipherpost.client.devices.PendingCodeLink
 * and cipherpost.client.linking (CodeLinkKeys, encode_step, decode_step).
 *
 * The relay maps a short code to a mailbox and carries a few numbered messages each way.
 * This device commits to its X25519 key (new/0), takes the existing device's key
 * (existing/0), reveals its own (new/1); both derive a 6-digit SAS from the agreement and
 * the user compares the two screens; after the user confirmed here, new/2 carries an
 * HMAC confirmation and existing/1 the ProvisionMessage sealed under a key of the same
 * agreement. A relay in the middle cannot make the two numbers agree except by a one in
 * 10^6 chance per attempt, because each key is fixed before the other side's is seen.
 */

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { hkdf } from "@noble/hashes/hkdf.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";

import { concat, constantTimeEqual, systemRandom, utf8 } from "../protocol/bytes.js";
import { KeyPair, PublicKey } from "../protocol/keys.js";
import { RelayError, RelayUnavailable, type RelayApi } from "./api.js";
import type { Client } from "./client.js";
import { LINK_VERSION, LinkError, provisionMessage } from "./linking.js";
import { CodeLinkMessageSchema, ProvisionMessageSchema, type ProvisionMessage } from "./proto/cipherpost/app/v1/app_pb.js";

const LABEL = "Cipherpost code link v1 ";
const COMMIT_LABEL = utf8("Cipherpost code link v1 commit");
const CONFIRM_TEXT = utf8("new device confirmed");
const WAIT_SECONDS = 25;
const GONE = "the link was cancelled on the other device, or its code expired: start linking again";
/** The fields of a CodeLinkMessage with their lengths (undefined: any, up to the relay's cap). */
const FIELDS = { commitment: 32, publicKey: 32, confirm: 32, sealed: undefined } as const;
type Field = keyof typeof FIELDS;

/** What the new device sends first: it fixes its key without showing it. */
export function commitment(publicKey: Uint8Array): Uint8Array {
  return sha256(concat(COMMIT_LABEL, publicKey));
}

export function encodeStep(field: Field, value: Uint8Array): Uint8Array {
  return toBinary(CodeLinkMessageSchema, create(CodeLinkMessageSchema, { version: LINK_VERSION,
    body: { case: field, value } }));
}

/** @throws LinkError malformed, another version, another field, or the wrong length. */
export function decodeStep(data: Uint8Array, field: Field): Uint8Array {
  let message;
  try {
    message = fromBinary(CodeLinkMessageSchema, data);
  } catch {
    throw new LinkError("a malformed link message");
  }
  if (message.version !== LINK_VERSION) throw new LinkError("a link message from another Cipherpost version");
  if (message.body.case !== field) throw new LinkError(`a link message out of place (expected ${field})`);
  const value = message.body.value;
  const length = FIELDS[field];
  if (value.length === 0 || (length !== undefined && value.length !== length)) {
    throw new LinkError(`a link message with a malformed ${field}`);
  }
  return value;
}

/** The SAS and the keys both devices derive from their agreement (the SDK's CodeLinkKeys). */
export class CodeLinkKeys {
  readonly sas: string;
  readonly #confirmKey: Uint8Array;
  readonly #provision: Uint8Array;
  readonly #aad: Uint8Array;

  /** @throws LinkError `peer` is not a usable X25519 key. */
  constructor(pair: KeyPair, peer: Uint8Array, newPublic: Uint8Array, existingPublic: Uint8Array, address: string) {
    let shared: Uint8Array;
    try {
      shared = pair.privateKey.agree(PublicKey.deserialize(concat(Uint8Array.of(0x05), peer)));
    } catch {
      throw new LinkError("the other device's key is not a valid X25519 key");
    }
    if (shared.every((b) => b === 0)) throw new LinkError("the other device's key is not a valid X25519 key");
    const derive = (label: string, length: number): Uint8Array => hkdf(sha256, shared, new Uint8Array(0),
      concat(utf8(LABEL + label), Uint8Array.of(0), newPublic, existingPublic, utf8(address)), length);
    const number = Number(derive("sas", 5).reduce((acc, b) => (acc << 8n) | BigInt(b), 0n) % 1_000_000n);
    this.sas = `${String(Math.floor(number / 1000)).padStart(3, "0")} ${String(number % 1000).padStart(3, "0")}`;
    this.#confirmKey = derive("confirm", 32);
    this.#provision = derive("provision", 44);
    this.#aad = utf8(address);
    shared.fill(0);
  }

  confirmTag(): Uint8Array {
    return hmac(sha256, this.#confirmKey, CONFIRM_TEXT);
  }

  /** @throws LinkError `tag` is not the new device's confirmation. */
  checkConfirm(tag: Uint8Array): void {
    if (!constantTimeEqual(tag, this.confirmTag())) {
      throw new LinkError("the new device's confirmation does not verify: someone may be in the middle; nothing was sent");
    }
  }

  async seal(message: ProvisionMessage): Promise<Uint8Array> {
    const key = await crypto.subtle.importKey("raw", this.#provision.slice(0, 32), "AES-GCM", false, ["encrypt"]);
    const plain = toBinary(ProvisionMessageSchema, message);
    try {
      return new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv: this.#provision.slice(32),
        additionalData: this.#aad as Uint8Array<ArrayBuffer> }, key, plain as Uint8Array<ArrayBuffer>));
    } finally {
      plain.fill(0);
    }
  }

  /** @throws LinkError not sealed in this exchange (replayed or altered). */
  async open(sealed: Uint8Array): Promise<ProvisionMessage> {
    try {
      const key = await crypto.subtle.importKey("raw", this.#provision.slice(0, 32), "AES-GCM", false, ["decrypt"]);
      const plain = new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv: this.#provision.slice(32),
        additionalData: this.#aad as Uint8Array<ArrayBuffer> }, key, sealed as Uint8Array<ArrayBuffer>));
      return fromBinary(ProvisionMessageSchema, plain);
    } catch {
      throw new LinkError("the provisioning message does not open in this link (replayed or altered)");
    }
  }
}

/** A new device linking by a typed code: show `code`, compare `sas()`, then `confirm()` and `complete()` (or `cancel()`). */
export class CodeLink {
  #keys: CodeLinkKeys | undefined;
  #confirmed = false;
  readonly #pair = KeyPair.generate(systemRandom);
  readonly #public = this.#pair.publicKey.serialize().slice(1);

  private constructor(readonly api: RelayApi, readonly address: string, readonly rawCode: string) {}

  /** Open a code mailbox and commit to this device's key. @throws RelayError, RelayUnavailable, LinkError */
  static async open(api: RelayApi): Promise<CodeLink> {
    const answer = await api.request("POST", "/v1/provisioning/codes", undefined, false) as Record<string, unknown> | undefined;
    const address = answer?.address;
    const code = answer?.code;
    if (typeof address !== "string" || !/^[A-Za-z0-9_-]{8,100}$/.test(address)
      || typeof code !== "string" || !/^[0-9A-HJKMNP-TV-Z]{8}$/.test(code)) {
      throw new LinkError("the server sent a malformed link code");
    }
    const link = new CodeLink(api, address, code);
    await link.#send(0, "commitment", commitment(link.#public));
    return link;
  }

  /** Show this; the user types it on a device already linked. */
  get code(): string {
    return `${this.rawCode.slice(0, 4)}-${this.rawCode.slice(4)}`;
  }

  #path(side: "new" | "existing", index: number): string {
    return `/v1/provisioning/${this.address}/${side}/${index}`;
  }

  async #send(index: number, field: Field, value: Uint8Array): Promise<void> {
    try {
      await this.api.request("PUT", this.#path("new", index), encodeStep(field, value), false);
    } catch (error) {
      if (error instanceof RelayError && error.status === 404) throw new LinkError(GONE);
      throw error;
    }
  }

  async #fetch(index: number, deadline: number): Promise<Uint8Array> {
    while (Date.now() < deadline) {
      const wait = Math.max(1, Math.min(WAIT_SECONDS, Math.round((deadline - Date.now()) / 1000)));
      let data: Uint8Array | undefined;
      try {
        data = await this.api.requestBytes("GET", `${this.#path("existing", index)}?wait=${wait}`, false, 512 * 1024,
          (wait + 10) * 1000);
      } catch (error) {
        if (error instanceof RelayError && error.status === 404) throw new LinkError(GONE);
        throw error;
      }
      if (data !== undefined && data.length > 0) return data;
    }
    throw new LinkError("the other device did not answer in time: start linking again");
  }

  /** Wait for the existing device's key, reveal ours, and return the number to compare. */
  async sas(timeoutMs = 10 * 60_000): Promise<string> {
    if (this.#keys === undefined) {
      const peer = decodeStep(await this.#fetch(0, Date.now() + timeoutMs), "publicKey");
      const keys = new CodeLinkKeys(this.#pair, peer, this.#public, peer, this.address);
      await this.#send(1, "publicKey", this.#public);
      this.#keys = keys;
    }
    return this.#keys.sas;
  }

  /** The user saw the same number on both screens: tell the existing device. */
  async confirm(): Promise<void> {
    if (this.#keys === undefined) throw new LinkError("compare the numbers first");
    await this.#send(2, "confirm", this.#keys.confirmTag());
    this.#confirmed = true;
  }

  /** The numbers differ, or the user gave up: close the mailbox (nothing is linked). */
  async cancel(): Promise<void> {
    try {
      await this.api.request("DELETE", `/v1/provisioning/${this.address}`, undefined, false);
    } catch {
      // gone already
    }
  }

  /** After `confirm()`: the ProvisionMessage the existing device sealed in this exchange. */
  async complete(timeoutMs = 10 * 60_000): Promise<ProvisionMessage> {
    if (this.#keys === undefined || !this.#confirmed) throw new LinkError("confirm the numbers on both devices first");
    try {
      return await this.#keys.open(decodeStep(await this.#fetch(1, Date.now() + timeoutMs), "sealed"));
    } finally {
      await this.cancel(); // the mailbox is done with, whatever came
    }
  }
}

/** A typed code as the relay knows it: any case, spaces and dashes ignored, O read as 0, I and L as 1. @throws LinkError */
export function normalizeCode(text: string): string {
  const code = text.replace(/[\s-]/g, "").toUpperCase().replace(/O/g, "0").replace(/[IL]/g, "1");
  if (!/^[0-9A-HJKMNP-TV-Z]{8}$/.test(code)) {
    throw new LinkError("a link code is 8 characters: digits and letters other than I, L, O and U");
  }
  return code;
}

async function fetchNew(api: RelayApi, base: string, index: number, deadline: number): Promise<Uint8Array> {
  while (Date.now() < deadline) {
    const wait = Math.max(1, Math.min(WAIT_SECONDS, Math.round((deadline - Date.now()) / 1000)));
    let data: Uint8Array | undefined;
    try {
      data = await api.requestBytes("GET", `${base}/new/${index}?wait=${wait}`, true, 4 * 1024, (wait + 10) * 1000);
    } catch (error) {
      if (error instanceof RelayError && error.status === 404) throw new LinkError(GONE);
      throw error;
    }
    if (data !== undefined && data.length > 0) return data;
  }
  throw new LinkError("the other device did not answer in time: start linking again");
}

/**
 * Link the new device that shows `code` to our account (the existing device's side; the
 * SDK's provision_by_code): claim the code, take the new device's commitment, send our
 * key, check its revealed key against the commitment, and ask `confirm` whether the new
 * device shows the same number; only then, and once its confirmation verifies, seal the
 * ProvisionMessage to it. Declined or failed, the mailbox is closed at once.
 * @throws LinkError a malformed or unknown code, a key not matching its commitment, a
 * confirmation that does not verify, declined. RelayError, RelayUnavailable.
 */
export async function approveCodeLink(client: Client, code: string, confirm: (sas: string) => Promise<boolean>,
  timeoutMs = 10 * 60_000): Promise<void> {
  const normalized = normalizeCode(code);
  let answer: unknown;
  try {
    answer = await client.api.request("POST", "/v1/provisioning/codes/claim", { code: normalized });
  } catch (error) {
    if (error instanceof RelayError && error.code === "unknown_code") {
      throw new LinkError("no new device is waiting with that code: check it, or start again on the new device "
        + "(a code works once, for 10 minutes)");
    }
    throw error;
  }
  const address = (answer as { address?: unknown } | undefined)?.address;
  if (typeof address !== "string" || !/^[A-Za-z0-9_-]{8,100}$/.test(address)) throw new LinkError("the server sent a malformed answer");
  const base = `/v1/provisioning/${address}`;
  const deadline = Date.now() + timeoutMs;
  try {
    const committed = decodeStep(await fetchNew(client.api, base, 0, deadline), "commitment");
    const pair = KeyPair.generate(systemRandom);
    const mine = pair.publicKey.serialize().slice(1);
    await client.api.request("PUT", `${base}/existing/0`, encodeStep("publicKey", mine));
    const peer = decodeStep(await fetchNew(client.api, base, 1, deadline), "publicKey");
    if (!constantTimeEqual(committed, commitment(peer))) {
      throw new LinkError("the new device's key does not match what it committed to: someone may be in the middle; "
        + "nothing was sent");
    }
    const keys = new CodeLinkKeys(pair, peer, peer, mine, address);
    if (!(await confirm(keys.sas))) throw new LinkError("the numbers differ: nothing was sent; start again on the new device");
    keys.checkConfirm(decodeStep(await fetchNew(client.api, base, 2, deadline), "confirm"));
    await client.api.request("PUT", `${base}/existing/1`, encodeStep("sealed", await keys.seal(await provisionMessage(client))));
  } catch (error) {
    try {
      await client.api.request("DELETE", base); // the new device stops waiting at once
    } catch (closing) {
      if (!(closing instanceof RelayError || closing instanceof RelayUnavailable)) throw closing;
    }
    throw error;
  }
}
