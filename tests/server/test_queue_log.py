"""SQLite's queue log (storage/queue_log.py): a message acknowledged within seconds never
reaches ``messages`` or its device's row; one that is not moves there, counted; a crash
leaves nothing behind that a restart does not find; memory follows what committed (a
rolled-back batch, another connection removing a device); budgets, expiry, notices and
reads see the log and the queues as one queue."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cipherpost.server.storage import account_data, admin, notices, queue_log
from cipherpost.server.storage.engine import Database
from cipherpost.server.storage.models import (
    DeviceMismatch,
    Envelope,
    KeyUpload,
    NewDevice,
    OutgoingMessage,
    QueueFull,
)
from cipherpost.server.storage.sql import RelayRunning, Storage

from .helpers import run_alembic

ALICE = "00000000-0000-4000-8000-00000000000a"
BOB = "00000000-0000-4000-8000-00000000000b"


class Clock:
    """The queue log's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _open(path: Path, clock: Clock | None = None) -> tuple[Database, Storage]:
    db = Database(f"sqlite:///{path}")
    db.migrate()
    storage = Storage(db)
    assert storage.queue_log is not None
    if clock is not None:
        storage.queue_log._clock = clock
    return db, storage


def _run(path: Path, body: Callable[[Database, Storage], Awaitable[None]],
         clock: Clock | None = None) -> None:
    async def run() -> None:
        db, storage = _open(path, clock)
        try:
            await body(db, storage)
        finally:
            storage.close()
            db.dispose()

    asyncio.run(run())


async def _accounts(storage: Storage, devices: int = 1) -> None:
    await storage.create_account(ALICE, None, b"\x05" + bytes(32),
                                 NewDevice(7, b"a" * 32, None, KeyUpload()), 0)
    await storage.create_account(BOB, None, b"\x05" + bytes(32),
                                 NewDevice(101, b"b" * 32, None, KeyUpload()), 0)
    for i in range(2, devices + 1):
        await storage.add_device(BOB, NewDevice(100 + i, bytes([i]) * 32, None, KeyUpload()),
                                 10, 0)


def _send(storage: Storage, content: bytes, *, budget: int = 1 << 20, ttl: int = 60,
          now: int = 1, devices: int = 1) -> asyncio.Future[list[tuple[int, Envelope]]]:
    return storage.enqueue(
        BOB, [OutgoingMessage(d, 100 + d, 2, content) for d in range(1, devices + 1)],
        sender=(ALICE, 1), exclude_device=None, client_timestamp=5, now=now, ttl=ttl,
        byte_budget=budget)


def _rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """What another connection sees: only what committed."""
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, params).fetchall()


def _device_row(path: Path, device: int = 1) -> tuple[int, int]:
    return _rows(path, "SELECT queued_bytes, last_seq FROM devices WHERE account_id = ? "
                 "AND device_id = ?", (BOB, device))[0]


def test_a_message_acknowledged_in_time_never_reaches_the_queues(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"

    async def body(_db: Database, storage: Storage) -> None:
        await _accounts(storage)
        sent = [e for content in (b"one", b"two") for _, e in await _send(storage, content)]
        assert [e.seq for e in sent] == [1, 2]
        assert _rows(path, "SELECT seq, guid, content FROM queue_log ORDER BY id") == [
            (e.seq, e.guid, e.content) for e in sent]
        assert _device_row(path) == (0, 0)  # the device's row was not written
        assert [e.guid for e in await storage.fetch(BOB, 1, 0, 10)] == [e.guid for e in sent]
        assert await storage.acknowledge(BOB, 1, [sent[0].guid]) == 1
        assert await storage.acknowledge(BOB, 1, [sent[0].guid]) == 0  # once
        assert await storage.acknowledge(BOB, 1, [sent[1].guid]) == 1
        assert _rows(path, "SELECT count(*) FROM queue_log") == [(0,)]
        assert _rows(path, "SELECT count(*) FROM messages") == [(0,)]
        assert _device_row(path) == (0, 0)
        assert await storage.fetch(BOB, 1, 0, 10) == []
        assert storage.queue_log is not None and storage.queue_log.moved == 0

    _run(path, body)


def test_an_unacknowledged_message_moves_to_its_queue_after_a_few_seconds(
        tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    clock = Clock()

    async def body(_db: Database, storage: Storage) -> None:
        await _accounts(storage, devices=2)
        first = dict(await _send(storage, b"a" * 10, devices=2))
        clock.now += 1
        second = dict(await _send(storage, b"b" * 20, devices=2))
        assert await storage.acknowledge(BOB, 2, [first[2].guid, second[2].guid]) == 2
        clock.now += queue_log.FOLD_AGE - 0.5  # the first is old enough, not the second
        assert await storage.move_queue_log() == 1
        assert _rows(path, "SELECT device_id, seq, guid FROM messages") == [
            (1, 1, first[1].guid)]
        assert _device_row(path) == (10, 1)  # its bytes and number, on its device's row
        assert _device_row(path, 2) == (0, 0)
        assert _rows(path, "SELECT device_id, seq FROM queue_log") == [(1, 2)]
        # One queue: the moved message, then the one still in the log.
        assert [e.guid for e in await storage.fetch(BOB, 1, 0, 10)] == [first[1].guid,
                                                                        second[1].guid]
        assert [e.guid for e in await storage.fetch(BOB, 1, 1, 10)] == [second[1].guid]
        assert [e.guid for e in await storage.fetch(BOB, 1, 0, 1)] == [first[1].guid]
        clock.now += 1
        assert await storage.move_queue_log() == 1
        assert _device_row(path) == (30, 2)
        # Numbers go on from there; an acknowledgement of a moved message frees its bytes.
        third = dict(await _send(storage, b"c", devices=2))
        assert (third[1].seq, third[2].seq) == (3, 3)
        assert await storage.acknowledge(BOB, 1, [first[1].guid, third[1].guid]) == 2
        assert _device_row(path) == (20, 2)
        assert [e.guid for e in await storage.fetch(BOB, 1, 0, 10)] == [second[1].guid]

    _run(path, body, clock)


def test_a_crash_leaves_the_log_to_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    sent: list[Envelope] = []

    async def before(_db: Database, storage: Storage) -> None:
        await _accounts(storage)
        for content in (b"one", b"two", b"three"):
            sent.extend(e for _, e in await _send(storage, content))
        assert await storage.acknowledge(BOB, 1, [sent[1].guid]) == 1
        # Closed without moving anything, as after SIGKILL (what committed is on disk).

    _run(path, before)
    assert _rows(path, "SELECT seq FROM queue_log ORDER BY id") == [(1,), (3,)]

    async def after(_db: Database, storage: Storage) -> None:
        # A read of the queue first: the log moves before it.
        fetched = await storage.fetch(BOB, 1, 0, 10)
        assert [(e.seq, e.guid, e.content) for e in fetched] == [
            (e.seq, e.guid, e.content) for e in (sent[0], sent[2])]
        assert _rows(path, "SELECT count(*) FROM queue_log") == [(0,)]
        assert _device_row(path) == (len(b"one") + len(b"three"), 3)
        (_, fourth), = await _send(storage, b"four")
        assert fourth.seq == 4
        assert await storage.acknowledge(BOB, 1, [sent[0].guid, sent[2].guid]) == 2
        assert _device_row(path) == (0, 3)

    _run(path, after)


def test_a_rolled_back_batch_leaves_memory_as_the_database(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    clock = Clock()

    async def body(_db: Database, storage: Storage) -> None:
        await _accounts(storage)

        def fails(cursor: Any) -> None:
            cursor.execute("UPDATE devices SET name = 'half'")
            raise RuntimeError("boom")

        # One batch: the send ran, then the failure rolled all of it back, and the batch
        # ran again one operation at a time: memory must hold the send's second run only.
        # Its first number is not handed out again (a gap; connections read past one).
        first = _send(storage, b"kept")
        failing = storage._group.submit(fails)
        (_, envelope), = await first
        with pytest.raises(RuntimeError):
            await failing
        assert envelope.seq == 2
        assert _rows(path, "SELECT seq, guid FROM queue_log") == [(2, envelope.guid)]
        assert storage.queue_log is not None
        assert storage.queue_log.queued(BOB, 1) == (1, len(b"kept"))
        assert [e.guid for e in await storage.fetch(BOB, 1, 0, 10)] == [envelope.guid]
        (_, second), = await _send(storage, b"next")
        assert second.seq == 3

        # An operation that appended to the log and then failed, between two that did
        # not: rolled back to its savepoint, memory loses its append and keeps theirs.
        def appends_then_fails(cursor: Any) -> None:
            assert storage.queue_log is not None
            storage.queue_log.notice(BOB, 0, b"half", 1, 60, None, cursor)
            raise RuntimeError("boom")

        around = [_send(storage, b"<"), storage._group.submit(appends_then_fails),
                  _send(storage, b">")]
        results = await asyncio.gather(*around, return_exceptions=True)
        assert isinstance(results[1], RuntimeError)
        assert [e.content for e in await storage.fetch(BOB, 1, 0, 10)] == [
            b"kept", b"next", b"<", b">"]
        assert storage.queue_log.queued(BOB, 1) == (4, len(b"keptnext<>"))
        assert await storage.acknowledge(BOB, 1, [e.guid for r in (results[0], results[2])
                                                  for _, e in r]) == 2

        # A failure inside a move of the log: the move is undone (rows and memory); a
        # periodic one does not fail the batch it runs in, and the next move takes the rows.
        broken = sqlite3.connect(path)
        broken.execute("CREATE TRIGGER no_moves BEFORE INSERT ON messages "
                       "BEGIN SELECT RAISE(ABORT, 'no'); END")
        broken.commit()
        with pytest.raises(sqlite3.DatabaseError):
            await storage.move_queue_log(everything=True)
        clock.now += queue_log.FOLD_AGE + 1
        third = _send(storage, b"!")  # shares the batch the periodic move runs in
        assert await storage.move_queue_log() == 0
        assert len(await third) == 1
        assert _rows(path, "SELECT count(*) FROM queue_log") == [(3,)]
        assert storage.queue_log.queued(BOB, 1) == (3, len(b"keptnext!"))
        broken.execute("DROP TRIGGER no_moves")
        broken.commit()
        broken.close()
        assert await storage.move_queue_log(everything=True) == 3
        assert storage.queue_log.queued(BOB, 1) == (0, 0)
        assert _device_row(path) == (len(b"keptnext!"), 9)  # numbers of rollbacks skipped

    _run(path, body, clock)


def test_the_budget_counts_the_log(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"

    async def body(_db: Database, storage: Storage) -> None:
        await _accounts(storage)
        (_, first), = await _send(storage, b"x" * 60, budget=100)
        with pytest.raises(QueueFull):
            await _send(storage, b"y" * 60, budget=100)
        await storage.move_queue_log(everything=True)  # counted on the row from here
        with pytest.raises(QueueFull):
            await _send(storage, b"y" * 60, budget=100)
        assert await storage.acknowledge(BOB, 1, [first.guid]) == 1
        (_, second), = await _send(storage, b"y" * 60, budget=100)
        with pytest.raises(QueueFull):
            await _send(storage, b"z" * 60, budget=100)
        assert await storage.acknowledge(BOB, 1, [second.guid]) == 1
        assert len(await _send(storage, b"z" * 60, budget=100)) == 1

    _run(path, body)


def test_a_device_removed_by_another_connection_is_seen_at_once(tmp_path: Path) -> None:
    """The device rows kept in memory are dropped when another connection commits
    (PRAGMA data_version): a device removed by ``cipherpost-admin`` (another process) or
    the writer thread is gone for the next send, and its log rows with it."""
    path = tmp_path / "relay.db"

    async def body(_db: Database, storage: Storage) -> None:
        await _accounts(storage, devices=2)
        assert len(await _send(storage, b"to both", devices=2)) == 2
        assert await storage.remove_device(BOB, 2, 5)
        assert _rows(path, "SELECT device_id FROM queue_log") == [(1,)]
        with pytest.raises(DeviceMismatch) as refused:
            await _send(storage, b"again", devices=2)
        assert refused.value.extra == [2]
        assert len(await _send(storage, b"again")) == 1
        # A device added (as by a link) is one the next send may include.
        device = await storage.add_device(BOB, NewDevice(103, b"c" * 32, None, KeyUpload()),
                                          10, 6)
        both = await storage.enqueue(
            BOB, [OutgoingMessage(1, 101, 2, b"new"), OutgoingMessage(device, 103, 2, b"new")],
            sender=None, exclude_device=None, client_timestamp=0, now=1, ttl=60,
            byte_budget=1 << 20)
        assert sorted(d for d, _ in both) == [1, device]
        assert await storage.move_queue_log(everything=True) == 4
        assert _rows(path, "SELECT device_id, content FROM messages ORDER BY device_id, seq"
                     ) == [(1, b"to both"), (1, b"again"), (1, b"new"), (device, b"new")]

    _run(path, body)


def test_expiry_and_notices_and_counts_include_the_log(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"

    async def body(db: Database, storage: Storage) -> None:
        await _accounts(storage, devices=2)
        await _send(storage, b"short", ttl=1, now=1000)
        await _send(storage, b"long", ttl=100, now=1000)
        # A notice takes the next numbers of the same counters.
        queued = await notices.queue_notice(storage, BOB, b"{}", 1000, 60, exclude_device=2)
        assert [(d, e.seq, e.type) for d, e in queued] == [(1, 3, notices.NOTICE_TYPE)]
        with db.reader.connect() as conn:
            held = admin.holdings(conn)
            summary = admin.account_summary(conn, BOB)
            devices = admin.list_devices(conn, BOB)
        assert (held.queued_messages, held.queued_bytes) == (3, len(b"shortlong{}"))
        assert (summary.queued_messages, summary.queued_bytes) == (3, len(b"shortlong{}"))
        assert [(d.queued_messages, d.queued_bytes) for d in devices] == [
            (3, len(b"shortlong{}")), (0, 0)]
        assert await storage.expire(1000 + 1500) == 1  # "short", out of the log
        assert [e.content for e in await storage.fetch(BOB, 1, 0, 10)] == [b"long", b"{}"]
        assert storage.queue_log is not None
        assert storage.queue_log.queued(BOB, 1) == (2, len(b"long{}"))
        assert _rows(path, "SELECT content FROM queue_log ORDER BY id") == [(b"long",),
                                                                            (b"{}",)]

    _run(path, body)


def test_0012_downgrades_with_the_log_in_the_queues(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"

    async def body(db: Database, storage: Storage) -> None:
        await _accounts(storage)
        for content in (b"one", b"two"):
            await _send(storage, content)
        storage.close()
        run_alembic(db, "downgrade", "0011")
        assert _rows(path, "SELECT seq, content FROM messages ORDER BY seq") == [
            (1, b"one"), (2, b"two")]
        assert _device_row(path) == (6, 2)
        with db.reader.connect() as conn:
            assert "queue_log" not in sa.inspect(conn).get_table_names()
        db.migrate()

    _run(path, body)


# -- what other programs and connections do beside the relay (review of bec95eb) ----------


def test_another_programs_storage_leaves_the_relays_log_alone(tmp_path: Path) -> None:
    """``cipherpost-admin retention apply`` opens a Storage of its own (``relay=False``):
    it neither moves nor numbers the running relay's messages; and an acknowledgement of
    a message some other program did move still deletes it, from the queue."""
    path = tmp_path / "relay.db"

    async def body(db: Database, storage: Storage) -> None:
        await _accounts(storage)
        (_, first), = await _send(storage, b"hello")
        (_, second), = await _send(storage, b"again")
        admin_storage = Storage(db, relay=False)
        try:
            assert admin_storage.queue_log is None
            assert await admin_storage.expire(10) == 0
        finally:
            admin_storage.close()
        assert _rows(path, "SELECT content FROM queue_log ORDER BY id") == [(b"hello",),
                                                                            (b"again",)]
        # Moved behind the relay's back (by hand, as an older tool might):
        with sqlite3.connect(path) as other:
            other.execute(
                "INSERT INTO messages (guid, account_id, device_id, seq, sender_account_id, "
                "sender_device_id, type, content, client_timestamp, server_timestamp, "
                "expires_at) SELECT guid, account_id, device_id, seq, sender_account_id, "
                "sender_device_id, type, content, client_timestamp, server_timestamp, "
                "expires_at FROM queue_log WHERE seq = 1")
            other.execute("UPDATE devices SET queued_bytes = 5, last_seq = 1 "
                          "WHERE account_id = ? AND device_id = 1", (BOB,))
            other.execute("DELETE FROM queue_log WHERE seq = 1")
        assert await storage.acknowledge(BOB, 1, [first.guid]) == 1
        assert _rows(path, "SELECT count(*) FROM messages") == [(0,)]
        assert _device_row(path) == (0, 1)
        assert [e.guid for e in await storage.fetch(BOB, 1, 0, 10)] == [second.guid]

    _run(path, body)


def test_one_relay_process_per_sqlite_database(tmp_path: Path) -> None:
    """Its memory numbers the queue log: a second relay storage on the same file is
    refused (a second relay process would hand out the same numbers)."""
    path = tmp_path / "relay.db"

    async def body(db: Database, _storage: Storage) -> None:
        with pytest.raises(RelayRunning, match="one relay process"):
            Storage(db)
        Storage(db, relay=False).close()  # cipherpost-admin's is fine

    _run(path, body)
    db, storage = _open(path)  # the first one closed: free again
    storage.close()
    db.dispose()


def test_a_device_re_registered_by_another_connection_starts_clean(tmp_path: Path) -> None:
    """Re-registration deletes device 1 with its queue on the writer thread and makes it
    again under the same id: the old device's log entries in memory must neither hide
    the new device's messages from a read nor count against its budget."""
    path = tmp_path / "relay.db"

    async def body(_db: Database, storage: Storage) -> None:
        await _accounts(storage)
        for i in range(12):
            await _send(storage, b"old %02d" % i, budget=100)
        await account_data.reregister(storage, BOB, b"\x05" + bytes(32),
                                      NewDevice(101, b"z" * 32, None, KeyUpload()), 2)
        assert _rows(path, "SELECT count(*) FROM queue_log") == [(0,)]
        (_, new), = await _send(storage, b"y" * 50, budget=100)  # 84 old bytes gone
        assert [e.guid for e in await storage.fetch(BOB, 1, 0, 5)] == [new.guid]
        assert storage.queue_log is not None
        assert storage.queue_log.queued(BOB, 1) == (1, 50)

    _run(path, body)


def test_a_refusal_in_the_one_by_one_retry_reads_nothing_back(tmp_path: Path) -> None:
    """A refused operation wrote nothing: rolling back to its savepoint leaves memory as
    it is, without reading the log back (a retried batch of refusals would read it once
    for each)."""
    path = tmp_path / "relay.db"

    async def body(_db: Database, storage: Storage) -> None:
        await _accounts(storage)
        await _send(storage, b"kept")
        assert storage.queue_log is not None
        log = storage.queue_log
        reads_before = log.read_backs

        def fails(_cursor: Any) -> None:
            raise RuntimeError("boom")

        batch = [_send(storage, b"x" * 60, budget=10), storage._group.submit(fails),
                 _send(storage, b"ok")]
        results = await asyncio.gather(*batch, return_exceptions=True)
        assert isinstance(results[0], QueueFull) and isinstance(results[1], RuntimeError)
        assert [e.content for e in await storage.fetch(BOB, 1, 0, 10)] == [b"kept", b"ok"]
        # One read back after the whole batch rolled back, none for the two refusals of
        # the retry (the refused send and the failing operation wrote nothing).
        assert log.read_backs - reads_before == 1

    _run(path, body)


# -- acknowledgements nobody waits for (Storage.acknowledge_later, QueueLog.forget) ---------


def _log_seqs(path: Path) -> list[int]:
    return [seq for (seq,) in _rows(path, "SELECT seq FROM queue_log ORDER BY id")]


def test_a_lazy_acknowledgement_leaves_memory_at_once_and_the_table_within_the_hold(
        tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    clock = Clock()

    async def body(_db: Database, storage: Storage) -> None:
        assert storage.queue_log is not None
        await _accounts(storage)
        sent = [e for content in (b"a", b"b", b"c") for _, e in await _send(storage, content)]
        unknown = "ffffffff-ffff-4fff-8fff-ffffffffffff"
        rest = storage.acknowledge_later(BOB, 1, [sent[0].guid, sent[1].guid, unknown])
        assert rest == [unknown]  # not in the log: for acknowledge_then
        # Gone from what the relay reads and counts, still in the table.
        assert [e.guid for e in await storage.fetch(BOB, 1, 0, 10)] == [sent[2].guid]
        assert storage.queue_log.queued(BOB, 1) == (1, 1)
        assert _log_seqs(path) == [1, 2, 3]
        # A send's transaction before the hold is over leaves them; one after deletes them.
        await _send(storage, b"d")
        assert _log_seqs(path) == [1, 2, 3, 4]
        clock.now += queue_log.DELETE_HOLD
        await _send(storage, b"e")
        assert _log_seqs(path) == [3, 4, 5]
        # Acknowledged again (the device did not hear of the first): nothing to do.
        assert storage.acknowledge_later(BOB, 1, [sent[0].guid]) == [sent[0].guid]
        assert await storage.acknowledge(BOB, 1, [sent[0].guid]) == 0

    _run(path, body, clock)


def test_with_no_send_a_transaction_comes_for_the_waiting_deletions(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"

    async def body(_db: Database, storage: Storage) -> None:
        await _accounts(storage)
        (_, envelope), = await _send(storage, b"a")
        acknowledged = time.monotonic()
        assert storage.acknowledge_later(BOB, 1, [envelope.guid]) == []
        assert _log_seqs(path) == [1]
        while _log_seqs(path) and time.monotonic() < acknowledged + 5:
            await asyncio.sleep(0.02)  # the hold, then a lazy commit
        assert _log_seqs(path) == []
        assert time.monotonic() - acknowledged >= queue_log.DELETE_HOLD  # not before

    _run(path, body)


def test_flush_runs_the_waiting_deletions_at_once(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    clock = Clock()

    async def body(_db: Database, storage: Storage) -> None:
        await _accounts(storage)
        (_, envelope), = await _send(storage, b"a")
        storage.acknowledge_later(BOB, 1, [envelope.guid])
        await storage.flush()
        assert _log_seqs(path) == []

    _run(path, body, clock)


def test_acknowledged_rows_waiting_for_deletion_never_move_or_come_back(
        tmp_path: Path) -> None:
    """A move of the log (periodic, or whole at shutdown) deletes them first; a
    rolled-back transaction that had deleted them leaves them waiting, and reading the
    log back after it does not bring them back into memory."""
    path = tmp_path / "relay.db"
    clock = Clock()

    async def body(_db: Database, storage: Storage) -> None:
        assert storage.queue_log is not None
        await _accounts(storage)
        sent = [e for content in (b"a", b"b", b"c") for _, e in await _send(storage, content)]
        storage.acknowledge_later(BOB, 1, [sent[0].guid])

        # Deleted in a batch that fails and is run again one operation at a time: the
        # first transaction's deletion was rolled back with it, the second one's commits.
        def fails(_cursor: Any) -> None:
            raise RuntimeError("boom")

        clock.now += queue_log.DELETE_HOLD
        failing = storage._group.submit(fails)
        with pytest.raises(RuntimeError):
            await failing
        assert _log_seqs(path) == [2, 3]
        assert storage.queue_log.queued(BOB, 1) == (2, 2)

        # The deletion itself fails: the send beside it is not refused for it, and the
        # deletion waits a hold for its next try, the row still out of memory.
        storage.acknowledge_later(BOB, 1, [sent[1].guid])
        clock.now += queue_log.DELETE_HOLD
        blocker = sqlite3.connect(path)
        blocker.execute("CREATE TRIGGER no_deletes BEFORE DELETE ON queue_log "
                        "BEGIN SELECT RAISE(ABORT, 'no'); END")
        blocker.commit()
        (_, fourth), = await _send(storage, b"d")
        assert _log_seqs(path) == [2, 3, 4]
        assert [e.seq for e in await storage.fetch(BOB, 1, 0, 10)] == [3, 4]
        blocker.execute("DROP TRIGGER no_deletes")
        blocker.commit()
        blocker.close()
        await _send(storage, b"e")
        assert _log_seqs(path) == [2, 3, 4, 5]  # not yet: a hold after the failure
        clock.now += queue_log.DELETE_HOLD
        await _send(storage, b"f")
        assert _log_seqs(path) == [3, 4, 5, 6]
        storage.acknowledge_later(BOB, 1, [fourth.guid])

        # The move at shutdown deletes what waits before it moves the rest.
        storage.acknowledge_later(BOB, 1, [sent[2].guid])
        assert await storage.move_queue_log(everything=True) == 2
        assert _rows(path, "SELECT seq FROM messages ORDER BY seq") == [(5,), (6,)]
        assert _log_seqs(path) == []

    _run(path, body, clock)
