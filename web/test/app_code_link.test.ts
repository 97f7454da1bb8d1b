/** Typed-code linking (src/app/code_link.ts): the SAS, confirmation, sealed message,
 * commitment and message framing of the Python SDK's exchange. */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import { fromHex, toHex } from "../src/protocol/bytes.js";
import { KeyPair } from "../src/protocol/keys.js";
import { CodeLinkKeys, commitment, decodeStep, encodeStep, normalizeCode } from "../src/app/code_link.js";
import { LinkError } from "../src/app/linking.js";

const v = JSON.parse(readFileSync(new URL("./fixtures/code-link-python.json", import.meta.url), "utf8")) as Record<string, string>;
const get = (name: string): string => v[name]!;

describe("typed-code linking", () => {
  test("the new device derives the SDK's number, confirmation and sealing key", async () => {
    const pair = KeyPair.fromPrivate(fromHex(get("new_private")));
    assert.equal(toHex(pair.publicKey.serialize().slice(1)), get("new_public"));
    const keys = new CodeLinkKeys(pair, fromHex(get("existing_public")), fromHex(get("new_public")),
      fromHex(get("existing_public")), get("address"));
    assert.equal(keys.sas, get("sas"));
    assert.equal(toHex(keys.confirmTag()), get("confirm"));
    const message = await keys.open(fromHex(get("sealed")));
    assert.deepEqual([message.accountId, message.username], ["acct", "abby"]);
    const other = new CodeLinkKeys(pair, fromHex(get("existing_public")), fromHex(get("new_public")),
      fromHex(get("existing_public")), get("address") + "x");
    assert.notEqual(other.sas, keys.sas);
    await assert.rejects(other.open(fromHex(get("sealed"))), LinkError);
  });

  test("the commitment and the framing of each step", () => {
    assert.equal(toHex(commitment(fromHex(get("new_public")))), get("commitment"));
    assert.equal(toHex(encodeStep("publicKey", fromHex(get("existing_public")))), get("step_public_key"));
    assert.equal(toHex(decodeStep(fromHex(get("step_public_key")), "publicKey")), get("existing_public"));
    assert.throws(() => decodeStep(fromHex(get("step_public_key")), "confirm"), /out of place/);
    assert.throws(() => decodeStep(encodeStep("publicKey", new Uint8Array(31)), "publicKey"), /malformed/);
    assert.throws(() => decodeStep(Uint8Array.of(0xff), "publicKey"), LinkError);
  });

  test("a small-order key is refused", () => {
    const pair = KeyPair.fromPrivate(fromHex(get("new_private")));
    assert.throws(() => new CodeLinkKeys(pair, new Uint8Array(32), new Uint8Array(32), new Uint8Array(32), "a"), LinkError);
  });

  test("the existing device checks the confirmation and seals what the new device opens", async () => {
    const pair = KeyPair.fromPrivate(fromHex(get("new_private")));
    const keys = new CodeLinkKeys(pair, fromHex(get("existing_public")), fromHex(get("new_public")),
      fromHex(get("existing_public")), get("address"));
    keys.checkConfirm(fromHex(get("confirm")));
    assert.throws(() => keys.checkConfirm(new Uint8Array(32)), /does not verify/);
    const sealed = await keys.seal(await keys.open(fromHex(get("sealed"))));
    assert.equal((await keys.open(sealed)).username, "abby");
  });

  test("a typed code is read leniently, as the SDK's normalize_code", () => {
    assert.equal(normalizeCode("abcd-efgh"), "ABCDEFGH");
    assert.equal(normalizeCode(" o1il 2345 "), "01112345");
    for (const bad of ["ABCD-EFG", "ABCD-EFGHJ", "ABCD-EFGU", ""]) assert.throws(() => normalizeCode(bad), LinkError, bad);
  });
});
