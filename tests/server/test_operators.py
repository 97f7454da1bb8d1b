"""Operator tools (docs/operations.md): the hash-chained audit log, suspensions, invite
codes, and the ``cipherpost-admin`` command with its roles, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from starlette.websockets import WebSocketDisconnect

from cipherpost.server import Settings, create_app
from cipherpost.server.admin_cli import cli, hash_token
from cipherpost.server.storage import admin, audit
from cipherpost.server.storage.engine import Database
from cipherpost.server.storage.schema import audit_head, audit_log

from .conftest import link, register
from .helpers import b64


def _verify(db: Database) -> audit.Verdict:
    with db.reader.connect() as conn:
        return audit.verify(conn)


def _populate(client: TestClient) -> None:
    alice = register(client, "alice")
    link(client, alice)
    register(client, "bob")
    assert client.put("/v1/accounts/me/username", headers=alice.headers,
                      json={"username": "alice2"}).status_code == 204


# -- the audit chain ------------------------------------------------------------------------


def test_audit_chain_verifies_and_names_the_first_tampered_entry(client: TestClient,
                                                                 db: Database) -> None:
    _populate(client)
    verdict = _verify(db)
    assert verdict.ok and verdict.entries >= 4, verdict
    with db.writer.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(
            event="device_removed"))
    verdict = _verify(db)
    assert (verdict.broken_at, verdict.reason) == (2, "the entry was changed")


def test_audit_chain_detects_a_deleted_row(client: TestClient, db: Database) -> None:
    _populate(client)
    with db.writer.begin() as conn:
        conn.execute(audit_log.delete().where(audit_log.c.seq == 3))
    verdict = _verify(db)
    assert verdict.broken_at == 3 and "missing" in verdict.reason


def test_audit_chain_detects_reordered_rows(client: TestClient, db: Database) -> None:
    _populate(client)
    with db.writer.begin() as conn:
        rows = {r.seq: r for r in conn.execute(select(audit_log).where(
            audit_log.c.seq.in_([2, 3])))}
        # Swap the two entries' positions, each keeping its own hashes.
        conn.execute(update(audit_log).where(audit_log.c.id == rows[2].id).values(seq=-2))
        conn.execute(update(audit_log).where(audit_log.c.id == rows[3].id).values(seq=2))
        conn.execute(update(audit_log).where(audit_log.c.id == rows[2].id).values(seq=3))
    assert _verify(db).broken_at == 2


def test_audit_chain_detects_a_cut_tail_and_a_recomputed_entry(client: TestClient,
                                                               db: Database) -> None:
    _populate(client)
    last = _verify(db).entries
    with db.writer.begin() as conn:
        conn.execute(audit_log.delete().where(audit_log.c.seq == last))
    verdict = _verify(db)
    assert verdict.broken_at == last and "head" in verdict.reason
    # An edit whose digest is recomputed still breaks the chain hash.
    with db.writer.begin() as conn:
        row = conn.execute(select(audit_log).where(audit_log.c.seq == 1)).one()
        salt = audit.account_salt(conn, row.account_id) if row.subject_salted else None
        digest = audit.entry_digest(1, row.at + 1, audit.subject_digest(
            row.account_id, row.device_id, salt), row.event, row.actor, row.details)
        conn.execute(update(audit_log).where(audit_log.c.seq == 1).values(
            at=row.at + 1, digest=digest))
    verdict = _verify(db)
    assert (verdict.broken_at, verdict.reason) == (1, "the chain hash does not follow")


def test_redacting_an_account_keeps_the_chain_verifiable(client: TestClient,
                                                         db: Database) -> None:
    alice = register(client, "alice")
    register(client, "bob")
    with db.writer.begin() as conn:
        assert audit.redact_account(conn, alice.account_id) == 1
        assert not conn.execute(select(audit_log).where(
            audit_log.c.account_id == alice.account_id)).all()
    assert _verify(db).ok
    with db.writer.begin() as conn:  # a redacted entry's event is still covered
        conn.execute(update(audit_log).where(audit_log.c.redacted.is_(True)).values(
            event="account_deleted"))
    assert not _verify(db).ok


def test_operator_events_are_chained_with_their_actor(client: TestClient,
                                                      db: Database) -> None:
    alice = register(client)
    with db.writer.begin() as conn:
        admin.add_operator(conn, "root", "admin", b"\x01" * 32, 5, actor=None)
        admin.set_suspended(conn, alice.account_id, True, 6, "root", reason="abuse report")
        admin.create_invites(conn, [b"\x02" * 32], 10**15, 7, "root")
    with db.reader.connect() as conn:
        found = [(e.event, e.actor, e.details) for e in audit.entries(conn) if e.actor]
        head_seq, _ = audit.head(conn)
    assert found == [("account_suspended", "root", '{"reason":"abuse report"}'),
                     ("invites_created", "root", '{"count":1,"expires_at":1000000000000000}')]
    assert head_seq == 4 and _verify(db).ok
    with db.reader.connect() as conn:
        assert [e.event for e in audit.entries(conn)][1] == "operator_added"


# -- suspension -------------------------------------------------------------------------------


def _send(client: TestClient, sender: Any, to: Any) -> Any:
    devices = client.get(f"/v1/keys/{to.account_id}/*", headers=sender.headers).json()
    messages = [{"device_id": d["device_id"], "registration_id": d["registration_id"],
                 "type": 2, "content": b64(b"x")} for d in devices["devices"]]
    return client.put(f"/v1/messages/{to.account_id}", headers=sender.headers,
                      json={"timestamp": 1, "messages": messages})


def test_a_suspended_account_is_refused_and_its_sockets_closed(client: TestClient,
                                                               db: Database) -> None:
    alice = register(client, "alice")
    bob = register(client, "bob")
    with client.websocket_connect("/v1/websocket", headers=alice.headers) as ws:
        with db.writer.begin() as conn:
            assert admin.set_suspended(conn, alice.account_id, True, 1, "root")
            assert not admin.set_suspended(conn, alice.account_id, True, 1, "root")
        closed = ws.receive()  # the relay polls every two seconds
        assert closed["type"] == "websocket.close" and closed["code"] == 4403
    response = client.get("/v1/devices", headers=alice.headers)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "account_suspended"
    with pytest.raises(WebSocketDisconnect) as refused, \
            client.websocket_connect("/v1/websocket", headers=alice.headers):
        pass
    assert refused.value.code == 4403
    response = _send(client, bob, alice)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "recipient_suspended"
    with db.writer.begin() as conn:
        assert admin.set_suspended(conn, alice.account_id, False, 2, "root")
    deadline = time.monotonic() + 10
    while _send(client, bob, alice).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert client.get("/v1/devices", headers=alice.headers).status_code == 200


# -- invites ----------------------------------------------------------------------------------


def test_invite_only_registration(settings: Settings, db: Database) -> None:
    now = [1_800_000_000.0]
    invite_settings = dataclasses.replace(settings, registration="invite")
    with TestClient(create_app(invite_settings, clock=lambda: now[0])) as c:
        codes = ["invite-code-one", "invite-code-two", "invite-code-old"]
        with db.writer.begin() as conn:
            admin.create_invites(conn, [hash_token(x) for x in codes[:2]],
                                 int(now[0] * 1000) + 3_600_000, int(now[0] * 1000), "root")
            admin.create_invites(conn, [hash_token(codes[2])], int(now[0] * 1000) - 1,
                                 int(now[0] * 1000) - 10, "root")

        def attempt(**extra: Any) -> Any:
            from .helpers import KeyMaker
            return c.post("/v1/accounts", json={**KeyMaker().device_body(), **extra})

        assert attempt().json()["error"]["code"] == "invite_required"
        assert attempt(invite="not-a-code-at-all").json()["error"]["code"] == "invalid_invite"
        assert attempt(invite=codes[2]).json()["error"]["code"] == "invalid_invite"
        assert attempt(invite=codes[0], username="carol").status_code == 201
        assert attempt(invite=codes[0]).json()["error"]["code"] == "invalid_invite"
        # A registration refused for another reason leaves its code unused.
        taken = attempt(invite=codes[1], username="carol")
        assert taken.status_code == 409
        assert attempt(invite=codes[1], username="dave").status_code == 201
        with db.reader.connect() as conn:
            counts = admin.invite_counts(conn, int(now[0] * 1000))
        assert dataclasses.astuple(counts) == (0, 2, 1)


def test_open_registration_ignores_invites(client: TestClient) -> None:
    register(client, invite="whatever-it-says")


def test_registration_setting_is_checked(settings: Settings) -> None:
    with pytest.raises(ValueError, match="registration"):
        create_app(dataclasses.replace(settings, registration="closed"))


# -- the admin command ------------------------------------------------------------------------


class Admin:
    """``cipherpost-admin`` against the test's database."""

    def __init__(self, settings: Settings) -> None:
        self.env = {"CIPHERPOST_DATABASE_URL": settings.database_url,
                    "CIPHERPOST_ATTACHMENT_DIR": settings.attachment_dir,
                    "CIPHERPOST_ADMIN_TOKEN": ""}
        self.runner = CliRunner()

    def __call__(self, *args: str, token: str = "", code: int = 0) -> Any:
        result = self.runner.invoke(cli, ["--json", *args],
                                    env={**self.env, "CIPHERPOST_ADMIN_TOKEN": token})
        assert result.exit_code == code, (result.output, result.exception)
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        return json.loads(lines[-1]) if code == 0 and lines else result


def test_admin_command_roles(settings: Settings, client: TestClient, db: Database) -> None:
    run = Admin(settings)
    alice = register(client, "alice")
    root = run("operators", "bootstrap", "root")["token"]
    run("operators", "bootstrap", "again", code=4)  # only while there is no operator
    auditor = run("operators", "add", "eve", "--role", "auditor", token=root)["token"]
    with db.reader.connect() as conn:  # stored hashed
        assert all(o.name in ("root", "eve") for o in admin.list_operators(conn))
        assert admin.operator_for_token(conn, hash_token(auditor)).role == "auditor"

    listed = run("accounts", "list", token=auditor)
    assert [a["username"] for a in listed] == ["alice"]
    assert set(listed[0]) == {"account_id", "username", "created_at", "suspended_at",
                              "devices", "queued_messages", "queued_bytes",
                              "identity_fingerprint"}
    shown = run("accounts", "show", "@alice", token=auditor)
    assert [d["device_id"] for d in shown["devices"]] == [1]
    assert "token_hash" not in json.dumps(shown)

    run("accounts", "suspend", "alice", token=auditor, code=4)  # read-only role
    run("accounts", "list", code=4)  # no token
    run("accounts", "list", token="cpa_wrong", code=4)
    assert run("accounts", "suspend", "alice", "--reason", "spam",
               token=root)["changed"] is True
    with db.reader.connect() as conn:
        assert admin.suspended_accounts(conn) == {alice.account_id}
    run("accounts", "unsuspend", alice.account_id, token=root)
    run("accounts", "show", "nobody", token=root, code=1)

    codes = run("invites", "create", "--count", "2", token=root)["codes"]
    assert len(set(codes)) == 2
    assert run("invites", "list", token=auditor)["unused"] == 2

    run("operators", "revoke", "eve", token=root)
    run("accounts", "list", token=auditor, code=4)  # revoked
    run("operators", "revoke", "root", token=root, code=1)  # the last admin stays

    verified = run("audit", "verify", token=root)
    assert verified["ok"] and verified["entries"] >= 7
    run("audit", "verify", "--head", verified["head"], token=root)
    actions = [(e["event"], e["actor"]) for e in run("audit", "show", token=root)
               if e["actor"]]
    assert actions == [("operator_added", "root"), ("operator_added", "root"),
                       ("account_suspended", "root"), ("account_unsuspended", "root"),
                       ("invites_created", "root"), ("operator_revoked", "root")]
    with db.writer.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 1).values(
            event="forged"))
    failed = run("audit", "verify", token=root, code=3)
    assert json.loads(failed.stdout)["broken_at"] == 1


def test_admin_retention_metrics_and_report(settings: Settings, db: Database) -> None:
    run = Admin(settings)
    now = [1_800_000_000.0]
    with TestClient(create_app(settings, clock=lambda: now[0])) as c:
        alice = register(c, "alice")
        bob = register(c, "bob")
        assert _send(c, bob, alice).status_code == 200
    root = run("operators", "bootstrap", "root")["token"]
    held = run("metrics", "--no-live", token=root)["database"]
    assert (held["accounts"], held["devices"], held["queued_messages"],
            held["queued_bytes"]) == (2, 2, 1, 1)
    # The queued message is past message_ttl in real time (the relay's clock was 2027).
    with db.writer.begin() as conn:
        from cipherpost.server.storage.schema import messages
        conn.execute(update(messages).values(expires_at=1))
    applied = run("retention", "apply", token=root)
    assert applied["messages"] == 1
    assert run("metrics", "--no-live", token=root)["database"]["queued_messages"] == 0

    with db.writer.begin() as conn:
        admin.set_suspended(conn, alice.account_id, True, int(time.time() * 1000), "root")
    result = CliRunner().invoke(cli, ["transparency-report", "--since", "2000-01-01"],
                                env={**run.env, "CIPHERPOST_ADMIN_TOKEN": root})
    assert result.exit_code == 0, result.output
    document = result.stdout
    assert document.startswith("# Transparency report")
    assert "| accounts | 2 |" in document and "| suspended accounts | 1 |" in document
    assert "Accounts suspended in the period: 1" in document
    assert "| retention_applied | 1 |" in document
    report = json.loads(CliRunner().invoke(
        cli, ["transparency-report", "--format", "json"],
        env={**run.env, "CIPHERPOST_ADMIN_TOKEN": root}).stdout)
    assert report["holdings"]["accounts"] == 2
    assert report["audit_log"]["verified"] is True
    with db.reader.connect() as conn:
        seq, head = audit.head(conn)
        assert conn.execute(select(audit_head.c.seq)).scalar_one() == seq
    assert report["audit_log"] == {"entries": seq, "head": head.hex(), "verified": True}
    assert alice.account_id not in json.dumps(report)


def test_server_command_runs_the_admin_command() -> None:
    result = subprocess.run([sys.executable, "-m", "cipherpost.server", "admin", "--help"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "Usage: cipherpost-server admin" in result.stdout
    assert "transparency-report" in result.stdout


def test_concurrent_writers_extend_one_chain(database_url: str) -> None:
    """Four storages on one database (four relay processes, to PostgreSQL) create
    accounts at once: the head row's lock makes them append in turn, so the log is one
    chain with no fork and no gap."""
    import asyncio

    from cipherpost.server.storage.models import KeyUpload, NewDevice
    from cipherpost.server.storage.sql import Storage

    db = Database(database_url)
    db.migrate()
    storages = [Storage(Database(database_url), relay=False) for _ in range(4)]

    async def run() -> None:
        device = NewDevice(1, b"\x00" * 32, None, KeyUpload())
        await asyncio.gather(*(
            storages[i % 4].create_account(f"00000000-0000-4000-8000-{i:012d}", None,
                                           b"\x05" + bytes(32), device, 1000 + i)
            for i in range(40)))

    try:
        asyncio.run(run())
        verdict = _verify(db)
        assert verdict.ok and verdict.entries == 40, verdict
    finally:
        for storage in storages:
            storage.close()
            storage.db.dispose()
        db.dispose()


def test_admin_tables_show_user_text_as_written(settings: Settings,
                                                client: TestClient) -> None:
    run = Admin(settings)
    register(client, "mallory", name="\x1b[2J[bold red]phone[/]\u202e")
    root = run("operators", "bootstrap", "root")["token"]
    result = CliRunner().invoke(cli, ["accounts", "show", "mallory"],
                                env={**run.env, "CIPHERPOST_ADMIN_TOKEN": root,
                                     "COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    assert "[bold red]phone[/]" in result.stdout


def test_the_report_counts_users_data_requests(settings: Settings, client: TestClient) -> None:
    run = Admin(settings)
    alice = register(client, "alice")
    bob = register(client, "bob")
    assert client.get("/v1/accounts/me/export", headers=alice.headers).status_code == 200
    assert client.delete("/v1/history", headers=bob.headers).status_code == 204
    root = run("operators", "bootstrap", "root")["token"]
    result = CliRunner().invoke(cli, ["transparency-report", "--format", "json"],
                                env={**run.env, "CIPHERPOST_ADMIN_TOKEN": root})
    report = json.loads(result.stdout)
    assert report["data_requests"] == {"account_exported": 1, "history_cleared": 1}
    assert report["audit_log"]["verified"] is True


def test_auditors_commands_write_nothing(settings: Settings, client: TestClient,
                                         tmp_path: Any,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An auditor's commands do not migrate (they may run on a read-only database); on a
    database that is no relay's they say so."""
    run = Admin(settings)
    register(client, "alice")
    root = run("operators", "bootstrap", "root")["token"]
    auditor = run("operators", "add", "eve", "--role", "auditor", token=root)["token"]

    def no_migration(_self: Database) -> None:
        raise AssertionError("an auditor's command migrated the database")

    monkeypatch.setattr(Database, "migrate", no_migration)
    assert [a["username"] for a in run("accounts", "list", token=auditor)] == ["alice"]
    assert run("audit", "verify", token=auditor)["ok"]
    assert run("metrics", "--no-live", token=auditor)["database"]["accounts"] == 1
    empty = Admin(dataclasses.replace(settings,
                                      database_url=f"sqlite:///{tmp_path}/none.db"))
    failed = empty("accounts", "list", token=auditor, code=1)
    assert "set it up" in failed.stderr


def test_the_token_is_never_taken_from_the_command_line(settings: Settings,
                                                       client: TestClient,
                                                       tmp_path: Any) -> None:
    """Review O6: ``--token`` showed the operator token in the process list; it is
    refused with the way out, and ``--token-file`` (or the environment) works."""
    run = Admin(settings)
    register(client, "alice")
    root = run("operators", "bootstrap", "root")["token"]
    refused = run("--token", root, "accounts", "list", code=2)
    assert "--token-file" in refused.stderr and root not in refused.stderr
    token_file = tmp_path / "token"
    token_file.write_text(root + "\n")
    token_file.chmod(0o600)
    listed = run("--token-file", str(token_file), "accounts", "list")
    assert [a["username"] for a in listed] == ["alice"]
    token_file.chmod(0o644)
    loose = run("--token-file", str(token_file), "accounts", "list", code=0)
    assert [a["username"] for a in loose] == ["alice"]
    warned = run.runner.invoke(cli, ["--token-file", str(token_file), "accounts", "list"],
                               env={**run.env, "CIPHERPOST_ADMIN_TOKEN": ""})
    assert "readable by other users" in warned.stderr
    wrong = tmp_path / "wrong"
    wrong.write_text("cpa_wrong")
    wrong.chmod(0o600)
    run("--token-file", str(wrong), "accounts", "list", code=4)
    run("--token-file", str(tmp_path / "missing"), "accounts", "list", code=2)


def test_the_token_is_checked_before_the_database_is_migrated(
        settings: Settings, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review O7: an admin command migrated the database before checking the token, so
    a wrong token or an auditor's could change the schema under running relays."""
    run = Admin(settings)
    register(client, "alice")
    root = run("operators", "bootstrap", "root")["token"]
    auditor = run("operators", "add", "eve", "--role", "auditor", token=root)["token"]
    migrated: list[str] = []

    def counting(_self: Database) -> None:
        migrated.append("migrate")

    monkeypatch.setattr(Database, "migrate", counting)
    run("accounts", "suspend", "alice", token="cpa_wrong", code=4)
    run("accounts", "suspend", "alice", token=auditor, code=4)
    run("invites", "create", token="", code=4)
    assert migrated == []
    run("accounts", "suspend", "alice", token=root)
    assert migrated == ["migrate"]
