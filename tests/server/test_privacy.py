"""The privacy dashboard shows what the database holds; deleting an account leaves no row
or blob of it (docs/server.md, "Privacy dashboard")."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from cipherpost.server import Settings, create_app, totp
from cipherpost.server.storage.history import DAY_MS
from cipherpost.server.storage.schema import metadata
from tests.server.conftest import Registered, link, register
from tests.server.helpers import b64

NOW = 1_790_000_000.0


@pytest.fixture
def app(settings: Settings) -> Iterator[TestClient]:
    # A bucket that hardly refills, so that the dashboard's figure can be predicted.
    slow = dataclasses.replace(settings, rate_history_put_per_account="2000/0.0001")
    with TestClient(create_app(slow, clock=lambda: NOW)) as test_client:
        yield test_client


@pytest.fixture
def db(settings: Settings) -> Iterator[sa.Engine]:
    engine = sa.create_engine(settings.database_url)
    yield engine
    engine.dispose()


def _send(app: TestClient, sender: Registered, to: Registered, content: bytes) -> None:
    bundles = app.get(f"/v1/keys/{to.account_id}/*", headers=sender.headers).json()
    own = sender.account_id == to.account_id
    response = app.put(f"/v1/messages/{to.account_id}", headers=sender.headers, json={
        "timestamp": 1, "messages": [
            {"device_id": d["device_id"], "registration_id": d["registration_id"],
             "type": 2, "content": b64(content)}
            for d in bundles["devices"] if not (own and d["device_id"] == sender.device_id)]})
    assert response.status_code == 200, response.text


def _populate(app: TestClient) -> tuple[Registered, Registered, Registered]:
    alice = register(app, "alice")
    laptop = link(app, alice)
    bob = register(app, "bob")
    _send(app, bob, alice, b"x" * 100)
    _send(app, alice, bob, b"y" * 50)
    _send(app, bob, alice, b"z" * 7)
    for i in range(3):
        assert app.put(f"/v1/history/{i:032x}", headers=alice.headers,
                       content=b"h" * (10 + i)).status_code == 200
    assert app.delete(f"/v1/history/{1:032x}", headers=alice.headers).status_code == 204
    assert app.put("/v1/history/settings", headers=alice.headers,
                   json={"retention_days": 30}).status_code == 204
    assert app.put("/v1/recovery", headers=alice.headers, json={
        "lookup_id": b64(os.urandom(16)), "auth": b64(os.urandom(32)),
        "blob": b64(b"sealed")}).status_code == 204
    assert app.put("/v1/recovery/passphrase", headers=alice.headers, json={
        "salt": b64(os.urandom(16)), "params": "t=3,m=65536,p=2",
        "verifier": b64(os.urandom(32)), "blob": b64(b"sealed")}).status_code == 204
    assert app.post("/v1/provisioning/archives", headers=alice.headers,
                    content=b"a" * 300).status_code == 201
    assert app.put("/v1/accounts/me/unidentified-access", headers=laptop.headers,
                   json={"key": b64(os.urandom(16))}).status_code == 204
    return alice, laptop, bob


#: Every queued message: the per-device queues and (SQLite) the queue log.
QUEUED = ("(SELECT account_id, device_id, content FROM messages UNION ALL "
          "SELECT account_id, device_id, content FROM queue_log)")


def test_dashboard_matches_the_database(app: TestClient, db: sa.Engine) -> None:
    alice, laptop, _bob = _populate(app)
    shown = app.get("/v1/accounts/me/privacy", headers=laptop.headers)
    assert shown.status_code == 200, shown.text
    data = shown.json()
    a = alice.account_id
    with db.connect() as conn:
        account = conn.execute(sa.text("SELECT username, created_at FROM accounts "
                                       "WHERE id = :a"), {"a": a}).one()
        devices = conn.execute(sa.text(
            "SELECT d.device_id, d.name, d.created_at, d.last_seen, "
            f"(SELECT count(*) FROM {QUEUED} m WHERE m.account_id = d.account_id "
            " AND m.device_id = d.device_id), "
            f"(SELECT coalesce(sum(length(m.content)), 0) FROM {QUEUED} m "
            " WHERE m.account_id = d.account_id AND m.device_id = d.device_id), "
            "(SELECT count(*) FROM one_time_prekeys k WHERE k.account_id = d.account_id "
            " AND k.device_id = d.device_id), d.sealed_sender "
            "FROM devices d WHERE d.account_id = :a ORDER BY d.device_id"), {"a": a}).all()
        live, tombstones, stored = conn.execute(sa.text(
            "SELECT count(blob), count(*) - count(blob), coalesce(sum(length(blob)), 0) "
            "FROM history WHERE account_id = :a"), {"a": a}).one()
        retention = conn.execute(sa.text("SELECT retention_days FROM history_settings "
                                         "WHERE account_id = :a"), {"a": a}).scalar_one()
        key_at = conn.execute(sa.text("SELECT updated_at FROM recovery WHERE account_id = :a"),
                              {"a": a}).scalar_one()
        phrase_at = conn.execute(sa.text("SELECT updated_at FROM recovery_passphrase "
                                         "WHERE account_id = :a"), {"a": a}).scalar_one()
        events = conn.execute(sa.text("SELECT event FROM audit_log WHERE account_id = :a "
                                      "ORDER BY id DESC"), {"a": a}).scalars().all()
        access_at = conn.execute(sa.text("SELECT updated_at FROM unidentified_access "
                                         "WHERE account_id = :a"), {"a": a}).scalar_one()
        salts = conn.execute(sa.text("SELECT count(*) FROM audit_salts "
                                     "WHERE account_id = :a"), {"a": a}).scalar_one()
        tables = {name.split(".")[0] for name in _rows_naming(conn, a)}
    # Every table holding rows of the account is one the dashboard shows (a new table
    # must be added to it, and here): where each one is shown.
    shown_as = {"accounts": "account_id", "devices": "devices", "signed_prekeys": "devices",
                "kyber_prekeys": "devices", "one_time_prekeys": "devices",
                "messages": "devices", "queue_log": "devices", "history": "history_entries",
                "history_settings": "retention", "recovery": "recovery_key_day",
                "recovery_passphrase": "recovery_passphrase_day",
                "unidentified_access": "access_key_day", "audit_log": "audit",
                "audit_salts": "audit_salt", "two_factor": "two_factor_enabled",
                "two_factor_codes": "two_factor_recovery_codes", "link_codes": "link_codes"}
    assert tables >= {"audit_salts", "unidentified_access", "history", "recovery"}
    assert tables <= set(shown_as), tables - set(shown_as)
    assert all(shown_as[t] in data for t in tables)
    assert (data["account_id"], data["username"]) == (a, account.username)
    assert data["created_day"] == account.created_at // DAY_MS
    assert [(d["device_id"], d["name"], d["created_day"], d["last_seen_day"],
             d["queued_messages"], d["queued_bytes"], d["one_time_prekeys"],
             d["opens_sealed"])
            for d in data["devices"]] == [
        (r[0], r[1], r[2] // DAY_MS, r[3] // DAY_MS, r[4], r[5], r[6], bool(r[7]))
        for r in devices]
    assert [d["opens_sealed"] for d in data["devices"]] == [False, True]  # the laptop
    assert sum(d["queued_messages"] for d in data["devices"]) > 0  # not a vacuous match
    assert (data["history_entries"], data["history_tombstones"], data["history_bytes"]) == (
        live, tombstones, stored) == (2, 1, 22)
    assert data["retention"]["history_days"] == retention == 30
    assert data["recovery_key_day"] == key_at // DAY_MS
    assert data["recovery_passphrase_day"] == phrase_at // DAY_MS
    assert data["access_key_day"] == access_at // DAY_MS
    # Migration 0009's salt of the account's audit entries (review O3) is held, and shown.
    assert (data["audit_salt"], salts) == (True, 1)
    assert (data["archive_parts"], data["archive_bytes"]) == (1, 300)
    assert [e["event"] for e in data["audit"]] == events[:50]
    assert "device_added" in events
    assert data["two_factor_enabled"] is False and data["link_codes"] == 0
    assert {r["limit"] for r in data["rate_limits"]} >= {"prekeys", "history_put"}
    history_put = next(r for r in data["rate_limits"] if r["limit"] == "history_put")
    # Three history uploads and one archive part spent a token each.
    assert (history_put["remaining"], history_put["capacity"]) == (1996, 2000)
    # The export is the same data with the whole audit log, as a file.
    exported = app.get("/v1/accounts/me/export", headers=alice.headers)
    assert exported.status_code == 200
    assert "attachment" in exported.headers["content-disposition"]
    document = json.loads(exported.content)
    assert document["format"] == "cipherpost-server-data"
    assert document["devices"] == data["devices"]
    assert [e["event"] for e in document["audit"]] == events


def _rows_naming(conn: sa.Connection, account_id: str) -> dict[str, int]:
    """Rows of every table with ``account_id`` in any text column."""
    found = {}
    for table in metadata.sorted_tables:
        text_columns = [c for c in table.columns if isinstance(c.type, (sa.String, sa.Text))]
        for column in text_columns:
            count = conn.execute(sa.select(sa.func.count()).select_from(table).where(
                column == account_id)).scalar_one()
            if count:
                found[f"{table.name}.{column.name}"] = int(count)
    return found


def test_account_deletion_leaves_nothing(app: TestClient, db: sa.Engine,
                                         settings: Settings) -> None:
    alice, laptop, bob = _populate(app)
    begun = app.post("/v1/accounts/me/2fa", headers=alice.headers).json()
    secret = base64.b32decode(begun["secret"] + "=" * (-len(begun["secret"]) % 8))
    step = totp.step_of(int(NOW * 1000))
    assert app.post("/v1/accounts/me/2fa/confirm", headers=alice.headers,
                    json={"code": totp.code_at(secret, step)}).status_code == 200
    with db.connect() as conn:
        before = _rows_naming(conn, alice.account_id)
    # Its queued messages: in the per-device queues, or on SQLite still in the queue log.
    assert {"messages.account_id", "queue_log.account_id"} & set(before)
    assert {"devices.account_id", "history.account_id",
            "recovery.account_id", "two_factor.account_id", "two_factor_codes.account_id",
            "audit_salts.account_id", "unidentified_access.account_id"} <= set(before)
    # Without the second factor nothing is deleted.
    assert app.delete("/v1/accounts/me", headers=alice.headers).status_code == 403
    deleted = app.delete("/v1/accounts/me", headers={
        **alice.headers, "X-Second-Factor": totp.code_at(secret, step + 1)})
    assert deleted.status_code == 204, deleted.text
    with db.connect() as conn:
        left = _rows_naming(conn, alice.account_id)
        # What alice sent to bob is bob's (his queue), the one thing that names her.
        assert left in ({"messages.sender_account_id": 1}, {"queue_log.sender_account_id": 1})
        assert conn.execute(sa.text(f"SELECT count(*) FROM {QUEUED} m WHERE account_id = :b"),
                            {"b": bob.account_id}).scalar_one() == 1
    archives = Path(settings.attachment_dir) / "archives"
    assert not any(alice.account_id in p.read_text() for p in archives.glob("*.json"))
    assert list(archives.iterdir()) == []
    for token in (alice, laptop):
        assert app.get("/v1/accounts/me", headers=token.headers).status_code == 401
    assert app.get("/v1/usernames/alice", headers=bob.headers).status_code == 404
    # The name is free again.
    register(app, "alice")


def test_deleting_history_and_devices_from_the_dashboard(app: TestClient) -> None:
    alice, laptop, _bob = _populate(app)
    assert app.delete("/v1/history", headers=alice.headers).status_code == 204
    assert app.delete(f"/v1/devices/{laptop.device_id}",
                      headers=alice.headers).status_code == 204
    data: dict[str, Any] = app.get("/v1/accounts/me/privacy", headers=alice.headers).json()
    assert data["history_entries"] == data["history_tombstones"] == 0
    assert [d["device_id"] for d in data["devices"]] == [1]
