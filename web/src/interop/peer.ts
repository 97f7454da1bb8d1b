/**
 * The JSON-lines interop peer (shared/interop/PEER.md) on the TypeScript protocol core;
 * mirrors cipherpost.interop.peer.
 *
 * Reads one JSON request per line and answers each with one JSON line, in order. It holds
 * any number of actors, each with its own in-memory stores. Request handling
 * ({@link Peer}) is separate from the stdin/stdout loop ({@link serve}) so tests drive it
 * directly. It never crashes: malformed requests get `bad_request`, protocol failures
 * their error kind, and a failed request changes no state.
 *
 * Operations of our own (beyond PEER.md): the four sealed-sender operations documented in
 * ../../interop/README.md (`server_certificate`, `sender_certificate`, `sealed_encrypt`,
 * `sealed_decrypt`), as the Python peer has them.
 *
 * Sessions this peer creates run SPQR as the environment variable `CIPHERPOST_PEER_SPQR`
 * says (read by ./main.ts, {@link spqrFromEnvironment}), as the Python peer does: `off`
 * (the default, no SPQR), `offered` (SPQR, downgrading for a peer without it, as libsignal
 * 0.90/0.91) or `required` (as libsignal 0.92+: a peer without SPQR is refused, and
 * `has_session` reports a session without it as unusable).
 */

import { ProtocolAddress } from "../protocol/address.js";
import { generatePreKeyBundle } from "../protocol/bundles.js";
import { type Random, systemRandom } from "../protocol/bytes.js";
import { SenderCertificate, ServerCertificate } from "../protocol/certificates.js";
import { ProtocolError } from "../protocol/errors.js";
import { DEFAULT_ITERATIONS, Fingerprint, FingerprintParsingError, FingerprintVersionMismatch } from "../protocol/fingerprint.js";
import { KemPublicKey, KYBER1024, MLKEM1024 } from "../protocol/kem.js";
import { IdentityKeyPair, PrivateKey, PublicKey } from "../protocol/keys.js";
import { PREKEY_TYPE, WHISPER_TYPE } from "../protocol/messages.js";
import { PreKeyBundle } from "../protocol/prekeys.js";
import * as sealedSender from "../protocol/sealed_sender.js";
import * as senderKeys from "../protocol/sender_keys.js";
import * as session from "../protocol/session.js";
import { SpqrSettings } from "../protocol/spqr/ratchet.js";
import { InMemoryProtocolStore, InMemorySenderKeyStore } from "../protocol/stores.js";
import { isUuid } from "../protocol/uuid.js";

export type Json = Record<string, unknown>;

/** The request itself is malformed or names something that does not exist. */
export class BadRequest extends Error {
  override name = "BadRequest";
}

interface Actor {
  readonly address: ProtocolAddress;
  readonly store: InMemoryProtocolStore;
  readonly senderKeys: InMemorySenderKeyStore;
}

const U32 = 0xffffffff;
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

// -- request field readers ------------------------------------------------------------

function field(req: Json, name: string): unknown {
  if (!Object.prototype.hasOwnProperty.call(req, name)) throw new BadRequest(`missing field '${name}'`);
  return req[name];
}

function isInt(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value);
}

function int(req: Json, name: string, lo: number, hi: number): number {
  const value = field(req, name);
  if (!isInt(value) || value < lo || value > hi) throw new BadRequest(`'${name}' must be an integer ${lo}..${hi}`);
  return value;
}

function optInt(req: Json, name: string, lo: number, hi: number): number | undefined {
  if (req[name] === undefined || req[name] === null) return undefined;
  return int(req, name, lo, hi);
}

export function b64decode(value: unknown, name: string): Uint8Array {
  if (typeof value !== "string") throw new BadRequest(`'${name}' must be a base64 string`);
  if (value.length % 4 !== 0 || !BASE64_RE.test(value)) throw new BadRequest(`'${name}' is not valid base64`);
  return new Uint8Array(Buffer.from(value, "base64"));
}

export function b64encode(data: Uint8Array): string {
  return Buffer.from(data.buffer, data.byteOffset, data.length).toString("base64");
}

function bytesField(req: Json, name: string): Uint8Array {
  return b64decode(field(req, name), name);
}

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function address(value: unknown, name: string): ProtocolAddress {
  if (!isObject(value)) throw new BadRequest(`'${name}' must be an address object`);
  const account = value["name"];
  const deviceId = value["device_id"];
  if (typeof account !== "string" || !isInt(deviceId)) {
    throw new BadRequest(`'${name}': an address needs a string name and an integer device_id`);
  }
  try {
    return new ProtocolAddress(account, deviceId);
  } catch (error) {
    throw new BadRequest(`'${name}': ${(error as Error).message}`);
  }
}

function errorResponse(id: unknown, kind: string, message: string): Json {
  return { id: id ?? null, ok: false, error: { kind, message } };
}

type Op = (req: Json) => Promise<Json>;

export const SPQR_SETTINGS: Readonly<Record<string, SpqrSettings>> = {
  off: SpqrSettings.OFF, offered: SpqrSettings.OFFERED, required: SpqrSettings.REQUIRED,
};

/**
 * The SPQR settings `CIPHERPOST_PEER_SPQR` names (default `off`).
 * @throws RangeError an unknown name.
 */
export function spqrFromEnvironment(env: Readonly<Record<string, string | undefined>> = process.env): SpqrSettings {
  const name = env["CIPHERPOST_PEER_SPQR"] ?? "off";
  const settings = Object.prototype.hasOwnProperty.call(SPQR_SETTINGS, name) ? SPQR_SETTINGS[name] : undefined;
  if (settings === undefined) {
    throw new RangeError(`CIPHERPOST_PEER_SPQR must be one of ${Object.keys(SPQR_SETTINGS).sort().join(", ")}`);
  }
  return settings;
}

/** Request handling for one peer process. */
export class Peer {
  readonly #actors = new Map<string, Actor>();
  readonly #ops: Record<string, Op>;

  constructor(private readonly rng: Random = systemRandom, private readonly clock: () => number = () => Date.now() / 1000,
    private readonly spqr: SpqrSettings = SpqrSettings.OFF) {
    this.#ops = {
      create_actor: (r) => this.createActor(r),
      generate_bundle: (r) => this.generateBundle(r),
      process_bundle: (r) => this.processBundle(r),
      encrypt: (r) => this.encrypt(r),
      decrypt: (r) => this.decrypt(r),
      has_session: (r) => this.hasSession(r),
      archive_session: (r) => this.archiveSession(r),
      identity: (r) => this.identity(r),
      trust: (r) => this.trust(r),
      fingerprint: (r) => this.fingerprint(r),
      compare_scannable: (r) => this.compareScannable(r),
      sender_key_distribution: (r) => this.senderKeyDistribution(r),
      process_sender_key_distribution: (r) => this.processSkdm(r),
      group_encrypt: (r) => this.groupEncrypt(r),
      group_decrypt: (r) => this.groupDecrypt(r),
      server_certificate: (r) => this.serverCertificate(r),
      sender_certificate: (r) => this.senderCertificate(r),
      sealed_encrypt: (r) => this.sealedEncrypt(r),
      sealed_decrypt: (r) => this.sealedDecrypt(r),
    };
  }

  /** Answer one input line; undefined for a blank line. */
  async handleLine(line: string): Promise<Json | undefined> {
    if (line.trim() === "") return undefined;
    let request: unknown;
    try {
      request = JSON.parse(line);
    } catch {
      return errorResponse(null, "bad_request", "not a JSON object");
    }
    if (!isObject(request)) return errorResponse(null, "bad_request", "not a JSON object");
    return this.handle(request);
  }

  /** Answer one request object. */
  async handle(request: Json): Promise<Json> {
    const id = request["id"] ?? null;
    const op = request["op"];
    try {
      if (op === "quit") return { id, ok: true };
      if (typeof op !== "string" || !Object.prototype.hasOwnProperty.call(this.#ops, op)) {
        throw new BadRequest(`unknown op ${JSON.stringify(op) ?? "undefined"}`);
      }
      const result = await this.#ops[op]!(request);
      return { id, ok: true, ...result };
    } catch (error) {
      if (error instanceof BadRequest) return errorResponse(id, "bad_request", error.message);
      if (error instanceof ProtocolError) return errorResponse(id, error.kind, error.message || error.name);
      // A bug: report it (never secrets: only the error), keep serving.
      process.stderr.write(`peer: internal error: ${(error as Error)?.stack ?? String(error)}\n`);
      return errorResponse(id, "internal_error", `${(error as Error)?.name}: ${(error as Error)?.message}`);
    }
  }

  // -- helpers ------------------------------------------------------------------------

  private now(): number {
    return Math.floor(this.clock());
  }

  private actor(req: Json): Actor {
    const addr = address(field(req, "actor"), "actor");
    const actor = this.#actors.get(addr.key());
    if (actor === undefined) throw new BadRequest(`unknown actor ${addr}`);
    return actor;
  }

  private remote(req: Json, name = "remote"): ProtocolAddress {
    return address(field(req, name), name);
  }

  private distributionId(req: Json): string {
    const value = field(req, "distribution_id");
    if (typeof value !== "string") throw new BadRequest("distribution_id must be a UUID string");
    if (!isUuid(value)) throw new BadRequest("distribution_id must be 128 bits written 8-4-4-4-12 in hex");
    return value.toLowerCase();
  }

  // -- operations ---------------------------------------------------------------------

  private async createActor(req: Json): Promise<Json> {
    const addr = address(field(req, "actor"), "actor");
    const registrationId = int(req, "registration_id", 1, 16380);
    if (this.#actors.has(addr.key())) throw new BadRequest(`actor ${addr} exists`);
    const identity = IdentityKeyPair.generate(this.rng);
    this.#actors.set(addr.key(), {
      address: addr,
      store: new InMemoryProtocolStore(identity, registrationId),
      senderKeys: new InMemorySenderKeyStore(),
    });
    return { identity_key: b64encode(identity.publicKey.serialize()) };
  }

  private async generateBundle(req: Json): Promise<Json> {
    const actor = this.actor(req);
    const signedId = int(req, "signed_prekey_id", 0, U32);
    const kyberId = int(req, "kyber_prekey_id", 0, U32);
    const preKeyId = optInt(req, "prekey_id", 0, U32);
    const kemName = req["kem"] ?? "kyber1024";
    const kemTypes: Record<string, number> = { kyber1024: KYBER1024, mlkem1024: MLKEM1024 };
    if (typeof kemName !== "string" || !Object.prototype.hasOwnProperty.call(kemTypes, kemName)) {
      throw new BadRequest("kem must be 'kyber1024' or 'mlkem1024'");
    }
    // The Kyber prekey is kept after use (last resort): a bundle may start several
    // sessions, as with libsignal's in-memory store.
    const b = await generatePreKeyBundle(actor.store, {
      deviceId: actor.address.deviceId, signedPreKeyId: signedId, kyberPreKeyId: kyberId, preKeyId,
      rng: this.rng, nowMs: this.now() * 1000, kemType: kemTypes[kemName]!,
    });
    return {
      bundle: {
        registration_id: b.registrationId,
        device_id: b.deviceId,
        identity_key: b64encode(b.identityKey.serialize()),
        signed_prekey_id: b.signedPreKeyId,
        signed_prekey: b64encode(b.signedPreKey.serialize()),
        signed_prekey_signature: b64encode(b.signedPreKeySignature),
        kyber_prekey_id: b.kyberPreKeyId,
        kyber_prekey: b64encode(b.kyberPreKey.serialize()),
        kyber_prekey_signature: b64encode(b.kyberPreKeySignature),
        prekey_id: b.preKeyId ?? null,
        prekey: b.preKey !== undefined ? b64encode(b.preKey.serialize()) : null,
      },
    };
  }

  private parseBundle(value: unknown): PreKeyBundle {
    if (!isObject(value)) throw new BadRequest("bundle must be an object");
    const preKeyId = optInt(value, "prekey_id", 0, U32);
    const preKeyRaw = value["prekey"] ?? null;
    if ((preKeyId === undefined) !== (preKeyRaw === null)) throw new BadRequest("prekey_id and prekey go together");
    return new PreKeyBundle({
      registrationId: int(value, "registration_id", 0, U32),
      deviceId: int(value, "device_id", 1, 127),
      identityKey: PublicKey.deserialize(bytesField(value, "identity_key")),
      signedPreKeyId: int(value, "signed_prekey_id", 0, U32),
      signedPreKey: PublicKey.deserialize(bytesField(value, "signed_prekey")),
      signedPreKeySignature: bytesField(value, "signed_prekey_signature"),
      kyberPreKeyId: int(value, "kyber_prekey_id", 0, U32),
      kyberPreKey: KemPublicKey.deserialize(bytesField(value, "kyber_prekey")),
      kyberPreKeySignature: bytesField(value, "kyber_prekey_signature"),
      preKeyId,
      preKey: preKeyRaw !== null ? PublicKey.deserialize(b64decode(preKeyRaw, "prekey")) : undefined,
    });
  }

  private async processBundle(req: Json): Promise<Json> {
    const actor = this.actor(req);
    const remote = this.remote(req);
    const bundle = this.parseBundle(field(req, "bundle"));
    await session.processPreKeyBundle(actor.store, remote, bundle, { rng: this.rng, now: this.now(), spqr: this.spqr });
    return {};
  }

  private async encrypt(req: Json): Promise<Json> {
    const actor = this.actor(req);
    const remote = this.remote(req);
    const plaintext = bytesField(req, "plaintext");
    const message = await session.encrypt(actor.store, remote, plaintext,
      { now: this.now(), rng: this.rng, spqr: this.spqr, localAddress: actor.address });
    return {
      message_type: message.messageType === PREKEY_TYPE ? "prekey" : "whisper",
      ciphertext: b64encode(message.serialized),
    };
  }

  private async decrypt(req: Json): Promise<Json> {
    const actor = this.actor(req);
    const remote = this.remote(req);
    const kind = field(req, "message_type");
    const types: Record<string, number> = { prekey: PREKEY_TYPE, whisper: WHISPER_TYPE };
    if (typeof kind !== "string" || !Object.prototype.hasOwnProperty.call(types, kind)) {
      throw new BadRequest("message_type must be 'prekey' or 'whisper'");
    }
    const ciphertext = bytesField(req, "ciphertext");
    const plaintext = await session.decrypt(actor.store, remote, types[kind]!, ciphertext,
      { rng: this.rng, spqr: this.spqr, localAddress: actor.address });
    return { plaintext: b64encode(plaintext) };
  }

  private async hasSession(req: Json): Promise<Json> {
    const actor = this.actor(req);
    const remote = this.remote(req);
    const usable = await session.hasSession(actor.store, remote, this.now(), { spqr: this.spqr });
    const record = await actor.store.loadSession(remote);
    return { has_session: usable, session_version: usable ? record?.current?.version ?? null : null };
  }

  private async archiveSession(req: Json): Promise<Json> {
    const actor = this.actor(req);
    await session.archiveSession(actor.store, this.remote(req));
    return {};
  }

  private async identity(req: Json): Promise<Json> {
    const actor = this.actor(req);
    const key = actor.store.getIdentity(this.remote(req));
    return { identity_key: key !== undefined ? b64encode(key.serialize()) : null };
  }

  private async trust(req: Json): Promise<Json> {
    const actor = this.actor(req);
    const remote = this.remote(req);
    let key: PublicKey;
    try {
      key = PublicKey.deserialize(bytesField(req, "identity_key"));
    } catch (error) {
      if (error instanceof ProtocolError) throw new BadRequest(`identity_key: ${error.message}`);
      throw error;
    }
    actor.store.saveIdentity(remote, key);
    return {};
  }

  private fingerprintFor(req: Json): Fingerprint {
    const actor = this.actor(req);
    const remote = this.remote(req);
    const localId = bytesField(req, "local_id");
    const remoteId = bytesField(req, "remote_id");
    const iterations = req["iterations"] ?? DEFAULT_ITERATIONS;
    if (!isInt(iterations)) throw new BadRequest("iterations must be an integer");
    const remoteKey = actor.store.getIdentity(remote);
    if (remoteKey === undefined) throw new BadRequest(`no trusted identity for ${remote}`);
    const localKey = actor.store.getIdentityKeyPair().publicKey;
    try {
      return Fingerprint.create(localId, localKey, remoteId, remoteKey, { iterations });
    } catch (error) {
      throw new BadRequest((error as Error).message);
    }
  }

  private async fingerprint(req: Json): Promise<Json> {
    const fp = this.fingerprintFor(req);
    return { displayable: fp.displayable, scannable: b64encode(fp.scannable) };
  }

  private async compareScannable(req: Json): Promise<Json> {
    const fp = this.fingerprintFor(req);
    const scanned = bytesField(req, "scanned");
    try {
      return { match: fp.compare(scanned) };
    } catch (error) {
      if (error instanceof FingerprintParsingError || error instanceof FingerprintVersionMismatch) {
        throw new BadRequest(error.message);
      }
      throw error;
    }
  }

  private async senderKeyDistribution(req: Json): Promise<Json> {
    const actor = this.actor(req);
    const distributionId = this.distributionId(req);
    const skdm = await senderKeys.createDistributionMessage(actor.senderKeys, actor.address, distributionId,
      { rng: this.rng });
    return { skdm: b64encode(skdm.serialized) };
  }

  private async processSkdm(req: Json): Promise<Json> {
    const actor = this.actor(req);
    const sender = this.remote(req, "sender");
    await senderKeys.processDistributionMessage(actor.senderKeys, sender, bytesField(req, "skdm"));
    return {};
  }

  private async groupEncrypt(req: Json): Promise<Json> {
    const actor = this.actor(req);
    const distributionId = this.distributionId(req);
    const plaintext = bytesField(req, "plaintext");
    const ciphertext = await senderKeys.groupEncrypt(actor.senderKeys, actor.address, distributionId, plaintext,
      { rng: this.rng });
    return { ciphertext: b64encode(ciphertext) };
  }

  private async groupDecrypt(req: Json): Promise<Json> {
    const actor = this.actor(req);
    const sender = this.remote(req, "sender");
    const plaintext = await senderKeys.groupDecrypt(actor.senderKeys, sender, bytesField(req, "ciphertext"));
    return { plaintext: b64encode(plaintext) };
  }

  // -- sealed sender (interop/README.md) ----------------------------------------------

  private privateKey(req: Json, name: string): PrivateKey {
    const raw = bytesField(req, name);
    if (raw.length !== 32) throw new BadRequest(`'${name}' must be 32 bytes`);
    return new PrivateKey(raw);
  }

  private publicKey(req: Json, name: string): PublicKey {
    try {
      return PublicKey.deserialize(bytesField(req, name));
    } catch (error) {
      if (error instanceof ProtocolError) throw new BadRequest(`'${name}': ${error.message}`);
      throw error;
    }
  }

  private optString(req: Json, name: string): string | undefined {
    const value = req[name];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== "string" || value === "") throw new BadRequest(`'${name}' must be a non-empty string or null`);
    return value;
  }

  private async serverCertificate(req: Json): Promise<Json> {
    const trustRoot = this.privateKey(req, "trust_root_private");
    const server = this.privateKey(req, "server_private");
    const keyId = int(req, "key_id", 0, U32);
    const certificate = ServerCertificate.create(keyId, server.publicKey(), trustRoot, this.rng);
    return {
      certificate: b64encode(certificate.serialized),
      trust_root: b64encode(trustRoot.publicKey().serialize()),
      server_key: b64encode(server.publicKey().serialize()),
    };
  }

  private async senderCertificate(req: Json): Promise<Json> {
    let server: ServerCertificate;
    try {
      server = ServerCertificate.deserialize(bytesField(req, "server_certificate"));
    } catch (error) {
      if (error instanceof ProtocolError) throw new BadRequest(`server_certificate: ${error.message}`);
      throw error;
    }
    const sender = address(field(req, "sender"), "sender");
    const certificate = SenderCertificate.create({
      senderUuid: sender.name, senderE164: this.optString(req, "sender_e164"), senderDeviceId: sender.deviceId,
      identityKey: this.publicKey(req, "identity_key"), expires: int(req, "expires", 0, Number.MAX_SAFE_INTEGER),
    }, server, this.privateKey(req, "server_private"), this.rng);
    return { certificate: b64encode(certificate.serialized) };
  }

  private async sealedEncrypt(req: Json): Promise<Json> {
    const actor = this.actor(req);
    const remote = this.remote(req);
    let certificate: SenderCertificate;
    try {
      certificate = SenderCertificate.deserialize(bytesField(req, "sender_certificate"));
    } catch (error) {
      if (error instanceof ProtocolError) throw new BadRequest(`sender_certificate: ${error.message}`);
      throw error;
    }
    const plaintext = bytesField(req, "plaintext");
    const sealed = await sealedSender.encryptMessage(actor.store, remote, certificate, plaintext,
      { now: this.now(), rng: this.rng, spqr: this.spqr });
    return { ciphertext: b64encode(sealed) };
  }

  private async sealedDecrypt(req: Json): Promise<Json> {
    const actor = this.actor(req);
    const ciphertext = bytesField(req, "ciphertext");
    const trustRoot = this.publicKey(req, "trust_root");
    const nowMs = int(req, "now", 0, Number.MAX_SAFE_INTEGER);
    const result = await sealedSender.decrypt(actor.store, ciphertext, {
      trustRoots: [trustRoot], nowMs, rng: this.rng, spqr: this.spqr,
      local: { uuid: actor.address.name, deviceId: actor.address.deviceId, e164: this.optString(req, "local_e164") },
    });
    return {
      plaintext: b64encode(result.plaintext),
      sender: { name: result.senderUuid, device_id: result.deviceId },
      sender_e164: result.senderE164 ?? null,
    };
  }
}

function isQuit(line: string): boolean {
  try {
    const request: unknown = JSON.parse(line);
    return isObject(request) && request["op"] === "quit";
  } catch {
    return false;
  }
}

/** Serve requests from `input` until end of input or `quit`; resolves to the exit status. */
export async function serve(input: AsyncIterable<string>, write: (line: string) => void,
  peer: Peer = new Peer()): Promise<number> {
  for await (const line of input) {
    const response = await peer.handleLine(line);
    if (response === undefined) continue;
    write(JSON.stringify(response) + "\n");
    if (response["ok"] === true && isQuit(line)) return 0;
  }
  return 0;
}
