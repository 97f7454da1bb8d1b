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
    DeviceMismatch,
    KeyUpload,
    NewDevice,
    OutgoingMessage,
    QueueFull,
    SignedKey,
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
    """Queued messages, in the per-device queues or (SQLite) still in the queue log."""
    return [(r[0], bytes(r[1])) for r in _query(
        database_url,
        "SELECT account_id, content FROM (SELECT account_id, device_id, seq, content "
        "FROM messages UNION ALL SELECT account_id, device_id, seq, content FROM queue_log) "
        "AS q ORDER BY account_id, device_id, seq")]


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
        assert storage._group.planned == (0 if db.is_sqlite else 2)
        assert _query(database_url, "SELECT queued_bytes FROM devices WHERE account_id = ?",
                      (ACCOUNTS[1],)) == [(0,)]
        storage.close()
        db.dispose()

    asyncio.run(run())


def test_sends_sharing_a_batch_count_each_other_against_numbers_and_budget(
        database_url: str) -> None:
    """Several sends to one device in one commit (on PostgreSQL, one multi-row INSERT,
    ``pg_batch``): consecutive numbers, and each counts the bytes queued before it."""
    async def run() -> None:
        db, storage = await _storage(database_url)

        def send(content: bytes, budget: int) -> asyncio.Future[Any]:
            return storage.enqueue(
                ACCOUNTS[1], [OutgoingMessage(1, 101, 2, content)], sender=(ACCOUNTS[0], 1),
                exclude_device=None, client_timestamp=7, now=1, ttl=60, byte_budget=budget)

        results = await asyncio.gather(send(b"a" * 40, 100), send(b"b" * 40, 100),
                                       send(b"c" * 40, 100), send(b"d" * 20, 100),
                                       return_exceptions=True)
        assert [e.seq for _, e in results[0]] == [1]
        assert [e.seq for _, e in results[1]] == [2]
        assert isinstance(results[2], QueueFull) and results[2].devices == [1]
        assert [e.seq for _, e in results[3]] == [3]  # 40 + 40 + 20 fits the 100
        envelope = results[3][0][1]
        assert (envelope.sender_account_id, envelope.sender_device_id, envelope.type,
                envelope.client_timestamp) == (ACCOUNTS[0], 1, 2, 7)
        # On SQLite the device's row counts them once they moved out of the queue log.
        assert await storage.move_queue_log(everything=True) == (3 if db.is_sqlite else 0)
        assert _query(database_url, "SELECT queued_bytes, last_seq FROM devices WHERE "
                      "account_id = ?", (ACCOUNTS[1],)) == [(100, 3)]
        assert storage._group.planned == (0 if db.is_sqlite else 1)  # one batch, whole
        fetched = await storage.fetch(ACCOUNTS[1], 1, 0, 10)
        assert [(e.seq, e.guid, e.content) for e in fetched] == [
            (r[0][1].seq, r[0][1].guid, r[0][1].content) for r in (results[0], results[1],
                                                                   results[3])]
        storage.close()
        db.dispose()

    asyncio.run(run())


def test_a_device_without_keys_may_be_left_out_but_not_one_with_keys(
        database_url: str) -> None:
    async def run() -> None:
        db, storage = await _storage(database_url)
        second = await storage.add_device(ACCOUNTS[1], NewDevice(555, b"g" * 32, None,
                                                                 KeyUpload()), 10, 0)
        bare = await storage.add_device(ACCOUNTS[1], NewDevice(556, b"i" * 32, None,
                                                               KeyUpload()), 10, 0)
        await storage.store_keys(ACCOUNTS[1], second, KeyUpload(
            signed_prekey=SignedKey(1, b"\x05" + bytes(32), b"s" * 64)))
        only_first = _send(storage, 1, b"x")
        both = storage.enqueue(
            ACCOUNTS[1], [OutgoingMessage(1, 101, 2, b"y"),
                          OutgoingMessage(second, 555, 2, b"y")],
            sender=None, exclude_device=None, client_timestamp=0, now=1, ttl=60,
            byte_budget=1 << 20)
        extra = storage.enqueue(
            ACCOUNTS[1], [OutgoingMessage(1, 101, 2, b"z"),
                          OutgoingMessage(second, 555, 2, b"z"),
                          OutgoingMessage(99, 1, 2, b"z")],
            sender=None, exclude_device=None, client_timestamp=0, now=1, ttl=60,
            byte_budget=1 << 20)
        results = await asyncio.gather(only_first, both, extra, return_exceptions=True)
        assert isinstance(results[0], DeviceMismatch)
        assert (results[0].missing, results[0].extra) == ([second], [])
        assert sorted(d for d, _ in results[1]) == [1, second]  # bare left out
        assert isinstance(results[2], DeviceMismatch) and results[2].extra == [99]
        assert bare not in (second, 1)
        assert storage._group.planned == (0 if db.is_sqlite else 1)
        storage.close()
        db.dispose()

    asyncio.run(run())
