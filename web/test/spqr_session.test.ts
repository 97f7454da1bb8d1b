/**
 * SPQR wired into 1:1 sessions (spqr-digest §7, §8): field 5 and the salt, negotiation
 * between settings, compute-then-commit (also for archived states), REQUIRED refusing a
 * session without SPQR, and stored records with and without an SPQR state.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import { ProtocolAddress } from "../src/protocol/address.js";
import { systemRandom } from "../src/protocol/bytes.js";
import { DuplicatedMessage, InvalidMessage, NoSession } from "../src/protocol/errors.js";
import { IdentityKeyPair } from "../src/protocol/keys.js";
import { PreKeySignalMessage, SignalMessage } from "../src/protocol/messages.js";
import * as pb from "../src/protocol/protobuf.js";
import {
  DEFAULT_SPQR, decrypt, encrypt, hasSession, processPreKeyBundle, type CiphertextMessage,
} from "../src/protocol/session.js";
import { SpqrSettings } from "../src/protocol/spqr/ratchet.js";
import * as pqStorage from "../src/protocol/spqr/storage.js";
import { decodeFields } from "../src/protocol/spqr/wire.js";
import { PQ_RATCHET_FIELD, SessionRecord } from "../src/protocol/state.js";
import { InMemoryProtocolStore, SerializingSessionStore } from "../src/protocol/stores.js";
import { hex, NOW, Party, toHex, utf8 } from "./helpers.js";

const text = (data: Uint8Array): string => new TextDecoder().decode(data);

async function pair(aliceSpqr: SpqrSettings, serializing = false): Promise<[Party, Party]> {
  const alice = Party.create("alice", systemRandom, 11, serializing ? new SerializingSessionStore() : undefined);
  const bob = Party.create("bob", systemRandom, 22, serializing ? new SerializingSessionStore() : undefined);
  await processPreKeyBundle(alice.store, bob.address, await bob.bundle(), { now: NOW, spqr: aliceSpqr });
  return [alice, bob];
}

function field5(message: CiphertextMessage): Uint8Array {
  const inner = message.messageType === 3
    ? PreKeySignalMessage.parse(message.serialized).message
    : SignalMessage.parse(message.serialized);
  return inner.pqRatchet;
}

function epochOf(message: CiphertextMessage): number {
  const data = field5(message);
  return data.length === 0 ? 0 : Number(decodeFields(data).epoch);
}

async function recordHex(party: Party, remote: Party): Promise<string | undefined> {
  const record = await party.store.loadSession(remote.address);
  return record === undefined ? undefined : toHex(record.serialize());
}

async function spqrVersion(party: Party, remote: Party): Promise<number> {
  const record = await party.store.loadSession(remote.address);
  return record?.current?.pqRatchet.braid === null ? 0 : 1;
}

async function send(from: Party, to: Party, plaintext: string, spqr: SpqrSettings = DEFAULT_SPQR): Promise<CiphertextMessage> {
  const message = await encrypt(from.store, to.address, utf8(plaintext), { now: NOW, spqr });
  assert.equal(text(await decrypt(to.store, from.address, message.messageType, message.serialized, { spqr })), plaintext);
  return message;
}

describe("SPQR in sessions", () => {
  test("the browser default mirrors the Python SDK's: REQUIRED, as libsignal 0.92+", () => {
    assert.equal(DEFAULT_SPQR, SpqrSettings.REQUIRED);
  });

  for (const serializing of [false, true]) {
    test(`REQUIRED both ways: several SPQR epochs with out-of-order delivery (${serializing ? "serializing" : "object"} store)`,
      async () => {
        const spqr = SpqrSettings.REQUIRED;
        const [alice, bob] = await pair(spqr, serializing);
        await send(alice, bob, "hello", spqr);
        const epochs = { alice: 0, bob: 0 };
        for (let round = 0; round < 150 && Math.min(epochs.alice, epochs.bob) < 3; round++) {
          // Two from each side, the second delivered before the first.
          for (const [from, to, side] of [[alice, bob, "alice"], [bob, alice, "bob"]] as const) {
            const m1 = await encrypt(from.store, to.address, utf8(`${side}-${round}-1`), { now: NOW, spqr });
            const m2 = await encrypt(from.store, to.address, utf8(`${side}-${round}-2`), { now: NOW, spqr });
            assert.ok(field5(m1).length > 0 && field5(m2).length > 0);
            assert.equal(text(await decrypt(to.store, from.address, m2.messageType, m2.serialized)), `${side}-${round}-2`);
            assert.equal(text(await decrypt(to.store, from.address, m1.messageType, m1.serialized)), `${side}-${round}-1`);
            epochs[side] = Math.max(epochs[side], epochOf(m2));
          }
        }
        assert.ok(Math.min(epochs.alice, epochs.bob) >= 3, JSON.stringify(epochs));
      });
  }

  test("OFFERED with OFF: the session downgrades to V0 and keeps working", async () => {
    const [alice, bob] = await pair(SpqrSettings.OFFERED);
    const first = await encrypt(alice.store, bob.address, utf8("hi"), { now: NOW, spqr: SpqrSettings.OFFERED });
    assert.ok(field5(first).length > 0); // offered, but no key yet: OFF can verify it
    assert.equal(text(await decrypt(bob.store, alice.address, 3, first.serialized, { spqr: SpqrSettings.OFF })), "hi");
    assert.equal(await spqrVersion(bob, alice), 0);
    const reply = await send(bob, alice, "no spqr here", SpqrSettings.OFF);
    assert.equal(field5(reply).length, 0);
    assert.equal(await spqrVersion(alice, bob), 0); // downgraded for good
    assert.equal(field5(await send(alice, bob, "classical", SpqrSettings.OFFERED)).length, 0);
  });

  test("REQUIRED with OFF: the OFF responder cannot verify (salted keys) and keeps everything", async () => {
    const [alice, bob] = await pair(SpqrSettings.REQUIRED);
    const first = await encrypt(alice.store, bob.address, utf8("hi"), { now: NOW, spqr: SpqrSettings.REQUIRED });
    await assert.rejects(decrypt(bob.store, alice.address, 3, first.serialized, { spqr: SpqrSettings.OFF }), InvalidMessage);
    assert.equal(await bob.store.loadSession(alice.address), undefined);
    const parsed = PreKeySignalMessage.parse(first.serialized);
    await bob.store.getPreKey(parsed.preKeyId!); // still there
    await bob.store.getKyberPreKey(parsed.kyberPreKeyId);
    // The same message verifies for a responder with SPQR.
    assert.equal(text(await decrypt(bob.store, alice.address, 3, first.serialized, { spqr: SpqrSettings.OFFERED })), "hi");
  });

  test("OFF initiator, REQUIRED responder: refused (minimum version), nothing stored", async () => {
    const [alice, bob] = await pair(SpqrSettings.OFF);
    const first = await encrypt(alice.store, bob.address, utf8("hi"), { now: NOW, spqr: SpqrSettings.OFF });
    assert.equal(field5(first).length, 0);
    await assert.rejects(decrypt(bob.store, alice.address, 3, first.serialized, { spqr: SpqrSettings.REQUIRED }),
      InvalidMessage);
    assert.equal(await bob.store.loadSession(alice.address), undefined);
  });

  test("REQUIRED refuses to send on a session without SPQR; hasSession agrees", async () => {
    const [alice, bob] = await pair(SpqrSettings.OFF);
    await send(alice, bob, "classical", SpqrSettings.OFF);
    await send(bob, alice, "classical too", SpqrSettings.OFF);
    assert.equal(await hasSession(alice.store, bob.address, NOW, { spqr: SpqrSettings.OFFERED }), true);
    assert.equal(await hasSession(alice.store, bob.address, NOW, { spqr: SpqrSettings.REQUIRED }), false);
    const before = await recordHex(alice, bob);
    await assert.rejects(encrypt(alice.store, bob.address, utf8("x"), { now: NOW, spqr: SpqrSettings.REQUIRED }), NoSession);
    assert.equal(await recordHex(alice, bob), before);
    // A new session from a fresh bundle runs SPQR, and then REQUIRED may send.
    await processPreKeyBundle(alice.store, bob.address, await bob.bundle(), { now: NOW, spqr: SpqrSettings.REQUIRED });
    assert.equal(await hasSession(alice.store, bob.address, NOW, { spqr: SpqrSettings.REQUIRED }), true);
    assert.ok(field5(await send(alice, bob, "pq now", SpqrSettings.REQUIRED)).length > 0);
  });

  test("a message whose field 5 is altered or that fails the MAC changes no state", async () => {
    const [alice, bob] = await pair(SpqrSettings.REQUIRED);
    await send(alice, bob, "start");
    await send(bob, alice, "ack");
    for (let i = 0; i < 6; i++) {
      const message = await encrypt(alice.store, bob.address, utf8(`m${i}`), { now: NOW });
      const data = message.serialized;
      const fields = pb.decodeOrdered(data.subarray(1, data.length - 8));
      assert.ok(fields.some((f) => f.number === 5));
      const before = await recordHex(bob, alice);
      // Flip a bit in the last field-5 byte (the body ends with field 5, then the MAC),
      // and separately a bit of the MAC itself.
      for (const at of [data.length - 9, data.length - 1]) {
        const bad = Uint8Array.from(data);
        bad[at]! ^= 0x01;
        await assert.rejects(decrypt(bob.store, alice.address, 2, bad), InvalidMessage);
        assert.equal(await recordHex(bob, alice), before);
      }
      assert.equal(text(await decrypt(bob.store, alice.address, 2, data)), `m${i}`);
      assert.notEqual(await recordHex(bob, alice), before);
    }
  });

  test("an archived state that decrypts commits its SPQR state too", async () => {
    const [alice, bob] = await pair(SpqrSettings.REQUIRED, true);
    await send(alice, bob, "first session");
    await send(bob, alice, "ack");
    const late = await encrypt(bob.store, alice.address, utf8("late, on the first session"), { now: NOW });
    const later = await encrypt(bob.store, alice.address, utf8("later"), { now: NOW });
    // Alice starts a second session; the first is archived.
    await processPreKeyBundle(alice.store, bob.address, await bob.bundle(), { now: NOW, spqr: SpqrSettings.REQUIRED });
    const archived = (await alice.store.loadSession(bob.address))!.previous[0]!;
    const pqBefore = toHex(pqStorage.serialize(archived.pqRatchet));
    assert.equal(text(await decrypt(alice.store, bob.address, 2, late.serialized)), "late, on the first session");
    const record = (await alice.store.loadSession(bob.address))!;
    // The first session is current again, with a new SPQR state (stored, since the store serializes).
    assert.equal(record.previous.length, 1);
    assert.notEqual(toHex(pqStorage.serialize(record.current!.pqRatchet)), pqBefore);
    await assert.rejects(decrypt(alice.store, bob.address, 2, late.serialized), DuplicatedMessage);
    assert.equal(text(await decrypt(alice.store, bob.address, 2, later.serialized)), "later");
    await send(alice, bob, "answer on the first session");
  });

  test("stored records: the SPQR state sits in field 1001 (not libsignal's 15) and survives a reload", async () => {
    const [alice, bob] = await pair(SpqrSettings.REQUIRED, true);
    await send(alice, bob, "a");
    await send(bob, alice, "b");
    const record = (await alice.store.loadSession(bob.address))!;
    const state = pb.decode(pb.decode(record.serialize().subarray(1)).get(1)![0] as Uint8Array);
    assert.ok(state.has(PQ_RATCHET_FIELD));
    assert.ok(!state.has(15));
    const reloaded = SessionRecord.deserialize(record.serialize());
    assert.equal(toHex(reloaded.serialize()), toHex(record.serialize()));
    assert.notEqual(reloaded.current!.pqRatchet.braid, null);
    // A state without SPQR has no such field.
    const [carol, dave] = await pair(SpqrSettings.OFF);
    const plain = (await carol.store.loadSession(dave.address))!;
    const plainState = pb.decode(pb.decode(plain.serialize().subarray(1)).get(1)![0] as Uint8Array);
    assert.ok(!plainState.has(PQ_RATCHET_FIELD));
  });

  test("a record written before SPQR was wired in loads as V0 and keeps working", async () => {
    const old = JSON.parse(readFileSync(new URL("./fixtures/session-records-before-spqr.json", import.meta.url), "utf8"));
    const aliceIdentity = IdentityKeyPair.deserialize(hex(old.alice_identity));
    const bobIdentity = IdentityKeyPair.deserialize(hex(old.bob_identity));
    const alice = new Party(new ProtocolAddress("alice", 1),
      new InMemoryProtocolStore(aliceIdentity, 11, new SerializingSessionStore()), systemRandom);
    const bob = new Party(new ProtocolAddress("bob", 1),
      new InMemoryProtocolStore(bobIdentity, 22, new SerializingSessionStore()), systemRandom);
    const aliceRecord = SessionRecord.deserialize(hex(old.alice_record));
    const bobRecord = SessionRecord.deserialize(hex(old.bob_record));
    assert.equal(aliceRecord.current!.pqRatchet.braid, null);
    assert.equal(bobRecord.current!.pqRatchet.braid, null);
    // Unchanged bytes: an old record re-serializes exactly as it was stored.
    assert.equal(toHex(aliceRecord.serialize()), old.alice_record);
    await alice.store.storeSession(bob.address, aliceRecord);
    await bob.store.storeSession(alice.address, bobRecord);
    for (let i = 0; i < 3; i++) {
      assert.equal(field5(await send(alice, bob, `a${i}`, SpqrSettings.OFFERED)).length, 0);
      assert.equal(field5(await send(bob, alice, `b${i}`, SpqrSettings.OFFERED)).length, 0);
    }
    // REQUIRED (the default) replaces it (hasSession false); OFFERED keeps using it.
    assert.equal(await hasSession(alice.store, bob.address, NOW, { spqr: SpqrSettings.REQUIRED }), false);
    assert.equal(await hasSession(alice.store, bob.address, NOW), false);
    assert.equal(await hasSession(alice.store, bob.address, NOW, { spqr: SpqrSettings.OFFERED }), true);
  });

  test("a session with oneself runs SPQR with unbounded jumps", async () => {
    const me = Party.create("me", systemRandom, 5);
    const other = new Party(new ProtocolAddress("me", 2),
      new InMemoryProtocolStore(await me.store.getIdentityKeyPair(), 6), systemRandom);
    await processPreKeyBundle(me.store, other.address, await other.bundle(), { now: NOW, spqr: SpqrSettings.REQUIRED });
    const record = (await me.store.loadSession(other.address))!;
    const negotiation = record.current!.pqRatchet.negotiation!;
    assert.equal(negotiation.params.maxJump, 0xffffffff);
    await send(me, other, "note to self", SpqrSettings.REQUIRED);
  });
});
