/** The interop peer: PEER.md's request rules, and that no input crashes it. */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, test } from "node:test";

import { Peer, serve, spqrFromEnvironment } from "../src/interop/peer.js";
import { PreKeySignalMessage, SignalMessage } from "../src/protocol/messages.js";
import { SpqrSettings } from "../src/protocol/spqr/ratchet.js";
import { loadVectors, pythonRandom, unb64 } from "./helpers.js";

const A = { name: "alice", device_id: 1 };
const B = { name: "bob", device_id: 1 };

describe("peer", () => {
  test("malformed requests get bad_request and the peer keeps serving", async () => {
    const peer = new Peer();
    assert.ok((await peer.handle({ id: 1, op: "create_actor", actor: A, registration_id: 7 }))["ok"]);
    assert.deepEqual(await peer.handleLine("this is not json"),
      { id: null, ok: false, error: { kind: "bad_request", message: "not a JSON object" } });
    assert.equal((await peer.handleLine("[1, 2]"))!["id"], null);
    assert.equal(await peer.handleLine("   "), undefined);
    const bad: Array<Record<string, unknown>> = [
      { op: "no_such_op" }, { op: "toString" }, { op: "__proto__" }, {},
      { op: "create_actor", actor: { name: "x", device_id: 0 }, registration_id: 1 },
      { op: "create_actor", actor: { name: "x", device_id: 128 }, registration_id: 1 },
      { op: "create_actor", actor: { name: "", device_id: 1 }, registration_id: 1 },
      { op: "create_actor", actor: { name: "y", device_id: 1 }, registration_id: 0 },
      { op: "create_actor", actor: { name: "y", device_id: 1 }, registration_id: 16381 },
      { op: "create_actor", actor: { name: "y", device_id: 1.5 }, registration_id: 3 },
      { op: "create_actor", actor: A, registration_id: 5 },
      { op: "encrypt", actor: { name: "ghost", device_id: 1 }, remote: A, plaintext: "" },
      { op: "encrypt", actor: A, remote: A, plaintext: "not base64!" },
      { op: "encrypt", actor: A, remote: A, plaintext: "abc" },
      { op: "decrypt", actor: A, remote: A, message_type: "carrier-pigeon", ciphertext: "" },
      { op: "generate_bundle", actor: A, signed_prekey_id: -1, kyber_prekey_id: 1, prekey_id: null },
      { op: "generate_bundle", actor: A, signed_prekey_id: 1, kyber_prekey_id: 2 ** 32, prekey_id: null },
      { op: "generate_bundle", actor: A, signed_prekey_id: 1, kyber_prekey_id: 2, prekey_id: null, kem: "rsa" },
      { op: "sender_key_distribution", actor: A, distribution_id: "nope" },
      { op: "process_bundle", actor: A, remote: A, bundle: "nope" },
      { op: "process_bundle", actor: A, remote: A, bundle: {} },
      { op: "trust", actor: A, remote: A },
      { op: "trust", actor: A, remote: A, identity_key: "AAAA" },
      { op: "fingerprint", actor: A, remote: B, local_id: "", remote_id: "" },
    ];
    for (const [index, request] of bad.entries()) {
      const response = await peer.handle({ id: index, ...request });
      assert.equal(response["ok"], false, JSON.stringify(request));
      assert.equal((response["error"] as { kind: string }).kind, "bad_request", JSON.stringify([request, response]));
      assert.equal(response["id"], index);
    }
    const session = await peer.handle({ id: 99, op: "has_session", actor: A, remote: A });
    assert.deepEqual(session, { id: 99, ok: true, has_session: false, session_version: null });
  });

  test("CIPHERPOST_PEER_SPQR picks the SPQR settings, off by default, as for the Python peer", async () => {
    assert.equal(spqrFromEnvironment({}), SpqrSettings.OFF);
    assert.equal(spqrFromEnvironment({ CIPHERPOST_PEER_SPQR: "offered" }), SpqrSettings.OFFERED);
    assert.equal(spqrFromEnvironment({ CIPHERPOST_PEER_SPQR: "required" }), SpqrSettings.REQUIRED);
    assert.throws(() => spqrFromEnvironment({ CIPHERPOST_PEER_SPQR: "constructor" }), RangeError);
    // Two actors of a peer requiring SPQR: every message carries field 5; a peer with it
    // off refuses nothing of its own but sends none.
    for (const [spqr, field5] of [[SpqrSettings.REQUIRED, true], [SpqrSettings.OFF, false]] as const) {
      const peer = new Peer(undefined, undefined, spqr);
      await peer.handle({ id: 1, op: "create_actor", actor: A, registration_id: 7 });
      await peer.handle({ id: 2, op: "create_actor", actor: B, registration_id: 8 });
      const bundle = (await peer.handle({ id: 3, op: "generate_bundle", actor: B, signed_prekey_id: 1,
        kyber_prekey_id: 2, prekey_id: 3 }))["bundle"];
      assert.ok((await peer.handle({ id: 4, op: "process_bundle", actor: A, remote: B, bundle }))["ok"]);
      const sent = await peer.handle({ id: 5, op: "encrypt", actor: A, remote: B, plaintext: "aGk=" });
      const inner = PreKeySignalMessage.parse(unb64(sent["ciphertext"] as string)).message;
      assert.equal(inner.pqRatchet.length > 0, field5);
      const got = await peer.handle({ id: 6, op: "decrypt", actor: B, remote: A, message_type: "prekey",
        ciphertext: sent["ciphertext"] });
      assert.equal(got["plaintext"], "aGk=");
    }
  });

  test("protocol errors carry PEER.md kinds", async () => {
    const peer = new Peer();
    await peer.handle({ id: 1, op: "create_actor", actor: A, registration_id: 7 });
    const kind = async (request: Record<string, unknown>): Promise<string> =>
      ((await peer.handle({ id: 0, ...request }))["error"] as { kind: string }).kind;
    assert.equal(await kind({ op: "encrypt", actor: A, remote: B, plaintext: "" }), "no_session");
    assert.equal(await kind({ op: "decrypt", actor: A, remote: B, message_type: "whisper", ciphertext: "" }),
      "invalid_message");
    assert.equal(await kind({ op: "decrypt", actor: A, remote: B, message_type: "prekey", ciphertext: "RA==" }),
      "invalid_message");
    assert.equal(await kind({ op: "group_encrypt", actor: A, distribution_id: randomUUID(), plaintext: "" }),
      "no_sender_key");
  });

  test("random garbage never crashes it", async () => {
    const peer = new Peer();
    await peer.handle({ id: 1, op: "create_actor", actor: A, registration_id: 7 });
    const rng = pythonRandom(5);
    const ops = ["decrypt", "process_bundle", "group_decrypt", "process_sender_key_distribution", "trust",
      "compare_scannable"];
    for (let i = 0; i < 300; i++) {
      const blob = Buffer.from(rng(1 + (rng(1)[0]! % 120))).toString("base64");
      const op = ops[i % ops.length]!;
      const response = await peer.handle({
        id: i, op, actor: A, remote: B, sender: B, message_type: i % 2 ? "prekey" : "whisper", ciphertext: blob,
        skdm: blob, identity_key: blob, scanned: blob, local_id: blob, remote_id: blob,
        bundle: { registration_id: 1, device_id: 1, identity_key: blob, signed_prekey_id: 1, signed_prekey: blob,
          signed_prekey_signature: blob, kyber_prekey_id: 2, kyber_prekey: blob, kyber_prekey_signature: blob,
          prekey_id: null, prekey: null },
      });
      assert.equal(response["id"], i);
      if (response["ok"] === false) {
        assert.notEqual((response["error"] as { kind: string }).kind, "internal_error", JSON.stringify(response));
      }
    }
  });

  test("serve: one line per request, stops at quit", async () => {
    const lines = ['{"id":1,"op":"create_actor","actor":{"name":"a","device_id":1},"registration_id":5}', "",
      "garbage", '{"id":2,"op":"quit"}', '{"id":3,"op":"has_session"}'];
    async function* input(): AsyncGenerator<string> {
      yield* lines;
    }
    const out: string[] = [];
    assert.equal(await serve(input(), (line) => out.push(line)), 0);
    assert.equal(out.length, 3);
    assert.deepEqual(JSON.parse(out[2]!), { id: 2, ok: true });
  });
});

describe("libsignal-session.json (libsignal 0.90 initiating, replayed offline)", () => {
  test("libsignal's messages decrypt and our reply is byte-identical to Python's", async () => {
    const v = loadVectors("libsignal-session.json");
    const peer = new Peer(pythonRandom(v.seed));
    assert.ok((await peer.handle({ id: 1, op: "create_actor", actor: v.bob, registration_id: v.bob_registration_id }))["ok"]);
    const generated = await peer.handle({ id: 2, op: "generate_bundle", actor: v.bob, ...v.bundle_ids });
    assert.deepEqual(generated["bundle"], v.bundle);
    const decryptAll = async (messages: Array<Record<string, string>>): Promise<void> => {
      for (const m of messages) {
        const r = await peer.handle({ id: 3, op: "decrypt", actor: v.bob, remote: v.alice,
          message_type: m["message_type"], ciphertext: m["ciphertext"] });
        assert.ok(r["ok"], JSON.stringify(r));
        assert.equal(r["plaintext"], m["plaintext"]);
      }
    };
    await decryptAll(v.prekey_messages);
    const reply = await peer.handle({ id: 4, op: "encrypt", actor: v.bob, remote: v.alice,
      plaintext: v.python_reply.plaintext });
    assert.deepEqual([reply["message_type"], reply["ciphertext"]], [v.python_reply.message_type, v.python_reply.ciphertext]);
    await decryptAll(v.whisper_messages);
    const identity = await peer.handle({ id: 5, op: "identity", actor: v.bob, remote: v.alice });
    assert.equal(identity["identity_key"], v.alice_identity_key);
    // libsignal's first messages carried an SPQR field 5, which we ignored but MACed.
    const firstPreKey = PreKeySignalMessage.parse(unb64(v.prekey_messages[0].ciphertext));
    assert.ok(firstPreKey.message.pqRatchet.length > 0);
    assert.equal(SignalMessage.parse(unb64(v.whisper_messages[0].ciphertext)).pqRatchet.length, 0);
  });
});
