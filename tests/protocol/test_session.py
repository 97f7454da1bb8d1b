"""1:1 sessions: behaviour the interop scenarios cannot reach (time, stores, records)."""

from __future__ import annotations

import base64
import random
from dataclasses import replace

import pytest

from cipherpost.interop.peer import Peer
from cipherpost.protocol import (
    DuplicatedMessage,
    InvalidMessage,
    InvalidSignature,
    NoSession,
    ProtocolError,
    SessionRecord,
    SpqrSettings,
    UntrustedIdentity,
    decrypt,
    encrypt,
    has_session,
    process_prekey_bundle,
)
from cipherpost.protocol.constants import MAX_UNACKNOWLEDGED_SESSION_AGE
from cipherpost.protocol.keys import IdentityKeyPair
from cipherpost.protocol.messages import SignalMessage
from cipherpost.protocol.ratchet import MessageKeys, aes_cbc_encrypt, message_key_seed
from cipherpost.protocol.stores import InMemoryProtocolStore, SerializingSessionStore
from tests.conftest import load_vectors

from .parties import NOW, Party, make_party

#: This module tests the classical Double Ratchet (its bytes are compared with libsignal
#: 0.90's and a reference builder's); SPQR sessions, the default, are test_session_spqr's.
CLASSIC = SpqrSettings.OFF


def _start(rng, *, serializing: bool = False) -> tuple[Party, Party]:  # type: ignore[no-untyped-def]
    sessions_a = SerializingSessionStore() if serializing else None
    sessions_b = SerializingSessionStore() if serializing else None
    alice = make_party("alice", rng, 11, sessions_a)
    bob = make_party("bob", rng, 22, sessions_b)
    process_prekey_bundle(alice.store, bob.address, bob.bundle(), rng=rng, now=NOW, spqr=CLASSIC)
    return alice, bob


def _send(sender: Party, receiver: Party, text: bytes, now: int = NOW) -> bytes:
    message = encrypt(sender.store, receiver.address, text, now=now)
    return decrypt(receiver.store, sender.address, message.message_type, message.serialized,
                   rng=sender.rng, spqr=CLASSIC)


def _snapshot(party: Party, remote: Party) -> bytes | None:
    record = party.store.load_session(remote.address)
    return record.serialize() if record is not None else None


def test_libsignal_session_replays_offline() -> None:
    """libsignal 0.90's recorded messages decrypt, and our reply is byte-identical."""
    v = load_vectors("libsignal-session.json")
    peer = Peer(rng=random.Random(v["seed"]).randbytes)
    assert peer.handle({"id": 1, "op": "create_actor", "actor": v["bob"],
                        "registration_id": v["bob_registration_id"]})["ok"]
    bundle = peer.handle({"id": 2, "op": "generate_bundle", "actor": v["bob"],
                          **v["bundle_ids"]})["bundle"]
    assert bundle == v["bundle"]

    def decrypt_all(messages: list[dict[str, str]]) -> None:
        for m in messages:
            r = peer.handle({"id": 3, "op": "decrypt", "actor": v["bob"], "remote": v["alice"],
                             "message_type": m["message_type"], "ciphertext": m["ciphertext"]})
            assert r["ok"], r
            assert r["plaintext"] == m["plaintext"]

    decrypt_all(v["prekey_messages"])
    reply = peer.handle({"id": 4, "op": "encrypt", "actor": v["bob"], "remote": v["alice"],
                         "plaintext": v["python_reply"]["plaintext"]})
    assert (reply["message_type"], reply["ciphertext"]) == (
        v["python_reply"]["message_type"], v["python_reply"]["ciphertext"])
    decrypt_all(v["whisper_messages"])
    identity = peer.handle({"id": 5, "op": "identity", "actor": v["bob"], "remote": v["alice"]})
    assert identity["identity_key"] == v["alice_identity_key"]
    # libsignal's first messages carried an SPQR field 5, which we ignored but MACed.
    first = base64.b64decode(v["whisper_messages"][0]["ciphertext"])
    assert SignalMessage.parse(first).pq_ratchet == b""


@pytest.mark.parametrize("serializing", [False, True], ids=["objects", "serializing"])
def test_conversation(rng, serializing: bool) -> None:  # type: ignore[no-untyped-def]
    alice, bob = _start(rng, serializing=serializing)
    assert _send(alice, bob, b"one") == b"one"
    for i in range(20):
        assert _send(bob, alice, b"b%d" % i) == b"b%d" % i
        if i % 3 == 0:
            assert _send(alice, bob, b"a%d" % i) == b"a%d" % i


def test_stale_unacknowledged_session(rng) -> None:  # type: ignore[no-untyped-def]
    alice, bob = _start(rng)
    later = NOW + MAX_UNACKNOWLEDGED_SESSION_AGE
    assert has_session(alice.store, bob.address, later, spqr=CLASSIC)
    encrypt(alice.store, bob.address, b"still ok", now=later)
    assert not has_session(alice.store, bob.address, later + 1, spqr=CLASSIC)
    with pytest.raises(NoSession):
        encrypt(alice.store, bob.address, b"too old", now=later + 1)
    # An answer from Bob acknowledges the session; then age no longer matters.
    _send(alice, bob, b"hello")
    _send(bob, alice, b"ack")
    assert has_session(alice.store, bob.address, later + 10**6, spqr=CLASSIC)


def test_rejected_bundles_change_nothing(rng) -> None:  # type: ignore[no-untyped-def]
    alice = make_party("alice", rng)
    bob = make_party("bob", rng)
    bundle = bob.bundle()
    bad_signature = bytearray(bundle.signed_pre_key_signature)
    bad_signature[5] ^= 1
    with pytest.raises(InvalidSignature):
        process_prekey_bundle(alice.store, bob.address,
                              replace(bundle, signed_pre_key_signature=bytes(bad_signature)),
                              rng=rng, now=NOW, spqr=CLASSIC)
    assert alice.store.load_session(bob.address) is None
    assert alice.store.get_identity(bob.address) is None
    # A known, different identity: refused, nothing stored.
    alice.store.save_identity(bob.address, IdentityKeyPair.generate(rng).public)
    with pytest.raises(UntrustedIdentity):
        process_prekey_bundle(alice.store, bob.address, bundle, rng=rng, now=NOW, spqr=CLASSIC)
    assert alice.store.load_session(bob.address) is None


def test_failed_decrypts_change_nothing(rng) -> None:  # type: ignore[no-untyped-def]
    alice, bob = _start(rng)
    _send(alice, bob, b"hi")
    _send(bob, alice, b"hey")
    message = encrypt(alice.store, bob.address, b"payload", now=NOW)
    before = _snapshot(bob, alice)
    data = message.serialized
    for index in range(len(data)):
        forged = bytearray(data)
        forged[index] ^= 0x10
        with pytest.raises(ProtocolError):
            decrypt(bob.store, alice.address, 2, bytes(forged), rng=rng, spqr=CLASSIC)
        assert _snapshot(bob, alice) == before, index
    for cut in range(len(data)):
        with pytest.raises(ProtocolError):
            decrypt(bob.store, alice.address, 2, data[:cut], rng=rng, spqr=CLASSIC)
    assert _snapshot(bob, alice) == before
    assert decrypt(bob.store, alice.address, 2, data, rng=rng, spqr=CLASSIC) == b"payload"
    with pytest.raises(DuplicatedMessage):
        decrypt(bob.store, alice.address, 2, data, rng=rng, spqr=CLASSIC)


def test_untrusted_receive_changes_nothing(rng) -> None:  # type: ignore[no-untyped-def]
    alice, bob = _start(rng)
    _send(alice, bob, b"hi")
    message = encrypt(bob.store, alice.address, b"reply", now=NOW)
    before = _snapshot(alice, bob)
    alice.store.save_identity(bob.address, IdentityKeyPair.generate(rng).public)
    with pytest.raises(UntrustedIdentity):
        decrypt(alice.store, bob.address, message.message_type, message.serialized, rng=rng,
                spqr=CLASSIC)
    assert _snapshot(alice, bob) == before


def test_self_session_allows_any_jump(rng) -> None:  # type: ignore[no-untyped-def]
    """A session with oneself (a note-to-self device) has no forward-jump limit."""
    identity = IdentityKeyPair.generate(rng)
    me = make_party("me", rng, 5)
    other_device = Party(me.address.__class__("me", 2),
                         InMemoryProtocolStore(identity, 6), rng)
    me.store = InMemoryProtocolStore(identity, 5)
    process_prekey_bundle(me.store, other_device.address, other_device.bundle(), rng=rng,
                          now=NOW, spqr=CLASSIC)
    _send(me, other_device, b"first")
    messages = [encrypt(me.store, other_device.address, b"x", now=NOW) for _ in range(25_002)]
    last = messages[-1]
    assert decrypt(other_device.store, me.address, last.message_type, last.serialized,
                   rng=rng, spqr=CLASSIC) == b"x"


def test_last_resort_kyber_reuse_refused(rng) -> None:  # type: ignore[no-untyped-def]
    alice = make_party("alice", rng)
    bob = make_party("bob", rng)
    bundle = bob.bundle(one_time=False, last_resort=True)
    process_prekey_bundle(alice.store, bob.address, bundle, rng=rng, now=NOW, spqr=CLASSIC)
    first = encrypt(alice.store, bob.address, b"first", now=NOW)
    assert decrypt(bob.store, alice.address, 3, first.serialized, rng=rng, spqr=CLASSIC) == b"first"
    # Bob loses the session (say, a restore): the same PreKey message must not rebuild it.
    bob.store.sessions = type(bob.store.sessions)()
    with pytest.raises(InvalidMessage):
        decrypt(bob.store, alice.address, 3, first.serialized, rng=rng, spqr=CLASSIC)
    # A new session on the same last-resort key (new base key) is fine.
    process_prekey_bundle(alice.store, bob.address, bundle, rng=rng, now=NOW, spqr=CLASSIC)
    second = encrypt(alice.store, bob.address, b"second", now=NOW)
    assert decrypt(bob.store, alice.address, 3, second.serialized, rng=rng,
                   spqr=CLASSIC) == b"second"


def test_one_time_kyber_key_consumed(rng) -> None:  # type: ignore[no-untyped-def]
    alice = make_party("alice", rng)
    bob = make_party("bob", rng)
    bundle = bob.bundle(last_resort=False)
    process_prekey_bundle(alice.store, bob.address, bundle, rng=rng, now=NOW, spqr=CLASSIC)
    _send(alice, bob, b"hi")
    from cipherpost.protocol import InvalidKyberPreKeyId
    with pytest.raises(InvalidKyberPreKeyId):
        bob.store.get_kyber_pre_key(bundle.kyber_pre_key_id)


def test_records_round_trip(rng) -> None:  # type: ignore[no-untyped-def]
    alice, bob = _start(rng)
    held = [encrypt(alice.store, bob.address, b"held%d" % i, now=NOW) for i in range(3)]
    _send(alice, bob, b"x")
    _send(bob, alice, b"y")
    for party, remote in ((alice, bob), (bob, alice)):
        record = party.store.load_session(remote.address)
        assert record is not None
        data = record.serialize()
        again = SessionRecord.deserialize(data)
        assert again.serialize() == data
        party.store.store_session(remote.address, again)
    for i, message in enumerate(held):
        assert decrypt(bob.store, alice.address, message.message_type, message.serialized,
                       rng=rng, spqr=CLASSIC) == b"held%d" % i
    for bad in (b"", b"\x09" + data[1:], data[:-3], data + b"\x00", b"\x01\xff\xff"):
        with pytest.raises(InvalidMessage):
            SessionRecord.deserialize(bad)


def test_record_repr_hides_keys(rng) -> None:  # type: ignore[no-untyped-def]
    alice, bob = _start(rng)
    record = alice.store.load_session(bob.address)
    assert record is not None and record.current is not None
    text = repr(record) + repr(record.current)
    assert record.current.root_key.hex() not in text
    assert "redacted" in text


@pytest.mark.parametrize("case", load_vectors("session-kat.json")["cases"],
                         ids=lambda c: f"seed{c['seed']}")
def test_seeded_session_known_answer(case: dict[str, object]) -> None:
    """With a deterministic KEM and seeded randomness, a session is byte-for-byte fixed."""
    from tests.support.kat import transcript
    assert transcript(int(str(case["seed"]))) == {k: v for k, v in case.items() if k != "seed"}


@pytest.mark.parametrize("size", [0, 15, 16, 100, 4079, 4080, 4095, 4096, 4097, 16_400, 65_536,
                                  70_001])
@pytest.mark.parametrize("serializing", [False, True])
def test_every_size_encodes_as_the_reference_builder(rng, size: int,  # type: ignore[no-untyped-def]
                                                     serializing: bool) -> None:
    """The cipher's small- and large-message paths write exactly what the general
    ``SignalMessage.build`` writes, and decrypt it."""
    alice, bob = _start(rng, serializing=serializing)
    _send(alice, bob, b"one")
    _send(bob, alice, b"two")
    for _ in range(130):  # counters past one varint byte
        encrypt(alice.store, bob.address, b"skipped", now=NOW)
    record = alice.store.load_session(bob.address)
    assert record is not None and record.current is not None
    state = record.current
    chain = state.sender_chain
    assert chain is not None
    keys = MessageKeys.from_seed(message_key_seed(chain.chain_key))
    data = random.Random(size).randbytes(size)
    expected = SignalMessage.build(
        mac_key=keys.mac_key, ratchet_key=chain.ratchet.public, counter=chain.index,
        previous_counter=state.previous_counter,
        ciphertext=aes_cbc_encrypt(keys.cipher_key, keys.iv, data),
        sender_identity=state.local_identity, receiver_identity=state.remote_identity)
    message = encrypt(alice.store, bob.address, data, now=NOW)
    assert message.message_type == 2 and message.serialized == expected.serialized
    assert decrypt(bob.store, alice.address, 2, message.serialized, rng=rng, spqr=CLASSIC) == data
