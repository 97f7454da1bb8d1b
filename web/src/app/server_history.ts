/**
 * Turning server-stored history on from this browser, as the SDK's
 * `Client.set_server_history(True)` (`cipherpost history on`) does: the account's history
 * keys (ours if we hold them, else a new naming key and first epoch, the SDK's
 * `Keys.new`), every message and group state this browser stores queued for upload
 * (the SDK's `backfill`), and the keys sent to the account's other devices
 * (SyncMessage.history_keys), which then record what they store too. Turning it off is
 * ./account.ts's deleteServerHistory (the relay's copy is deleted, the others told).
 */

import { create } from "@bufbuild/protobuf";

import { fromHex, systemRandom } from "../protocol/bytes.js";
import type { Client } from "./client.js";
import { encodeContent, u64 } from "./content.js";
import { Group, GroupChangeRejected } from "./groups.js";
import * as history from "./history.js";
import type { StoredMessage } from "./model.js";
import { messageChanges } from "./edits.js";
import {
  ContentSchema, DataMessageSchema, HistoryKeysSchema, type DataMessage, type HistoryKeys,
} from "./proto/cipherpost/app/v1/app_pb.js";
import { resealAfterChange } from "./recovery_secrets.js";
import type { DeviceStore } from "./store/device.js";

/** Whether this browser keeps the account's history on the relay. */
export async function serverHistoryOn(store: DeviceStore): Promise<boolean> {
  return (await history.enabledKeys(store)) !== undefined;
}

/** A new naming key and a first epoch (a random number 1 … 2^32 - 1, as the SDK picks). */
function newKeys(now: number): HistoryKeys {
  const number = 1 + (new DataView(systemRandom(4).buffer).getUint32(0) % 0xffffffff);
  return create(HistoryKeysSchema, { idKey: systemRandom(32),
    epochs: [{ number, key: systemRandom(32), startedAt: u64(now) }] });
}

/** The DataMessage a stored message was made from, as far as the history keeps it. */
export function dataOf(m: StoredMessage): DataMessage {
  return create(DataMessageSchema, {
    timestamp: u64(m.timestamp), text: m.text, expireTimer: m.expireTimer ?? 0,
    group: m.conversation.startsWith("group:") ? { id: fromHex(m.conversation.slice(6)) } : undefined,
    attachments: (m.attachments ?? []).map((a) => ({ id: a.id, key: fromHex(a.key), digest: fromHex(a.digest),
      size: u64(a.size), contentType: a.contentType, fileName: a.fileName, caption: a.caption })),
  });
}

/**
 * Keep the account's history on the relay from now on, with what this browser holds
 * already; the number of stored messages queued. Sent to our other devices through the
 * outbox (a device offline now gets it from its queue).
 */
export async function turnServerHistoryOn(client: Client, now = Date.now()): Promise<number> {
  const store = client.store;
  let queued = 0;
  const keys = await store.transaction(async () => {
    const held = (await history.provisionFields(store)).historyKeys ?? newKeys(now);
    await history.adopt(store, held, true);
    for (const [, message] of await store.scanJson<StoredMessage>("msg:")) {
      await history.recordMessage(store, message.conversation, message.author, message.authorDevice,
        message.receivedAt, message.outgoing, dataOf(message));
      for (const { author, data } of await messageChanges(store, message)) {
        await history.recordChange(store, message.conversation, author, 0, now, data);
      }
      queued += 1;
    }
    for (const [, state] of await store.scanJson<string>("group:")) { // the SDK's backfill records them too
      let group: Group;
      try {
        group = Group.fromBytes(fromHex(state));
      } catch (error) {
        if (error instanceof GroupChangeRejected) continue; // not one to restore, nor to stop history for
        throw error;
      }
      await history.recordGroup(store, group);
    }
    return held;
  });
  const content = create(ContentSchema, { body: { case: "sync", value: {
    body: { case: "historyKeys", value: keys } } } });
  await client.outbox.deliver(client.accountId, encodeContent(content), now);
  await client.flushHistory();
  await resealAfterChange(client); // a restore then turns history on too, with the keys
  return queued;
}
