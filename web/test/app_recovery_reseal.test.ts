/** Sealing the recovery blobs again (src/app/recovery_secrets.ts resealRecovery) never puts
 * back a secret another device replaced: the reseal says so, and on `recovery_changed`
 * the browser forgets its stale copy; any other failure keeps it for the next try. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { systemRandom } from "../src/protocol/bytes.js";
import { IdentityKeyPair } from "../src/protocol/keys.js";
import { RelayError } from "../src/app/api.js";
import type { Client } from "../src/app/client.js";
import { DEFAULT_POLICY, newDeviceBody } from "../src/app/keys.js";
import {
  heldSecrets, newRecoveryKey, resealRecovery, saveRecoveryKey, setRecoveryPassphrase,
} from "../src/app/recovery_secrets.js";
import { TEST_PARAMS } from "../src/app/store/crypto.js";
import { DeviceStore } from "../src/app/store/device.js";
import { MemoryKv } from "../src/app/store/kv.js";
// strength.js as the page loads it: zxcvbn for setRecoveryPassphrase's check
import "../src/strength/main.js";

interface Call { path: string; body: Record<string, unknown> }

async function withBothSecrets() {
  const store = await DeviceStore.create(new MemoryKv(), "pw", TEST_PARAMS);
  await store.transaction(() => newDeviceBody(store, IdentityKeyPair.generate(systemRandom), 1234, 1_000,
    { ...DEFAULT_POLICY, oneTimeBatch: 1, kyberBatch: 1 }));
  store.ownAccountId = "aaaaaaaa-0000-4000-8000-000000000001";
  const calls: Call[] = [];
  let answer: (call: Call) => void = () => undefined;
  const client = {
    accountId: store.ownAccountId, deviceId: 1, username: "alice", store,
    api: { request: async (_method: string, path: string, body: Record<string, unknown>) => {
      const call = { path, body };
      calls.push(call);
      answer(call);
    } },
  } as unknown as Client;
  await saveRecoveryKey(client, newRecoveryKey().key);
  await setRecoveryPassphrase(client, "seven quiet herons fold the amber ledger at dusk", TEST_PARAMS);
  calls.length = 0;
  return { client, calls, answerWith: (f: (call: Call) => void) => { answer = f; } };
}

describe("resealing the recovery blobs", () => {
  test("a reseal is marked as one; a first save or a change is not", async () => {
    const { client, calls } = await withBothSecrets();
    assert.equal(await resealRecovery(client), 2);
    assert.deepEqual(calls.map((c) => [c.path, c.body.reseal]),
      [["/v1/recovery", true], ["/v1/recovery/passphrase", true]]);
    calls.length = 0;
    await saveRecoveryKey(client, newRecoveryKey().key);
    assert.equal(calls[0]!.body.reseal, undefined);
  });

  test("recovery_changed: the stale copy is forgotten, the other secret still sealed", async () => {
    const { client, calls, answerWith } = await withBothSecrets();
    answerWith((call) => {
      if (call.path === "/v1/recovery") throw new RelayError(409, "recovery_changed", "replaced", {});
    });
    assert.equal(await resealRecovery(client), 1);
    assert.deepEqual(await heldSecrets(client), { key: false, passphrase: true });
    calls.length = 0;
    assert.equal(await resealRecovery(client), 1); // the forgotten key is not sent again
    assert.deepEqual(calls.map((c) => c.path), ["/v1/recovery/passphrase"]);
  });

  test("any other failure keeps the secrets for the next reseal", async () => {
    const { client, answerWith } = await withBothSecrets();
    answerWith(() => { throw new RelayError(409, "lookup_id_taken", "taken", {}); });
    await assert.rejects(resealRecovery(client), RelayError);
    answerWith(() => { throw new RelayError(503, "unavailable", "busy", {}); });
    await assert.rejects(resealRecovery(client), RelayError);
    assert.deepEqual(await heldSecrets(client), { key: true, passphrase: true });
  });
});
