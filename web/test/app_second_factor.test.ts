/** The second factor on protected requests (src/app/second_factor.ts): asked only after a
 * 403 second_factor_required, asked again after a refused code with the reason, and the
 * relay's refusal kept when the user cancels or no prompt is set. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { RelayError } from "../src/app/api.js";
import {
  describeAction, normalizeCode, REFUSED_CODE, SECOND_FACTOR_HEADER, withSecondFactor, type SecondFactorRequest,
} from "../src/app/second_factor.js";

const required = () => new RelayError(403, "second_factor_required", "needs a code", {});
const invalid = () => new RelayError(403, "second_factor_invalid", "wrong code", {});

/** A relay that wants `good` (once) on every request. */
function relay(good: string) {
  const sent: (string | undefined)[] = [];
  let used = false;
  const send = async (headers: Record<string, string>) => {
    const code = headers[SECOND_FACTOR_HEADER];
    sent.push(code);
    if (code === undefined) throw required();
    if (code !== good || used) throw invalid();
    used = true;
    return "done";
  };
  return { sent, send };
}

describe("second factor", () => {
  test("codes are six digits or a recovery code", () => {
    assert.equal(normalizeCode(" 123 456 "), "123456");
    assert.equal(normalizeCode("ABCD-efgh-2345-6777"), "abcdefgh23456777");
    assert.throws(() => normalizeCode("12345"), RangeError);
    assert.throws(() => normalizeCode("abcd-efgh-1234-5678"), RangeError); // 1 and 8 are not base32
  });

  test("the prompt names the action", () => {
    assert.equal(describeAction("DELETE", "/v1/accounts/me"), "Deleting your account");
    assert.equal(describeAction("POST", "/v1/recovery/passphrase/open"), "Recovering your account");
    assert.equal(describeAction("PUT", "/v1/recovery/passphrase"), "Changing your recovery key or passphrase");
    assert.equal(describeAction("GET", "/v1/somewhere"), "This action");
  });

  test("no prompt before the relay asks, then retry with the code", async () => {
    const r = relay("654321");
    const asked: SecondFactorRequest[] = [];
    const prompts = ["111111", "12", "654321"];
    const out = await withSecondFactor(async (q) => { asked.push(q); return prompts.shift(); },
      "POST", "/v1/devices/link-codes", r.send);
    assert.equal(out, "done");
    assert.deepEqual(r.sent, [undefined, "111111", "654321"]); // "12" never reached the relay
    assert.deepEqual(asked.map((q) => q.action), Array(3).fill("Linking a new device"));
    assert.equal(asked[0]!.refused, undefined);
    assert.equal(asked[1]!.refused, REFUSED_CODE);
    assert.match(asked[2]!.refused!, /6 digits/);
  });

  test("a replayed code is refused like a wrong one", async () => {
    const r = relay("654321");
    const prompts = ["654321", "654321", undefined];
    await withSecondFactor(async () => prompts.shift(), "DELETE", "/v1/accounts/me", r.send);
    await assert.rejects(withSecondFactor(async () => prompts.shift(), "DELETE", "/v1/accounts/me", r.send),
      (e: unknown) => e instanceof RelayError && e.code === "second_factor_required");
  });

  test("other errors and no prompt pass through", async () => {
    await assert.rejects(withSecondFactor(undefined, "DELETE", "/v1/accounts/me", relay("1").send),
      (e: unknown) => e instanceof RelayError && e.code === "second_factor_required");
    let asked = 0;
    await assert.rejects(withSecondFactor(async () => { asked += 1; return "123456"; }, "GET", "/v1/x", async () => {
      throw new RelayError(429, "rate_limited", "slow down", {});
    }), (e: unknown) => e instanceof RelayError && e.status === 429);
    assert.equal(asked, 0);
  });
});
