"""Arbitrary and mutated input: only ProtocolErrors, never another exception, never a
change of stored state, and the interop peer never reports an internal error.

Mutations of valid messages (bit flips, truncations, appended bytes, overwritten runs)
reach much deeper than random bytes, which rarely get past a version byte.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import struct
import uuid
from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cipherpost.interop.peer import Peer
from cipherpost.protocol import (
    InMemoryProtocolStore,
    ProtocolError,
    SessionRecord,
    SpqrSettings,
    decrypt,
    encrypt,
    process_prekey_bundle,
)
from cipherpost.protocol import sender_keys as sk
from cipherpost.protocol.address import ProtocolAddress
from cipherpost.protocol.messages import (
    PreKeySignalMessage,
    SenderKeyDistributionMessage,
    SenderKeyMessage,
    SignalMessage,
)
from cipherpost.protocol.state import _STATE
from cipherpost.protocol.stores import InMemorySenderKeyStore, InMemorySessionStore
from tests.protocol.parties import NOW, make_party

_rng = random.Random(99).randbytes
#: The 1:1 messages here are of classical sessions (SPQR's are fuzzed in tests/assurance).
CLASSIC = SpqrSettings.OFF
ALICE = make_party("alice", _rng, 1)
BOB = make_party("bob", _rng, 2)
CAROL = make_party("carol", _rng, 3)
process_prekey_bundle(ALICE.store, BOB.address, BOB.bundle(), rng=_rng, now=NOW, spqr=CLASSIC)
FIRST = encrypt(ALICE.store, BOB.address, b"first", now=NOW).serialized
SKIPPED = encrypt(ALICE.store, BOB.address, b"skipped", now=NOW).serialized  # never delivered
decrypt(BOB.store, ALICE.address, 3, FIRST, rng=_rng, spqr=CLASSIC)
REPLY = encrypt(BOB.store, ALICE.address, b"reply", now=NOW).serialized
decrypt(ALICE.store, BOB.address, 2, REPLY, rng=_rng, spqr=CLASSIC)
WHISPER = encrypt(ALICE.store, BOB.address, b"whisper", now=NOW).serialized
# Carol's first message is never delivered: Bob still holds the prekeys it names, so its
# mutations reach the responder's PQXDH path, not only the state lookup by base key.
process_prekey_bundle(CAROL.store, BOB.address, BOB.bundle(), rng=_rng, now=NOW, spqr=CLASSIC)
CAROL_FIRST = encrypt(CAROL.store, BOB.address, b"carol", now=NOW).serialized
# Bob's record for Alice now has a skipped key; add an archived state as well.
_record = BOB.store.load_session(ALICE.address)
assert _record is not None and _record.current is not None
RICH_RECORD = SessionRecord(_record.current, [_record.current]).serialize()
ALICE_RECORD = ALICE.store.load_session(BOB.address).serialize()  # type: ignore[union-attr]

SENDER = ProtocolAddress("sender", 1)
DIST = uuid.UUID(int=7)
SENDER_KEYS, MEMBER_KEYS = InMemorySenderKeyStore(), InMemorySenderKeyStore()
SKDM = sk.create_distribution_message(SENDER_KEYS, SENDER, DIST, rng=_rng).serialized
sk.process_distribution_message(MEMBER_KEYS, SENDER, SKDM)
GROUP = sk.group_encrypt(SENDER_KEYS, SENDER, DIST, b"group", rng=_rng)
GROUP_RECORD = MEMBER_KEYS.load_sender_key(SENDER, DIST).serialize()  # type: ignore[union-attr]


def mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, or ``seed`` with bits flipped, cut short, extended or overwritten."""

    def flip(data: bytes, flips: list[tuple[int, int]]) -> bytes:
        out = bytearray(data)
        for pos, bit in flips:
            out[pos % len(out)] ^= 1 << bit
        return bytes(out)

    def overwrite(data: bytes, pos: int, run: bytes) -> bytes:
        pos %= len(data)
        return data[:pos] + run + data[pos + len(run):]

    positions = st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 7)), min_size=1,
                         max_size=3)
    return st.one_of(
        st.binary(max_size=300),
        st.builds(flip, st.just(seed), positions),
        st.integers(0, len(seed)).map(lambda n: seed[:n]),
        st.binary(min_size=1, max_size=20).map(lambda extra: seed + extra),
        st.builds(overwrite, st.just(seed), st.integers(0, 2**16), st.binary(min_size=1,
                                                                           max_size=8)),
    )


# -- stores: capture everything, restore after an accepted input --------------------------


def capture(store: InMemoryProtocolStore) -> dict[str, Any]:
    sessions = store.sessions
    assert isinstance(sessions, InMemorySessionStore)
    return {
        "sessions": {a: r.serialize() for a, r in sessions._sessions.items()},
        "pre_keys": dict(store._pre_keys),
        "signed": dict(store._signed_keys),
        "kyber": dict(store._kyber_keys),
        "used": set(store._used),
        "known": dict(store._known),
    }


def restore(store: InMemoryProtocolStore, snap: dict[str, Any]) -> None:
    sessions = store.sessions
    assert isinstance(sessions, InMemorySessionStore)
    sessions._sessions = {a: SessionRecord.deserialize(b) for a, b in snap["sessions"].items()}
    store._pre_keys = dict(snap["pre_keys"])
    store._signed_keys = dict(snap["signed"])
    store._kyber_keys = dict(snap["kyber"])
    store._used = set(snap["used"])
    store._known = dict(snap["known"])


def _bob_decrypts(sender: ProtocolAddress, message_type: int, data: bytes) -> bytes | None:
    """Decrypt at Bob: None if refused (then nothing changed), else the plaintext (then
    Bob's stores are put back for the next example)."""
    before = capture(BOB.store)
    try:
        plaintext = decrypt(BOB.store, sender, message_type, data, rng=_rng, spqr=CLASSIC)
    except ProtocolError:
        assert capture(BOB.store) == before, "a refused message changed Bob's stores"
        return None
    restore(BOB.store, before)
    return plaintext


# -- 1:1 messages ---------------------------------------------------------------------------


@given(mutations(WHISPER), st.sampled_from([2, 3]))
def test_mutated_whisper_messages(data: bytes, message_type: int) -> None:
    plaintext = _bob_decrypts(ALICE.address, message_type, data)
    assert plaintext is None or (data == WHISPER and plaintext == b"whisper")


@given(mutations(SKIPPED), st.sampled_from([2, 3]))
def test_mutated_skipped_prekey_messages(data: bytes, message_type: int) -> None:
    """A PreKey message of a state Bob holds, whose key Bob keeps as skipped."""
    plaintext = _bob_decrypts(ALICE.address, message_type, data)
    # Fields outside the MAC (registration id, the outer low nibble, prekey ids and the
    # Kyber ciphertext once the state exists) may change and the message still decrypt.
    assert plaintext is None or plaintext == b"skipped"


@given(mutations(CAROL_FIRST), st.sampled_from([2, 3]))
def test_mutated_first_prekey_messages(data: bytes, message_type: int) -> None:
    """A PreKey message that makes Bob build a new state from his prekeys."""
    plaintext = _bob_decrypts(CAROL.address, message_type, data)
    assert plaintext is None or plaintext == b"carol"


@given(mutations(FIRST))
def test_mutated_duplicate_prekey_messages(data: bytes) -> None:
    """Every mutation of an already delivered PreKey message is refused."""
    assert _bob_decrypts(ALICE.address, 3, data) is None


# -- sender keys ----------------------------------------------------------------------------


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
        assert data == GROUP and plaintext == b"group"
        MEMBER_KEYS.store_sender_key(SENDER, DIST, sk.SenderKeyRecord.deserialize(before))


@given(mutations(SKDM), st.booleans())
def test_mutated_distribution_messages(data: bytes, holds_state: bool) -> None:
    store = InMemorySenderKeyStore()
    if holds_state:
        store.store_sender_key(SENDER, DIST, sk.SenderKeyRecord.deserialize(GROUP_RECORD))
    before = dict(store._records)
    try:
        sk.process_distribution_message(store, SENDER, data)
    except ProtocolError:
        assert store._records == before


# -- parsers and stored records -------------------------------------------------------------

PARSERS: list[Callable[[bytes], object]] = [
    SignalMessage.parse, PreKeySignalMessage.parse, SenderKeyMessage.parse,
    SenderKeyDistributionMessage.parse, SessionRecord.deserialize,
    sk.SenderKeyRecord.deserialize,
]


@given(st.binary(max_size=400) | mutations(WHISPER) | mutations(FIRST) | mutations(GROUP)
       | mutations(SKDM) | mutations(RICH_RECORD) | mutations(GROUP_RECORD))
def test_parsers_raise_only_protocol_errors(data: bytes) -> None:
    for parse in PARSERS:
        with contextlib.suppress(ProtocolError):
            parse(data)


# A format-2 record whose only state is exactly a state header long: the decoder reads the
# alice_base_key length byte one past the end of the data (IndexError, not InvalidMessage).
SHORT_STATE_RECORD = struct.pack("<BBHI", 2, 1, 0, _STATE.size) + bytes(_STATE.size)
# Alice's record with the state's version byte (offset 8) set to 0x14: it loads, and
# encrypt then fails building the message's version byte (ValueError, not a ProtocolError).
VERSION_20_RECORD = ALICE_RECORD[:8] + b"\x14" + ALICE_RECORD[9:]


def _load_and_use(data: bytes) -> None:
    """Load ``data`` as Bob's record for Alice and use it; only ProtocolErrors may escape.
    Bob's stores are put back afterwards."""
    try:
        record = SessionRecord.deserialize(data)
    except ProtocolError:
        return
    before = capture(BOB.store)
    BOB.store.store_session(ALICE.address, record)
    try:
        with contextlib.suppress(ProtocolError):
            decrypt(BOB.store, ALICE.address, 2, WHISPER, rng=_rng, spqr=CLASSIC)
        with contextlib.suppress(ProtocolError):
            encrypt(BOB.store, ALICE.address, b"x", now=NOW, rng=_rng)
    finally:
        restore(BOB.store, before)


@given(mutations(RICH_RECORD) | mutations(ALICE_RECORD))
def test_mutated_records_load_or_fail_cleanly(data: bytes) -> None:
    """A corrupted stored record is refused with a ProtocolError when loaded or used."""
    _load_and_use(data)


def test_record_with_a_state_cut_after_its_header_is_refused() -> None:
    """BUG: SessionRecord.deserialize raises IndexError (state.py, _decode_state reads
    ``data[pos]`` for the base key length without checking ``pos < end``)."""
    _load_and_use(SHORT_STATE_RECORD)


def test_record_with_an_unknown_session_version_is_refused() -> None:
    """BUG: a record whose state has version 20 loads, and encrypt raises ValueError
    (messages._version_byte); deserialize should refuse versions other than 3..4."""
    _load_and_use(VERSION_20_RECORD)


@given(mutations(RICH_RECORD) | mutations(ALICE_RECORD))
def test_accepted_records_reach_a_fixpoint(data: bytes) -> None:
    """A record that loads writes bytes that load and write back identically.

    (Not ``serialize() == data``: the loader is lenient, a has-current byte of 2..255 reads
    as 1 and unknown state flag bits are dropped, so a few corrupted inputs are repaired.)
    """
    try:
        record = SessionRecord.deserialize(data)
    except ProtocolError:
        return
    once = record.serialize()
    assert SessionRecord.deserialize(once).serialize() == once


# -- the interop peer -----------------------------------------------------------------------

PEER = Peer(rng=random.Random(5).randbytes, clock=lambda: NOW)
A = {"name": "a", "device_id": 1}
B = {"name": "b", "device_id": 1}
D = "00000000-0000-0000-0000-000000000007"


def _ok(request: dict[str, Any]) -> dict[str, Any]:
    response = PEER.handle({"id": 0, **request})
    assert response["ok"], response
    return response


for _actor, _reg in ((A, 1), (B, 2)):
    _ok({"op": "create_actor", "actor": _actor, "registration_id": _reg})
_BUNDLE = _ok({"op": "generate_bundle", "actor": B, "signed_prekey_id": 1,
               "kyber_prekey_id": 2, "prekey_id": 3})["bundle"]
_ok({"op": "process_bundle", "actor": A, "remote": B, "bundle": _BUNDLE})
_PEER_FIRST = _ok({"op": "encrypt", "actor": A, "remote": B, "plaintext": "AA=="})
_ok({"op": "decrypt", "actor": B, "remote": A, "message_type": "prekey",
     "ciphertext": _PEER_FIRST["ciphertext"]})
_PEER_WHISPER = _ok({"op": "encrypt", "actor": B, "remote": A, "plaintext": "AQ=="})
_PEER_SKDM = _ok({"op": "sender_key_distribution", "actor": A, "distribution_id": D})["skdm"]
_ok({"op": "process_sender_key_distribution", "actor": B, "sender": A, "skdm": _PEER_SKDM})
_PEER_GROUP = _ok({"op": "group_encrypt", "actor": A, "distribution_id": D,
                   "plaintext": "Ag=="})["ciphertext"]
_ok({"op": "generate_bundle", "actor": A, "signed_prekey_id": 9, "kyber_prekey_id": 9,
     "prekey_id": None})


def peer_state() -> list[object]:
    out: list[object] = []
    for address, actor in sorted(PEER._actors.items(), key=lambda item: str(item[0])):
        out += [address, capture(actor.store),
                {k: r.serialize() for k, r in actor.sender_keys._records.items()}]
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _check_peer(request: dict[str, Any]) -> dict[str, Any]:
    before = peer_state()
    response = PEER.handle_line(json.dumps({"id": 1, **request}))
    assert response is not None
    if not response["ok"]:
        assert response["error"]["kind"] != "internal_error", response
        assert peer_state() == before, f"a failed request changed state: {response}"
    return response


@given(mutations(base64.b64decode(_PEER_WHISPER["ciphertext"]))
       | mutations(base64.b64decode(_PEER_FIRST["ciphertext"])),
       st.sampled_from(["prekey", "whisper"]), st.sampled_from([(A, B), (B, A)]))
def test_peer_refuses_mutated_ciphertexts(data: bytes, kind: str,
                                          sides: tuple[dict[str, Any], dict[str, Any]]) -> None:
    actor, remote = sides
    response = _check_peer({"op": "decrypt", "actor": actor, "remote": remote,
                            "message_type": kind, "ciphertext": _b64(data)})
    if response["ok"]:  # only the pending whisper itself, once: put state back
        assert actor == A and response["plaintext"] == "AQ=="
        restore(PEER._actors[ProtocolAddress("a", 1)].store, _A_STORE)


_A_STORE = capture(PEER._actors[ProtocolAddress("a", 1)].store)


@given(mutations(base64.b64decode(_PEER_GROUP)) | mutations(base64.b64decode(_PEER_SKDM)),
       st.booleans())
def test_peer_refuses_mutated_group_input(data: bytes, as_skdm: bool) -> None:
    if as_skdm:
        request = {"op": "process_sender_key_distribution", "actor": B, "sender": A,
                   "skdm": _b64(data)}
    else:
        request = {"op": "group_decrypt", "actor": B, "sender": A, "ciphertext": _b64(data)}
    response = _check_peer(request)
    if response["ok"]:
        b = PEER._actors[ProtocolAddress("b", 1)]
        b.sender_keys._records = dict(_B_SENDER_KEYS)


_B_SENDER_KEYS = dict(PEER._actors[ProtocolAddress("b", 1)].sender_keys._records)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=12)
BUNDLE_FIELDS = sorted(_BUNDLE)


@given(st.sampled_from(BUNDLE_FIELDS),
       json_values | mutations(base64.b64decode(_BUNDLE["kyber_prekey"])).map(_b64)
       | mutations(base64.b64decode(_BUNDLE["signed_prekey"])).map(_b64)
       | mutations(base64.b64decode(_BUNDLE["identity_key"])).map(_b64))
def test_peer_refuses_mutated_bundles(field: str, value: object) -> None:
    bundle = {**_BUNDLE, field: value}
    response = _check_peer({"op": "process_bundle", "actor": A, "remote": B, "bundle": bundle})
    if response["ok"]:
        restore(PEER._actors[ProtocolAddress("a", 1)].store, _A_STORE)


ops = st.sampled_from(["create_actor", "generate_bundle", "process_bundle", "encrypt",
                       "decrypt", "has_session", "archive_session", "identity", "trust",
                       "fingerprint", "compare_scannable", "sender_key_distribution",
                       "process_sender_key_distribution", "group_encrypt", "group_decrypt",
                       "nonsense"])


@given(ops, st.dictionaries(st.sampled_from(
    ["actor", "remote", "sender", "plaintext", "ciphertext", "message_type", "bundle",
     "identity_key", "skdm", "distribution_id", "registration_id", "signed_prekey_id",
     "kyber_prekey_id", "prekey_id", "local_id", "remote_id", "scanned", "iterations", "kem"]),
    json_values | st.sampled_from([A, B, "AAAA", D, _BUNDLE]), max_size=8))
def test_peer_never_fails_internally(op: str, fields: dict[str, object]) -> None:
    peer = Peer(rng=random.Random(5).randbytes, clock=lambda: NOW)
    for actor in (A, B):
        peer.handle({"id": 0, "op": "create_actor", "actor": actor, "registration_id": 1})
    response = peer.handle_line(json.dumps({"id": 1, "op": op, **fields}))
    assert response is not None
    if not response["ok"]:
        assert response["error"]["kind"] != "internal_error", response


@given(st.text(max_size=200))
def test_peer_survives_any_line(line: str) -> None:
    response = PEER.handle_line(line)
    if response is not None:
        assert response.get("error", {}).get("kind") != "internal_error"
