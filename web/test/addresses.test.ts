/**
 * SignalMessage field 6 (sender and recipient addresses under the MAC, libsignal 0.91+):
 * the encoding libsignal 0.103 wrote, sent on the PreKey path only, checked on receipt.
 * Mirrors tests/protocol/test_addresses.py.
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { addressesField, ProtocolAddress, serviceIdFixedWidth } from "../src/protocol/address.js";
import { InvalidMessage } from "../src/protocol/errors.js";
import { PREKEY_TYPE, PreKeySignalMessage, SignalMessage } from "../src/protocol/messages.js";
import { decrypt, encrypt, processPreKeyBundle } from "../src/protocol/session.js";
import { SpqrSettings } from "../src/protocol/spqr/ratchet.js";
import { NOW, Party, pythonRandom, toHex, utf8 } from "./helpers.js";
import { loadSpqr, RUNS } from "./spqr_helpers.js";

const ACI = "11111111-1111-4111-8111-111111111111";
const ACI_B = "22222222-2222-4222-8222-222222222222";
const REQUIRED = SpqrSettings.REQUIRED;
const text = (data: Uint8Array): string => new TextDecoder().decode(data);

async function parties(aliceName: string, bobName: string): Promise<[Party, Party]> {
  const rng = pythonRandom(4);
  const alice = Party.create(aliceName, rng, 11);
  const bob = Party.create(bobName, rng, 22);
  await processPreKeyBundle(alice.store, bob.address, await bob.bundle(), { rng, now: NOW, spqr: REQUIRED });
  return [alice, bob];
}

describe("SignalMessage field 6 (addresses)", () => {
  test("libsignal 0.103's recorded addresses reproduce, on PreKey messages only", () => {
    for (const name of RUNS) {
      const run = loadSpqr(name);
      const alice = new ProtocolAddress(run.alice.name, run.alice.device);
      const bob = new ProtocolAddress(run.bob_public.name, run.bob_public.device);
      const recorded = new Set(run.messages.filter((m: any) => m.from === "A").map((m: any) => m.addresses_field6));
      assert.ok(recorded.has(toHex(addressesField(alice, bob)!)));
      for (const m of run.messages) {
        assert.equal(m.addresses_field6 !== null, m.ciphertext_type === PREKEY_TYPE);
        if (m.ciphertext_type === PREKEY_TYPE) {
          const parsed = PreKeySignalMessage.parse(Uint8Array.from(Buffer.from(m.serialized, "hex")));
          assert.equal(toHex(parsed.message.addresses!), m.addresses_field6);
        }
      }
    }
  });

  const cases: [string, string | undefined][] = [
    [ACI, "00" + ACI.replaceAll("-", "")],
    [ACI.toUpperCase(), "00" + ACI.replaceAll("-", "")],
    ["PNI:" + ACI, "01" + ACI.replaceAll("-", "")],
    ["alice", undefined], ["", undefined], ["PNI:", undefined], ["pni:" + ACI, undefined],
    [ACI.replaceAll("-", ""), undefined], ["{" + ACI.slice(1, -1) + "}", undefined],
    [ACI.slice(0, 8) + " " + ACI.slice(9), undefined], [ACI.slice(0, -1) + "g", undefined],
    [ACI + "0", undefined], ["ACI:" + ACI, undefined], ["urn:uuid:" + ACI, undefined],
  ];
  for (const [name, expected] of cases) {
    test(`service id ${JSON.stringify(name)}`, () => {
      const value = serviceIdFixedWidth(name);
      assert.equal(value === undefined ? undefined : toHex(value), expected);
    });
  }

  test("PreKey messages carry and check addresses; whisper messages carry none", async () => {
    const [alice, bob] = await parties(ACI, "PNI:" + ACI_B);
    const first = await encrypt(alice.store, bob.address, utf8("hi"), { now: NOW, localAddress: alice.address });
    assert.equal(first.messageType, PREKEY_TYPE);
    const carried = PreKeySignalMessage.parse(first.serialized).message.addresses;
    assert.deepEqual(carried, addressesField(alice.address, bob.address));
    assert.equal(carried![18], 1); // the recipient's PNI kind byte
    // Received by another device of the recipient (or anyone else): refused, nothing kept.
    for (const wrong of [new ProtocolAddress(ACI_B, 2), new ProtocolAddress("PNI:" + ACI_B, 2),
      new ProtocolAddress("bob", 1)]) {
      await assert.rejects(decrypt(bob.store, alice.address, PREKEY_TYPE, first.serialized,
        { spqr: REQUIRED, localAddress: wrong }), InvalidMessage);
      assert.equal(await bob.store.loadSession(alice.address), undefined);
    }
    // Claimed by another sender address: refused.
    await assert.rejects(decrypt(bob.store, new ProtocolAddress(ACI, 3), PREKEY_TYPE, first.serialized,
      { spqr: REQUIRED, localAddress: bob.address }), InvalidMessage);
    assert.equal(text(await decrypt(bob.store, alice.address, PREKEY_TYPE, first.serialized,
      { spqr: REQUIRED, localAddress: bob.address })), "hi");
    const reply = await encrypt(bob.store, alice.address, utf8("yo"), { now: NOW, localAddress: bob.address });
    assert.equal(SignalMessage.parse(reply.serialized).addresses, undefined);
    assert.equal(text(await decrypt(alice.store, bob.address, reply.messageType, reply.serialized,
      { localAddress: alice.address })), "yo");
  });

  test("the addresses are under the MAC", async () => {
    const [alice, bob] = await parties(ACI, ACI_B);
    const first = await encrypt(alice.store, bob.address, utf8("hi"), { now: NOW, localAddress: alice.address });
    const field = Buffer.from(addressesField(alice.address, bob.address)!);
    const at = Buffer.from(first.serialized).indexOf(field);
    assert.ok(at > 0);
    const forged = Uint8Array.from(first.serialized);
    forged[at + 17] ^= 0x02; // the sender's device id byte
    await assert.rejects(decrypt(bob.store, alice.address, PREKEY_TYPE, forged, { spqr: REQUIRED }),
      InvalidMessage); // even without a local address to check
    assert.equal(await bob.store.loadSession(alice.address), undefined);
  });

  test("no addresses without service ids or a local address; none is accepted", async () => {
    let [alice, bob] = await parties("alice", "bob");
    const named = await encrypt(alice.store, bob.address, utf8("x"), { now: NOW, localAddress: alice.address });
    assert.equal(PreKeySignalMessage.parse(named.serialized).message.addresses, undefined);
    [alice, bob] = await parties(ACI, ACI_B);
    const plain = await encrypt(alice.store, bob.address, utf8("x"), { now: NOW });
    assert.equal(PreKeySignalMessage.parse(plain.serialized).message.addresses, undefined);
    assert.equal(text(await decrypt(bob.store, alice.address, PREKEY_TYPE, plain.serialized,
      { spqr: REQUIRED, localAddress: bob.address })), "x");
  });
});
