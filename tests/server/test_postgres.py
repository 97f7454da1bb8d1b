"""The relay's storage on PostgreSQL: the private server the tests start, and what only
concurrent writers (several relay processes on one database) can show."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from cipherpost.server.storage.engine import Database
from cipherpost.server.storage.models import (
    KeyUpload,
    NewDevice,
    OneTimeKey,
    OutgoingMessage,
    SignedKey,
    TooManyDevices,
)
from cipherpost.server.storage.sql import Storage
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.postgresql


def test_private_server_on_loopback_not_as_root(postgres: PostgresServer) -> None:
    with psycopg.connect(postgres.dsn("postgres")) as conn:
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('listen_addresses', 'unix_socket_directories', 'data_directory')").fetchall())
    assert settings["listen_addresses"] == "127.0.0.1"
    assert settings["unix_socket_directories"] == ""
    assert settings["data_directory"].startswith(str(postgres.workdir))
    assert os.stat(f"/proc/{postgres.process.pid}").st_uid != 0


@pytest.fixture
def pg_url(postgres: PostgresServer) -> Iterator[str]:
    name = postgres.create_database()
    yield postgres.url(name)
    postgres.drop_database(name)


ACCOUNT = "00000000-0000-4000-8000-00000000000b"
KEYS = 120


def _upload() -> KeyUpload:
    return KeyUpload(
        signed_prekey=SignedKey(1, b"\x05" + bytes(32), b"s" * 64),
        last_resort_kyber=SignedKey(9999, b"k" * 1569, b"s" * 64),
        one_time_prekeys=tuple(OneTimeKey(i, b"\x05" + i.to_bytes(32)) for i in range(KEYS)),
        kyber_prekeys=tuple(SignedKey(1000 + i, b"k" * 1569, b"s" * 64) for i in range(KEYS)))


def _relays(url: str, n: int) -> tuple[Database, list[Storage]]:
    """``n`` storages on one database, each with its own writer thread and connections:
    what ``n`` relay processes are to PostgreSQL."""
    db = Database(url)
    db.migrate()
    return db, [Storage(Database(url)) for _ in range(n)]


def _close(db: Database, storages: list[Storage]) -> None:
    for storage in storages:
        storage.close()
        storage.db.dispose()
    db.dispose()


def test_concurrent_relays_hand_out_each_one_time_key_once(pg_url: str) -> None:
    """As many takers as keys, spread over six relays at once: every taker gets a key of
    each kind, and no key goes to two. (Without a row lock, a taker that raced another to
    the same key deletes nothing and gets none: a third of them here.)"""
    async def run() -> None:
        db, relays = _relays(pg_url, 6)
        try:
            await relays[0].create_account(ACCOUNT, None, b"\x05" + bytes(32),
                                           NewDevice(7, b"h" * 32, None, _upload()), 0)
            takes = await asyncio.gather(*[relays[i % len(relays)].take_bundles(ACCOUNT, None)
                                           for i in range(KEYS)])
            bundles = [b for bs in takes for b in bs]
            assert len(bundles) == KEYS
            one_time = [b.one_time_prekey.key_id for b in bundles if b.one_time_prekey]
            kyber = [b.kyber_prekey.key_id for b in bundles]
            assert sorted(one_time) == list(range(KEYS)), (len(one_time), len(set(one_time)))
            assert sorted(kyber) == [1000 + i for i in range(KEYS)], (
                len(kyber), len(set(kyber)))
            assert await relays[1].key_counts(ACCOUNT, 1) == (0, 0)
            last = await relays[2].take_bundles(ACCOUNT, None)
            assert last[0].one_time_prekey is None and last[0].kyber_prekey.key_id == 9999
        finally:
            _close(db, relays)

    asyncio.run(run())


def test_concurrent_relays_add_devices_with_distinct_ids(pg_url: str) -> None:
    """Device ids are picked under the account's row lock: six relays adding a device to
    one account at once give six devices six ids, and the device cap holds."""
    async def run() -> None:
        db, relays = _relays(pg_url, 6)
        try:
            await relays[0].create_account(ACCOUNT, None, b"\x05" + bytes(32),
                                           NewDevice(7, b"h" * 32, None, KeyUpload()), 0)
            new = NewDevice(8, b"i" * 32, None, KeyUpload())
            added = await asyncio.gather(*[
                relays[i % len(relays)].add_device(ACCOUNT, new, 5, 0) for i in range(12)],
                return_exceptions=True)
            ids = [a for a in added if isinstance(a, int)]
            assert sorted(ids) == [2, 3, 4, 5], added
            assert all(isinstance(a, TooManyDevices) for a in added if not isinstance(a, int))
            assert [d.device_id for d in await relays[3].list_devices(ACCOUNT)] == [1, 2, 3, 4,
                                                                                     5]
        finally:
            _close(db, relays)

    asyncio.run(run())


def test_a_lost_connection_is_replaced(pg_url: str, postgres: PostgresServer) -> None:
    """The server drops every connection (as in a restart): the next send still
    commits (its batch runs again on a new connection, as nothing of it was committed),
    and reads and other writes work again at once."""
    async def run() -> None:
        db, (storage,) = _relays(pg_url, 1)
        try:
            await storage.create_account(ACCOUNT, None, b"\x05" + bytes(32),
                                         NewDevice(7, b"h" * 32, None, KeyUpload()), 0)
            send = [OutgoingMessage(1, 7, 2, b"one")]
            args: dict[str, Any] = {"sender": None, "exclude_device": None,
                                    "client_timestamp": 0, "now": 1, "ttl": 60,
                                    "byte_budget": 1 << 20}
            await storage.enqueue(ACCOUNT, send, **args)
            assert len(await storage.fetch(ACCOUNT, 1, 0, 10)) == 1
            assert await storage.get_account(ACCOUNT) is not None
            with psycopg.connect(postgres.dsn("postgres"), autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s", (make_url(pg_url).database,)).fetchone()
            assert killed is not None and killed[0] >= 2
            await storage.enqueue(ACCOUNT, [OutgoingMessage(1, 7, 2, b"two")], **args)
            assert [e.content for e in await storage.fetch(ACCOUNT, 1, 0, 10)] == [b"one",
                                                                                   b"two"]
            assert await storage.get_account(ACCOUNT) is not None
            for _ in range(2):  # either reader thread
                assert await storage.key_counts(ACCOUNT, 1) == (0, 0)
            await storage.set_username(ACCOUNT, "bob", 2)  # the writer's SQLAlchemy side
        finally:
            _close(db, [storage])

    asyncio.run(run())


def test_a_database_error_in_a_whole_batch_fails_only_its_send(pg_url: str) -> None:
    """A batch run whole (``pg_batch``) that the database refuses is rolled back and run
    again send by send: only the send at fault fails."""
    async def run() -> None:
        db, (storage,) = _relays(pg_url, 1)
        await storage.create_account(ACCOUNT, None, b"\x05" + bytes(32),
                                     NewDevice(7, b"h" * 32, None, KeyUpload()), 0)

        def send(sender: str) -> asyncio.Future[Any]:
            return storage.enqueue(ACCOUNT, [OutgoingMessage(1, 7, 2, sender.encode())],
                                   sender=(sender, 1), exclude_device=None,
                                   client_timestamp=0, now=1, ttl=60, byte_budget=1 << 20)

        too_long = "x" * 40  # the column holds 36 characters: the INSERT fails
        results = await asyncio.gather(send(ACCOUNT), send(too_long), send(ACCOUNT),
                                       return_exceptions=True)
        assert isinstance(results[1], psycopg.errors.StringDataRightTruncation)
        assert [e.seq for r in (results[0], results[2]) for _, e in r] == [1, 2]
        assert storage._group.planned == 0  # that batch went operation by operation
        assert [e.content for e in await storage.fetch(ACCOUNT, 1, 0, 10)] == [
            ACCOUNT.encode(), ACCOUNT.encode()]
        _close(db, [storage])

    asyncio.run(run())
