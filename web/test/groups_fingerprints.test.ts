/** Sender keys (groups), fingerprints (fingerprint.json), and wire-message parsing. */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, test } from "node:test";

import { ProtocolAddress } from "../src/protocol/address.js";
import { systemRandom } from "../src/protocol/bytes.js";
import {
  DuplicatedMessage, InvalidMessage, InvalidSignature, NoSenderKey, UnknownVersion,
} from "../src/protocol/errors.js";
import { Fingerprint, FingerprintParsingError, FingerprintVersionMismatch } from "../src/protocol/fingerprint.js";
import { KeyPair, PublicKey } from "../src/protocol/keys.js";
import {
  PreKeySignalMessage, SenderKeyDistributionMessage, SenderKeyMessage, SignalMessage,
} from "../src/protocol/messages.js";
import {
  createDistributionMessage, groupDecrypt, groupEncrypt, processDistributionMessage, SenderKeyRecord,
} from "../src/protocol/sender_keys.js";
import { InMemorySenderKeyStore } from "../src/protocol/stores.js";
import { hex, loadVectors, toHex, utf8 } from "./helpers.js";

const text = (data: Uint8Array): string => new TextDecoder().decode(data);

async function group(): Promise<{ sender: ProtocolAddress; senderStore: InMemorySenderKeyStore;
  memberStore: InMemorySenderKeyStore; distribution: string; skdm: Uint8Array }> {
  const sender = new ProtocolAddress("sender", 1);
  const senderStore = new InMemorySenderKeyStore();
  const memberStore = new InMemorySenderKeyStore();
  const distribution = randomUUID();
  const skdm = (await createDistributionMessage(senderStore, sender, distribution)).serialized;
  await processDistributionMessage(memberStore, sender, skdm);
  return { sender, senderStore, memberStore, distribution, skdm };
}

describe("sender keys", () => {
  test("SKDM and message layout: 0x33, sizes, signature", async () => {
    const g = await group();
    assert.equal(g.skdm[0], 0x33);
    const parsed = SenderKeyDistributionMessage.parse(g.skdm);
    assert.equal(parsed.distributionId, g.distribution);
    assert.ok(parsed.chainId < 2 ** 31);
    const message = await groupEncrypt(g.senderStore, g.sender, g.distribution, utf8("hello"));
    const m = SenderKeyMessage.parse(message);
    assert.equal(m.iteration, 0);
    assert.equal(m.chainId, parsed.chainId);
    assert.equal(text(await groupDecrypt(g.memberStore, g.sender, message)), "hello");
  });

  test("out of order, duplicates, a gap over 2,000 keys", async () => {
    const g = await group();
    const messages: Uint8Array[] = [];
    for (let i = 0; i < 5; i++) messages.push(await groupEncrypt(g.senderStore, g.sender, g.distribution, utf8(`g${i}`)));
    for (const i of [3, 0, 4, 1, 2]) assert.equal(text(await groupDecrypt(g.memberStore, g.sender, messages[i]!)), `g${i}`);
    for (const m of messages) await assert.rejects(groupDecrypt(g.memberStore, g.sender, m), DuplicatedMessage);
    const many: Uint8Array[] = [];
    for (let i = 0; i < 2_101; i++) many.push(await groupEncrypt(g.senderStore, g.sender, g.distribution, utf8(`k${i}`)));
    assert.equal(text(await groupDecrypt(g.memberStore, g.sender, many[2_100]!)), "k2100");
    await assert.rejects(groupDecrypt(g.memberStore, g.sender, many[99]!), DuplicatedMessage);
    assert.equal(text(await groupDecrypt(g.memberStore, g.sender, many[100]!)), "k100");
  });

  test("the signature is checked first; tampering changes nothing", async () => {
    const g = await group();
    const message = await groupEncrypt(g.senderStore, g.sender, g.distribution, utf8("one"));
    for (const index of [0 + 5, message.length - 70, message.length - 5, message.length - 1]) {
      const forged = Uint8Array.from(message);
      forged[index]! ^= 1;
      await assert.rejects(groupDecrypt(g.memberStore, g.sender, forged), (e: unknown) =>
        e instanceof InvalidSignature || e instanceof NoSenderKey || e instanceof InvalidMessage);
    }
    const sigFlip = Uint8Array.from(message);
    sigFlip[message.length - 5]! ^= 1;
    await assert.rejects(groupDecrypt(g.memberStore, g.sender, sigFlip), InvalidSignature);
    assert.equal(text(await groupDecrypt(g.memberStore, g.sender, message)), "one");
  });

  test("re-processing an SKDM keeps the position; six chains evict the oldest", async () => {
    const g = await group();
    const [first, second] = [await groupEncrypt(g.senderStore, g.sender, g.distribution, utf8("1")),
      await groupEncrypt(g.senderStore, g.sender, g.distribution, utf8("2"))];
    await groupDecrypt(g.memberStore, g.sender, first!);
    const again = await createDistributionMessage(g.senderStore, g.sender, g.distribution);
    await processDistributionMessage(g.memberStore, g.sender, again.serialized);
    await assert.rejects(groupDecrypt(g.memberStore, g.sender, first!), DuplicatedMessage);
    assert.equal(text(await groupDecrypt(g.memberStore, g.sender, second!)), "2");

    const member = new InMemorySenderKeyStore();
    const address = new ProtocolAddress("rotating", 1);
    const distribution = randomUUID();
    const chains: Uint8Array[] = [];
    for (let i = 0; i < 6; i++) {
      const store = new InMemorySenderKeyStore();
      const skdm = await createDistributionMessage(store, address, distribution);
      await processDistributionMessage(member, address, skdm.serialized);
      chains.push(await groupEncrypt(store, address, distribution, utf8(`c${i}`)));
    }
    await assert.rejects(groupDecrypt(member, address, chains[0]!), NoSenderKey);
    for (let i = 1; i < 6; i++) assert.equal(text(await groupDecrypt(member, address, chains[i]!)), `c${i}`);
  });

  test("no chain: NoSenderKey on both sides", async () => {
    const g = await group();
    await assert.rejects(groupEncrypt(g.senderStore, g.sender, randomUUID(), utf8("x")), NoSenderKey);
    const message = await groupEncrypt(g.senderStore, g.sender, g.distribution, utf8("x"));
    await assert.rejects(groupDecrypt(new InMemorySenderKeyStore(), g.sender, message), NoSenderKey);
  });

  test("records round-trip (with a private key and skipped seeds)", async () => {
    const g = await group();
    for (let i = 0; i < 3; i++) await groupEncrypt(g.senderStore, g.sender, g.distribution, utf8("x"));
    const record = g.senderStore.loadSenderKey(g.sender, g.distribution)!;
    const data = record.serialize();
    assert.equal(toHex(SenderKeyRecord.deserialize(data).serialize()), toHex(data));
    for (const bad of [new Uint8Array(0), Uint8Array.of(9), Uint8Array.of(1, 0x0a, 0x05)]) {
      assert.throws(() => SenderKeyRecord.deserialize(bad), InvalidMessage);
    }
  });
});

describe("fingerprint.json", () => {
  for (const c of loadVectors("fingerprint.json").cases) {
    test("libsignal's displayable and scannable fingerprints", () => {
      const enc = (s: string): Uint8Array => utf8(s);
      const local = PublicKey.deserialize(hex(c.local_key));
      const remote = PublicKey.deserialize(hex(c.remote_key));
      const ours = Fingerprint.create(enc(c.local_id), local, enc(c.remote_id), remote,
        { iterations: c.iterations, version: c.version });
      const theirs = Fingerprint.create(enc(c.remote_id), remote, enc(c.local_id), local,
        { iterations: c.iterations, version: c.version });
      assert.equal(ours.displayable, c.displayable);
      assert.equal(theirs.displayable, c.displayable);
      assert.equal(toHex(ours.scannable), c.local_scannable);
      assert.equal(ours.compare(theirs.scannable), true);
      assert.equal(theirs.compare(ours.scannable), true);
      assert.equal(ours.compare(ours.scannable), false);
      const v1 = Fingerprint.create(enc(c.remote_id), remote, enc(c.local_id), local, { iterations: c.iterations, version: 1 });
      assert.throws(() => ours.compare(v1.scannable), FingerprintVersionMismatch);
      assert.throws(() => ours.compare(Uint8Array.of(0xff)), FingerprintParsingError);
      assert.throws(() => Fingerprint.create(enc("a"), local, enc("b"), remote, { iterations: 1 }), RangeError);
    });
  }
});

describe("wire messages", () => {
  test("SignalMessage: libsignal's field order, MAC over the bytes, version rules", () => {
    const ratchet = KeyPair.generate(systemRandom).publicKey;
    const a = KeyPair.generate(systemRandom).publicKey;
    const b = KeyPair.generate(systemRandom).publicKey;
    const macKey = systemRandom(32);
    const m = SignalMessage.build({ macKey, ratchetKey: ratchet, counter: 300, previousCounter: 2,
      ciphertext: systemRandom(32), senderIdentity: a, receiverIdentity: b });
    assert.deepEqual([...m.serialized.subarray(0, 4)], [0x44, 0x0a, 0x21, 0x05]);
    const parsed = SignalMessage.parse(m.serialized);
    assert.equal(parsed.counter, 300);
    assert.equal(parsed.previousCounter, 2);
    assert.ok(parsed.verifyMac(macKey, a, b));
    assert.ok(!parsed.verifyMac(macKey, b, a));
    for (const nibble of [0, 1, 2, 5, 15]) {
      assert.throws(() => SignalMessage.parse(Uint8Array.from([(nibble << 4) | 4, ...m.serialized.subarray(1)])),
        UnknownVersion);
    }
    assert.throws(() => SignalMessage.parse(m.serialized.subarray(0, 8)), InvalidMessage);
    assert.throws(() => SignalMessage.parse(Uint8Array.of(0x44, 0x0a, 0x21, 0x05, 1, 2, 3, 4, 5, 6, 7, 8)), InvalidMessage);
  });

  test("PreKeySignalMessage: Kyber fields required, X3DH refused", () => {
    assert.throws(() => PreKeySignalMessage.parse(new Uint8Array(0)), InvalidMessage);
    assert.throws(() => PreKeySignalMessage.parse(Uint8Array.of(0x44, 0x30, 0x01)), InvalidMessage);
    assert.throws(() => PreKeySignalMessage.parse(Uint8Array.of(0x54, 0x30, 0x01)), UnknownVersion);
  });

  test("SKDM and SenderKeyMessage reject short input and other versions", () => {
    assert.throws(() => SenderKeyDistributionMessage.parse(new Uint8Array(64)), InvalidMessage);
    assert.throws(() => SenderKeyDistributionMessage.parse(new Uint8Array(80).fill(0x44)), UnknownVersion);
    assert.throws(() => SenderKeyMessage.parse(new Uint8Array(64)), InvalidMessage);
    assert.throws(() => SenderKeyMessage.parse(new Uint8Array(80).fill(0x33)), InvalidMessage);
  });
});
