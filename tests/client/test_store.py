"""The encrypted local store: sealed at rest, the right key required, tampering noticed,
deleted data erased."""

from __future__ import annotations

from pathlib import Path

import pytest

from cipherpost.client.store.crypto import TEST_PARAMS, CorruptValue, WrongKey
from cipherpost.client.store.database import Store, StoreError
from cipherpost.protocol import IdentityKeyPair

CANARY = "canary-7d1f0c53-plaintext"


def disk_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def make(path: Path) -> Store:
    return Store.create(path, passphrase="pw", params=TEST_PARAMS)


def test_secrets_and_bodies_are_sealed(tmp_path: Path) -> None:
    import os
    path = tmp_path / "s.db"
    store = make(path)
    identity = IdentityKeyPair.generate(os.urandom)
    store.set_identity(identity, 42)
    with store.transaction():
        store.add_message(conversation="c", author="a", author_device=1, timestamp=1,
                          received_at=1, outgoing=False, body=CANARY.encode())
    data = disk_bytes(path)
    assert CANARY.encode() not in data
    assert identity.private.serialize() not in data
    store.close()
    assert (path.stat().st_mode & 0o777) == 0o600
    reopened = Store.open(path, passphrase="pw")
    assert reopened.get_identity_key_pair().public == identity.public
    assert reopened.messages("c")[0].body == CANARY.encode()
    reopened.close()


def test_wrong_or_missing_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    make(path).close()
    with pytest.raises(WrongKey):
        Store.open(path, passphrase="not it")
    with pytest.raises(StoreError):
        Store.open(path)
    with pytest.raises(StoreError):
        make(path)
    with pytest.raises(StoreError):
        Store.open(tmp_path / "missing.db", passphrase="pw")


def test_a_value_moved_to_another_row_does_not_open(tmp_path: Path) -> None:
    store = make(tmp_path / "s.db")
    with store.transaction():
        store.add_message(conversation="c", author="a", author_device=1, timestamp=1,
                          received_at=1, outgoing=False, body=b"one")
        store.add_message(conversation="c", author="a", author_device=1, timestamp=2,
                          received_at=1, outgoing=False, body=b"two")
    store._db.execute("UPDATE messages SET body = (SELECT body FROM messages WHERE "
                      "timestamp = 1) WHERE timestamp = 2")
    with pytest.raises(CorruptValue):
        store.messages("c")


def test_deleted_messages_are_erased_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = Store.create(path, passphrase="pw", params=TEST_PARAMS)
    with store.transaction():
        store.add_message(conversation="c", author="a", author_device=1, timestamp=1,
                          received_at=1, outgoing=False, body=b"x" * 64)
    sealed = store._db.execute("SELECT body FROM messages").fetchone()[0]
    store.checkpoint()
    assert sealed in disk_bytes(path)
    with store.transaction():
        assert store.delete_message("a", 1)
    store.checkpoint()
    assert sealed not in disk_bytes(path)
    store.close()


def test_failed_transaction_changes_nothing(tmp_path: Path) -> None:
    store = make(tmp_path / "s.db")
    with pytest.raises(RuntimeError), store.transaction():
        store.mark_envelope("e1", 1)
        raise RuntimeError("crash in the middle")
    assert not store.envelope_seen("e1")
