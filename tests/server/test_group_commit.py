"""Group commit: many senders' writes share transactions, and none is reported before
it is durable; a refusal or a failure touches only its own operation. On SQLite (batches
on the event loop) and PostgreSQL (batches on the writer thread) alike."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from cipherpost.server.storage.engine import Database
from cipherpost.server.storage.group import GroupCommit
from cipherpost.server.storage.models import (
    KeyUpload,
    NewDevice,
    OutgoingMessage,
    StaleDevices,
    UnknownAccount,
)
from cipherpost.server.storage.sql import Storage

ACCOUNTS = [f"{i:08d}-0000-4000-8000-000000000000" for i in range(4)]


async def _storage(database_url: str) -> tuple[Database, Storage]:
    db = Database(database_url)
    db.migrate()
    storage = Storage(db)
    for i, account in enumerate(ACCOUNTS):
        await storage.create_account(account, None, b"\x05" + bytes(32),
                                     NewDevice(100 + i, b"h" * 32, None, KeyUpload()), 0)
    return db, storage


def _send(storage: Storage, to: int, content: bytes, registration: int | None = None,
          sender: int = 0) -> asyncio.Future[Any]:
    return storage.enqueue(
        ACCOUNTS[to], [OutgoingMessage(1, 100 + to if registration is None else registration,
                                       2, content)],
        sender=(ACCOUNTS[sender], 1), exclude_device=None, client_timestamp=0, now=1,
        ttl=60, byte_budget=1 << 20)


def _query(database_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows as another connection sees them: only what is committed."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        with sqlite3.connect(str(url.database)) as conn:
            return conn.execute(sql, params).fetchall()
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as pg:
        return pg.execute(sql.replace("?", "%s"), params).fetchall()


def _committed(database_url: str) -> list[tuple[str, bytes]]:
    return [(r[0], bytes(r[1])) for r in _query(
        database_url,
        "SELECT account_id, content FROM messages ORDER BY account_id, device_id, seq")]


def test_concurrent_senders_share_commits_keep_order_and_isolate_refusals(
        database_url: str) -> None:
    async def run() -> None:
        db, storage = await _storage(database_url)
        seen: list[tuple[str, int]] = []
        futures = []
        for i in range(200):
            if i == 50:
                futures.append(_send(storage, 1, b"stale", registration=9999))
            elif i == 51:
                futures.append(storage.enqueue(
                    "nobody", [OutgoingMessage(1, 1, 2, b"x")], sender=None,
                    exclude_device=None, client_timestamp=0, now=1, ttl=60, byte_budget=99))
            else:
                future = _send(storage, i % 3 + 1, b"%d" % i)
                future.add_done_callback(lambda f, to=ACCOUNTS[i % 3 + 1]: seen.extend(
                    (to, e.seq) for _, e in f.result()))
                futures.append(future)
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert isinstance(results[50], StaleDevices)
        assert isinstance(results[51], UnknownAccount)
        ok = [r for r in results if isinstance(r, list)]
        assert len(ok) == 198
        assert storage._group.batches[0] + storage._group.batches[1] < 20  # shared commits
        for account in ACCOUNTS[1:]:  # reported in commit order: 1, 2, 3, ... per device
            numbers = [seq for to, seq in seen if to == account]
            assert numbers == list(range(1, len(numbers) + 1))
        rows = _committed(database_url)
        expected = [(ACCOUNTS[i % 3 + 1], b"%d" % i) for i in range(200) if i not in (50, 51)]
        # In order per destination (on PostgreSQL a batch runs in account order).
        assert sorted(rows, key=lambda r: r[0]) == sorted(expected, key=lambda r: r[0])
        storage.close()
        db.dispose()

    asyncio.run(run())


def test_a_failing_operation_is_rolled_back_alone(database_url: str) -> None:
    async def run() -> None:
        db, storage = await _storage(database_url)
        group: GroupCommit = storage._group

        def half_written(cursor: Any) -> None:
            cursor.execute("UPDATE devices SET name = 'half' WHERE account_id = ?",
                           (ACCOUNTS[0],))
            raise RuntimeError("boom")

        first = _send(storage, 1, b"before")
        failing = group.submit(half_written)
        last = _send(storage, 2, b"after")
        assert len(await first) == 1 and len(await last) == 1
        with pytest.raises(RuntimeError):
            await failing
        assert [c for _, c in _committed(database_url)] == [b"before", b"after"]
        assert _query(database_url, "SELECT count(*) FROM devices WHERE name = 'half'"
                      ) == [(0,)]
        storage.close()
        db.dispose()

    asyncio.run(run())


def test_when_another_writer_holds_the_lock_the_batch_waits_and_the_loop_goes_on(
        tmp_path: Path) -> None:
    async def run() -> None:
        db, storage = await _storage(f"sqlite:///{tmp_path}/relay.db")
        other = sqlite3.connect(tmp_path / "relay.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # holds the write lock
        future = _send(storage, 1, b"waits")
        later = _send(storage, 2, b"later")
        await asyncio.sleep(0.3)  # the loop is not blocked meanwhile
        assert not future.done() and not later.done()  # not reported: not committed
        assert storage._group.waits > 10
        other.execute("COMMIT")
        assert len(await asyncio.wait_for(future, 10)) == 1
        assert len(await asyncio.wait_for(later, 10)) == 1
        assert [c for _, c in _committed(f"sqlite:///{tmp_path}/relay.db")] == [
            b"waits", b"later"]
        other.close()
        assert storage._group.batches[1] == 0  # all on the event loop
        storage.close()
        db.dispose()

    asyncio.run(run())


def test_acknowledge_frees_the_budget_in_one_batch(database_url: str) -> None:
    async def run() -> None:
        db, storage = await _storage(database_url)
        queued = await asyncio.gather(*[_send(storage, 1, b"x" * 10) for _ in range(5)])
        guids = [e.guid for q in queued for _, e in q]
        deleted = await asyncio.gather(storage.acknowledge(ACCOUNTS[1], 1, guids[:3]),
                                       storage.acknowledge(ACCOUNTS[1], 1, guids[2:]),
                                       storage.acknowledge(ACCOUNTS[2], 1, guids))
        assert deleted == [3, 2, 0]  # only the device's own messages, each once
        assert _query(database_url, "SELECT queued_bytes FROM devices WHERE account_id = ?",
                      (ACCOUNTS[1],)) == [(0,)]
        storage.close()
        db.dispose()

    asyncio.run(run())
