"""Several relay processes on one PostgreSQL database: what a second writer could break.

Each test stands for a race between two relay processes (two ``Storage`` objects, each
with its own writer thread and connections, or a plain psycopg transaction doing what the
other process's code does) and pins the interleaving with row locks or a pause, so that
it happens on every run instead of once in a while.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from cipherpost.server.storage import pg_batch
from cipherpost.server.storage.engine import Database
from cipherpost.server.storage.models import (
    DeviceMismatch,
    KeyUpload,
    NewDevice,
    OutgoingMessage,
    QueueFull,
)
from cipherpost.server.storage.sql import Storage
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.postgresql

X = "00000000-0000-4000-8000-0000000000aa"
Y = "00000000-0000-4000-8000-0000000000bb"


@pytest.fixture
def pg_url(postgres: PostgresServer) -> Iterator[str]:
    name = postgres.create_database()
    yield postgres.url(name)
    postgres.drop_database(name)


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _relays(url: str, n: int, devices: int = 1) -> list[Storage]:
    """``n`` storages on one database (``n`` relay processes), accounts X and Y with
    ``devices`` devices each."""
    db = Database(url)
    db.migrate()
    db.dispose()
    relays = [Storage(Database(url)) for _ in range(n)]
    for account in (X, Y):
        await relays[0].create_account(account, None, b"\x05" + bytes(32),
                                       NewDevice(1, b"h" * 32, None, KeyUpload()), 0)
        for _ in range(devices - 1):
            await relays[0].add_device(account, NewDevice(1, b"h" * 32, None, KeyUpload()),
                                       10, 0)
    return relays


def _close(relays: Sequence[Storage]) -> None:
    for storage in relays:
        storage.close()
        storage.db.dispose()


def _send(storage: Storage, account: str, content: bytes, devices: Sequence[int] = (1,),
          budget: int = 1 << 20, exclude: int | None = None) -> asyncio.Future[Any]:
    return storage.enqueue(account, [OutgoingMessage(d, 1, 2, content) for d in devices],
                           sender=None, exclude_device=exclude, client_timestamp=0, now=1,
                           ttl=60, byte_budget=budget)


async def _until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def _waiting_on_locks(url: str) -> int:
    """Backends of the database now waiting for a lock held by another transaction."""
    with psycopg.connect(_dsn(url), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                           "AND wait_event_type = 'Lock'",
                           (make_url(url).database,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_cursor_skips_nothing_when_a_process_stalls_mid_commit(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relay B stalls in the middle of its send's transaction (a GC pause, a slow
    network), relay A sends to the same device meanwhile, and a device connected
    to either reads its queue after the last message it was given (its cursor), before
    and after B commits. It must see both messages: a message numbered below the cursor
    but committed after the cursor moved past it would be skipped until the device
    reconnects."""
    paused, release = threading.Event(), threading.Event()
    original = pg_batch.apply

    def apply(cursor: Any, plans: Sequence[pg_batch.Plan], envelope_id: Any) -> Any:
        results = original(cursor, plans, envelope_id)
        if any(isinstance(p, pg_batch.Enqueue) and p.outgoing[0].content == b"from B"
               for p in plans):
            paused.set()  # the rows are written, the transaction not yet committed
            assert release.wait(20)
        return results

    monkeypatch.setattr(pg_batch, "apply", apply)

    async def run() -> None:
        a, b = relays = await _relays(pg_url, 2)
        try:
            from_b = _send(b, X, b"from B")
            await _until(paused.is_set, "relay B to stall mid-transaction")
            from_a = _send(a, X, b"from A")
            # A either commits at once, or waits for B's lock on the device's sequence.
            await _until(lambda: from_a.done() or _waiting_on_locks(pg_url) > 0,
                         "relay A's send to commit or wait")
            seen = await a.fetch(X, 1, 0, 100)
            cursor = max((e.seq for e in seen), default=0)
            release.set()
            await asyncio.gather(from_a, from_b)
            seen += await a.fetch(X, 1, cursor, 100)
            assert sorted(e.content for e in seen) == [b"from A", b"from B"], seen
            assert [e.seq for e in seen] == sorted(e.seq for e in seen)
        finally:
            release.set()
            _close(relays)

    asyncio.run(run())


def test_concurrent_starts_migrate_once(pg_url: str) -> None:
    """Several relay processes starting at once on an empty database all come up."""
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def start() -> None:
        db = Database(pg_url)
        try:
            barrier.wait()
            db.migrate()
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=start, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a migration hung"
    assert not errors, errors
    with psycopg.connect(_dsn(pg_url)) as conn:
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)


def test_the_queue_budget_holds_across_processes(pg_url: str) -> None:
    """Another process's send to the same device is committing while this one checks
    the budget: the check must see it, or the two together overrun the budget."""
    async def run() -> None:
        (storage,) = relays = await _relays(pg_url, 1)
        try:
            with psycopg.connect(_dsn(pg_url)) as other:
                other.execute("UPDATE devices SET queued_bytes = queued_bytes + 900 "
                              "WHERE account_id = %s AND device_id = 1", (X,))
                mine = _send(storage, X, b"x" * 200, budget=1000)
                await _until(lambda: mine.done() or _waiting_on_locks(pg_url) > 0,
                             "the send to commit or wait")
                other.commit()
            with pytest.raises(QueueFull):
                await mine
            with psycopg.connect(_dsn(pg_url)) as conn:
                assert conn.execute("SELECT queued_bytes FROM devices WHERE account_id = %s",
                                    (X,)).fetchone() == (900,)
        finally:
            _close(relays)

    asyncio.run(run())


def test_a_send_racing_a_device_removal_leaves_no_orphan(pg_url: str) -> None:
    """Another process removes device 2 (as ``remove_device`` does) while a send to
    devices 1 and 2 is under way: the send is refused as naming an extra device, and no
    message is left queued for a device that no longer exists."""
    async def run() -> None:
        (storage,) = relays = await _relays(pg_url, 1, devices=2)
        try:
            with psycopg.connect(_dsn(pg_url)) as other:
                other.execute("DELETE FROM devices WHERE account_id = %s AND device_id = 2",
                              (X,))
                other.execute("DELETE FROM messages WHERE account_id = %s AND device_id = 2",
                              (X,))
                mine = _send(storage, X, b"hello", devices=(1, 2))
                await _until(lambda: mine.done() or _waiting_on_locks(pg_url) > 0,
                             "the send to commit or wait")
                other.commit()
            with pytest.raises(DeviceMismatch) as refused:
                await mine
            assert refused.value.extra == [2]
            with psycopg.connect(_dsn(pg_url)) as conn:
                assert conn.execute("SELECT count(*) FROM messages").fetchone() == (0,)
        finally:
            _close(relays)

    asyncio.run(run())
