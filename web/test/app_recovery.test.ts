/** Recovery (src/app/recovery.ts): the recovery key's written form and derived values are
 * the Python SDK's, typos are caught, and the relay's passphrase parameters are bounded. */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import { fromHex, toHex } from "../src/protocol/bytes.js";
import { deriveSecrets, formatKey, parseKey, RecoveryError, relayParams } from "../src/app/recovery.js";
import { DEFAULT_PARAMS } from "../src/app/store/crypto.js";

const vector = JSON.parse(readFileSync(new URL("./fixtures/recovery-python.json", import.meta.url), "utf8")) as {
  key: string; formatted: string; lookup_id: string; auth: string; seal_key: string };

describe("recovery", () => {
  test("the SDK's written form and derived values", () => {
    const key = fromHex(vector.key);
    assert.equal(formatKey(key), vector.formatted);
    assert.equal(toHex(parseKey(vector.formatted)), vector.key);
    const secrets = deriveSecrets(key);
    assert.deepEqual([toHex(secrets.lookupId), toHex(secrets.auth), toHex(secrets.sealKey)],
      [vector.lookup_id, vector.auth, vector.seal_key]);
  });

  test("spaces, dashes, case and O/I/L are forgiven; typos are not", () => {
    const compact = vector.formatted.replace(/ /g, "");
    assert.equal(toHex(parseKey(compact.toLowerCase().replace(/0/g, "o").replace(/1/g, "l"))), vector.key);
    assert.equal(toHex(parseKey(compact.match(/.{1,4}/g)!.join("-"))), vector.key);
    const typo = (compact[0] === "A" ? "B" : "A") + compact.slice(1);
    assert.throws(() => parseKey(typo), /typo/);
    assert.throws(() => parseKey(compact.slice(1)), RecoveryError);
    assert.throws(() => parseKey(compact.slice(1) + "U"), RecoveryError);
  });

  test("the relay's passphrase parameters: neither weaker than the floor nor costlier than the cap", () => {
    const salt = Buffer.alloc(16, 7).toString("base64");
    assert.deepEqual(relayParams({ params: "3,65536,2", salt }).params, DEFAULT_PARAMS);
    for (const params of ["2,65536,2", "3,32768,2", "13,65536,2", "3,524288,2", "3,65536,9", "x"]) {
      assert.throws(() => relayParams({ params, salt }), RecoveryError, params);
    }
    assert.throws(() => relayParams({ params: "3,65536,2", salt: Buffer.alloc(8).toString("base64") }), RecoveryError);
  });
});
