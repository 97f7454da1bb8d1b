"""Backup and restore (server/backup.py): a restore starts a new epoch in which no
one-time prekey handed out before is handed out again, no removed device comes back,
operators and spent invites stay as they are, and the audit log goes on verifying."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, union_all

from cipherpost.server import Settings, create_app
from cipherpost.server.backup import BackupError, backup, epoch, manifest, restore
from cipherpost.server.storage import admin, audit
from cipherpost.server.storage.engine import Database
from cipherpost.server.storage.schema import (
    accounts,
    audit_log,
    kyber_prekeys,
    messages,
    one_time_prekeys,
    queue_log,
)

from .conftest import Registered, link, register
from .helpers import KeyMaker, b64

NOW = 1_800_000_000_000


def _bundle_keys(client: TestClient, asker: Registered, owner: Registered,
                 device: int) -> tuple[int | None, int]:
    found = client.get(f"/v1/keys/{owner.account_id}/{device}", headers=asker.headers)
    assert found.status_code == 200, found.text
    bundle = found.json()["devices"][0]
    ec = bundle["one_time_prekey"]["key_id"] if bundle["one_time_prekey"] else None
    return ec, bundle["kyber_prekey"]["key_id"]


def _db(settings: Settings) -> Database:
    db = Database(settings.database_url)
    db.migrate()
    return db


def test_restore_hands_out_no_used_prekey_and_lets_no_removed_device_in(
        settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "backup.db"
    db = _db(settings)
    try:
        with TestClient(create_app(settings)) as client:
            alice = register(client, "alice", one_time=5, kyber=5)
            laptop = link(client, alice)
            phone = link(client, alice)
            carol = register(client, "carol")  # will lose her only device
            bob = register(client, "bob")
            handed_before = {_bundle_keys(client, bob, alice, 1)}
            with db.writer.begin() as conn:
                admin.add_operator(conn, "root", "admin", b"\x01" * 32, NOW, None)
                admin.create_invites(conn, [b"\x02" * 32], NOW * 2, NOW, "root")
            assert backup(db, path, NOW, "root") > 0
            # After the backup: keys handed out, devices removed, an operator revoked,
            # an invite spent, a suspension, more audit entries.
            handed_after = {_bundle_keys(client, bob, alice, 1) for _ in range(3)}
            assert client.delete(f"/v1/devices/{laptop.device_id}",
                                 headers=alice.headers).status_code == 204
            with db.writer.begin() as conn:
                admin.add_operator(conn, "second", "admin", b"\x03" * 32, NOW, "root")
                admin.revoke_operator(conn, "root", NOW + 1, "second")
                assert admin.consume_invite(conn, b"\x02" * 32, NOW + 2)
                admin.set_suspended(conn, bob.account_id, True, NOW + 3, "second")
                from cipherpost.server.storage.sql import _delete_device
                assert _delete_device(conn, carol.account_id, 1, NOW + 4)
                conn.execute(accounts.delete().where(accounts.c.id == carol.account_id))
            with db.reader.connect() as conn:
                live_head = audit.head(conn)

        done = restore(db, path, NOW + 10, "second")
        assert (done.epoch, done.devices_removed, done.accounts_removed) == (1, 2, 1)
        assert done.audit_entries_carried >= 4
        with db.reader.connect() as conn:
            assert epoch(conn) == 1
            # No one-time prekey of the backup survives: any of them may have been
            # handed out after it. Last-resort Kyber keys stay.
            assert conn.execute(select(func.count()).select_from(one_time_prekeys)
                                ).scalar_one() == 0
            assert conn.execute(select(func.count()).select_from(kyber_prekeys).where(
                kyber_prekeys.c.last_resort.is_(False))).scalar_one() == 0
            assert conn.execute(select(func.count()).select_from(kyber_prekeys).where(
                kyber_prekeys.c.last_resort.is_(True))).scalar_one() == 3
            assert {o.name: o.revoked_at is not None for o in admin.list_operators(conn)} \
                == {"root": True, "second": False}
            assert not admin.consume_invite(conn, b"\x02" * 32, NOW + 20)
            assert admin.suspended_accounts(conn) == {bob.account_id}
            verdict = audit.verify(conn)
            assert verdict.ok, verdict
            # The live log's entries after the backup were kept, then the restore's.
            assert audit.position_of(conn, live_head[1]) == live_head[0]
            last = audit.entries(conn, after_seq=live_head[0])
            assert [e.event for e in last] == ["server_restored"]
            assert not conn.execute(select(audit_log).where(
                audit_log.c.account_id == carol.account_id)).all()

        with TestClient(create_app(settings)) as client:
            # The removed laptop's token stays dead; carol's account is gone.
            assert client.get("/v1/devices", headers=laptop.headers).status_code == 401
            assert client.get("/v1/devices", headers=carol.headers).status_code == 401
            assert [d["device_id"] for d in client.get(
                "/v1/devices", headers=alice.headers).json()] == [1, phone.device_id]
            dave = register(client, "dave")
            for device in (1, phone.device_id):
                ec, kyber = _bundle_keys(client, dave, alice, device)
                assert ec is None  # none left until the device uploads fresh ones
                assert (ec, kyber) not in handed_before | handed_after
            fresh = alice.keys.one_time(3)
            assert client.put("/v1/keys", headers=alice.headers, json={
                "one_time_prekeys": fresh}).status_code == 204
            ec, _ = _bundle_keys(client, dave, alice, 1)
            assert ec in {k["key_id"] for k in fresh}
    finally:
        db.dispose()


def test_restore_drops_expired_messages_and_keeps_ids_unique(settings: Settings,
                                                             tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    short = dataclasses.replace(settings, message_ttl=60)
    db = _db(settings)
    try:
        with TestClient(create_app(short, clock=lambda: now[0])) as client:
            alice = register(client)
            bob = register(client)

            def send() -> Any:
                return client.put(f"/v1/messages/{alice.account_id}", headers=bob.headers,
                                  json={"timestamp": 1, "messages": [{
                                      "device_id": 1,
                                      "registration_id": alice.keys.registration_id,
                                      "type": 2, "content": b64(b"x")}]})
            assert send().status_code == 200
            now[0] += 120
            assert send().status_code == 200
            backup(db, tmp_path / "b.db", int(now[0] * 1000), "root")
            with db.reader.connect() as conn:  # SQLite's still in the queue log: the
                # restore moves them to the queues (backup._move_queue_log)
                before = {r[0] for r in conn.execute(
                    union_all(select(messages.c.guid), select(queue_log.c.guid)))}
        restore(db, tmp_path / "b.db", int(now[0] * 1000), "root")
        with db.reader.connect() as conn:
            kept = {r.guid for r in conn.execute(select(messages.c.guid))}
            assert conn.execute(select(func.count()).select_from(queue_log)).scalar_one() == 0
        assert len(kept) == 1 and kept < before
        with TestClient(create_app(short, clock=lambda: now[0])) as client:
            assert send().status_code == 200
            fetched = client.get("/v1/messages", headers=alice.headers).json()["messages"]
            assert len(fetched) == 2 and len({m["id"] for m in fetched}) == 2
    finally:
        db.dispose()


def test_backup_file_and_refusals(settings: Settings, tmp_path: Path) -> None:
    db = _db(settings)
    try:
        with TestClient(create_app(settings)) as client:
            register(client, "alice")
        path = tmp_path / "out" / "backup.db"
        backup(db, path, NOW, "root")
        info = manifest(path)
        assert info["schema"] is not None and info["taken_at"] == NOW
        assert info["audit_entries"] == 2  # account_created, backup_taken
        with sqlite3.connect(path) as conn:  # a plain SQLite file with the rows
            assert conn.execute("SELECT username FROM accounts").fetchall() == [("alice",)]
        with pytest.raises(BackupError, match="exists"):
            backup(db, path, NOW, "root")
        junk = tmp_path / "junk.db"
        junk.write_bytes(b"not a database at all" * 100)
        with pytest.raises(BackupError):
            restore(db, junk, NOW, "root")
        other = tmp_path / "other.db"
        sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
        with pytest.raises(BackupError, match="not a backup"):
            restore(db, other, NOW, "root")
        with db.reader.connect() as conn:  # nothing changed
            assert conn.execute(select(accounts.c.username)).scalars().all() == ["alice"]
    finally:
        db.dispose()


def test_backup_file_is_private_whatever_the_umask(settings: Settings,
                                                   tmp_path: Path) -> None:
    """Review O1: the backup holds TOTP secrets and verifiers; it must never be readable
    by other local users, and an existing file is never overwritten."""
    db = _db(settings)
    old_umask = os.umask(0o022)  # the usual umask, which made backups 0644
    try:
        with TestClient(create_app(settings)) as client:
            register(client, "alice")
        path = tmp_path / "backup.db"
        backup(db, path, NOW, "root")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert manifest(path)["taken_at"] == NOW
        other = tmp_path / "precious.txt"
        other.write_bytes(b"keep me")
        with pytest.raises(BackupError, match="exists"):
            backup(db, other, NOW, "root")
        assert other.read_bytes() == b"keep me"
    finally:
        os.umask(old_umask)
        db.dispose()


def test_restore_refuses_while_a_relay_runs(settings: Settings, tmp_path: Path) -> None:
    db = _db(settings)
    path = tmp_path / "b.db"
    try:
        with TestClient(create_app(settings)) as client:
            alice = register(client, "alice")
            backup(db, path, NOW, "root")
            with pytest.raises(BackupError, match="relay processes use this database"):
                restore(db, path, NOW, "root")
            assert client.get("/v1/devices", headers=alice.headers).status_code == 200
        # Stopped, it forgot itself.
        assert restore(db, path, NOW, "root").epoch == 1
        with TestClient(create_app(settings)):
            assert restore(db, path, NOW, "root", force=True).epoch == 2
    finally:
        db.dispose()


def test_restore_into_a_new_database(settings: Settings, tmp_path: Path) -> None:
    """The live database is lost: the backup alone, with its own removal list."""
    path = tmp_path / "b.db"
    db = _db(settings)
    try:
        with TestClient(create_app(settings)) as client:
            alice = register(client, "alice")
            laptop = link(client, alice)
            assert client.delete(f"/v1/devices/{laptop.device_id}",
                                 headers=alice.headers).status_code == 204
            backup(db, path, NOW, "root")
    finally:
        db.dispose()
    fresh = dataclasses.replace(settings, database_url=f"sqlite:///{tmp_path}/new.db")
    new_db = _db(fresh)
    try:
        done = restore(new_db, path, NOW, "root")
        assert (done.epoch, done.audit_entries_carried) == (1, 0)
        with new_db.reader.connect() as conn:
            assert audit.verify(conn).ok
        with TestClient(create_app(fresh)) as client:
            assert client.get("/v1/devices", headers=alice.headers).status_code == 200
            assert client.get("/v1/devices", headers=laptop.headers).status_code == 401
    finally:
        new_db.dispose()


def test_a_backup_of_an_older_schema_is_migrated_first(settings: Settings,
                                                      tmp_path: Path) -> None:
    """A backup made before the audit chain existed (schema 0004): its entries are chained
    when it is restored, and they verify."""
    from alembic import command
    from alembic.config import Config

    from cipherpost.server.storage.engine import MIGRATIONS

    old = tmp_path / "old.db"
    old_db = Database(f"sqlite:///{old}")
    try:
        with old_db.writer.begin() as conn:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = conn
            command.upgrade(config, "0004")
            conn.exec_driver_sql(
                "INSERT INTO accounts (id, username, identity_key, next_device_id, "
                "created_at) VALUES ('00000000-0000-4000-8000-000000000001', 'old', "
                "x'05', 2, 1)")
            for at, event in ((1, "account_created"), (2, "username_changed")):
                conn.exec_driver_sql(
                    "INSERT INTO audit_log (at, account_id, device_id, event) VALUES "
                    f"({at}, '00000000-0000-4000-8000-000000000001', 1, '{event}')")
            conn.exec_driver_sql(
                "INSERT INTO devices (account_id, device_id, registration_id, token_hash, "
                "created_at, last_seen) VALUES ('00000000-0000-4000-8000-000000000001', "
                "1, 7, x'00', 1, 1)")
    finally:
        old_db.dispose()
    db = _db(settings)
    try:
        restore(db, old, NOW, "root")
        with db.reader.connect() as conn:
            assert audit.verify(conn).ok
            assert [e.event for e in audit.entries(conn)] == [
                "account_created", "username_changed", "server_restored"]
            assert conn.execute(select(accounts.c.username)).scalars().all() == ["old"]
        assert manifest(old)["schema"] == "0004"  # the file itself is left as it was
    finally:
        db.dispose()


def test_an_account_deleted_after_the_backup_stays_deleted(settings: Settings,
                                                          tmp_path: Path) -> None:
    """Account deletion (the privacy dashboard's) leaves its devices' token hashes behind:
    a restore of an older backup deletes the account again, rows and all, and redacts
    its audit entries."""
    import asyncio

    from cipherpost.server.storage.account_data import delete_account
    from cipherpost.server.storage.schema import metadata
    from cipherpost.server.storage.sql import Storage

    path = tmp_path / "b.db"
    db = _db(settings)
    try:
        with TestClient(create_app(settings)) as client:
            alice = register(client, "alice")
            link(client, alice)
            bob = register(client, "bob")
            backup(db, path, NOW, "root")
        storage = Storage(Database(settings.database_url))
        try:
            assert asyncio.run(delete_account(storage, alice.account_id, NOW + 1)) == [1, 2]
        finally:
            storage.close()
            storage.db.dispose()
        done = restore(db, path, NOW + 2, "root")
        assert (done.devices_removed, done.accounts_removed) == (2, 1)
        with db.reader.connect() as conn:
            for table in metadata.sorted_tables:
                column = table.c.get("account_id")
                if column is not None:
                    assert not conn.execute(select(func.count()).select_from(table).where(
                        column == alice.account_id)).scalar_one(), table.name
            assert not conn.execute(select(accounts).where(
                accounts.c.id == alice.account_id)).all()
            assert audit.verify(conn).ok
        with TestClient(create_app(settings)) as client:
            assert client.get("/v1/devices", headers=alice.headers).status_code == 401
            assert client.get("/v1/usernames/alice", headers=bob.headers).status_code == 404
    finally:
        db.dispose()


def test_a_restore_keeps_account_security_changed_since_the_backup(
        settings: Settings, tmp_path: Path) -> None:
    """Review O2: a restore must not bring back a reset (compromised) identity key with
    its old-identity keys, a rotated recovery secret (the registration lock), spent 2FA
    recovery codes or a TOTP since turned off or replaced."""
    from sqlalchemy import delete, insert, update

    from cipherpost.server.storage.schema import (
        devices,
        recovery,
        recovery_passphrase,
        signed_prekeys,
        two_factor,
        two_factor_codes,
    )

    path = tmp_path / "b.db"
    db = _db(settings)
    try:
        with TestClient(create_app(settings)) as client:
            alice = register(client, "alice")
            laptop = link(client, alice)
            bob = register(client, "bob")
        a, b_id = alice.account_id, bob.account_id
        with db.writer.begin() as conn:
            conn.execute(insert(recovery).values(account_id=a, lookup_id=b"l" * 16,
                                                 auth_hash=b"OLD-LEAKED", blob=b"x",
                                                 updated_at=1))
            conn.execute(insert(recovery_passphrase).values(
                account_id=a, salt=b"s", params="p", verifier_hash=b"OLD-VERIFIER",
                blob=b"x", updated_at=1))
            for who, secret in ((a, b"ALICE-TOTP"), (b_id, b"BOB-TOTP")):
                conn.execute(insert(two_factor).values(account_id=who, secret=secret,
                                                       enabled=True, created_at=1))
            conn.execute(insert(two_factor_codes), [
                {"account_id": a, "code_hash": b"SPENT"},
                {"account_id": a, "code_hash": b"UNSPENT"}])
        backup(db, path, NOW, "root")
        with db.writer.begin() as conn:  # what the owners changed since
            conn.execute(update(accounts).where(accounts.c.id == a).values(
                identity_key=b"\x05NEW-IDENTITY"))
            conn.execute(update(devices).where(devices.c.account_id == a,
                                               devices.c.device_id == 1).values(
                registration_id=4242))
            conn.execute(delete(devices).where(devices.c.account_id == a,
                                               devices.c.device_id == laptop.device_id))
            conn.execute(update(signed_prekeys).where(
                signed_prekeys.c.account_id == a).values(public_key=b"\x05NEW-SIGNED"))
            conn.execute(update(recovery).values(auth_hash=b"NEW-SECRET"))
            conn.execute(delete(recovery_passphrase))
            conn.execute(delete(two_factor_codes).where(
                two_factor_codes.c.code_hash == b"SPENT"))
            conn.execute(update(two_factor).where(two_factor.c.account_id == a).values(
                secret=b"ALICE-NEW-TOTP"))
            conn.execute(delete(two_factor).where(two_factor.c.account_id == b_id))
        done = restore(db, path, NOW + 1, "root")
        assert done.devices_removed == 1  # the laptop (not under the new identity)
        with db.reader.connect() as conn:
            assert bytes(conn.execute(select(accounts.c.identity_key).where(
                accounts.c.id == a)).scalar_one()) == b"\x05NEW-IDENTITY"
            assert conn.execute(select(devices.c.device_id, devices.c.registration_id).where(
                devices.c.account_id == a)).all() == [(1, 4242)]
            assert {bytes(k) for k in conn.execute(select(signed_prekeys.c.public_key).where(
                signed_prekeys.c.account_id == a)).scalars()} == {b"\x05NEW-SIGNED"}
            assert bytes(conn.execute(select(recovery.c.auth_hash)).scalar_one()) \
                == b"NEW-SECRET"
            assert conn.execute(select(recovery_passphrase)).all() == []
            assert [bytes(c) for c in conn.execute(select(
                two_factor_codes.c.code_hash)).scalars()] == [b"UNSPENT"]
            assert {r.account_id: bytes(r.secret) for r in conn.execute(select(
                two_factor))} == {a: b"ALICE-NEW-TOTP"}
            assert audit.verify(conn).ok
        with TestClient(create_app(settings)) as client:
            assert client.get("/v1/devices", headers=alice.headers).status_code == 200
            assert client.get("/v1/devices", headers=laptop.headers).status_code == 401
            assert client.get("/v1/devices", headers=bob.headers).status_code == 200
    finally:
        db.dispose()


def test_a_restore_keeps_live_usernames_reserved(settings: Settings, tmp_path: Path) -> None:
    """Review O5: the backup lacks an account registered since (dave) and brings back
    one re-registered since (alice) with no device; both stay, without devices, holding
    their usernames under their registration lock, which their owners' recovery secrets
    open again; a username changed since is the live one (bob is "robert")."""

    def recovery(client: TestClient, headers: dict[str, str]) -> dict[str, str]:
        secret = {"lookup_id": b64(os.urandom(16)), "auth": b64(os.urandom(32))}
        assert client.put("/v1/recovery", headers=headers,
                          json={**secret, "blob": b64(b"sealed")}).status_code == 204
        return secret

    path = tmp_path / "b.db"
    db = _db(settings)
    try:
        with TestClient(create_app(settings)) as client:
            alice, bob = register(client, "alice"), register(client, "bob")
            alice_secret = recovery(client, alice.headers)
            backup(db, path, NOW, "root")
            dave = register(client, "dave")
            dave_secret = recovery(client, dave.headers)
            again = client.post("/v1/accounts/reregister", json={
                **KeyMaker().device_body(), "username": "alice", **alice_secret})
            assert again.status_code == 201, again.text
            alice_secret = recovery(client, {
                "Authorization": f"Bearer {again.json()['token']}"})  # the new identity's
            assert client.put("/v1/accounts/me/username", headers=bob.headers,
                              json={"username": "robert"}).status_code == 204
        done = restore(db, path, NOW + 1, "root")
        assert (done.accounts_reserved, done.accounts_removed) == (2, 0)
        with TestClient(create_app(settings)) as client:
            for name in ("alice", "dave", "robert"):
                taken = client.post("/v1/accounts", json={**KeyMaker().device_body(),
                                                          "username": name})
                assert taken.status_code == 409, name
            assert client.get("/v1/usernames/robert", headers=bob.headers).json()[
                "account_id"] == bob.account_id
            # "bob" was free when the backup was restored, so it is free now.
            assert client.post("/v1/accounts", json={**KeyMaker().device_body(),
                                                     "username": "bob"}).status_code == 201
            # The lock holds: no secret or a wrong one is refused, the owner's opens it.
            for guess in ({}, {"lookup_id": dave_secret["lookup_id"],
                               "auth": b64(os.urandom(32))}):
                refused = client.post("/v1/accounts/reregister", json={
                    **KeyMaker().device_body(), "username": "dave", **guess})
                assert refused.status_code == 403, refused.text
            for name, secret, owner in (("dave", dave_secret, dave),
                                        ("alice", alice_secret, alice)):
                back = client.post("/v1/accounts/reregister", json={
                    **KeyMaker().device_body(), "username": name, **secret})
                assert back.status_code == 201, back.text
                assert back.json()["account_id"] == owner.account_id
        with db.reader.connect() as conn:
            assert audit.verify(conn).ok
    finally:
        db.dispose()


def test_an_admin_releases_a_username_a_restore_reserved(settings: Settings,
                                                         tmp_path: Path) -> None:
    """Dave registered after the backup, without a recovery secret: the restore keeps
    his username reserved, which nobody (not even he) could ever re-register. An admin
    (not an auditor) releases it: the account goes with every row of it, the name is
    free, and the release is in the audit log, which still verifies."""
    from cipherpost.server.admin_cli import cli
    from cipherpost.server.storage.schema import audit_salts, metadata

    from .test_operators import Admin

    path = tmp_path / "b.db"
    db = _db(settings)
    run = Admin(settings)
    try:
        with TestClient(create_app(settings)) as client:
            alice = register(client, "alice")
            backup(db, path, NOW, "root")
            dave = register(client, "dave")
        root = run("operators", "bootstrap", "root")["token"]
        # The command says how many it kept (the operator decides from it whether to
        # release any).
        text = run.runner.invoke(cli, ["restore", str(path), "--yes"], env={
            **run.env, "CIPHERPOST_ADMIN_TOKEN": root})
        assert text.exit_code == 0, text.output
        assert "kept 1 live accounts without devices" in " ".join(text.stdout.split())
        auditor = run("operators", "add", "eve", "--role", "auditor", token=root)["token"]
        assert [a["username"] for a in run("accounts", "list", "--reserved",
                                           token=auditor)] == ["dave"]

        run("accounts", "release-username", "@dave", "--yes", token=auditor, code=4)
        refused = run("accounts", "release-username", "@alice", "--yes", token=root, code=1)
        assert "1 device(s)" in refused.stderr  # in use, not reserved
        released = run("accounts", "release-username", "@dave", "--yes", "--reason",
                       "owner has no recovery secret", token=root)
        assert released == {"account_id": dave.account_id, "username": "dave",
                            "released": True}
        run("accounts", "release-username", dave.account_id, "--yes", token=root, code=1)

        with db.reader.connect() as conn:
            for table in metadata.sorted_tables:
                for name in ("account_id", "id") if table is accounts else ("account_id",):
                    column = table.c.get(name)
                    if column is not None:
                        assert conn.execute(select(func.count()).select_from(table).where(
                            column == dave.account_id)).scalar_one() == 0, table.name
            assert conn.execute(select(func.count()).select_from(audit_salts).where(
                audit_salts.c.account_id == dave.account_id)).scalar_one() == 0
            entry = conn.execute(select(audit_log).where(
                audit_log.c.event == "username_released")).one()
            assert (entry.actor, entry.redacted, entry.details) == (
                "root", True, '{"reason":"owner has no recovery secret"}')
            assert audit.verify(conn).ok
            assert admin.resolve_account(conn, "alice") == alice.account_id
        assert run("accounts", "list", "--reserved", token=root) == []
        with TestClient(create_app(settings)) as client:
            taken = client.post("/v1/accounts", json={**KeyMaker().device_body(),
                                                      "username": "dave"})
            assert taken.status_code == 201, taken.text
            assert taken.json()["account_id"] != dave.account_id
    finally:
        db.dispose()


def test_a_restore_brings_back_no_relay_presence(settings: Settings, tmp_path: Path) -> None:
    """A backup taken while a relay ran holds that relay's presence note; restored, it
    made the next restore refuse ("relay processes use this database") for 150 s."""
    import time

    from cipherpost.server.storage import presence

    path = tmp_path / "b.db"
    db = _db(settings)
    try:
        with TestClient(create_app(settings)):
            backup(db, path, NOW, "root")
        restore(db, path, NOW + 1, "root")
        with db.reader.connect() as conn:
            assert presence.live_relays(conn, int(time.time() * 1000)) == []
        restore(db, path, NOW + 2, "root")  # not refused
    finally:
        db.dispose()
