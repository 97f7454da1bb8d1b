/**
 * The encrypted key file: the account exported to a file under a passphrase, and a
 * browser made a device of the account from one. Byte for byte the SDK's export file
 * (cipherpost.client.export, `cipherpost export` / `import`; docs/spec/history.md,
 * "Export"):
 *
 *     header = "CPEXPORT" || 0x01 || Argon2id t (u32 BE) || m KiB (u32 BE) || p (u8) ||
 *              salt (16) || nonce prefix (8)
 *     chunk  = length (u32 BE) || AES-256-GCM(Argon2id(passphrase, salt),
 *                                             nonce prefix || counter (u32 BE),
 *                                             one ExportRecord,
 *                                             aad = header || counter || last (u8))
 *
 * Records: the account (a RecoveryBlob), the recovery key's derived values (how an
 * importing device joins the account: they release it at /v1/recovery/devices), then
 * HistoryEvents (stored messages and group states) when the history was exported. Each
 * chunk is bound to the header, its position and whether it is the last, so a
 * reordered, truncated or extended file is refused. Before any key derivation the header
 * is checked (Argon2id parameters past MAX_PARAMS, or weaker than the SDK's floor, are
 * refused) and the chunk lengths must add up to the file exactly, so a hostile or cut
 * file costs neither memory nor time; nothing is written to a store until every record
 * has opened. Argon2id is hash-wasm's WebAssembly build, AES-GCM is WebCrypto's with a
 * non-extractable key; neither the passphrase nor a key leaves the page.
 */

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";

import { argon2id } from "hash-wasm";

import { concat, fromHex, systemRandom, utf8, type Random } from "../protocol/bytes.js";
import { RelayError } from "./api.js";
import { applyEvents } from "./archive.js";
import { Client, type ClientOptions } from "./client.js";
import { checkIntegers } from "./content.js";
import type { StoredMessage } from "./model.js";
import { messageChanges } from "./edits.js";
import {
  ExportRecordSchema, HistoryEventSchema, ProvisionMessageSchema, type ExportRecord, type HistoryEvent,
} from "./proto/cipherpost/app/v1/app_pb.js";
import { recoveryBlob } from "./recovery_secrets.js";
import type { SecondFactorPrompt } from "./second_factor.js";
import { dataOf } from "./server_history.js";
import { checkParams, DEFAULT_PARAMS, type Argon2Params } from "./store/crypto.js";
import type { DeviceStore } from "./store/device.js";
import type { Kv } from "./store/kv.js";

const MAGIC = utf8("CPEXPORT");
export const VERSION = 1;
/** 8 + 1 + 4 + 4 + 1 + 16 + 8 bytes. */
export const HEADER_BYTES = 42;
const MAX_CHUNK = 1 << 20;
const TAG_BYTES = 16;
/** The SDK's read_export floor: the cheapest parameters Argon2 takes (1 pass, 8 KiB). */
const FLOOR: Argon2Params = Object.freeze({ timeCost: 1, memoryKib: 8, parallelism: 1 });
/**
 * The store key of the recovery key's derived values (lookup id 16 || release secret
 * 32 || sealing key 32, the SDK's store secret "recovery_secrets"): a browser that joined
 * from a key file keeps them, as `cipherpost import` does, and can write a key file too.
 */
export const RECOVERY_SECRET = "recovery_secrets";
const SECRETS_BYTES = 80;

/** Not a key file, a wrong passphrase, or a damaged, cut or lengthened file; or nothing to export. */
export class KeyFileError extends Error {
  override readonly name = "KeyFileError";
}

/** The header's parameters, salt and nonce prefix. @throws KeyFileError */
function parseHeader(header: Uint8Array, floor: Argon2Params): { params: Argon2Params; salt: Uint8Array; prefix: Uint8Array } {
  if (header.length !== HEADER_BYTES || !MAGIC.every((b, i) => header[i] === b)) {
    throw new KeyFileError("not a Cipherpost key file");
  }
  if (header[8] !== VERSION) throw new KeyFileError(`a key file of version ${header[8]}; this Cipherpost reads ${VERSION}`);
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  const params = { timeCost: view.getUint32(9), memoryKib: view.getUint32(13), parallelism: header[17]! };
  try {
    checkParams(params);
  } catch (error) {
    throw new KeyFileError(`the key file's key parameters are refused: ${(error as Error).message}`);
  }
  if (params.timeCost < floor.timeCost || params.memoryKib < floor.memoryKib) {
    throw new KeyFileError("the key file's key parameters are weaker than allowed");
  }
  return { params, salt: header.slice(18, 34), prefix: header.slice(34, 42) };
}

async function aesKey(passphrase: string, salt: Uint8Array, params: Argon2Params, usage: KeyUsage): Promise<CryptoKey> {
  if (passphrase === "") throw new KeyFileError("the key file's passphrase must not be empty");
  const raw = await argon2id({ password: utf8(passphrase), salt, iterations: params.timeCost, memorySize: params.memoryKib,
    parallelism: params.parallelism, hashLength: 32, outputType: "binary" });
  try {
    return await crypto.subtle.importKey("raw", raw as Uint8Array<ArrayBuffer>, "AES-GCM", false, [usage]);
  } finally {
    raw.fill(0);
  }
}

/** counter (u32 BE) || last (u8): the nonce's tail is its first four bytes. */
function position(counter: number, last: boolean): Uint8Array {
  const out = new Uint8Array(5);
  new DataView(out.buffer).setUint32(0, counter);
  out[4] = last ? 1 : 0;
  return out;
}

/**
 * `records` as a key file under `passphrase` (the SDK's export_account, in memory).
 * @throws KeyFileError an empty passphrase. RangeError: `params` past MAX_PARAMS.
 */
export async function writeKeyFile(records: readonly ExportRecord[], passphrase: string,
  params: Argon2Params = DEFAULT_PARAMS, random: Random = systemRandom): Promise<Uint8Array> {
  checkParams(params);
  if (records.length === 0) throw new KeyFileError("a key file holds at least one record");
  const header = new Uint8Array(HEADER_BYTES);
  header.set(MAGIC);
  header[8] = VERSION;
  const view = new DataView(header.buffer);
  view.setUint32(9, params.timeCost);
  view.setUint32(13, params.memoryKib);
  header[17] = params.parallelism;
  header.set(random(16), 18);
  header.set(random(8), 34);
  const prefix = header.slice(34);
  const key = await aesKey(passphrase, header.slice(18, 34), params, "encrypt");
  const parts: Uint8Array[] = [header];
  for (let counter = 0; counter < records.length; counter++) {
    const at = position(counter, counter === records.length - 1);
    const sealedChunk = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM",
      iv: concat(prefix, at.slice(0, 4)) as Uint8Array<ArrayBuffer>,
      additionalData: concat(header, at) as Uint8Array<ArrayBuffer> }, key,
    toBinary(ExportRecordSchema, records[counter]!) as Uint8Array<ArrayBuffer>));
    if (sealedChunk.length > MAX_CHUNK) throw new KeyFileError("a record is too large for a key file");
    const length = new Uint8Array(4);
    new DataView(length.buffer).setUint32(0, sealedChunk.length);
    parts.push(length, sealedChunk);
  }
  return concat(...parts);
}

/**
 * The records of a key file, all verified (the SDK's read_export).
 * @throws KeyFileError not a key file, parameters out of bounds, a wrong passphrase, a
 * damaged, reordered, cut or lengthened file.
 */
export async function readKeyFile(data: Uint8Array, passphrase: string, floor: Argon2Params = FLOOR): Promise<ExportRecord[]> {
  if (data.length < HEADER_BYTES) throw new KeyFileError("not a Cipherpost key file");
  const header = data.slice(0, HEADER_BYTES);
  const { params, salt, prefix } = parseHeader(header, floor);
  // The chunks' lengths before any key derivation: a cut or padded file costs no Argon2.
  const chunks: Uint8Array[] = [];
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  for (let at = HEADER_BYTES; at < data.length;) {
    if (data.length - at < 4) throw new KeyFileError("the key file is truncated");
    const length = view.getUint32(at);
    if (length < TAG_BYTES || length > MAX_CHUNK) throw new KeyFileError("the key file is damaged");
    if (data.length - at - 4 < length) throw new KeyFileError("the key file is truncated");
    chunks.push(data.subarray(at + 4, at + 4 + length));
    at += 4 + length;
  }
  if (chunks.length === 0) throw new KeyFileError("the key file is truncated");
  const key = await aesKey(passphrase, salt, params, "decrypt");
  const records: ExportRecord[] = [];
  for (const [counter, chunk] of chunks.entries()) {
    let plaintext: Uint8Array | undefined;
    let last = false;
    for (const flag of [false, true]) {
      const at = position(counter, flag);
      try {
        plaintext = new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM",
          iv: concat(prefix, at.slice(0, 4)) as Uint8Array<ArrayBuffer>,
          additionalData: concat(header, at) as Uint8Array<ArrayBuffer> }, key, chunk.slice() as Uint8Array<ArrayBuffer>));
        last = flag;
        break;
      } catch {
        // the other flag, or a wrong key
      }
    }
    if (plaintext === undefined) {
      throw new KeyFileError(counter === 0 ? "wrong passphrase, or the key file is damaged" : "the key file is damaged");
    }
    let record: ExportRecord;
    try {
      record = fromBinary(ExportRecordSchema, plaintext);
      checkIntegers(ExportRecordSchema, record);
    } catch {
      throw new KeyFileError("the key file is damaged");
    }
    records.push(record);
    if (last) {
      if (counter !== chunks.length - 1) throw new KeyFileError("the key file has data after its end");
      return records;
    }
  }
  throw new KeyFileError("the key file is truncated");
}

// -- export -------------------------------------------------------------------------------

/** The recovery key's derived values this browser holds, if it holds them. */
export async function recoverySecrets(store: DeviceStore): Promise<Uint8Array | undefined> {
  const data = await store.get(RECOVERY_SECRET);
  return data !== undefined && data.length === SECRETS_BYTES ? data : undefined;
}

/** Why a browser without the recovery secrets cannot write a key file, and what to do. */
export const NEEDS_RECOVERY_KEY = "make a recovery key first (Security page, or `cipherpost recovery-key`): a device "
  + "joins the account from a key file through it, and this browser holds none (a browser that made the key "
  + "or imported a key file does)";

/**
 * The records of this browser's account (the SDK's export._records): the account, the
 * recovery secrets, then with `withHistory` every stored message and group state.
 * @throws KeyFileError this browser holds no recovery secrets.
 */
export async function exportRecords(client: Client, withHistory: boolean): Promise<ExportRecord[]> {
  const store = client.store;
  const secrets = await recoverySecrets(store);
  if (secrets === undefined) throw new KeyFileError(NEEDS_RECOVERY_KEY);
  const records = [create(ExportRecordSchema, { body: { case: "account", value: await recoveryBlob(client) } }),
    create(ExportRecordSchema, { body: { case: "recoverySecrets", value: secrets } })];
  if (withHistory) {
    const event = (value: HistoryEvent): ExportRecord => create(ExportRecordSchema, { body: { case: "event", value } });
    for (const [, m] of await store.scanJson<StoredMessage>("msg:")) {
      records.push(event(create(HistoryEventSchema, { body: { case: "message", value: {
        conversation: m.conversation, author: m.author, authorDevice: m.authorDevice, receivedAt: BigInt(m.receivedAt),
        outgoing: m.outgoing, data: dataOf(m) } } })));
      for (const { author, data } of await messageChanges(store, m)) {
        records.push(event(create(HistoryEventSchema, { body: { case: "change", value: {
          conversation: m.conversation, author, receivedAt: BigInt(m.receivedAt), data } } })));
      }
    }
    for (const [, state] of await store.scanJson<string>("group:")) {
      records.push(event(create(HistoryEventSchema, { body: { case: "groupState", value: fromHex(state) } })));
    }
  }
  return records;
}

/**
 * This browser's account as a key file under `passphrase`.
 * @throws KeyFileError no recovery secrets here, or an empty passphrase.
 */
export async function exportKeyFile(client: Client, passphrase: string,
  options: { withHistory: boolean; params?: Argon2Params }): Promise<Uint8Array> {
  if (passphrase === "") throw new KeyFileError("the key file's passphrase must not be empty");
  return writeKeyFile(await exportRecords(client, options.withHistory), passphrase, options.params ?? DEFAULT_PARAMS);
}

/** The name a key file is offered under: the username and the day. */
export function keyFileName(username: string, now: number = Date.now()): string {
  return `cipherpost-${username.replace(/[^a-z0-9_.]/g, "") || "account"}-${new Date(now).toISOString().slice(0, 10)}.cpexport`;
}

// -- import -------------------------------------------------------------------------------

export interface ImportOptions extends Pick<ClientOptions, "argon2" | "clock"> {
  /** Reading the server-stored history (when the account keeps it): entries, share of bytes. */
  historyProgress?: (entries: number, fraction: number) => void;
  /** Asks for a code when the account has a second factor: the relay wants one before a device joins. */
  secondFactor?: SecondFactorPrompt;
}

export interface Imported {
  client: Client;
  /** Messages from the file new to this browser. */
  messages: number;
}

/**
 * Make this browser a device of the account in a key file (the SDK's import_account):
 * every record verified first (nothing is stored before), then a store under `password`
 * joins the account with the recovery secrets, takes over contacts, trust, groups and
 * history keys from the account record, keeps the secrets (so that this browser can
 * write a key file too), replays the file's messages and group states (all in the unit
 * that stores the account), and reads the server-stored history if the account keeps
 * one (what of it fails resumes on unlock).
 * @throws KeyFileError see {@link readKeyFile}; the relay no longer knows that recovery
 * key. RangeError: a password under 8 characters. RelayError, RelayUnavailable. JoinUndone:
 * the store could not be written after the relay took the device (it is removed again).
 */
export async function importKeyFile(kv: Kv, server: string, data: Uint8Array, passphrase: string, password: string,
  options: ImportOptions = {}): Promise<Imported> {
  if (password.length < 8) throw new RangeError("choose a password of at least 8 characters");
  const records = await readKeyFile(data, passphrase);
  const [first, second] = records;
  if (first?.body.case !== "account" || second?.body.case !== "recoverySecrets") {
    throw new KeyFileError("the key file does not start with an account");
  }
  const blob = first.body.value;
  const secrets = second.body.value;
  if (secrets.length !== SECRETS_BYTES) throw new KeyFileError("the key file's recovery secrets are malformed");
  const events = records.slice(2).flatMap((r) => (r.body.case === "event" ? [r.body.value] : []));
  const b64 = (bytes: Uint8Array): string => btoa(String.fromCharCode(...bytes));
  const message = create(ProvisionMessageSchema, {
    accountId: blob.accountId, identityKeyPair: blob.identityKeyPair, username: blob.username,
    contacts: blob.contacts, groupStates: blob.groupStates, historyEnabled: blob.historyEnabled,
    historyKeys: blob.historyKeys,
  });
  const now = (options.clock ?? Date.now)();
  let messages = 0;
  let client: Client;
  try {
    client = await Client.link(kv, server, password, message, {
      ...(options.argon2 === undefined ? {} : { argon2: options.argon2 }),
      ...(options.clock === undefined ? {} : { clock: options.clock }),
      ...(options.historyProgress === undefined ? {} : { historyProgress: options.historyProgress }),
      join: { path: "/v1/recovery/devices",
        fields: { lookup_id: b64(secrets.subarray(0, 16)), auth: b64(secrets.subarray(16, 48)) },
        ...(options.secondFactor === undefined ? {} : { secondFactor: options.secondFactor }) },
      // With the account or not at all (./withdraw.ts), before the server-stored history.
      keep: async (store) => {
        await store.put(RECOVERY_SECRET, secrets);
        messages = await applyEvents(store, events, now);
      },
    });
  } catch (error) {
    if (error instanceof RelayError && error.status === 403 && !error.code.startsWith("second_factor")) {
      throw new KeyFileError("the server no longer knows the recovery key in this key file (a newer one was made since)");
    }
    throw error;
  }
  const store = client.store;
  if (blob.username === "") {
    // The SDK writes no username into its files: the relay says which one the account has.
    try {
      const me = await client.api.request("GET", "/v1/accounts/me") as { username?: unknown };
      if (typeof me.username === "string" && /^[a-z0-9_][a-z0-9_.]{2,31}$/.test(me.username)) {
        client.account.username = me.username;
        await store.transaction(() => store.putJson("account", client.account));
      }
    } catch (error) {
      console.warn("cipherpost: the account's username could not be read:", (error as Error).name);
    }
  }
  return { client, messages };
}

