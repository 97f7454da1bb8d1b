"""Arbitrary and mutated input: only ProtocolErrors, never another exception, never a
change of stored state, and the interop peer never reports an internal error."""

from __future__ import annotations

import contextlib
import json
import random
import uuid

from hypothesis import given
from hypothesis import strategies as st

from cipherpost.interop.peer import Peer
from cipherpost.protocol import (
    ProtocolError,
    SessionRecord,
    decrypt,
    encrypt,
    process_prekey_bundle,
)
from cipherpost.protocol import sender_keys as sk
from cipherpost.protocol.address import ProtocolAddress
from cipherpost.protocol.messages import PreKeySignalMessage, SignalMessage
from cipherpost.protocol.stores import InMemorySenderKeyStore
from tests.protocol.parties import NOW, make_party

_rng = random.Random(99).randbytes
ALICE = make_party("alice", _rng, 1)
BOB = make_party("bob", _rng, 2)
process_prekey_bundle(ALICE.store, BOB.address, BOB.bundle(), rng=_rng, now=NOW)
FIRST = encrypt(ALICE.store, BOB.address, b"first", now=NOW).serialized
decrypt(BOB.store, ALICE.address, 3, FIRST, rng=_rng)
REPLY = encrypt(BOB.store, ALICE.address, b"reply", now=NOW).serialized
decrypt(ALICE.store, BOB.address, 2, REPLY, rng=_rng)
WHISPER = encrypt(ALICE.store, BOB.address, b"whisper", now=NOW).serialized

SENDER = ProtocolAddress("sender", 1)
DIST = uuid.UUID(int=7)
SENDER_KEYS, MEMBER_KEYS = InMemorySenderKeyStore(), InMemorySenderKeyStore()
SKDM = sk.create_distribution_message(SENDER_KEYS, SENDER, DIST, rng=_rng).serialized
sk.process_distribution_message(MEMBER_KEYS, SENDER, SKDM)
GROUP = sk.group_encrypt(SENDER_KEYS, SENDER, DIST, b"group", rng=_rng)


def mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    def flip(data: bytes, pos: int, bit: int) -> bytes:
        out = bytearray(data)
        out[pos % len(out)] ^= 1 << bit
        return bytes(out)

    return st.one_of(
        st.binary(max_size=300),
        st.builds(flip, st.just(seed), st.integers(0, 10_000), st.integers(0, 7)),
        st.integers(0, len(seed)).map(lambda n: seed[:n]),
        st.binary(min_size=1, max_size=20).map(lambda extra: seed + extra),
    )


def _bob_record() -> bytes:
    record = BOB.store.load_session(ALICE.address)
    assert record is not None
    return record.serialize()


@given(mutations(WHISPER), st.sampled_from([2, 3]))
def test_mutated_whisper_messages(data: bytes, message_type: int) -> None:
    before = _bob_record()
    try:
        plaintext = decrypt(BOB.store, ALICE.address, message_type, data, rng=_rng)
    except ProtocolError:
        assert _bob_record() == before
    else:  # only the untouched message itself may decrypt; then undo for the next example
        assert data == WHISPER and plaintext == b"whisper"
        BOB.store.store_session(ALICE.address, SessionRecord.deserialize(before))


@given(mutations(FIRST))
def test_mutated_prekey_messages(data: bytes) -> None:
    before = _bob_record()
    try:
        decrypt(BOB.store, ALICE.address, 3, data, rng=_rng)
    except ProtocolError:
        assert _bob_record() == before
    else:
        # Fields outside the MAC (the registration id, the outer low nibble) may change
        # and the message still decrypt once; its key is then spent, as for the original.
        BOB.store.store_session(ALICE.address, SessionRecord.deserialize(before))


@given(mutations(GROUP))
def test_mutated_group_messages(data: bytes) -> None:
    record = MEMBER_KEYS.load_sender_key(SENDER, DIST)
    assert record is not None
    before = record.serialize()
    try:
        plaintext = sk.group_decrypt(MEMBER_KEYS, SENDER, data)
    except ProtocolError:
        current = MEMBER_KEYS.load_sender_key(SENDER, DIST)
        assert current is not None and current.serialize() == before
    else:
        assert plaintext == b"group"
        MEMBER_KEYS.store_sender_key(SENDER, DIST, sk.SenderKeyRecord.deserialize(before))


@given(mutations(SKDM))
def test_mutated_distribution_messages(data: bytes) -> None:
    store = InMemorySenderKeyStore()
    try:
        sk.process_distribution_message(store, SENDER, data)
    except ProtocolError:
        assert store.load_sender_key(SENDER, DIST) is None


@given(st.binary(max_size=400))
def test_parsers_raise_only_protocol_errors(data: bytes) -> None:
    for parse in (SignalMessage.parse, PreKeySignalMessage.parse, SessionRecord.deserialize,
                  sk.SenderKeyRecord.deserialize):
        with contextlib.suppress(ProtocolError):
            parse(data)


PEER = Peer(rng=random.Random(5).randbytes)
PEER.handle({"id": 0, "op": "create_actor", "actor": {"name": "a", "device_id": 1},
             "registration_id": 1})

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=12)
ops = st.sampled_from(["create_actor", "generate_bundle", "process_bundle", "encrypt",
                       "decrypt", "has_session", "archive_session", "identity", "trust",
                       "fingerprint", "compare_scannable", "sender_key_distribution",
                       "process_sender_key_distribution", "group_encrypt", "group_decrypt",
                       "nonsense"])


@given(ops, st.dictionaries(st.sampled_from(
    ["actor", "remote", "sender", "plaintext", "ciphertext", "message_type", "bundle",
     "identity_key", "skdm", "distribution_id", "registration_id", "signed_prekey_id",
     "kyber_prekey_id", "prekey_id", "local_id", "remote_id", "scanned", "iterations", "kem"]),
    json_values | st.just({"name": "a", "device_id": 1}) | st.just("AAAA"), max_size=8))
def test_peer_never_fails_internally(op: str, fields: dict[str, object]) -> None:
    line = json.dumps({"id": 1, "op": op, **fields})
    response = PEER.handle_line(line)
    assert response is not None
    if not response["ok"]:
        assert response["error"]["kind"] != "internal_error", response


@given(st.text(max_size=200))
def test_peer_survives_any_line(line: str) -> None:
    response = PEER.handle_line(line)
    if response is not None:
        assert response.get("error", {}).get("kind") != "internal_error"
