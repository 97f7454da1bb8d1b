"""Frozen records of every stored format keep loading and keep working."""

from __future__ import annotations

import base64
import json
import random
import uuid
from pathlib import Path

import pytest

from cipherpost.protocol import DuplicatedMessage, decrypt
from cipherpost.protocol import sender_keys as sk
from cipherpost.protocol.address import ProtocolAddress
from cipherpost.protocol.keys import IdentityKeyPair, PublicKey
from cipherpost.protocol.prekeys import KyberPreKeyRecord, SignedPreKeyRecord
from cipherpost.protocol.sender_keys import SenderKeyRecord
from cipherpost.protocol.state import RECORD_FORMAT, SessionRecord
from cipherpost.protocol.stores import InMemoryProtocolStore, InMemorySenderKeyStore

GOLDEN = sorted(Path(__file__).resolve().parents[1].joinpath("golden").glob("records-v*.json"))
ALICE = ProtocolAddress("alice", 1)


def _b(text: str) -> bytes:
    return base64.b64decode(text)


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.name)
def test_golden_records_load_and_continue(path: Path) -> None:
    g = json.loads(path.read_text())
    identity = IdentityKeyPair.deserialize(_b(g["bob_identity_key_pair"]))
    store = InMemoryProtocolStore(identity, 22)
    store.save_identity(ALICE, PublicKey.deserialize(_b(g["alice_identity_key"])))
    record = SessionRecord.deserialize(_b(g["bob_session_record"]))
    assert _b(g["bob_session_record"])[0] == g["format"]
    assert record.current is not None
    pq = record.current.pq_ratchet
    if g["format"] < 3:  # written before SPQR: a session without it
        assert pq.version == 0 and pq.braid is None
    else:  # the current format: loads and stores back byte for byte, mid SPQR epoch
        assert record.serialize() == _b(g["bob_session_record"])
        assert pq.version == 1 and pq.chain is not None
        assert pq.chain.current_epoch == g["spqr_epoch"] >= 2
    store.store_session(ALICE, record)
    rng = random.Random(1).randbytes
    for m in g["whisper_messages"]:
        assert decrypt(store, ALICE, 2, _b(m["ciphertext"]), rng=rng) == _b(m["plaintext"])
    with pytest.raises(DuplicatedMessage):
        decrypt(store, ALICE, 2, _b(g["duplicate"]), rng=rng)
    signed = SignedPreKeyRecord.deserialize(_b(g["signed_prekey_record"]))
    assert SignedPreKeyRecord.deserialize(signed.serialize()).serialize() == signed.serialize()
    kyber = KyberPreKeyRecord.deserialize(_b(g["kyber_prekey_record"]))
    assert kyber.last_resort
    shared, ciphertext = kyber.key_pair.public.encapsulate()
    assert kyber.key_pair.decapsulate(ciphertext) == shared

    keys = InMemorySenderKeyStore()
    distribution = uuid.UUID(g["distribution_id"])
    keys.store_sender_key(ALICE, distribution, SenderKeyRecord.deserialize(
        _b(g["sender_key_record"])))
    message = g["group_message"]
    assert sk.group_decrypt(keys, ALICE, _b(message["ciphertext"])) == _b(message["plaintext"])
    with pytest.raises(DuplicatedMessage):
        sk.group_decrypt(keys, ALICE, _b(g["group_duplicate"]))


def test_there_is_a_golden_file_per_format() -> None:
    expected = [f"records-v{n}.json" for n in range(1, RECORD_FORMAT + 1)]
    assert [p.name for p in GOLDEN] == expected
