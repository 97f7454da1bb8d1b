/**
 * Account security and privacy over the relay's API (docs/server.md, "Account security"
 * and "Privacy dashboard"), for the security page: the second factor (TOTP, RFC 6238)
 * status and enrolment, and what the relay holds about the account. Every answer is
 * parsed strictly (./wire.ts); what is shown is text only. Mirrors the SDK's
 * account_security and the CLI's `privacy`, `history off`, `account export-server-data`
 * and `account delete` commands. Actions the relay protects with the second factor ask
 * for the code through the api's prompt (./second_factor.ts).
 */

import { create } from "@bufbuild/protobuf";

import type { RelayApi } from "./api.js";
import type { Client } from "./client.js";
import { encodeContent } from "./content.js";
import * as history from "./history.js";
import { ContentSchema } from "./proto/cipherpost/app/v1/app_pb.js";
import { resealAfterChange } from "./recovery_secrets.js";
import { bool, int, isObject, list, MalformedAnswer, optional, str } from "./wire.js";

export interface TwoFactorStatus {
  enabled: boolean;
  /** Enrolment started, not confirmed yet. */
  pending: boolean;
  recoveryCodesLeft: number;
}

export interface Enrolment {
  /** Base32, for authenticators that take it typed. */
  secret: string;
  /** otpauth://totp/... */
  uri: string;
}

export async function twoFactorStatus(api: RelayApi): Promise<TwoFactorStatus> {
  const data = await api.request("GET", "/v1/accounts/me/2fa");
  const what = "second factor answer";
  return { enabled: bool(data, "enabled", what), pending: bool(data, "pending", what),
    recoveryCodesLeft: int(data, "recovery_codes_left", what, 0, 1000) };
}

/** Start enrolling an authenticator: its secret, to type or scan. */
export async function beginTwoFactor(api: RelayApi): Promise<Enrolment> {
  const data = await api.request("POST", "/v1/accounts/me/2fa");
  const what = "enrolment answer";
  const secret = str(data, "secret", what, 128);
  const uri = str(data, "uri", what, 1024);
  if (!/^[A-Z2-7]+=*$/.test(secret) || !uri.startsWith("otpauth://totp/")) throw new MalformedAnswer(what);
  return { secret, uri };
}

/**
 * Confirm enrolment with a first 6-digit code; the recovery codes, shown once.
 * @throws RangeError not 6 digits. @throws RelayError 403 a wrong code, 409 no enrolment.
 */
export async function confirmTwoFactor(api: RelayApi, code: string): Promise<string[]> {
  const digits = code.replace(/\s/g, "");
  if (!/^[0-9]{6}$/.test(digits)) throw new RangeError("the code is the 6 digits your authenticator shows");
  return recoveryCodes(await api.request("POST", "/v1/accounts/me/2fa/confirm", { code: digits }));
}

function recoveryCodes(data: unknown): string[] {
  return list(data, "recovery_codes", "recovery codes answer", 100).map((c) => {
    if (typeof c !== "string" || c.length > 64) throw new MalformedAnswer("recovery codes answer");
    return c;
  });
}

/**
 * New recovery codes, shown once; the old ones stop working. Protected: the relay asks
 * for a code (the api's second-factor prompt, ./second_factor.ts).
 * @throws RelayError 403 second_factor_required (cancelled), 409 no second factor, 429.
 */
export async function newRecoveryCodes(api: RelayApi): Promise<string[]> {
  return recoveryCodes(await api.request("POST", "/v1/accounts/me/2fa/recovery-codes"));
}

/**
 * Turn the second factor off (its secret and recovery codes are deleted on the relay).
 * Protected as {@link newRecoveryCodes}.
 */
export async function disableTwoFactor(api: RelayApi): Promise<void> {
  await api.request("DELETE", "/v1/accounts/me/2fa");
}

/** One device as the relay holds it (days since 1970-01-01, UTC). */
export interface DeviceHeld {
  deviceId: number;
  name: string;
  createdDay: number;
  lastSeenDay: number;
  queuedMessages: number;
  queuedBytes: number;
  oneTimePrekeys: number;
  kyberPrekeys: number;
}

/** What the relay holds about the account (GET /v1/accounts/me/privacy). */
export interface Privacy {
  accountId: string;
  username: string;
  createdDay: number;
  devices: DeviceHeld[];
  historyEntries: number;
  historyBytes: number;
  serverHistory: boolean;
  twoFactorEnabled: boolean;
  twoFactorRecoveryCodes: number;
  attachments: string;
  retention: { queuedMessageDays: number; attachmentDays: number; idleDeviceDays: number; historyDays: number | undefined };
  audit: { at: number; deviceId: number | undefined; event: string }[];
}

const BIG = Number.MAX_SAFE_INTEGER;

export async function privacy(api: RelayApi): Promise<Privacy> {
  const data = await api.request("GET", "/v1/accounts/me/privacy");
  const what = "privacy answer";
  const count = (o: unknown, k: string) => int(o, k, what, 0, BIG);
  const retention = isObject(data) ? data.retention : undefined;
  return {
    accountId: str(data, "account_id", what, 64),
    username: optional(data, "username", what, (o, k) => str(o, k, what, 64)) ?? "",
    createdDay: count(data, "created_day"),
    devices: list(data, "devices", what, 127).map((d) => ({
      deviceId: int(d, "device_id", what, 1, 127),
      name: optional(d, "name", what, (o, k) => str(o, k, what, 200)) ?? "",
      createdDay: count(d, "created_day"), lastSeenDay: count(d, "last_seen_day"),
      queuedMessages: count(d, "queued_messages"), queuedBytes: count(d, "queued_bytes"),
      oneTimePrekeys: count(d, "one_time_prekeys"), kyberPrekeys: count(d, "kyber_prekeys"),
    })),
    historyEntries: count(data, "history_entries"),
    historyBytes: count(data, "history_bytes"),
    serverHistory: bool(data, "server_history", what),
    twoFactorEnabled: bool(data, "two_factor_enabled", what),
    twoFactorRecoveryCodes: count(data, "two_factor_recovery_codes"),
    attachments: str(data, "attachments", what, 1000),
    retention: {
      queuedMessageDays: count(retention, "queued_message_days"),
      attachmentDays: count(retention, "attachment_days"),
      idleDeviceDays: count(retention, "idle_device_days"),
      historyDays: optional(retention, "history_days", what, (o, k) => count(o, k)),
    },
    audit: list(data, "audit", what, 1000).map((e) => ({
      at: count(e, "at"),
      deviceId: optional(e, "device_id", what, (o, k) => int(o, k, what, 1, 127)),
      event: str(e, "event", what, 64),
    })),
  };
}

/** A day number (days since 1970-01-01, UTC) as YYYY-MM-DD. */
export function dayText(day: number): string {
  return new Date(day * 86_400_000).toISOString().slice(0, 10);
}

/**
 * Delete the history the relay stores for the account and turn server history off, as
 * the SDK's `set_server_history(False)` does: this browser stops recording (./history.ts),
 * the relay deletes every entry, and our other devices are told (SyncMessage.history_keys with history_off) so that they stop
 * uploading. A device that cannot be reached now gets it from its queue.
 */
export async function deleteServerHistory(client: Client): Promise<void> {
  // Off here first (the upload queue goes too), so nothing is uploaded after the deletion.
  await client.store.transaction(() => history.adopt(client.store, undefined, false));
  await client.api.request("DELETE", "/v1/history");
  const content = create(ContentSchema, { body: { case: "sync", value: {
    body: { case: "historyKeys", value: { historyOff: true } } } } });
  await client.outbox.deliver(client.accountId, encodeContent(content), Date.now());
  await resealAfterChange(client); // a restore then finds history off
}

/** The largest export we take (the relay lists at most 100,000 audit events). */
const MAX_EXPORT = 64 * 1024 * 1024;

/**
 * The account's server-side data as the relay exports it: a JSON document
 * (`"format": "cipherpost-server-data"`), returned as the relay's bytes, to save as a file.
 * @throws MalformedAnswer not such a document.
 */
export async function exportServerData(api: RelayApi): Promise<Uint8Array> {
  const data = await api.requestBytes("GET", "/v1/accounts/me/export", true, MAX_EXPORT, 120_000);
  let parsed: unknown;
  try {
    parsed = data === undefined ? undefined : JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(data));
  } catch {
    parsed = undefined;
  }
  if (data === undefined || !isObject(parsed) || parsed.format !== "cipherpost-server-data") {
    throw new MalformedAnswer("export answer");
  }
  return data;
}

/**
 * Delete the account and everything the relay holds of it (every device's token stops
 * working), then stop this client and close its store: the caller deletes the local
 * database. Protected by the second factor.
 * @throws RelayError 403 second_factor_required (cancelled): nothing was deleted.
 */
export async function deleteAccount(client: Client): Promise<void> {
  await client.api.request("DELETE", "/v1/accounts/me");
  client.stop();
  client.store.kv.close();
}
