/** Sealed sender v1 (digest §8): libsignal-made vectors, validation edges, round trips.
 * Mirrors tests/protocol/test_sealed_sender.py; the interop scenarios
 * (tests/interop/test_sealed_sender.py) cover TypeScript with Python and libsignal. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { ProtocolAddress } from "../src/protocol/address.js";
import {
  KNOWN_SERVER_CERTIFICATES,
  SenderCertificate,
  ServerCertificate,
} from "../src/protocol/certificates.js";
import {
  ExpiredCertificate,
  InvalidCertificate,
  InvalidMessage,
  NoSession,
  ProtocolError,
  RevokedCertificate,
  SealedSenderSelfSend,
  UnknownServerCertificate,
  UnknownVersion,
  UntrustedCertificate,
} from "../src/protocol/errors.js";
import { IdentityKeyPair, PrivateKey, PublicKey } from "../src/protocol/keys.js";
import { WHISPER_TYPE } from "../src/protocol/messages.js";
import * as pb from "../src/protocol/protobuf.js";
import * as ss from "../src/protocol/sealed_sender.js";
import { processPreKeyBundle } from "../src/protocol/session.js";
import * as xeddsa from "../src/protocol/xeddsa.js";
import { hex, loadVectors, NOW, Party, pythonRandom, toHex } from "./helpers.js";

const V = loadVectors<Record<string, any>>("sealed-sender.json");
const NOW_MS = NOW * 1000;
const UUID_A = "0b8d7a3e-58b4-4c47-9a0e-4f5f6a1b2c3d";
const UUID_B = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b";
const utf8 = (text: string) => new TextEncoder().encode(text);

function key(fill: number): PrivateKey {
  return new PrivateKey(new Uint8Array(32).fill(fill));
}

function identity(fill: number): IdentityKeyPair {
  const k = key(fill);
  return new IdentityKeyPair(k.publicKey(), k);
}

function flips(data: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < data.length; i++) {
    const changed = Uint8Array.from(data);
    changed[i]! ^= 1 << (i % 8);
    out.push(changed);
  }
  return out;
}

function b64(text: string): Uint8Array {
  return Uint8Array.from(Buffer.from(text, "base64"));
}

// -- vectors ----------------------------------------------------------------------------

test("AES-256-CTR of the digest's appendix A, tag checked before decrypting", async () => {
  const k = hex("603DEB1015CA71BE2B73AEF0857D77811F352C073B6108D72D9810A30914DFF4");
  const sealed = await ss.aes256CtrHmacEncrypt(k, new Uint8Array(32), new Uint8Array(35));
  assert.equal(toHex(sealed.subarray(0, -10)), "e568f68194cf76d6174d4cc04310a85491151e5d0b7a1f1bc0d7acd0ae3e51e4170e23");
  assert.deepEqual(await ss.aes256CtrHmacDecrypt(k, new Uint8Array(32), sealed), new Uint8Array(35));
  for (const bad of [...flips(sealed), sealed.subarray(0, -1), sealed.subarray(0, 9), new Uint8Array(0)]) {
    await assert.rejects(ss.aes256CtrHmacDecrypt(k, new Uint8Array(32), bad), InvalidMessage);
  }
});

test("the built-in server certificates verify under their trust roots only", () => {
  const roots: [number, string][] = [
    [2, "BYhU6tPjqP46KGZEzRs1OL4U39V5dlPJ/X09ha4rErkm"],
    [3, "BUkY0I+9+oPgDCn4+Ac6Iu813yvqkDr/ga8DzLxFxuk6"],
    [0x7357c357, "BS/lfaNHzWJDFSjarF+7KQcw//aEr8TPwu2QmV9Yyzt0"],
  ];
  for (const [id, root] of roots) {
    const trustRoot = PublicKey.deserialize(b64(root));
    const cert = KNOWN_SERVER_CERTIFICATES.get(id)!;
    assert.equal(cert.keyId, id);
    assert.ok(cert.isSignedBy(trustRoot));
    for (const [other] of roots) {
      if (other !== id) assert.ok(!cert.isSignedBy(KNOWN_SERVER_CERTIFICATES.get(other)!.key));
    }
    for (const bad of flips(cert.serialized)) {
      let changed: ServerCertificate;
      try {
        changed = ServerCertificate.deserialize(bad);
      } catch (error) {
        assert.ok(error instanceof ProtocolError);
        continue;
      }
      if (toHex(changed.certificate) === toHex(cert.certificate) && toHex(changed.signature) === toHex(cert.signature)) {
        continue; // the flip hit framing that reads back the same
      }
      assert.ok(!changed.isSignedBy(trustRoot));
    }
  }
});

test("a certificate naming the test server certificate by id validates; an unknown id does not", () => {
  const root = new PrivateKey(new Uint8Array(32)).publicKey();
  const server = new PrivateKey(new Uint8Array(32).fill(0xff));
  const builtin = KNOWN_SERVER_CERTIFICATES.get(0x7357c357)!;
  assert.ok(builtin.key.equals(server.publicKey()));
  const rng = pythonRandom(5);
  const body = pb.join([pb.fieldVarint(2, 1), pb.fieldFixed64(3, NOW_MS), pb.fieldBytes(4, key(9).publicKey().serialize()),
    pb.fieldBytes(6, utf8(UUID_A)), pb.fieldVarint(8, 0x7357c357)]);
  const byId = SenderCertificate.deserialize(pb.join([pb.fieldBytes(1, body),
    pb.fieldBytes(2, xeddsa.sign(server, body, rng))]));
  assert.equal(byId.signer, 0x7357c357);
  byId.validate([root], NOW_MS);
  const unknown = SenderCertificate.deserialize(pb.join([pb.fieldBytes(1, pb.join([body, pb.fieldVarint(8, 4)])),
    pb.fieldBytes(2, new Uint8Array(64))]));
  assert.throws(() => unknown.validate([root], NOW_MS), UnknownServerCertificate);
});

test("libsignal's certificates parse and validate, with the expiry inclusive", () => {
  const root = PublicKey.deserialize(hex(V["trust_root_public"]));
  assert.ok(root.equals(key(V["trust_root_fill"]).publicKey()));
  const cert = SenderCertificate.deserialize(hex(V["sender_certificate"]));
  assert.equal(toHex(cert.serialized), V["sender_certificate"]);
  assert.equal(toHex(cert.certificate), V["sender_certificate_body"]);
  assert.deepEqual([cert.senderUuid, cert.senderE164, cert.senderDeviceId, cert.expires],
    [V["sender_uuid"], V["sender_e164"], V["sender_device_id"], V["expires"]]);
  assert.ok(cert.identityKey.equals(key(V["sender_identity_fill"]).publicKey()));
  const server = cert.serverCertificate();
  assert.equal(toHex(server.serialized), V["server_certificate"]);
  assert.equal(server.keyId, V["server_certificate_id"]);
  cert.validate([root], V["expires"]);
  assert.throws(() => cert.validate([root], V["expires"] + 1), ExpiredCertificate);
  assert.throws(() => cert.validate([key(99).publicKey()], V["expires"]), UntrustedCertificate);
  cert.validate([key(99).publicKey(), root], V["expires"]); // any one of several roots
});

test("certificate bodies and the content match libsignal byte for byte", () => {
  const rng = pythonRandom(1);
  const theirs = ServerCertificate.deserialize(hex(V["server_certificate"]));
  const server = ServerCertificate.create(V["server_certificate_id"], key(2).publicKey(), key(1), rng);
  assert.equal(toHex(server.certificate), toHex(theirs.certificate));
  const sender = SenderCertificate.create({
    senderUuid: V["sender_uuid"], senderE164: V["sender_e164"], senderDeviceId: V["sender_device_id"],
    identityKey: key(3).publicKey(), expires: V["expires"],
  }, theirs, key(2), rng);
  assert.equal(toHex(sender.certificate), V["sender_certificate_body"]);
  const content = ss.UnidentifiedSenderMessageContent.create(V["usmc_type"],
    SenderCertificate.deserialize(hex(V["sender_certificate"])), hex(V["usmc_contents"]),
    { contentHint: V["usmc_content_hint"], groupId: hex(V["usmc_group_id"]) });
  assert.equal(toHex(content.serialized), V["usmc"]);
});

test("libsignal's sealed message opens; every flipped bit is refused but the minor version", async () => {
  const recipient = identity(V["recipient_identity_fill"]);
  const sealed = hex(V["sealed"]);
  const content = await ss.openSealed(recipient, sealed);
  assert.equal(toHex(content.serialized), V["usmc"]);
  assert.equal(content.messageType, V["usmc_type"]);
  assert.equal(content.contentHint, V["usmc_content_hint"]);
  assert.equal(toHex(content.groupId!), V["usmc_group_id"]);
  assert.equal(toHex(content.contents), V["usmc_contents"]);
  await assert.rejects(ss.openSealed(identity(5), sealed), InvalidMessage);
  for (const bad of flips(sealed)) {
    if (bad[0]! >> 4 <= 1 && toHex(bad.subarray(1)) === toHex(sealed.subarray(1))) {
      assert.equal(toHex((await ss.openSealed(recipient, bad)).serialized), V["usmc"]);
      continue;
    }
    await assert.rejects(ss.openSealed(recipient, bad), ProtocolError);
  }
  await assert.rejects(ss.openSealed(recipient, Uint8Array.of(0x21, ...sealed.subarray(1))), UnknownVersion);
});

// -- validation edges -------------------------------------------------------------------

function chain(rng: (n: number) => Uint8Array, options: { keyId?: number; expires?: number; identity?: PublicKey;
  uuid?: string; device?: number } = {}): [PublicKey, SenderCertificate, PrivateKey] {
  const root = PrivateKey.generate(rng);
  const serverKey = PrivateKey.generate(rng);
  const server = ServerCertificate.create(options.keyId ?? 1, serverKey.publicKey(), root, rng);
  const sender = SenderCertificate.create({
    senderUuid: options.uuid ?? UUID_A, senderDeviceId: options.device ?? 1,
    identityKey: options.identity ?? PrivateKey.generate(rng).publicKey(), expires: options.expires ?? NOW_MS,
  }, server, serverKey, rng);
  return [root.publicKey(), sender, serverKey];
}

test("revoked id, wrong root, a wrong signer and flipped bits are all invalid certificates", () => {
  const rng = pythonRandom(2);
  const [revokedRoot, revoked] = chain(rng, { keyId: 0xdeadc357 });
  assert.throws(() => revoked.validate([revokedRoot], NOW_MS), RevokedCertificate);
  const [root, cert] = chain(rng);
  cert.validate([root], NOW_MS - 1);
  cert.validate([root], NOW_MS);
  assert.throws(() => cert.validate([root], NOW_MS + 1), (e: unknown) => e instanceof ExpiredCertificate
    && e.kind === "invalid_certificate");
  assert.throws(() => cert.validate([], NOW_MS), UntrustedCertificate);
  assert.throws(() => cert.validate([PrivateKey.generate(rng).publicKey()], NOW_MS), UntrustedCertificate);
  const other = SenderCertificate.create({ senderUuid: UUID_A, senderDeviceId: 1, identityKey: cert.identityKey,
    expires: NOW_MS }, cert.serverCertificate(), PrivateKey.generate(rng), rng);
  assert.throws(() => other.validate([root], NOW_MS), UntrustedCertificate);
  for (const bad of flips(cert.serialized)) {
    let changed: SenderCertificate;
    try {
      changed = SenderCertificate.deserialize(bad);
    } catch (error) {
      assert.ok(error instanceof ProtocolError, String(error));
      continue;
    }
    if (toHex(changed.certificate) === toHex(cert.certificate) && toHex(changed.signature) === toHex(cert.signature)) {
      continue;
    }
    assert.throws(() => changed.validate([root], NOW_MS), InvalidCertificate);
  }
});

test("the last oneof member wins; wrong wire types and device ids are refused", () => {
  const cert = SenderCertificate.deserialize(hex(V["sender_certificate"]));
  const raw = Uint8Array.from({ length: 16 }, (_, i) => i);
  const wrap = (body: Uint8Array) => pb.join([pb.fieldBytes(1, body), pb.fieldBytes(2, cert.signature)]);
  const changed = SenderCertificate.deserialize(wrap(pb.join([cert.certificate, pb.fieldBytes(7, raw)])));
  assert.equal(changed.senderUuid, "00010203-0405-0607-0809-0a0b0c0d0e0f");
  assert.throws(() => SenderCertificate.deserialize(wrap(pb.join([cert.certificate, pb.fieldVarint(3, 5)]))),
    InvalidMessage);
  for (const device of [0, 128]) {
    assert.throws(() => SenderCertificate.deserialize(wrap(pb.join([cert.certificate, pb.fieldVarint(2, device)]))),
      InvalidMessage);
  }
});

// -- whole messages ---------------------------------------------------------------------

async function parties(seed: number): Promise<[Party, Party]> {
  const rng = pythonRandom(seed);
  const alice = Party.create(UUID_A, rng, 11);
  const bob = Party.create(UUID_B, rng, 22);
  await processPreKeyBundle(alice.store, bob.address, await bob.bundle(), { rng, now: NOW });
  return [alice, bob];
}

test("a sealed conversation both ways, sharing the sessions with identified messages", async () => {
  const [alice, bob] = await parties(3);
  const [root, aliceCert] = chain(alice.rng, { identity: (await alice.store.getIdentityKeyPair()).publicKey });
  const [bobRoot, bobCert] = chain(bob.rng, { uuid: UUID_B, identity: (await bob.store.getIdentityKeyPair()).publicKey });
  const local = (p: Party) => ({ uuid: p.address.name, deviceId: p.address.deviceId });
  const first = await ss.encryptMessage(alice.store, bob.address, aliceCert, utf8("hello"), { now: NOW, rng: alice.rng });
  assert.equal(first[0], 0x11);
  const opened = await ss.decrypt(bob.store, first, { trustRoots: [root], nowMs: NOW_MS, local: local(bob) });
  assert.deepEqual([opened.senderUuid, opened.deviceId, opened.senderE164], [UUID_A, 1, undefined]);
  assert.equal(new TextDecoder().decode(opened.plaintext), "hello");
  for (let i = 0; i < 3; i++) {
    const back = await ss.encryptMessage(bob.store, alice.address, bobCert, utf8(`r${i}`), { now: NOW });
    const got = await ss.decrypt(alice.store, back, { trustRoots: [bobRoot], nowMs: NOW_MS, local: local(alice) });
    assert.equal(got.messageType, WHISPER_TYPE);
    assert.equal(new TextDecoder().decode(got.plaintext), `r${i}`);
  }
  // No identity known for another device of Bob's: nothing to seal to.
  await assert.rejects(ss.encryptMessage(alice.store, new ProtocolAddress(UUID_B, 2), aliceCert, utf8("x"), { now: NOW }),
    NoSession);
});

test("a refused sealed message changes no session; a message from this device is refused", async () => {
  const [alice, bob] = await parties(4);
  const aliceKey = (await alice.store.getIdentityKeyPair()).publicKey;
  const [root, cert] = chain(alice.rng, { identity: aliceKey, expires: NOW_MS });
  const local = { uuid: UUID_B, deviceId: 1 };
  const message = await ss.encryptMessage(alice.store, bob.address, cert, utf8("once"), { now: NOW });
  await assert.rejects(ss.decrypt(bob.store, message, { trustRoots: [root], nowMs: NOW_MS + 1, local }),
    ExpiredCertificate);
  assert.equal(await bob.store.getIdentity(alice.address), undefined); // the PreKey message stored nothing
  const tampered = Uint8Array.from(message);
  tampered[tampered.length - 1]! ^= 1;
  await assert.rejects(ss.decrypt(bob.store, tampered, { trustRoots: [root], nowMs: NOW_MS, local }), InvalidMessage);
  await assert.rejects(ss.decrypt(bob.store, message, { trustRoots: [root], nowMs: NOW_MS,
    local: { uuid: UUID_A, deviceId: 1 } }), SealedSenderSelfSend);
  assert.equal(await bob.store.getIdentity(alice.address), undefined);
  const ok = await ss.decrypt(bob.store, message, { trustRoots: [root], nowMs: NOW_MS, local });
  assert.equal(new TextDecoder().decode(ok.plaintext), "once");
  // A certificate for another identity key than the one that sealed.
  const [, stranger] = chain(alice.rng, { identity: key(7).publicKey() });
  const content = ss.UnidentifiedSenderMessageContent.create(WHISPER_TYPE, stranger, utf8("x"));
  const mismatch = await ss.seal(await alice.store.getIdentityKeyPair(), (await bob.store.getIdentityKeyPair()).publicKey,
    content);
  await assert.rejects(ss.openSealed(await bob.store.getIdentityKeyPair(), mismatch), InvalidMessage);
});
