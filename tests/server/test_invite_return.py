"""A sign-up the client withdrew gives its invite code back (docs/operations.md, "Invite
codes"): the browser and the SDK delete an account the relay made when they could not
store it, and the person retries with the same code. Only the account's own deletion
within ``admin.INVITE_RETURN_WINDOW_MS`` of its creation does, only for a code not
expired meanwhile, and one code never has two live accounts; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import delete, select

from cipherpost.server import Settings, create_app
from cipherpost.server.admin_cli import hash_token
from cipherpost.server.storage import account_data, admin, audit
from cipherpost.server.storage.engine import Database
from cipherpost.server.storage.schema import accounts, audit_log, devices, invites
from cipherpost.server.storage.sql import Storage

from .helpers import KeyMaker, auth, run_alembic

START = 1_800_000_000  # seconds
WINDOW_S = admin.INVITE_RETURN_WINDOW_MS // 1000
CODE = "invite-code-returned"


class Relay:
    """An invite-only relay on a clock the test moves (whole seconds)."""

    def __init__(self, client: TestClient, db: Database, clock: list[float]) -> None:
        self.client, self.db, self.clock = client, db, clock

    @property
    def now_ms(self) -> int:
        return int(self.clock[0] * 1000)

    def invite(self, code: str, valid_s: int) -> None:
        with self.db.writer.begin() as conn:
            admin.create_invites(conn, [hash_token(code)], self.now_ms + valid_s * 1000,
                                 self.now_ms, "root")

    def sign_up(self, code: str, username: str | None = None) -> Any:
        body: dict[str, Any] = {**KeyMaker().device_body(), "invite": code}
        if username:
            body["username"] = username
        return self.client.post("/v1/accounts", json=body)

    def account(self, code: str, username: str | None = None) -> dict[str, Any]:
        made = self.sign_up(code, username)
        assert made.status_code == 201, made.text
        return dict(made.json())

    def delete(self, account: dict[str, Any]) -> None:
        deleted = self.client.delete("/v1/accounts/me", headers=auth(account["token"]))
        assert deleted.status_code == 204, deleted.text

    def refused(self, code: str) -> bool:
        response = self.sign_up(code)
        if response.status_code == 201:
            return False
        assert response.json()["error"]["code"] == "invalid_invite", response.text
        return True

    def counts(self) -> tuple[int, int, int]:
        with self.db.reader.connect() as conn:
            return dataclasses.astuple(admin.invite_counts(conn, self.now_ms))

    def returned_entries(self) -> int:
        with self.db.reader.connect() as conn:
            return int(conn.execute(select(sa.func.count()).select_from(audit_log).where(
                audit_log.c.event == "invite_returned")).scalar_one())


@pytest.fixture
def relay(settings: Settings, db: Database) -> Iterator[Relay]:
    clock = [float(START)]
    invite_settings = dataclasses.replace(settings, registration="invite")
    with TestClient(create_app(invite_settings, clock=lambda: clock[0])) as client:
        yield Relay(client, db, clock)


def test_a_withdrawn_sign_up_gives_its_code_back_once(relay: Relay) -> None:
    relay.invite(CODE, valid_s=3600)
    first = relay.account(CODE, "carol")
    assert relay.refused(CODE)
    relay.clock[0] += 600  # the browser withdraws the sign-up 10 minutes later
    relay.delete(first)
    assert relay.counts() == (1, 0, 0)
    assert relay.returned_entries() == 1
    with relay.db.reader.connect() as conn:
        assert audit.verify(conn).ok
        row = conn.execute(select(invites.c.expires_at)).one()
    assert row.expires_at == START * 1000 + 3_600_000  # its expiry as it was
    # The retry registers (the username is free again), and spends the code again: a
    # third try is refused while the second account lives.
    second = relay.account(CODE, "carol")
    assert relay.refused(CODE)
    assert relay.counts() == (0, 1, 0)
    # Deleted after its window, the second account gives nothing back.
    relay.clock[0] += WINDOW_S + 1
    relay.delete(second)
    assert relay.refused(CODE)
    assert (relay.counts(), relay.returned_entries()) == ((0, 1, 0), 1)


def test_a_code_comes_back_once_at_most(relay: Relay) -> None:
    # Review of a3d46cc: the window starts again with each account, so a code that came
    # back every time would make one throwaway account after another until it expired.
    relay.invite(CODE, valid_s=7 * 24 * 3600)
    first = relay.account(CODE)
    relay.clock[0] += WINDOW_S - 60
    relay.delete(first)
    second = relay.account(CODE)  # returned once: the retry registers
    relay.clock[0] += WINDOW_S - 60
    relay.delete(second)  # within its own window, but the code came back already
    assert relay.refused(CODE)
    assert (relay.counts(), relay.returned_entries()) == ((0, 1, 0), 1)
    with relay.db.reader.connect() as conn:
        assert conn.execute(select(invites.c.returned_at)).scalar_one() == \
            (START + WINDOW_S - 60) * 1000


def test_a_suspended_account_gives_nothing_back(relay: Relay) -> None:
    relay.invite(CODE, valid_s=3600)
    made = relay.account(CODE)
    relay.clock[0] += 60
    # Suspended after its device's deletion request was let in, before the deletion ran.
    with relay.db.writer.begin() as conn:
        conn.execute(sa.update(accounts).values(suspended_at=relay.now_ms))
    storage = Storage(relay.db, relay=False)  # a stand-in for the relay's handler
    try:
        deleted = asyncio.run(account_data.delete_account(storage, made["account_id"],
                                                          relay.now_ms))
        assert deleted == [1]
    finally:
        storage.close()
    assert relay.refused(CODE)
    assert relay.returned_entries() == 0


def test_the_window_ends_15_minutes_after_creation(relay: Relay) -> None:
    assert admin.INVITE_RETURN_WINDOW_MS == 15 * 60 * 1000
    relay.invite("invite-code-on-the-edge", valid_s=7200)
    relay.invite("invite-code-just-late", valid_s=7200)
    on_the_edge = relay.account("invite-code-on-the-edge")
    just_late = relay.account("invite-code-just-late")
    relay.clock[0] += WINDOW_S
    relay.delete(on_the_edge)
    relay.clock[0] += 1
    relay.delete(just_late)
    assert not relay.refused("invite-code-on-the-edge")
    assert relay.refused("invite-code-just-late")
    assert relay.returned_entries() == 1


def test_an_account_an_operator_removes_gives_nothing_back(relay: Relay) -> None:
    relay.invite(CODE, valid_s=3600)
    made = relay.account(CODE, "dave")
    relay.clock[0] += 60
    with relay.db.writer.begin() as conn:
        # Left without devices (as a restore or idle removal leaves an account), then
        # released by an operator, well within the window.
        conn.execute(delete(devices).where(devices.c.account_id == made["account_id"]))
        assert admin.release_username(conn, made["account_id"], relay.now_ms,
                                      "root") == "dave"
        assert conn.execute(select(accounts).where(
            accounts.c.id == made["account_id"])).first() is None
    assert relay.refused(CODE)
    assert (relay.counts(), relay.returned_entries()) == ((0, 1, 0), 0)


def test_a_code_expired_meanwhile_stays_dead(relay: Relay) -> None:
    relay.invite(CODE, valid_s=300)
    made = relay.account(CODE)
    relay.clock[0] += 301  # expired, though the account is only 5 minutes old
    relay.delete(made)
    assert relay.refused(CODE)
    assert (relay.counts(), relay.returned_entries()) == ((0, 1, 0), 0)


def test_only_the_use_its_own_registration_made_comes_back(relay: Relay) -> None:
    """Defence in depth: a code whose use is not this account's creation (another
    account's, as after a restore mixed a backup's accounts with live invites) is not
    returned."""
    relay.invite(CODE, valid_s=3600)
    relay.account(CODE)
    code_hash = hash_token(CODE)
    with relay.db.writer.begin() as conn:
        assert not admin.return_invite(conn, code_hash, relay.now_ms - 1, relay.now_ms)
        assert not admin.return_invite(conn, None, relay.now_ms, relay.now_ms)
    assert relay.refused(CODE)
    with relay.db.writer.begin() as conn:
        assert admin.return_invite(conn, code_hash, relay.now_ms, relay.now_ms + 1)


def test_the_dashboard_says_the_code_is_held(relay: Relay) -> None:
    relay.invite(CODE, valid_s=3600)
    made = relay.account(CODE)
    shown = relay.client.get("/v1/accounts/me/privacy", headers=auth(made["token"]))
    assert shown.status_code == 200, shown.text
    assert shown.json()["invite_code"] is True
    with relay.db.reader.connect() as conn:
        held = conn.execute(select(accounts.c.invite_hash).where(
            accounts.c.id == made["account_id"])).scalar_one()
    assert bytes(held) == hash_token(CODE)


def test_open_registration_keeps_no_code(client: TestClient) -> None:
    made = client.post("/v1/accounts", json={**KeyMaker().device_body(),
                                             "invite": "whatever-it-says"})
    assert made.status_code == 201, made.text
    shown = client.get("/v1/accounts/me/privacy", headers=auth(made.json()["token"]))
    assert shown.json()["invite_code"] is False


# -- migration 0011 ----------------------------------------------------------------------------


def _names(db: Database) -> dict[str, str | None]:
    with db.reader.connect() as conn:
        return {r[0]: r[1] for r in conn.execute(sa.text("SELECT id, username FROM accounts"))}


def test_0011_keeps_accounts_and_downgrades(database_url: str) -> None:
    db = Database(database_url)
    try:
        run_alembic(db, "upgrade", "0010")
        with db.writer.begin() as conn:
            for n in range(2):
                conn.execute(sa.text(
                    "INSERT INTO accounts (id, username, identity_key, next_device_id, "
                    "created_at) VALUES (:id, :name, :key, 2, 5)"),
                    {"id": f"00000000-0000-4000-8000-00000000000{n}", "name": f"u{n}",
                     "key": bytes(33)})
        before = _names(db)
        db.migrate()
        with db.reader.connect() as conn:
            assert conn.execute(select(accounts.c.invite_hash)).scalars().all() == [None] * 2
        assert _names(db) == before
        with db.writer.begin() as conn:
            conn.execute(sa.update(accounts).values(invite_hash=b"\x01" * 32))
        run_alembic(db, "downgrade", "0010")
        assert _names(db) == before
        with db.reader.connect() as conn:
            columns = {c["name"] for c in sa.inspect(conn).get_columns("accounts")}
        assert "invite_hash" not in columns and "username" in columns
        with pytest.raises(sa.exc.IntegrityError), db.writer.begin() as conn:
            # The unique username survived the batch rebuild.
            conn.execute(sa.text(
                "INSERT INTO accounts (id, username, identity_key, next_device_id, "
                "created_at) VALUES ('x', 'u0', :key, 2, 5)"), {"key": bytes(33)})
        db.migrate()  # and up again
        assert _names(db) == before
    finally:
        db.dispose()
