"""Every relay of one database serves one sealed-sender trust root (server/trust_root.py,
migration 0010): the first start stores its key file's root; a relay whose key file
holds another root refuses to start, saying which file and what to do; an admin replaces
the root on purpose (audited); a restore keeps the root the relays serve now. On SQLite
and PostgreSQL."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from cipherpost.server import Settings, create_app
from cipherpost.server.backup import backup, restore
from cipherpost.server.key_chain import load
from cipherpost.server.settings import sealed_sender_key_file
from cipherpost.server.storage import audit
from cipherpost.server.storage.engine import Database
from cipherpost.server.storage.schema import audit_log
from cipherpost.server.trust_root import TrustRootMismatch, stored, text

from .test_operators import Admin

NOW = 1_800_000_000_000


def _stored(settings: Settings) -> str | None:
    db = Database(settings.database_url)
    try:
        with db.reader.connect() as conn:
            found = stored(conn)
    finally:
        db.dispose()
    return None if found is None else text(found.trust_root)


def _root(path: Path) -> str:
    return text(load(path).trust_root.serialize())


def _served(settings: Settings) -> str:
    with TestClient(create_app(settings)) as client:
        return str(client.get("/v1/certificates/trust-root").json()["trust_root"])


def test_a_relay_with_another_key_file_refuses_to_start(settings: Settings,
                                                        tmp_path: Path) -> None:
    first = _served(settings)
    own_file = sealed_sender_key_file(settings)
    assert _stored(settings) == first == _root(own_file)
    assert _served(settings) == first  # a restart with the same file

    # A second relay on the same database, given a key file of its own (the default
    # beside its own attachment directory): it used to serve a root of its own.
    other = dataclasses.replace(settings, attachment_dir=str(tmp_path / "other" / "blobs"))
    (tmp_path / "other").mkdir()
    with pytest.raises(TrustRootMismatch) as refused, \
            TestClient(create_app(other)):
        pass
    message = str(refused.value)
    other_file = sealed_sender_key_file(other)
    assert str(other_file) in message and "cipherpost-admin trust-root replace" in message
    assert _root(other_file) in message and first in message
    assert _stored(settings) == first  # unchanged

    # Given the shared file, it starts and serves the same root.
    shared = dataclasses.replace(other, sealed_sender_keys=str(own_file))
    assert _served(shared) == first


def test_an_admin_replaces_the_root_on_purpose(settings: Settings, tmp_path: Path) -> None:
    first = _served(settings)
    run = Admin(settings)
    root = run("operators", "bootstrap", "root")["token"]
    auditor = run("operators", "add", "eve", "--role", "auditor", token=root)["token"]
    shown = run("trust-root", "show", token=auditor)
    assert (shown["stored"], shown["key_file_root"], shown["match"]) == (first, first, True)

    # A new key file (the old root leaked): relays refuse it until an admin says so.
    key_file = sealed_sender_key_file(settings)
    os.replace(key_file, tmp_path / "old-keys.json")
    with pytest.raises(TrustRootMismatch), TestClient(create_app(settings)):
        pass
    new = _root(key_file)  # the refused start made the new file
    assert new != first
    assert run("trust-root", "show", token=auditor)["match"] is False
    run("trust-root", "replace", "--yes", token=auditor, code=4)
    replaced = run("trust-root", "replace", "--yes", token=root)
    assert replaced == {"old": first, "new": new}
    assert _served(settings) == new == _stored(settings)
    db = Database(settings.database_url)
    try:
        with db.reader.connect() as conn:
            entry = conn.execute(select(audit_log).where(
                audit_log.c.event == "trust_root_replaced")).one()
            assert entry.actor == "root" and first in entry.details and new in entry.details
            assert audit.verify(conn).ok
    finally:
        db.dispose()


def test_a_restore_keeps_the_root_the_relays_serve(settings: Settings,
                                                   tmp_path: Path) -> None:
    """The backup holds the root of its time; the relays' key file holds the live one,
    which the restore keeps (else no relay would start after it)."""
    first = _served(settings)
    db = Database(settings.database_url)
    try:
        backup(db, tmp_path / "b.db", NOW, "root")
        run = Admin(settings)
        token = run("operators", "bootstrap", "root")["token"]
        key_file = sealed_sender_key_file(settings)
        os.replace(key_file, tmp_path / "old-keys.json")
        with pytest.raises(TrustRootMismatch), TestClient(create_app(settings)):
            pass
        new = run("trust-root", "replace", "--yes", token=token)["new"]
        assert new != first
        restore(db, tmp_path / "b.db", NOW + 1, "root", force=True)
    finally:
        db.dispose()
    assert _stored(settings) == new
    assert _served(settings) == new
