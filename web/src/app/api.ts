/**
 * The relay's HTTP API (docs/server.md, /docs) over fetch, with every answer parsed
 * strictly (./wire.ts). Mirrors cipherpost.client.api. Plain http is refused except to
 * loopback addresses.
 */

import { KemPublicKey } from "../protocol/kem.js";
import { PublicKey } from "../protocol/keys.js";
import { PreKeyBundle } from "../protocol/prekeys.js";
import {
  bool, bytes, int, isObject, list, MalformedAnswer, optional, str, toBase64, uuid, type Json,
} from "./wire.js";
import { withSecondFactor, type SecondFactorPrompt } from "./second_factor.js";

const TIMEOUT_MS = 30_000;

/** The relay answered with an error: `status`, a stable `code` and the body. */
export class RelayError extends Error {
  override readonly name = "RelayError";
  constructor(readonly status: number, readonly code: string, message: string,
    readonly body: Record<string, unknown>) {
    super(`${message} (${status} ${code})`);
  }
}

/** The relay could not be reached (network error or timeout). */
export class RelayUnavailable extends Error {
  override readonly name = "RelayUnavailable";
}

export interface Credentials {
  accountId: string;
  deviceId: number;
  token: string;
}

/** One device of the account, as the devices page shows it. */
export interface DeviceInfo {
  deviceId: number;
  name: string;
  createdAt: number;
  lastSeen: number;
}

/** A queued ciphertext as the relay delivers it (HTTP and WebSocket alike). */
export interface Envelope {
  id: string;
  senderAccountId: string | undefined;
  senderDeviceId: number | undefined;
  type: number;
  content: Uint8Array;
  clientTimestamp: number;
  serverTimestamp: number;
}

/** One ciphertext of a send request. */
export interface Outgoing {
  device_id: number;
  registration_id: number;
  type: number;
  content: string;
}

const MAX_CIPHERTEXT = 256 * 1024;

/** @throws MalformedAnswer */
export function parseEnvelope(data: unknown): Envelope {
  const what = "envelope";
  return {
    id: uuid(data, "id", what),
    senderAccountId: optional(data, "sender_account_id", what, (o, k) => uuid(o, k, what)),
    senderDeviceId: optional(data, "sender_device_id", what, (o, k) => int(o, k, what, 1, 127)),
    type: int(data, "type", what, 0, 255), // 0: a notice from the relay (./notices.ts)
    content: bytes(data, "content", what, MAX_CIPHERTEXT),
    clientTimestamp: int(data, "client_timestamp", what, 0, Number.MAX_SAFE_INTEGER),
    serverTimestamp: int(data, "server_timestamp", what, 0, Number.MAX_SAFE_INTEGER),
  };
}

function parseCredentials(data: unknown): Credentials {
  const what = "credentials";
  const token = str(data, "token", what, 200);
  if (!/^[0-9a-f-]{36}\.[0-9]{1,3}\.[A-Za-z0-9_-]{20,100}$/.test(token)) throw new MalformedAnswer("credentials: token");
  return { accountId: uuid(data, "account_id", what), deviceId: int(data, "device_id", what, 1, 127), token };
}

/**
 * The bundles of a `GET /v1/keys/{account}/{device}` answer, from a relay we do not
 * trust to be well-formed.
 * @throws MalformedAnswer anything malformed; ProtocolError (InvalidKey) a malformed key.
 */
export function parseBundles(data: unknown): PreKeyBundle[] {
  const what = "bundle answer";
  const identityKey = PublicKey.deserialize(bytes(data, "identity_key", what, 64));
  return list(data, "devices", what, 127).map((d) => {
    const signed = isObject(d) ? d.signed_prekey : undefined;
    const kyber = isObject(d) ? d.kyber_prekey : undefined;
    const oneTime = isObject(d) ? d.one_time_prekey : undefined;
    if (oneTime !== undefined && oneTime !== null && !isObject(oneTime)) throw new MalformedAnswer(`${what}: one_time_prekey`);
    const u32 = (o: unknown, k: string) => int(o, k, what, 0, 0xffffffff);
    return new PreKeyBundle({
      registrationId: u32(d, "registration_id"),
      deviceId: int(d, "device_id", what, 1, 127),
      identityKey,
      signedPreKeyId: u32(signed, "key_id"),
      signedPreKey: PublicKey.deserialize(bytes(signed, "public_key", what, 64)),
      signedPreKeySignature: bytes(signed, "signature", what, 128),
      kyberPreKeyId: u32(kyber, "key_id"),
      kyberPreKey: KemPublicKey.deserialize(bytes(kyber, "public_key", what, 4096)),
      kyberPreKeySignature: bytes(kyber, "signature", what, 128),
      preKeyId: oneTime ? u32(oneTime, "key_id") : undefined,
      preKey: oneTime ? PublicKey.deserialize(bytes(oneTime, "public_key", what, 64)) : undefined,
    });
  });
}

/** `url` without a trailing slash; plain http only to loopback. @throws RangeError */
export function checkServerUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new RangeError("not a server URL");
  }
  if (parsed.protocol !== "https:" && parsed.protocol !== "http:") throw new RangeError("not a server URL");
  const host = parsed.hostname;
  const loopback = host === "localhost" || host === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(host);
  if (parsed.protocol === "http:" && !loopback) {
    throw new RangeError("plain http is allowed only to loopback addresses; use https");
  }
  return parsed.origin;
}

/** One device's view of the relay's HTTP API. */
export class RelayApi {
  readonly server: string;
  #token: string | undefined;

  constructor(server: string, token?: string) {
    this.server = checkServerUrl(server);
    this.#token = token;
  }

  setToken(token: string): void {
    this.#token = token;
  }

  /** The token, for the WebSocket handshake only. */
  get token(): string | undefined {
    return this.#token;
  }

  toString(): string {
    return `RelayApi(${this.server})`;
  }

  /** Asks for a second-factor code when the relay wants one (./second_factor.ts); unset: never asked. */
  secondFactor: SecondFactorPrompt | undefined;

  /**
   * Make a request; the decoded JSON answer (undefined for 204). A 403
   * `second_factor_required` asks {@link secondFactor} for a code and sends it again.
   * @throws RelayError an error answer. @throws RelayUnavailable no answer.
   */
  async request(method: string, path: string, body?: Json | Uint8Array, auth = true,
    extraHeaders: Record<string, string> = {}): Promise<unknown> {
    return withSecondFactor(this.secondFactor, method, path,
      (more) => this.#request(method, path, body, auth, { ...extraHeaders, ...more }));
  }

  async #request(method: string, path: string, body: Json | Uint8Array | undefined, auth: boolean,
    extraHeaders: Record<string, string>): Promise<unknown> {
    const headers: Record<string, string> = { ...extraHeaders };
    if (auth && this.#token) headers.Authorization = `Bearer ${this.#token}`;
    const raw = body instanceof Uint8Array;
    if (body !== undefined) headers["Content-Type"] = raw ? "application/octet-stream" : "application/json";
    let response: Response;
    try {
      response = await fetch(this.server + path, {
        method, headers, body: body === undefined ? undefined : raw ? body as Uint8Array<ArrayBuffer> : JSON.stringify(body),
        signal: AbortSignal.timeout(TIMEOUT_MS), credentials: "omit", cache: "no-store", redirect: "error",
      });
    } catch (error) {
      throw new RelayUnavailable(`cannot reach ${this.server}: ${(error as Error).name}`);
    }
    const text = await response.text().catch(() => "");
    if (response.status >= 400) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
      const error = isObject(parsed) && isObject(parsed.error) ? parsed.error : {};
      const code = typeof error.code === "string" ? error.code.slice(0, 64) : "unknown";
      const message = typeof error.message === "string" ? error.message.slice(0, 200) : "the relay refused";
      throw new RelayError(response.status, code, message, isObject(parsed) ? parsed : {});
    }
    if (response.status === 204 || text === "") return undefined;
    try {
      return JSON.parse(text);
    } catch {
      throw new MalformedAnswer(`${method} ${path.split("/").slice(0, 3).join("/")}: not JSON`);
    }
  }

  // -- accounts and devices ------------------------------------------------------------

  async register(body: Json): Promise<Credentials> {
    return parseCredentials(await this.request("POST", "/v1/accounts", body, false));
  }

  /** The account's device ids. */
  async devices(): Promise<number[]> {
    return (await this.deviceList()).map((d) => d.deviceId);
  }

  /** The account's devices with their names and times (ms). */
  async deviceList(): Promise<DeviceInfo[]> {
    const data = await this.request("GET", "/v1/devices");
    const what = "devices answer";
    if (!Array.isArray(data) || data.length > 127) throw new MalformedAnswer(what);
    return data.map((d) => ({
      deviceId: int(d, "device_id", what, 1, 127),
      name: optional(d, "name", what, (o, k) => str(o, k, what, 200)) ?? "",
      createdAt: int(d, "created_at", what, 0, Number.MAX_SAFE_INTEGER),
      lastSeen: int(d, "last_seen", what, 0, Number.MAX_SAFE_INTEGER),
    }));
  }

  /**
   * A request whose answer is raw bytes (undefined for 204).
   * @throws RelayError an error answer. @throws RelayUnavailable no answer.
   */
  async requestBytes(method: string, path: string, auth = true, maxBytes = 8 * 1024 * 1024,
    timeoutMs = TIMEOUT_MS): Promise<Uint8Array | undefined> {
    let response: Response;
    try {
      response = await fetch(this.server + path, {
        method, headers: auth && this.#token ? { Authorization: `Bearer ${this.#token}` } : {},
        signal: AbortSignal.timeout(timeoutMs), credentials: "omit", cache: "no-store", redirect: "error",
      });
    } catch (error) {
      throw new RelayUnavailable(`cannot reach ${this.server}: ${(error as Error).name}`);
    }
    if (response.status >= 400) {
      const text = await response.text().catch(() => "");
      let code = "unknown";
      try {
        const parsed: unknown = JSON.parse(text);
        if (isObject(parsed) && isObject(parsed.error) && typeof parsed.error.code === "string") code = parsed.error.code.slice(0, 64);
      } catch {
        // not JSON
      }
      throw new RelayError(response.status, code, "the relay refused", {});
    }
    if (response.status === 204) return undefined;
    const data = new Uint8Array(await response.arrayBuffer());
    if (data.length > maxBytes) throw new MalformedAnswer(`${method} ${path.split("/").slice(0, 3).join("/")}: too large`);
    return data;
  }

  /** Open a provisioning mailbox for this new device (no account yet). */
  async openMailbox(): Promise<string> {
    const address = str(await this.request("POST", "/v1/provisioning", undefined, false), "address", "mailbox answer", 200);
    if (!/^[A-Za-z0-9_-]{8,200}$/.test(address)) throw new MalformedAnswer("mailbox answer: address");
    return address;
  }

  /** Join an account as a new device: by a link code, or at a recovery path (src/app/recovery.ts). */
  async linkDevice(body: Json, path = "/v1/devices"): Promise<Credentials> {
    return parseCredentials(await this.request("POST", path, body, false));
  }

  /** A one-time code with which a new device joins this account. */
  async createLinkCode(): Promise<string> {
    return str(await this.request("POST", "/v1/devices/link-codes"), "link_code", "link code answer", 200);
  }

  /** Leave an encrypted provisioning message in a new device's mailbox. */
  async putProvisioning(address: string, sealed: Uint8Array): Promise<void> {
    await this.request("PUT", `/v1/provisioning/${encodeURIComponent(address)}`, sealed);
  }

  /** Remove a device of the account: its token dies, its queue and keys go. */
  async removeDevice(deviceId: number): Promise<void> {
    if (!Number.isInteger(deviceId) || deviceId < 1 || deviceId > 127) throw new RangeError("not a device id");
    await this.request("DELETE", `/v1/devices/${deviceId}`);
  }

  /** @throws RelayError 404 when nobody has that username. */
  async lookupUsername(username: string): Promise<string> {
    const data = await this.request("GET", `/v1/usernames/${encodeURIComponent(username)}`);
    return uuid(data, "account_id", "username answer");
  }

  // -- keys ----------------------------------------------------------------------------

  async uploadKeys(body: Json): Promise<void> {
    await this.request("PUT", "/v1/keys", body);
  }

  async keyCounts(): Promise<{ oneTime: number; kyber: number }> {
    const data = await this.request("GET", "/v1/keys/count");
    const what = "key counts";
    return { oneTime: int(data, "one_time_prekeys", what, 0, 1e9), kyber: int(data, "kyber_prekeys", what, 0, 1e9) };
  }

  /** Bundles of one device or all devices of an account. */
  async bundles(accountId: string, device?: number): Promise<PreKeyBundle[]> {
    const which = device === undefined ? "*" : String(device);
    return parseBundles(await this.request("GET", `/v1/keys/${encodeURIComponent(accountId)}/${which}`));
  }

  // -- attachments ---------------------------------------------------------------------

  /** Upload an encrypted blob; its id. */
  async uploadAttachment(blob: Uint8Array): Promise<string> {
    const data = await this.request("POST", "/v1/attachments", blob);
    const id = str(data, "id", "attachment answer", 64);
    if (!/^[A-Za-z0-9_-]{40,64}$/.test(id)) throw new MalformedAnswer("attachment answer: id");
    return id;
  }

  /**
   * Download a blob of at most `maxBytes`.
   * @throws RelayError 404 (gone) or 413 (larger than its pointer says). @throws RelayUnavailable
   */
  async downloadAttachment(id: string, maxBytes: number): Promise<Uint8Array> {
    if (!/^[A-Za-z0-9_-]{40,64}$/.test(id)) throw new RelayError(404, "not_found", "no such attachment", {});
    let response: Response;
    try {
      response = await fetch(`${this.server}/v1/attachments/${id}`, {
        headers: this.#token ? { Authorization: `Bearer ${this.#token}` } : {}, credentials: "omit",
        cache: "no-store", redirect: "error", signal: AbortSignal.timeout(5 * TIMEOUT_MS),
      });
    } catch (error) {
      throw new RelayUnavailable(`cannot reach ${this.server}: ${(error as Error).name}`);
    }
    if (response.status >= 400) throw new RelayError(response.status, "error", "the download was refused", {});
    const declared = Number(response.headers.get("content-length") ?? "0");
    if (declared > maxBytes) throw new RelayError(413, "too_large", "the attachment is larger than its pointer says", {});
    const reader = response.body?.getReader();
    const parts: Uint8Array[] = [];
    let received = 0;
    for (;;) {
      const chunk = reader === undefined ? { done: true as const, value: undefined } : await reader.read();
      if (chunk.done) break;
      received += chunk.value.length;
      if (received > maxBytes) {
        await reader?.cancel();
        throw new RelayError(413, "too_large", "the attachment is larger than its pointer says", {});
      }
      parts.push(chunk.value);
    }
    const blob = new Uint8Array(received);
    let at = 0;
    for (const part of parts) {
      blob.set(part, at);
      at += part.length;
    }
    return blob;
  }

  // -- messages ------------------------------------------------------------------------

  async send(accountId: string, timestamp: number, messages: Outgoing[]): Promise<number> {
    const data = await this.request("PUT", `/v1/messages/${encodeURIComponent(accountId)}`,
      { timestamp, messages: messages as unknown as Json });
    return int(data, "queued", "send answer", 0, 127);
  }

  /**
   * A sealed send (docs/spec/sealed-sender.md): no token, authorised by the recipient's
   * unidentified-access key. A browser picks its own connections: this request may ride
   * a keep-alive connection that carried identified ones (docs/threat-model.md).
   * @throws RelayError 401 (key refused), 403 (a device cannot open sealed envelopes),
   *   409/410 as for {@link send}, 429, 507. @throws RelayUnavailable no answer.
   */
  async sendSealed(accountId: string, accessKey: Uint8Array, messages: Outgoing[]): Promise<number> {
    const data = await this.request("PUT", `/v1/sealed/${encodeURIComponent(accountId)}`,
      { messages: messages.map(({ device_id, registration_id, content }) => ({ device_id, registration_id, content })) },
      false, { "Unidentified-Access-Key": toBase64(accessKey) });
    return int(data, "queued", "send answer", 0, 127);
  }

  // -- sealed sender -------------------------------------------------------------------

  /**
   * The relay's trust root and the server key ids it revoked (ids that are not u32
   * integers are left out).
   * @throws ProtocolError (InvalidKey) a malformed key; MalformedAnswer.
   */
  async trustRoot(): Promise<{ trustRoot: PublicKey; revoked: number[] }> {
    const data = await this.request("GET", "/v1/certificates/trust-root", undefined, false);
    const ids = isObject(data) ? data.revoked_server_key_ids : undefined;
    const revoked = Array.isArray(ids)
      ? ids.slice(0, 10_000).filter((i): i is number => Number.isInteger(i) && i >= 0 && i <= 0xffffffff) : [];
    return { trustRoot: PublicKey.deserialize(bytes(data, "trust_root", "trust root answer", 64)), revoked };
  }

  /** A fresh sender certificate for this device (serialized). */
  async senderCertificate(): Promise<Uint8Array> {
    return bytes(await this.request("GET", "/v1/certificates/sender"), "certificate", "certificate answer", 4096);
  }

  /** Register the account's unidentified-access key; this device opens sealed envelopes. */
  async setAccessKey(key: Uint8Array): Promise<void> {
    await this.request("PUT", "/v1/accounts/me/unidentified-access", { key: toBase64(key) });
  }

  /**
   * The SHA-256 of the account's access key as the relay holds it (undefined: none) and
   * whether it marks this device as opening sealed envelopes.
   * @throws MalformedAnswer a malformed answer.
   */
  async accessKeyState(): Promise<{ held: Uint8Array | undefined; marked: boolean }> {
    const data = await this.request("GET", "/v1/accounts/me/unidentified-access");
    const what = "access-key state";
    return { held: optional(data, "key_sha256", what, (o, k) => bytes(o, k, what, 32)), marked: bool(data, "device_opens_sealed", what) };
  }

  async fetch(limit = 100): Promise<{ envelopes: Envelope[]; more: boolean }> {
    const data = await this.request("GET", `/v1/messages?limit=${limit}`);
    const envelopes = list(data, "messages", "messages answer", 1000).map(parseEnvelope);
    const more = isObject(data) && data.more === true;
    return { envelopes, more };
  }

  async ack(ids: string[]): Promise<void> {
    await this.request("POST", "/v1/messages/ack", { ids });
  }
}
