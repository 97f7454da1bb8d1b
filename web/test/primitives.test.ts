/** Primitives against the shared vectors: X25519, HKDF, XEdDSA, chain keys, Kyber1024. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { sha256 } from "@noble/hashes/sha2.js";

import { systemRandom } from "../src/protocol/bytes.js";
import { InvalidKey, InvalidMessage } from "../src/protocol/errors.js";
import {
  DEFAULT_KEMS, KemKeyPair, KemPublicKey, KYBER1024, Kyber1024Backend, MLKEM1024, MLKem1024Backend,
} from "../src/protocol/kem.js";
import { clamp, IdentityKeyPair, KeyPair, PrivateKey, PublicKey } from "../src/protocol/keys.js";
import { ed25519 } from "@noble/curves/ed25519.js";
import { bytesToNumberLE, numberToBytesLE } from "@noble/curves/utils.js";
import * as pb from "../src/protocol/protobuf.js";
import {
  aesCbcDecrypt, aesCbcEncrypt, hkdf, messageKeys, messageKeySeed, nextChainKey,
} from "../src/protocol/ratchet.js";
import * as xeddsa from "../src/protocol/xeddsa.js";
import { hex, loadVectors, toHex } from "./helpers.js";

const utf8m = (t: string): Uint8Array => new TextEncoder().encode(t);

describe("x25519.json", () => {
  const v = loadVectors("x25519.json");
  for (const c of v.agreements) {
    test(`agreement ${c.name}`, () => {
      const alice = new PrivateKey(hex(c.alice_private));
      if (c.alice_public) assert.equal(toHex(alice.publicKey().raw), c.alice_public);
      assert.equal(toHex(alice.agree(new PublicKey(hex(c.bob_public)))), c.shared);
      if (c.bob_private) {
        const bob = new PrivateKey(hex(c.bob_private));
        assert.equal(toHex(bob.agree(new PublicKey(hex(c.alice_public)))), c.shared);
      }
    });
  }
  test("clamping as libsignal serializes it", () => {
    for (const c of v.clamping) {
      assert.equal(toHex(clamp(hex(c.input))), c.clamped);
      assert.equal(toHex(new PrivateKey(hex(c.input)).serialize()), c.clamped);
    }
  });
  test("agreements with low-order points (and their non-canonical forms) are refused", () => {
    const P = 2n ** 255n - 19n;
    const lowOrder = [0n, 1n, P - 1n,
      325606250916557431795983626356110631294008115727848805560023387167927233504n,
      39382357235489614581723060781553021112529911719440698176882885853963445705823n, P, P + 1n];
    const key = PrivateKey.generate(systemRandom);
    for (const u of lowOrder) {
      assert.throws(() => key.agree(new PublicKey(numberToBytesLE(u, 32))), InvalidKey, String(u));
    }
  });
});

describe("keys", () => {
  test("public key deserialization: type byte, length, trailing bytes", () => {
    const pair = KeyPair.generate(systemRandom);
    const s = pair.publicKey.serialize();
    assert.equal(s.length, 33);
    assert.equal(s[0], 0x05);
    assert.ok(PublicKey.deserialize(Uint8Array.from([...s, 1, 2])).equals(pair.publicKey));
    assert.throws(() => PublicKey.deserialize(s.subarray(1)), InvalidKey);
    assert.throws(() => PublicKey.deserialize(new Uint8Array(0)), InvalidKey);
    assert.throws(() => PublicKey.deserialize(Uint8Array.from([0x06, ...s.subarray(1)])), InvalidKey);
  });
  test("identity key pair: 69 bytes, round trip, halves checked", () => {
    const pair = IdentityKeyPair.generate(systemRandom);
    const s = pair.serialize();
    assert.equal(s.length, 69);
    assert.deepEqual([...s.subarray(0, 3)], [0x0a, 0x21, 0x05]);
    assert.deepEqual([...s.subarray(35, 37)], [0x12, 0x20]);
    assert.ok(IdentityKeyPair.deserialize(s).publicKey.equals(pair.publicKey));
    const other = IdentityKeyPair.generate(systemRandom).serialize();
    const mixed = Uint8Array.from([...s.subarray(0, 35), ...other.subarray(35)]);
    assert.throws(() => IdentityKeyPair.deserialize(mixed), InvalidKey);
    assert.throws(() => IdentityKeyPair.deserialize(Uint8Array.of(0xff)), InvalidKey);
  });
  test("string forms never show private keys", () => {
    const pair = IdentityKeyPair.generate(systemRandom);
    const text = `${pair} ${pair.privateKey} ${JSON.stringify({ k: pair.privateKey })}`;
    assert.ok(!text.includes(toHex(pair.privateKey.serialize())));
    assert.match(text, /redacted/);
  });
  test("canonical base keys: generated keys are, small-order and high-bit ones are not", () => {
    for (let i = 0; i < 5; i++) assert.ok(KeyPair.generate(systemRandom).publicKey.isCanonical());
    assert.ok(!new PublicKey(new Uint8Array(32)).isCanonical());
    const one = new Uint8Array(32);
    one[0] = 1;
    assert.ok(!new PublicKey(one).isCanonical());
    const high = Uint8Array.from(KeyPair.generate(systemRandom).publicKey.raw);
    high[31]! |= 0x80;
    assert.ok(!new PublicKey(high).isCanonical());
    assert.ok(!new PublicKey(new Uint8Array(32).fill(0xff)).isCanonical());
    assert.ok(!new PublicKey(numberToBytesLE(2n ** 255n - 19n + 9n, 32)).isCanonical());
  });
});

describe("hkdf.json", () => {
  for (const c of loadVectors("hkdf.json").cases) {
    test(`RFC 5869 ${c.name}`, () => {
      assert.equal(toHex(hkdf(hex(c.ikm), c.salt ? hex(c.salt) : new Uint8Array(0), hex(c.info), c.length)), c.okm);
    });
  }
});

describe("xeddsa.json", () => {
  const v = loadVectors("xeddsa.json").verify[0];
  const key = PublicKey.deserialize(hex(v.public));
  const message = hex(v.message);
  const signature = hex(v.signature);
  test("libsignal's signature verifies", () => {
    assert.equal(xeddsa.verify(key, message, signature), v.valid);
  });
  test("single-bit flips of the signature are refused (every byte; every bit of R's and s's ends)", () => {
    const bits = new Set<number>();
    for (let byte = 0; byte < 64; byte++) bits.add(byte * 8 + (byte % 8));
    for (const byte of [0, 31, 32, 63]) for (let b = 0; b < 8; b++) bits.add(byte * 8 + b);
    for (const bit of bits) {
      const forged = Uint8Array.from(signature);
      forged[bit >> 3]! ^= 1 << (bit & 7);
      assert.equal(xeddsa.verify(key, message, forged), false, `bit ${bit}`);
    }
  });
  test("flips of the message and the key are refused; bad lengths too", () => {
    for (const index of [0, 1, 16, 32]) {
      const forged = Uint8Array.from(message);
      forged[index]! ^= 1;
      assert.equal(xeddsa.verify(key, forged, signature), false);
    }
    const otherKey = Uint8Array.from(key.raw);
    otherKey[3]! ^= 4;
    assert.equal(xeddsa.verify(new PublicKey(otherKey), message, signature), false);
    assert.equal(xeddsa.verify(key, message, signature.subarray(0, 63)), false);
    assert.equal(xeddsa.verify(key, message, new Uint8Array(64)), false);
  });
  test("S is accepted up to 2^253 as libsignal does (S + L verifies), refused from 2^253", () => {
    const pair = KeyPair.generate(systemRandom);
    const msg = utf8m("m");
    const sig = xeddsa.sign(pair.privateKey, msg, systemRandom);
    const signBit = sig[63]! & 0x80;
    const s = bytesToNumberLE(Uint8Array.from([...sig.subarray(32, 63), sig[63]! & 0x7f]));
    const plusL = numberToBytesLE(s + ed25519.Point.Fn.ORDER, 32);
    plusL[31]! |= signBit;
    assert.ok(xeddsa.verify(pair.publicKey, msg, Uint8Array.from([...sig.subarray(0, 32), ...plusL])));
    const high = Uint8Array.from(sig);
    high[63]! |= 0x60;
    assert.equal(xeddsa.verify(pair.publicKey, msg, high), false);
  });
  test("signatures are randomized by rng, and only by it", () => {
    const pair = KeyPair.generate(systemRandom);
    const msg = utf8m("msg");
    const a = xeddsa.sign(pair.privateKey, msg, (n) => new Uint8Array(n).fill(1));
    const b = xeddsa.sign(pair.privateKey, msg, (n) => new Uint8Array(n).fill(1));
    const c = xeddsa.sign(pair.privateKey, msg, (n) => new Uint8Array(n).fill(2));
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
  });
  test("sign then verify, with the sign bit in s's top bit", () => {
    let signBits = 0;
    for (let i = 0; i < 8; i++) {
      const pair = KeyPair.generate(systemRandom);
      const msg = systemRandom(33 + i);
      const sig = xeddsa.sign(pair.privateKey, msg, systemRandom);
      assert.equal(sig.length, 64);
      assert.ok(xeddsa.verify(pair.publicKey, msg, sig));
      signBits += sig[63]! >> 7;
      const wrong = Uint8Array.from(sig);
      wrong[63]! ^= 0x80;
      assert.equal(xeddsa.verify(pair.publicKey, msg, wrong), false);
    }
    assert.ok(signBits > 0 && signBits < 8, "both sign bits occur over eight keys (almost surely)");
  });
});

describe("ratchet.json", () => {
  for (const c of loadVectors("ratchet.json").chain_keys) {
    test("chain key -> message keys and next chain key", () => {
      const keys = messageKeys(messageKeySeed(hex(c.chain_key)));
      assert.equal(toHex(keys.cipherKey), c.cipher_key);
      assert.equal(toHex(keys.macKey), c.mac_key);
      assert.equal(toHex(keys.iv), c.iv);
      assert.equal(toHex(nextChainKey(hex(c.chain_key))), c.next_chain_key);
    });
  }
});

describe("AES-256-CBC (WebCrypto)", () => {
  test("PKCS#7 lengths and round trips", async () => {
    const key = systemRandom(32);
    const iv = systemRandom(16);
    for (const n of [0, 1, 15, 16, 17, 1000]) {
      const plaintext = systemRandom(n);
      const ciphertext = await aesCbcEncrypt(key, iv, plaintext);
      assert.equal(ciphertext.length, 16 * Math.ceil((n + 1) / 16));
      assert.deepEqual(await aesCbcDecrypt(key, iv, ciphertext), plaintext);
    }
  });
  test("bad lengths and bad padding are InvalidMessage", async () => {
    const key = systemRandom(32);
    const iv = systemRandom(16);
    await assert.rejects(aesCbcDecrypt(key, iv, new Uint8Array(0)), InvalidMessage);
    await assert.rejects(aesCbcDecrypt(key, iv, new Uint8Array(17)), InvalidMessage);
    const ciphertext = await aesCbcEncrypt(key, iv, systemRandom(20));
    await assert.rejects(aesCbcDecrypt(systemRandom(32), iv, ciphertext), InvalidMessage);
  });
});

describe("kyber1024.json (round 3, an independent implementation's ciphertexts)", () => {
  const backend = new Kyber1024Backend();
  for (const [i, c] of loadVectors("kyber1024.json").cases.entries()) {
    test(`case ${i}: ML-KEM seed -> public key; decapsulate kyber-py's ciphertext`, () => {
      const seed = hex(c.seed);
      assert.equal(toHex(sha256(backend.publicFromSecret(seed))), c.public_sha256);
      const pair = new KemKeyPair(new KemPublicKey(KYBER1024, backend.publicFromSecret(seed)), seed);
      const ciphertext = Uint8Array.from([KYBER1024, ...hex(c.ciphertext)]);
      assert.equal(toHex(pair.decapsulate(ciphertext)), c.shared);
      assert.equal(toHex(pair.decapsulate(ciphertext)), c.shared, "the loaded key is reusable");
    });
  }
  test("both KEMs round-trip; the secrets differ between the two finishes", () => {
    for (const type of [KYBER1024, MLKEM1024]) {
      const pair = KemKeyPair.generate(systemRandom, type);
      const [shared, ciphertext] = pair.publicKey.encapsulate();
      assert.equal(ciphertext.length, 1569);
      assert.equal(ciphertext[0], type);
      assert.deepEqual(pair.decapsulate(ciphertext), shared);
    }
    const seed = systemRandom(64);
    const m = systemRandom(32);
    const pub = new MLKem1024Backend().publicFromSecret(seed);
    const [mlkem] = new MLKem1024Backend(() => m).encapsulate(pub);
    const [kyber] = new Kyber1024Backend(() => m).encapsulate(pub);
    assert.notDeepEqual(mlkem, kyber);
  });
  test("type bytes and lengths are checked exactly", () => {
    const pair = KemKeyPair.generate(systemRandom);
    const s = pair.publicKey.serialize();
    assert.equal(s.length, 1569);
    assert.throws(() => KemPublicKey.deserialize(s.subarray(0, 1568)), InvalidKey);
    assert.throws(() => KemPublicKey.deserialize(Uint8Array.from([0x07, ...s.subarray(1)])), InvalidKey);
    assert.throws(() => KemPublicKey.deserialize(new Uint8Array(0)), InvalidKey);
    assert.throws(() => KemPublicKey.deserialize(s, new Map([[MLKEM1024, DEFAULT_KEMS.get(MLKEM1024)!]])), InvalidKey);
    const [, ciphertext] = pair.publicKey.encapsulate();
    assert.throws(() => pair.decapsulate(Uint8Array.from([MLKEM1024, ...ciphertext.subarray(1)])), InvalidKey);
    assert.throws(() => pair.decapsulate(ciphertext.subarray(0, 100)), InvalidKey);
  });
});

describe("protobuf codec", () => {
  test("varints round-trip and are strict", () => {
    for (const n of [0, 1, 127, 128, 300, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1]) {
      const enc = pb.encodeVarint(n);
      assert.deepEqual(pb.readVarint(enc, 0, enc.length), [n, enc.length]);
    }
    assert.throws(() => pb.readVarint(Uint8Array.of(0x80), 0, 1), pb.DecodeError);
    assert.throws(() => pb.readVarint(new Uint8Array(11).fill(0xff), 0, 11), pb.DecodeError);
    const max = Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01);
    assert.equal(pb.readVarint(max, 0, max.length)[1], 10);
    const over = Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02);
    assert.throws(() => pb.readVarint(over, 0, over.length), pb.DecodeError);
  });
  test("fields decode; malformed structures throw DecodeError", () => {
    const msg = pb.join([pb.fieldVarint(1, 5), pb.fieldBytes(2, Uint8Array.of(1, 2)), pb.fieldFixed64(3, 2 ** 40 + 7),
      pb.fieldVarint(1, 6)]);
    const f = pb.decode(msg);
    assert.equal(pb.getInt(f, 1), 6);
    assert.deepEqual([...pb.getBytes(f, 2)!], [1, 2]);
    assert.equal(pb.getInt(f, 3), 2 ** 40 + 7);
    assert.throws(() => pb.getBytes(f, 1), pb.DecodeError);
    assert.throws(() => pb.getInt(f, 2), pb.DecodeError);
    assert.throws(() => pb.decode(Uint8Array.of(0x12, 0x05, 1)), pb.DecodeError);
    assert.throws(() => pb.decode(Uint8Array.of(0x00, 0x01)), pb.DecodeError);
    assert.throws(() => pb.decode(Uint8Array.of(0x0b)), pb.DecodeError);
    assert.throws(() => pb.getUint32(pb.decode(pb.fieldVarint(1, 2 ** 32)), 1), pb.DecodeError);
  });
});
