/**
 * Sending (docs/spec/README.md §5): encrypt for every device of an account, send over the
 * WebSocket (or HTTP when it is down), and act on the relay's 409/410 answers by fetching
 * bundles for missing and re-installed devices and dropping sessions of extra ones, then
 * retrying. Mirrors cipherpost.client.outbox.
 *
 * To a contact whose profile key we hold, the ciphertexts go sealed
 * (docs/spec/sealed-sender.md), falling back to an identified send of the same
 * ciphertexts when the relay refuses the sealed one (401: a stale access key, 403: a
 * device that cannot open sealed envelopes, 429: the recipient's sealed budget is spent)
 * or no sender certificate can be had. Copies to our own devices are always identified.
 *
 * Every encryption commits the advanced sessions before the request leaves, so a message
 * key is never used twice even when a request fails and is retried.
 */

import { ProtocolAddress } from "../protocol/address.js";
import { UntrustedIdentity } from "../protocol/errors.js";
import type { SenderCertificate } from "../protocol/certificates.js";
import type { PreKeyBundle } from "../protocol/prekeys.js";
import { fromHex, systemRandom, toHex } from "../protocol/bytes.js";
import { SENDERKEY_TYPE } from "../protocol/messages.js";
import { createDistributionMessage, groupEncrypt } from "../protocol/sender_keys.js";
import { encrypt, hasSession, processPreKeyBundle } from "../protocol/session.js";
import { formatUuid } from "../protocol/uuid.js";
import { create } from "@bufbuild/protobuf";
import { encodeContent } from "./content.js";
import { Group } from "./groups.js";
import { ContentSchema } from "./proto/cipherpost/app/v1/app_pb.js";
import { RelayError, RelayUnavailable, type RelayApi, type Outgoing } from "./api.js";
import * as sealed from "./sealed.js";
import { SocketLost, type RelaySocket } from "./socket.js";
import type { DeviceStore } from "./store/device.js";
import { fromBase64, MalformedAnswer, toBase64 } from "./wire.js";

export const MAX_SEND_ATTEMPTS = 5;
/** After a 403 (a device that cannot open sealed envelopes), sends to that account stay
 * identified this long (ms) before sealed is tried again. */
export const IDENTIFIED_AFTER_REFUSAL_MS = 3600 * 1000;
/** After a 429 on a sealed send, sends to that account stay identified this long (ms). */
export const IDENTIFIED_AFTER_LIMIT_MS = 60 * 1000;

/** The contact's identity key changed and the user has not accepted it (spec §7). */
export class IdentityNotTrusted extends Error {
  override readonly name = "IdentityNotTrusted";
  constructor(readonly account: string) {
    super("this contact's safety number changed: accept the new one before sending");
  }
}

/** The device list kept changing under us. */
export class SendFailed extends Error {
  override readonly name = "SendFailed";
}

/** A device list of a 409/410 answer; anything but small integers is refused. */
function deviceList(body: Record<string, unknown>, key: string): number[] {
  const value = body[key];
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.length > 127
    || !value.every((d) => typeof d === "number" && Number.isInteger(d) && d >= 1 && d <= 127)) {
    throw new MalformedAnswer(`send answer: ${key}`);
  }
  return value as number[];
}

export class Outbox {
  socket: RelaySocket | undefined;
  /** Send sealed to contacts whose profile key we hold (on by default, as in the SDK). */
  sealedSender = true;
  readonly #identifiedUntil = new Map<string, number>();
  /** Awaited after a sealed send was refused with 401 and went identified (the client checks the relay still holds our own access key). */
  afterSealedRefused: (() => Promise<void>) | undefined;

  constructor(private readonly store: DeviceStore, private readonly api: RelayApi,
    readonly accountId: string, readonly deviceId: number, private readonly clock: () => number) {}

  /**
   * Encrypt `plaintext` for every device of `account` (our own account: every other
   * device) and send; repair the device list on 409/410 and retry. With `onlyDevice` the
   * other devices get `filler` (the relay takes only whole device lists). `record` runs
   * in the unit that encrypts (the message and its sessions are stored together).
   * Returns the devices it was delivered to.
   */
  async deliver(account: string, plaintext: Uint8Array, timestamp: number,
    options: { onlyDevice?: number; filler?: Uint8Array; record?: () => Promise<void> } = {}): Promise<number[]> {
    let record = options.record;
    for (let attempt = 0; attempt < MAX_SEND_ATTEMPTS; attempt++) {
      const devices = await this.devicesFor(account);
      if (devices.length === 0 || (options.onlyDevice !== undefined && !devices.includes(options.onlyDevice))) {
        if (record !== undefined) await this.store.transaction(record);
        return [];
      }
      const messages = await this.store.transaction(async () => {
        if (record !== undefined) await record();
        const out: Outgoing[] = [];
        for (const device of devices) {
          const address = new ProtocolAddress(account, device);
          const body = options.onlyDevice === undefined || options.onlyDevice === device ? plaintext : options.filler!;
          let message;
          try {
            message = await encrypt(this.store, address, body, { now: Math.floor(this.clock() / 1000),
              localAddress: new ProtocolAddress(this.accountId, this.deviceId) }); // field 6 of PreKey messages
          } catch (error) {
            if (error instanceof UntrustedIdentity && account !== this.accountId) throw new IdentityNotTrusted(account);
            throw error;
          }
          const session = await this.store.loadSession(address);
          out.push({ device_id: device, registration_id: session!.current!.remoteRegistrationId,
            type: message.messageType, content: toBase64(message.serialized) });
        }
        return out;
      });
      record = undefined;
      try {
        await this.sendToAccount(account, timestamp, messages);
        return devices;
      } catch (error) {
        if (!(error instanceof RelayError) || !(await this.repair(account, error))) throw error;
      }
    }
    throw new SendFailed("the device list kept changing; try again");
  }

  /**
   * One sender-key ciphertext of `plaintext` for every device of every other member of
   * `group`; our sender key goes first (over 1:1 sessions) to member devices that lack
   * it. A member's changed device list retires the key and the message is encrypted
   * again under a new one (docs/spec/groups.md). Mirrors Outbox.send_group_content.
   * `reached` runs after the relay took the message for a member (before the next one's).
   */
  async sendGroup(group: Group, plaintext: Uint8Array, timestamp: number,
    reached?: (account: string) => Promise<void>): Promise<void> {
    const me = new ProtocolAddress(this.accountId, this.deviceId);
    const others = [...group.members.keys()].filter((a) => a !== this.accountId).sort();
    for (let attempt = 0; attempt < MAX_SEND_ATTEMPTS; attempt++) {
      const distribution = await this.distributeSenderKey(group, others);
      const ciphertext = await this.store.transaction(() => groupEncrypt(this.store, me, distribution, plaintext));
      let changed = false;
      for (const account of others) {
        const messages: Outgoing[] = [];
        for (const device of await this.store.sessionDevices(account)) {
          const session = await this.store.loadSession(new ProtocolAddress(account, device));
          messages.push({ device_id: device, registration_id: session?.current?.remoteRegistrationId ?? 0,
            type: SENDERKEY_TYPE, content: toBase64(ciphertext) });
        }
        try {
          await this.sendToAccount(account, timestamp, messages, group.id);
          await reached?.(account);
        } catch (error) {
          if (!(error instanceof RelayError) || !(await this.repair(account, error))) throw error;
          await this.store.transaction(() => this.store.put(`gdist:${toHex(group.id)}`, null));
          changed = true;
          break;
        }
      }
      if (!changed) return;
    }
    throw new SendFailed("the group's device lists kept changing; try again");
  }

  /** Our current sending chain for the group, its key sent to every member device that lacks it. */
  async distributeSenderKey(group: Group, others: string[]): Promise<string> {
    const key = `gdist:${toHex(group.id)}`;
    let state = await this.store.getJson<{ id: string; sent: Record<string, number[]> }>(key);
    if (state === undefined) {
      state = { id: formatUuid(systemRandom(16).map((b, i) => (i === 6 ? (b & 0x0f) | 0x40 : i === 8 ? (b & 0x3f) | 0x80 : b))),
        sent: {} };
      const fresh = state;
      await this.store.transaction(() => this.store.putJson(key, fresh));
    }
    const me = new ProtocolAddress(this.accountId, this.deviceId);
    const id = state.id;
    const skdm = await this.store.transaction(() => createDistributionMessage(this.store, me, id));
    const content = encodeContent(create(ContentSchema, { senderKeyDistribution: skdm.serialized, senderKeyGroup: group.id }));
    for (const account of others) {
      const devices = await this.devicesFor(account);
      const sent = new Set(state.sent[account] ?? []);
      if (devices.every((d) => sent.has(d))) continue;
      const reached = await this.deliver(account, content, this.clock());
      state.sent[account] = [...new Set([...sent, ...reached])];
      const snapshot = state;
      await this.store.transaction(() => this.store.putJson(key, snapshot));
    }
    return id;
  }

  /**
   * Send ciphertexts for the devices of `account`: sealed when we may (see the module
   * comment), else, or when the relay refuses the sealed send, identified.
   * @throws RelayError 409/410 (for the caller to repair), or any other refusal.
   */
  async sendToAccount(account: string, timestamp: number, messages: Outgoing[], groupId?: Uint8Array): Promise<void> {
    const access = await this.#sealedAccess(account);
    const sealedMessages = access === undefined ? undefined : await this.#seal(account, access.certificate, messages, groupId);
    let keyRefused = false;
    if (access !== undefined && sealedMessages !== undefined) {
      try {
        await this.api.sendSealed(account, access.key, sealedMessages);
        return;
      } catch (error) {
        if (!(error instanceof RelayError)) throw error;
        if (error.status === 401) {
          // The contact changed its profile key (or turned sealed sends off): identified
          // until its next message shares the new one.
          await this.store.transaction(() => sealed.forgetContactProfileKey(this.store, account));
          keyRefused = true;
        } else if (error.status === 403) {
          this.#identifiedUntil.set(account, this.clock() + IDENTIFIED_AFTER_REFUSAL_MS);
        } else if (error.status === 429) {
          // The recipient's sealed budget is spent, maybe by someone else holding its
          // access key: identified sends have budgets per sender pair.
          this.#identifiedUntil.set(account, this.clock() + IDENTIFIED_AFTER_LIMIT_MS);
        } else {
          throw error;
        }
        console.info("cipherpost: sealed send refused (%d): sending identified", error.status);
      }
    }
    await this.sendRequest(account, timestamp, messages);
    if (keyRefused) await this.afterSealedRefused?.();
  }

  /** The contact's access key and our sender certificate when this send may go sealed. */
  async #sealedAccess(account: string): Promise<{ key: Uint8Array; certificate: SenderCertificate } | undefined> {
    if (!this.sealedSender || account === this.accountId) return undefined;
    if ((this.#identifiedUntil.get(account) ?? 0) > this.clock()) return undefined;
    const profileKey = await sealed.contactProfileKey(this.store, account);
    if (profileKey === undefined) return undefined;
    try {
      const certificate = await sealed.senderCertificate(this.store, this.clock(), () => this.api.senderCertificate(),
        this.accountId, this.deviceId);
      return { key: await sealed.accessKey(profileKey), certificate };
    } catch (error) {
      if (error instanceof sealed.SealedError || error instanceof RelayError || error instanceof RelayUnavailable
        || error instanceof MalformedAnswer) {
        console.info("cipherpost: no sender certificate (%s): sending identified", (error as Error).name);
        return undefined;
      }
      throw error;
    }
  }

  /** The identified ciphertexts, each sealed to the device's identity key (undefined when one is unknown). */
  async #seal(account: string, certificate: SenderCertificate, messages: Outgoing[],
    groupId: Uint8Array | undefined): Promise<Outgoing[] | undefined> {
    const identity = this.store.getIdentityKeyPair();
    const out: Outgoing[] = [];
    for (const message of messages) {
      const recipient = await this.store.getIdentity(new ProtocolAddress(account, message.device_id));
      if (recipient === undefined) return undefined;
      const contents = fromBase64(message.content);
      out.push({ ...message, type: sealed.SEALED_TYPE,
        content: toBase64(await sealed.sealMessage(identity, recipient, certificate, message.type, contents, groupId)) });
    }
    return out;
  }

  /** Over the open WebSocket when there is one (cheaper for the relay), else HTTP. */
  async sendRequest(account: string, timestamp: number, messages: Outgoing[]): Promise<void> {
    const socket = this.socket;
    if (socket !== undefined && socket.open) {
      try {
        await socket.send(account, timestamp, messages);
        return;
      } catch (error) {
        if (!(error instanceof SocketLost)) throw error;
        // the same ciphertexts again over HTTP: a repeat is dropped as a duplicate
      }
    }
    await this.api.send(account, timestamp, messages);
  }

  /** Act on 409 (missing/extra devices) or 410 (stale devices); false for other errors. */
  async repair(account: string, error: RelayError): Promise<boolean> {
    if (error.status === 409) {
      const extra = deviceList(error.body, "extra_devices");
      for (const device of extra) {
        await this.store.transaction(() => this.store.deleteSession(new ProtocolAddress(account, device)));
      }
      if (extra.length > 0) await this.rotateGroupsWith(account);
      for (const device of deviceList(error.body, "missing_devices")) {
        if (!(account === this.accountId && device === this.deviceId)) await this.startSession(account, device);
      }
      return true;
    }
    if (error.status === 410) {
      for (const device of deviceList(error.body, "stale_devices")) {
        await this.store.transaction(() => this.store.deleteSession(new ProtocolAddress(account, device)));
        await this.startSession(account, device);
      }
      await this.rotateGroupsWith(account);
      return true;
    }
    return false;
  }

  /**
   * A device of `account` went away or was replaced, whichever send found out: every
   * group it shares with us starts a new sender-key chain before our next group message,
   * so the old device cannot read on (docs/spec/groups.md). Mirrors Outbox.rotate_groups_with.
   */
  async rotateGroupsWith(account: string): Promise<void> {
    if (account === this.accountId) return; // our own devices never hold our sending chains
    await this.store.transaction(async () => {
      for (const [key, state] of await this.store.scanJson<string>("group:")) {
        if (Group.fromBytes(fromHex(state)).isMember(account)) await this.store.put(`gdist:${key.slice(6)}`, null);
      }
    });
  }

  /** The devices to encrypt for, starting sessions where none is usable. */
  async devicesFor(account: string): Promise<number[]> {
    let devices = await this.store.sessionDevices(account);
    if (account === this.accountId) {
      if (devices.length === 0 && (await this.store.getJson("own_devices_checked")) === undefined) {
        devices = (await this.api.devices()).filter((d) => d !== this.deviceId);
        await this.store.transaction(() => this.store.putJson("own_devices_checked", true));
      }
      devices = devices.filter((d) => d !== this.deviceId);
    } else if (devices.length === 0) {
      await this.startSessions(await this.api.bundles(account), account);
      devices = await this.store.sessionDevices(account);
    }
    const now = Math.floor(this.clock() / 1000);
    for (const device of devices) {
      if (!(await hasSession(this.store, new ProtocolAddress(account, device), now))) await this.startSession(account, device);
    }
    return (await this.store.sessionDevices(account)).filter((d) => account !== this.accountId || d !== this.deviceId);
  }

  async startSession(account: string, device: number): Promise<void> {
    let bundles: PreKeyBundle[];
    try {
      bundles = await this.api.bundles(account, device);
    } catch (error) {
      if (error instanceof RelayError && error.status === 404) {
        await this.store.transaction(() => this.store.deleteSession(new ProtocolAddress(account, device)));
        return;
      }
      throw error;
    }
    await this.startSessions(bundles, account);
  }

  /**
   * Sessions from fetched bundles. A bundle under another identity key than the one we
   * know records the change (the safety number shows it) and stops here.
   * @throws IdentityNotTrusted the contact's key changed and the user has not accepted it.
   */
  async startSessions(bundles: PreKeyBundle[], account: string): Promise<void> {
    for (const bundle of bundles) {
      if (account === this.accountId && bundle.deviceId === this.deviceId) continue;
      const address = new ProtocolAddress(account, bundle.deviceId);
      try {
        await this.store.transaction(() => processPreKeyBundle(this.store, address, bundle,
          { now: Math.floor(this.clock() / 1000) }));
      } catch (error) {
        if (!(error instanceof UntrustedIdentity)) throw error;
        if (account !== this.accountId) {
          await this.store.transaction(() => this.store.saveIdentity(address, bundle.identityKey));
        }
        throw new IdentityNotTrusted(account);
      }
    }
  }
}
