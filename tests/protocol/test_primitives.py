"""Known-answer tests of the primitives, each also tried with wrong lengths and flipped bits."""

from __future__ import annotations

import os
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from kyber_py.kyber import Kyber1024

from cipherpost.protocol import xeddsa
from cipherpost.protocol.errors import InvalidKey, InvalidMessage
from cipherpost.protocol.kem import (
    DEFAULT_KEMS,
    KYBER1024,
    MLKEM1024,
    KemKeyPair,
    KemPublicKey,
    Kyber1024Backend,
)
from cipherpost.protocol.keys import IdentityKeyPair, KeyPair, PrivateKey, PublicKey, clamp
from cipherpost.protocol.ratchet import (
    MessageKeys,
    aes_cbc_decrypt,
    aes_cbc_encrypt,
    aes_cbc_encrypt_pieces,
    hkdf,
    message_key_seed,
    next_chain_key,
)
from tests.conftest import load_vectors

H = bytes.fromhex


@pytest.mark.parametrize("case", load_vectors("x25519.json")["agreements"],
                         ids=lambda c: c["name"])
def test_x25519_vectors(case: dict[str, str]) -> None:
    alice = PrivateKey(H(case["alice_private"]))
    bob_public = PublicKey(H(case["bob_public"]))
    assert alice.agree(bob_public).hex() == case["shared"]
    if "alice_public" in case:
        assert alice.public_key().raw.hex() == case["alice_public"]
        bob = PrivateKey(H(case["bob_private"]))
        assert bob.public_key().raw.hex() == case["bob_public"]
        assert bob.agree(alice.public_key()).hex() == case["shared"]


def test_clamping_vector() -> None:
    for case in load_vectors("x25519.json")["clamping"]:
        assert PrivateKey(H(case["input"])).serialize().hex() == case["clamped"]
        assert clamp(H(case["input"])).hex() == case["clamped"]


def test_small_order_agreement_refused() -> None:
    with pytest.raises(InvalidKey):
        PrivateKey(os.urandom(32)).agree(PublicKey(bytes(32)))


_P = 2**255 - 19
#: u coordinates of the points of order 1, 2, 4 and 8 (as libsodium lists them), and their
#: non-canonical forms u + p where those still fit in 255 bits.
_LOW_ORDER = [0, 1, _P - 1,
              325606250916557431795983626356110631294008115727848805560023387167927233504,
              39382357235489614581723060781553021112529911719440698176882885853963445705823,
              _P, _P + 1]


def _agree_cryptography(private: bytes, public: bytes) -> bytes | None:
    try:
        return X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(public))
    except ValueError:
        return None


def _agree_stored(private: bytes, public: bytes) -> bytes | None:
    """A stored key that was never loaded into ``cryptography`` agrees through libsodium."""
    key = PrivateKey.from_stored(clamp(private))
    try:
        return key.agree(PublicKey(public))
    except InvalidKey:
        return None
    finally:
        assert key._x25519 is None


def test_stored_key_agreement_matches_cryptography() -> None:
    """libsodium's X25519 (stored keys) and cryptography's (loaded keys) give the same
    results and refuse the same points, canonical or not, bit 255 set or not."""
    rng = random.Random(25519)
    points = [u.to_bytes(32, "little") for u in _LOW_ORDER]
    points += [rng.randbytes(32) for _ in range(40)]
    points += [rng.randrange(_P, 2**255).to_bytes(32, "little") for _ in range(10)]
    points += [bytes(p[:31]) + bytes((p[31] | 0x80,)) for p in list(points)]
    low_order = {u % _P for u in _LOW_ORDER}
    for public in points:
        u = int.from_bytes(public, "little") & (2**255 - 1)
        for _ in range(3):
            private = rng.randbytes(32)
            expected = _agree_cryptography(private, public)
            assert _agree_stored(private, public) == expected, public.hex()
            assert (expected is None) == (u % _P in low_order)  # refused: low order only
    loaded = PrivateKey(rng.randbytes(32))
    loaded.public_key()  # loads it into cryptography
    public = KeyPair.generate(os.urandom).public
    assert loaded.agree(public) == PrivateKey.from_stored(loaded.serialize()).agree(public)


def test_public_key_parsing() -> None:
    key = KeyPair.generate(os.urandom).public
    serialized = key.serialize()
    assert len(serialized) == 33 and serialized[0] == 5
    assert PublicKey.deserialize(serialized) == key
    assert PublicKey.deserialize(serialized + b"extra") == key  # as libsignal: ignored
    for bad in (b"", serialized[1:], b"\x06" + serialized[1:], serialized[:32]):
        with pytest.raises(InvalidKey):
            PublicKey.deserialize(bad)
    with pytest.raises(InvalidKey):
        PrivateKey(b"\x01" * 31)


def test_identity_key_pair_serialization() -> None:
    pair = IdentityKeyPair.generate(os.urandom)
    data = pair.serialize()
    assert len(data) == 69 and data[:3] == b"\x0a\x21\x05" and data[35:37] == b"\x12\x20"
    again = IdentityKeyPair.deserialize(data)
    assert again.public == pair.public
    assert again.private.serialize() == pair.private.serialize()
    other = IdentityKeyPair.generate(os.urandom)
    with pytest.raises(InvalidKey):
        IdentityKeyPair.deserialize(data[:35] + other.serialize()[35:])
    with pytest.raises(InvalidKey):
        IdentityKeyPair.deserialize(data[:-1])


def test_canonical_base_keys() -> None:
    assert KeyPair.generate(os.urandom).public.is_canonical()
    assert not PublicKey(bytes(32)).is_canonical()  # small order
    assert not PublicKey(b"\x01" + bytes(31)).is_canonical()  # u = 1, small order
    assert not PublicKey(b"\xff" * 32).is_canonical()  # bit 255 set / >= p
    p = 2**255 - 19
    assert not PublicKey((p + 9).to_bytes(32, "little")).is_canonical()  # u >= p


@pytest.mark.parametrize("case", load_vectors("hkdf.json")["cases"], ids=lambda c: c["name"])
def test_hkdf_vectors(case: dict[str, object]) -> None:
    salt = H(str(case["salt"])) or None  # RFC 5869: an empty salt is HashLen zeros
    okm = hkdf(H(str(case["ikm"])), salt, H(str(case["info"])), int(str(case["length"])))
    assert okm.hex() == case["okm"]


def test_chain_key_vector() -> None:
    for case in load_vectors("ratchet.json")["chain_keys"]:
        chain_key = H(case["chain_key"])
        keys = MessageKeys.from_seed(message_key_seed(chain_key))
        assert keys.cipher_key.hex() == case["cipher_key"]
        assert keys.mac_key.hex() == case["mac_key"]
        assert keys.iv.hex() == case["iv"]
        assert next_chain_key(chain_key).hex() == case["next_chain_key"]
        assert "redacted" in repr(keys) and case["mac_key"] not in repr(keys)


def test_aes_cbc_round_trip_and_padding() -> None:
    key, iv = os.urandom(32), os.urandom(16)
    for size in range(0, 40):
        data = os.urandom(size)
        ciphertext = aes_cbc_encrypt(key, iv, data)
        assert len(ciphertext) == 16 * ((size + 16) // 16)
        assert aes_cbc_decrypt(key, iv, ciphertext) == data
    for bad_length in (b"", b"x" * 15, b"x" * 33):
        with pytest.raises(InvalidMessage):
            aes_cbc_decrypt(key, iv, bad_length)
    # A block whose last byte decrypts to an invalid pad value.
    raw = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    bad_padding = raw.update(b"A" * 15 + b"\x00") + raw.finalize()
    with pytest.raises(InvalidMessage):
        aes_cbc_decrypt(key, iv, bad_padding)


def test_aes_cbc_large_pieces_and_views() -> None:
    """From 4 KiB on, encryption comes in two pieces and decryption takes a view and
    returns a whole-block-padded plaintext without copying; same bytes as the small path."""
    key, iv = os.urandom(32), os.urandom(16)
    for size in (4064, 4079, 4080, 4095, 4096, 4097, 65_535, 65_536):
        data = os.urandom(size)
        ciphertext = aes_cbc_encrypt(key, iv, data)
        assert b"".join(aes_cbc_encrypt_pieces(key, iv, data)) == ciphertext
        assert aes_cbc_decrypt(key, iv, memoryview(b"xx" + ciphertext)[2:]) == data
        assert aes_cbc_decrypt(key, iv, ciphertext) == data
    for last in (b"A" * 15 + b"\x00", b"A" * 14 + b"\x01\x02", b"A" * 15 + b"\x11"):
        raw = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        bad_padding = raw.update(bytes(4096) + last) + raw.finalize()
        with pytest.raises(InvalidMessage):
            aes_cbc_decrypt(key, iv, bad_padding)


def test_xeddsa_vector_and_bit_flips() -> None:
    for case in load_vectors("xeddsa.json")["verify"]:
        public = PublicKey.deserialize(H(case["public"]))
        message, signature = H(case["message"]), H(case["signature"])
        assert xeddsa.verify(public, message, signature) is case["valid"]
        for bit in range(512):
            forged = bytearray(signature)
            forged[bit // 8] ^= 1 << (bit % 8)
            assert not xeddsa.verify(public, message, bytes(forged)), bit
        for bit in range(0, len(message) * 8, 7):
            forged = bytearray(message)
            forged[bit // 8] ^= 1 << (bit % 8)
            assert not xeddsa.verify(public, bytes(forged), signature), bit
        assert not xeddsa.verify(public, message, signature[:63])
        assert not xeddsa.verify(public, message, signature + b"\x00")


def test_xeddsa_sign_verify() -> None:
    for _ in range(50):
        pair = KeyPair.generate(os.urandom)
        message = os.urandom(33)
        signature = xeddsa.sign(pair.private, message, os.urandom)
        assert xeddsa.verify(pair.public, message, signature)
        assert not xeddsa.verify(KeyPair.generate(os.urandom).public, message, signature)
    # S >= 2**253 is refused outright, as libsignal does.
    pair = KeyPair.generate(os.urandom)
    signature = bytearray(xeddsa.sign(pair.private, b"m", os.urandom))
    signature[63] |= 0x60
    assert not xeddsa.verify(pair.public, b"m", bytes(signature))


def test_xeddsa_is_randomized_by_rng() -> None:
    pair = KeyPair.generate(os.urandom)
    a = xeddsa.sign(pair.private, b"msg", lambda n: b"\x01" * n)
    b = xeddsa.sign(pair.private, b"msg", lambda n: b"\x01" * n)
    c = xeddsa.sign(pair.private, b"msg", lambda n: b"\x02" * n)
    assert a == b != c


@pytest.mark.parametrize("case", load_vectors("kyber1024.json")["cases"],
                         ids=lambda c: c["seed"][:8])
def test_kyber1024_vectors(case: dict[str, str]) -> None:
    """Our round-3 bridge decapsulates what kyber-py encapsulated."""
    import hashlib
    backend = Kyber1024Backend()
    seed = H(case["seed"])
    assert hashlib.sha256(backend.public_from_secret(seed)).hexdigest() == case["public_sha256"]
    assert backend.decapsulate(backend.load(seed), H(case["ciphertext"])).hex() == case["shared"]
    forged = bytearray(H(case["ciphertext"]))
    forged[100] ^= 1
    assert backend.decapsulate(backend.load(seed), bytes(forged)).hex() != case["shared"]


def test_kyber1024_bridge_against_oracle_both_ways() -> None:
    backend = Kyber1024Backend()
    for _ in range(3):
        # kyber-py key, our encapsulation
        public, secret = Kyber1024.keygen()
        shared, ciphertext = backend.encapsulate(public)
        assert Kyber1024.decaps(secret, ciphertext) == shared
        # our key, kyber-py encapsulation
        our_public, our_secret, _ = backend.generate(os.urandom)
        theirs, ct = Kyber1024.encaps(our_public)
        assert backend.decapsulate(backend.load(our_secret), ct) == theirs


def test_kem_key_types_and_lengths() -> None:
    for key_type in (KYBER1024, MLKEM1024):
        pair = KemKeyPair.generate(os.urandom, key_type)
        serialized = pair.public.serialize()
        assert len(serialized) == 1569 and serialized[0] == key_type
        assert KemPublicKey.deserialize(serialized) == pair.public
        shared, ciphertext = pair.public.encapsulate()
        assert len(ciphertext) == 1569 and ciphertext[0] == key_type
        assert pair.decapsulate(ciphertext) == shared
        with pytest.raises(InvalidKey):
            pair.decapsulate(bytes((key_type ^ 2,)) + ciphertext[1:])
        with pytest.raises(InvalidKey):
            pair.decapsulate(ciphertext[:-1])
        assert "redacted" in repr(pair)
    for bad in (b"", b"\x07" + bytes(1568), b"\x08" + bytes(1567), b"\x08" + bytes(1569)):
        with pytest.raises(InvalidKey):
            KemPublicKey.deserialize(bad)
    kyber_only = {KYBER1024: DEFAULT_KEMS[KYBER1024]}
    with pytest.raises(InvalidKey):
        KemPublicKey.deserialize(b"\x0a" + bytes(1568), kyber_only)


def test_mlkem_and_kyber_secrets_differ() -> None:
    """Same key, same ciphertext: the round-3 finish makes a different secret than FIPS 203."""
    seed = os.urandom(64)
    ml = DEFAULT_KEMS[MLKEM1024]
    public = ml.public_from_secret(seed)
    shared, ciphertext = ml.encapsulate(public)
    assert ml.decapsulate(ml.load(seed), ciphertext) == shared
    assert DEFAULT_KEMS[KYBER1024].decapsulate(ml.load(seed), ciphertext) != shared


def test_reprs_hide_secrets() -> None:
    pair = IdentityKeyPair.generate(os.urandom)
    secret_hex = pair.private.serialize().hex()
    for text in (repr(pair), repr(pair.private), repr(KeyPair(pair.public, pair.private))):
        assert secret_hex not in text and "redacted" in text
