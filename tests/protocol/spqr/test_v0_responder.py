"""Replay of ``v0-responder-to-libsignal.json``: libsignal 0.103 as initiator, Bob's keys
recorded (spqr-digest §10).

libsignal stores Kyber1024 private keys in the expanded 3168-byte form, which
``cryptography`` cannot load, so Bob's Kyber prekey is opened here with kyber-py, the
test oracle (tests/support/kem_double.py). What the vector shows, checked against our
responder:

- with SPQR (OFFERED or REQUIRED) Bob decrypts 0.103's first message with the recorded
  keys, and the message's SPQR field is the recorded one;
- a responder without SPQR (``OFF``, as Cipherpost before SPQR) cannot verify it: the
  SPQR key salts the message keys, so the MAC fails (``mac_ok_without_salt: false``),
  and the failure leaves no session and keeps every prekey;
- the reply of such a responder carries no SPQR field, which libsignal 0.103 refused
  ("Minimum version"); ours with SPQR carries one.
"""

from __future__ import annotations

import random

import pytest
from kyber_py.kyber import Kyber1024

from cipherpost.protocol import DuplicatedMessage, InvalidMessage, decrypt, encrypt
from cipherpost.protocol.address import ProtocolAddress
from cipherpost.protocol.kem import KYBER1024, KemKeyPair, KemPublicKey, KemRegistry
from cipherpost.protocol.keys import IdentityKeyPair, KeyPair, PublicKey
from cipherpost.protocol.messages import PREKEY_TYPE, PreKeySignalMessage, SignalMessage
from cipherpost.protocol.prekeys import KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord
from cipherpost.protocol.spqr.ratchet import SpqrSettings
from cipherpost.protocol.stores import InMemoryProtocolStore

from .helpers import H, load

ALICE = ProtocolAddress("11111111-1111-4111-8111-111111111111", 1)
BOB = ProtocolAddress("22222222-2222-4222-8222-222222222222", 2)
VECTOR = load("v0-responder-to-libsignal.json")


class _ExpandedKyber1024:
    """Kyber1024 whose private keys are libsignal's expanded form (decapsulation only)."""

    key_type = KYBER1024

    def load(self, secret: bytes) -> bytes:
        return secret

    def decapsulate(self, loaded: bytes, ciphertext: bytes) -> bytes:
        return bytes(Kyber1024.decaps(loaded, ciphertext))


KEMS: KemRegistry = {KYBER1024: _ExpandedKyber1024()}  # type: ignore[dict-item]


def _bob() -> tuple[InMemoryProtocolStore, PreKeySignalMessage]:
    secrets = VECTOR["bob_secrets"]
    message = PreKeySignalMessage.parse(H(VECTOR["alice_prekey_message"]))
    pair = KeyPair.from_private(H(secrets["ik_priv"]))
    assert pair.public == PublicKey.deserialize(H(secrets["ik_pub"]))
    identity = IdentityKeyPair(pair.public, pair.private)
    store = InMemoryProtocolStore(identity, message.registration_id)
    assert message.pre_key_id is not None and message.kyber_pre_key_id is not None
    store.save_signed_pre_key(SignedPreKeyRecord(
        message.signed_pre_key_id, KeyPair.from_private(H(secrets["spk_priv"])), b"", 0))
    store.save_pre_key(PreKeyRecord(message.pre_key_id,
                                    KeyPair.from_private(H(secrets["opk_priv"]))))
    kyber_secret = H(secrets["kyb_sec"])
    assert kyber_secret[0] == KYBER1024 and len(kyber_secret) == 1 + 3168
    public = KemPublicKey.deserialize(H(secrets["kyb_pub"]))
    store.save_kyber_pre_key(KyberPreKeyRecord(
        message.kyber_pre_key_id, KemKeyPair(public, kyber_secret[1:]), b"", 0))
    return store, message


def test_vector_is_what_it_says() -> None:
    _, message = _bob()
    assert message.identity_key.serialize() == H(VECTOR["alice_ik_pub"])
    assert message.message.pq_ratchet == H(VECTOR["python"]["pq_ratchet_in_alice_msg"])
    assert VECTOR["python"]["mac_ok_without_salt"] is False
    assert not VECTOR["libsignal_result"]["ok"]
    assert any("Minimum version" in line for line in VECTOR["libsignal_result"]["logs"])
    # The recorded V0 reply has no SPQR field: what 0.103 refused.
    reply = SignalMessage.parse(H(VECTOR["python"]["reply"]))
    assert not reply.pq_ratchet


@pytest.mark.parametrize("spqr", [SpqrSettings.OFFERED, SpqrSettings.REQUIRED])
def test_spqr_responder_decrypts_libsignal_0103_first_message(spqr: SpqrSettings) -> None:
    store, message = _bob()
    rng = random.Random(7).randbytes
    plaintext = decrypt(store, ALICE, PREKEY_TYPE, message.serialized, rng=rng, kems=KEMS,
                        spqr=spqr, local_address=BOB)
    assert plaintext == b"hello-v0-bob"  # what the probe sent (not recorded in the file)
    record = store.load_session(ALICE)
    assert record is not None
    # Our reply carries SPQR (libsignal 0.103 refused the V0 reply for lacking it).
    reply = encrypt(store, ALICE, b"reply", now=1_790_000_000, rng=rng, local_address=BOB)
    assert SignalMessage.parse(reply.serialized).pq_ratchet
    # Delivered again: a duplicate, not a second session.
    with pytest.raises(DuplicatedMessage):
        decrypt(store, ALICE, PREKEY_TYPE, message.serialized, rng=rng, kems=KEMS,
                spqr=spqr, local_address=BOB)


def test_responder_without_spqr_cannot_verify_and_keeps_everything() -> None:
    store, message = _bob()
    with pytest.raises(InvalidMessage):
        decrypt(store, ALICE, PREKEY_TYPE, message.serialized, rng=random.Random(8).randbytes,
                kems=KEMS, spqr=SpqrSettings.OFF, local_address=BOB)
    assert store.load_session(ALICE) is None
    assert message.pre_key_id is not None and message.kyber_pre_key_id is not None
    store.get_pre_key(message.pre_key_id)  # still there
    store.get_kyber_pre_key(message.kyber_pre_key_id)
