"""The queue log: where a send's messages go first on SQLite, and where most of them end.

Most messages are acknowledged within a second or two of their send. Stored in
``messages``, a table clustered by recipient, each one cost its device's queue page and
its device's row (sequence number, queued bytes) on the send, and both again on the
acknowledgement: four random pages written to the WAL whole, in five statements
(``benchmarks/queue_sql.py``). Here a send appends one row to ``queue_log`` in arrival
order (the page at its tail, shared by every message of a commit), an acknowledgement
deletes it by its id (a page of the last second or two, shared by the acknowledgements
of that time), and the device's counters are kept in memory. A message still in the log
after :data:`FOLD_AGE` seconds (its device is offline or slow) moves to ``messages`` and
its bytes and number to its device's row: from there on it is queued as before.

What this process keeps in memory, and why it is enough:

* which log rows belong to which device (``queue_log`` has no index: an index by device
  would cost every send a random page again), for acknowledgements and reads of a queue;
* each device's bytes in the log (its row counts the bytes in ``messages``: the queue
  budget is the sum) and its last sequence number handed out;
* the account's device rows as last read (registration ids, counters), dropped whenever
  another connection committed (``PRAGMA data_version``: the writer thread or
  ``cipherpost-admin`` changed a device), or this one changed a device row.

All of it is changed only inside a group commit (on the event loop, :mod:`.group`),
which tells this object when its transaction begins, commits or rolls back (also to a
savepoint, in the one-by-one retry). A rollback is rare (a failing operation or COMMIT),
and then the log's rows are read back from the table (seconds of messages), so memory
never holds what the database does not; sequence numbers handed out in a rolled-back
transaction are not handed out again (a gap, which a connection reads past). Only the
relay process writes the log, and only SQLite has one relay process.

An acknowledgement nobody waits for (a device's ack it did not ask to have confirmed,
the usual one) does not wait for a transaction either (:meth:`QueueLog.forget`): its
messages leave memory at once, so nothing reads, counts or moves them, and their rows
are deleted within :data:`DELETE_HOLD` seconds in one statement with the others of that
time, in a savepoint of whatever transaction runs then. Those acknowledged together
share pages, written once instead of once per commit; a rollback puts the deletions back
in line, and reading the log back skips their rows.

Crash safety: a row in the log is as durable as a row in ``messages`` (the same commit
answers the sender). When the relay starts, before it reads or writes any queue, it
moves the whole log to ``messages`` (:meth:`QueueLog.begin` on its first transaction),
so no memory from before is needed. Sequence numbers of messages acknowledged out of the
log before a crash may be handed out again after it; envelope ids never repeat (74
random bits each, :mod:`.envelope_ids`), which is what clients and acknowledgements go by.
Messages acknowledged less than :data:`DELETE_HOLD` seconds before a crash, without
confirmation, are delivered again after it; clients drop them by envelope id.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping, Sequence, Set
from typing import Any, Protocol

from .envelope_ids import envelope_id, seq_unchecked
from .group import Done, GroupCommit
from .models import (
    DeviceMismatch,
    Envelope,
    OutgoingMessage,
    QueueFull,
    RecipientSuspended,
    StaleDevices,
    UnknownAccount,
    envelope_of,
    new_tuple,
)

log = logging.getLogger("cipherpost.server")

#: Seconds a message stays in the log before it moves to ``messages`` if it was not
#: acknowledged: past the SDK's and the browser's ack hold (``ACK_DELAY``, 1 s) with room
#: for a slow connection.
FOLD_AGE = 5.0
#: Seconds between moves (each takes every row older than ``FOLD_AGE`` at once).
FOLD_INTERVAL = 1.0
#: Seconds between the commit marks that say which ids were committed when.
MARK_INTERVAL = 0.25
#: Seconds an acknowledgement nobody waits for (:meth:`QueueLog.forget`) may wait before
#: its row is deleted: the deletions of that time go in one statement, and the pages of
#: rows acknowledged together are written once instead of once per commit.
DELETE_HOLD = 0.1

Key = tuple[str, int]
#: A queued message: its destination device and the envelope it is delivered as.
Queued = tuple[int, Envelope]
#: A device row as read: (registration_id, queued_bytes, last_seq).
DeviceRow = tuple[int, int, int]

_INSERT = ("INSERT INTO queue_log (id, guid, account_id, device_id, seq, sender_account_id, "
           "sender_device_id, type, content, client_timestamp, server_timestamp, expires_at) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_GROUPS = ("SELECT account_id, device_id, sum(length(content)), max(seq), count(*) "
           "FROM queue_log WHERE id <= ? GROUP BY account_id, device_id")
# A device removed meanwhile had its rows deleted with it (``_delete_device``); the join
# keeps a row of a device gone some other way from becoming an orphan.
_MOVE = ("INSERT INTO messages (guid, account_id, device_id, seq, sender_account_id, "
         "sender_device_id, type, content, client_timestamp, server_timestamp, expires_at) "
         "SELECT guid, account_id, device_id, seq, sender_account_id, sender_device_id, "
         "type, content, client_timestamp, server_timestamp, expires_at FROM queue_log q "
         "WHERE id <= ? AND EXISTS (SELECT 1 FROM devices d "
         "WHERE d.account_id = q.account_id AND d.device_id = q.device_id)")
_COUNT_MOVED = ("UPDATE devices SET queued_bytes = queued_bytes + ?, "
                "last_seq = max(last_seq, ?) WHERE account_id = ? AND device_id = ?")
_DELETE_MOVED = "DELETE FROM queue_log WHERE id <= ?"
#: Above every row id (``_move`` of the whole log).
_ALL = 1 << 62
_DELETE = "DELETE FROM queue_log WHERE id = ? AND account_id = ? AND device_id = ?"
_DELETE_ID = "DELETE FROM queue_log WHERE id = ?"
_READ = ("SELECT seq, guid, sender_account_id, sender_device_id, type, content, "
         "client_timestamp, server_timestamp FROM queue_log WHERE id IN ({}) "
         "AND account_id = ? AND device_id = ? ORDER BY id")
#: An account's device rows, in device order (the send checks' ``current``).
DEVICES = ("SELECT device_id, registration_id, queued_bytes, last_seq FROM devices "
           "WHERE account_id = ? ORDER BY device_id")
_ROWS = ("SELECT id, account_id, device_id, seq, guid, length(content) FROM queue_log "
         "ORDER BY id")

#: A message in the log: (row id, envelope id, content bytes). A plain tuple: one is made
#: per message.
Entry = tuple[int, str, int]


def check_send(cursor: Any, account_id: str, current: Mapping[int, DeviceRow],
               given: Mapping[int, OutgoingMessage], byte_budget: int,
               logged: Callable[[int], int]) -> None:
    """A send's checks against the recipient's ``current`` device rows (those it may
    write to), with ``logged(device_id)`` bytes queued beside what a row counts.

    Raises:
        DeviceMismatch, StaleDevices, QueueFull: see ``sql.Storage.enqueue``.
    """
    if len(given) == len(current):  # the usual send passes every check: one loop
        for d, m in given.items():
            row = current.get(d)
            if row is None or row[0] != m.registration_id \
                    or row[1] + logged(d) + len(m.content) > byte_budget:
                break
        else:
            return
    if len(given) != len(current) or given.keys() != current.keys():
        extra = sorted(set(given) - set(current))
        # A device without keys (after an identity reset, until it uploads new ones)
        # cannot be encrypted to, so a sender may leave it out.
        missing = [d for d in sorted(set(current) - set(given))
                   if cursor.execute("SELECT 1 FROM signed_prekeys WHERE account_id = ? "
                                     "AND device_id = ?", (account_id, d)).fetchone()]
        if missing or extra:
            raise DeviceMismatch(missing, extra)
    stale = sorted(d for d, m in given.items() if current[d][0] != m.registration_id)
    if stale:
        raise StaleDevices(stale)
    full = sorted(d for d, m in given.items()
                  if current[d][1] + logged(d) + len(m.content) > byte_budget)
    if full:
        raise QueueFull(full)


def nothing_logged(_device_id: int) -> int:
    """``check_send``'s ``logged`` where every queued byte is on the device rows."""
    return 0


class QueueLog:
    """The log's rows by device, and the counters it keeps for them (see the module)."""

    def __init__(self, acknowledge_stored: Callable[..., int],
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``acknowledge_stored(account_id, device_id, guids, cursor, sizes=...)`` deletes
        acknowledged messages from ``messages`` (those no longer in the log)."""
        self._acknowledge_stored = acknowledge_stored
        self._clock = clock
        #: per device: its messages in the log by sequence number
        self._entries: dict[Key, dict[int, Entry]] = {}
        #: per device: content bytes in the log
        self._bytes: dict[Key, int] = {}
        #: per device: the last sequence number handed out by this process
        self._last_seq: dict[Key, int] = {}
        #: every row appended, (id, device, seq), in id order, until it is moved
        self._order: collections.deque[tuple[int, Key, int]] = collections.deque()
        #: the next row id; 0 until the log left by the last process has been moved
        self._next_id = 0
        #: device rows by account, as read in an earlier transaction (see the module)
        self._devices: dict[str, dict[int, DeviceRow]] = {}
        self._data_version: int | None = None
        #: (time, next id) at commits: every id below was committed by then
        self._marks: collections.deque[tuple[float, int]] = collections.deque()
        self._moved_at = 0.0
        #: the transaction's cursor, and what ``moved`` and ``ready`` were when it began
        self._cursor: Any = None
        self._began: tuple[int, bool] = (0, False)
        #: memory is to be read back from the table before it is used (after a rollback)
        self._stale = False
        #: changes to memory so far (savepoints compare it), and ``moved`` and how many
        #: deletions had run at savepoints
        self._changes = 0
        self._saved: dict[int, tuple[int, int]] = {}
        #: rows acknowledged (gone from memory) whose deletion is still to run, since when;
        #: those deleted in the open transaction
        self._to_delete: list[tuple[int]] = []
        self._delete_since = 0.0
        self._deleting: list[tuple[int]] = []
        #: rows moved to ``messages`` since the start (for tests and metrics)
        self.moved = 0
        #: times memory was read back from the table (after rollbacks; for tests)
        self.read_backs = 0

    # -- the group commit's transaction ----------------------------------------------------

    @property
    def ready(self) -> bool:
        """The log left by an earlier process has been moved (queues can be read)."""
        return self._next_id > 0

    def begin(self, cursor: Any) -> None:
        """A transaction began: forget device rows another connection may have changed;
        the first time, move what an earlier process left in the log; then move what is
        due."""
        self._cursor = cursor
        self._began = (self.moved, self.ready)
        version = cursor.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._devices.clear()
            self._data_version = version
        if not self.ready:
            # Before anything else (a failure here fails the batch, and the next one
            # tries again): what an earlier process left moves to the queues whole.
            self._move(cursor, None)
            self._read_back(cursor)
            self._next_id = max(self._next_id, 1)
            return
        if self._stale:
            self._read_back(cursor)
        now = self._clock()
        if self._to_delete and now - self._delete_since >= DELETE_HOLD:
            self._run_deletes_apart(cursor)
        if now - self._moved_at < FOLD_INTERVAL:
            return
        upto = None
        while self._marks and self._marks[0][0] <= now - FOLD_AGE:
            upto = self._marks.popleft()[1] - 1
        self._moved_at = now
        if upto is None or not self._order or self._order[0][0] > upto:
            return
        moved, kept = self.moved, len(self._deleting)
        cursor.execute("SAVEPOINT queue_log")
        try:
            self._move(cursor, upto)
        except Exception:
            cursor.execute("ROLLBACK TO queue_log")
            cursor.execute("RELEASE queue_log")
            self.moved = moved
            self._undo_deletes(kept)
            self._read_back(cursor)
            log.exception("moving the queue log to the queues failed (tried again later)")
            return
        cursor.execute("RELEASE queue_log")

    def savepoint(self) -> int:
        self._saved[self._changes] = (self.moved, len(self._deleting))
        return self._changes

    def rollback_to(self, mark: int) -> None:
        """The transaction rolled back to the savepoint ``mark``: memory is read back
        from the table as the transaction now sees it, unless nothing changed since
        (an operation refused before it wrote, as refusals are)."""
        self.moved, deleted = self._saved.pop(mark, (self.moved, len(self._deleting)))
        self._undo_deletes(deleted)
        if self._changes != mark:
            self._read_back(self._cursor)

    def rollback(self) -> None:
        """The transaction rolled back: memory is read back before it is used next."""
        self.moved, ready = self._began
        if not ready:
            self._next_id = 0  # the log left by the last process is still to be moved
        self._undo_deletes(0)
        self._stale = True
        self._devices.clear()
        self._saved.clear()

    def commit(self) -> None:
        self._cursor = None
        self._saved.clear()
        self._deleting = []
        now = self._clock()
        if not self._marks or now - self._marks[-1][0] >= MARK_INTERVAL:
            self._marks.append((now, self._next_id))

    def due(self) -> bool:
        """Rows wait to be moved or deleted, and a transaction would move or delete some
        (or none has run yet)."""
        if not self.ready:
            return True
        now = self._clock()
        if self._to_delete and now - self._delete_since >= DELETE_HOLD:
            return True
        return bool(self._order) and bool(self._marks) \
            and self._marks[0][0] <= now - FOLD_AGE

    @property
    def deletes_waiting(self) -> bool:
        """Acknowledged rows wait for their deletion (see :meth:`forget`)."""
        return bool(self._to_delete)

    def hurry(self) -> None:
        """Run the deletions waiting in the next transaction, due or not."""
        self._delete_since = float("-inf")

    def forget(self, account_id: str, device_id: int, guids: list[str]) -> list[str]:
        """Acknowledged messages nobody waits for: those in the log leave this process's
        memory now (no longer read, counted or moved) and their rows are deleted in a
        transaction within :data:`DELETE_HOLD` seconds (the caller makes sure one runs:
        ``Storage.acknowledge_later``); returns the ids not in the log, for
        :meth:`acknowledge`. Called between transactions. A crash before the deletion
        commits delivers them again, which clients drop by envelope id, as after any
        acknowledgement they did not wait for."""
        key = (account_id, device_id)
        entries = self._entries.get(key)
        if entries is None:
            return guids
        rest: list[str] = []
        for guid in guids:
            row_id = self._take(key, entries, guid)
            if row_id is None:
                rest.append(guid)
                continue
            if not self._to_delete:
                self._delete_since = self._clock()
            self._to_delete.append((row_id,))
        return rest

    # -- operations (functions of the transaction's cursor) --------------------------------

    def enqueue(self, account_id: str, outgoing: Sequence[OutgoingMessage],
                sender: tuple[str, int] | None, exclude_device: int | None,
                client_timestamp: int, now: int, ttl: int, byte_budget: int,
                cursor: Any) -> list[Queued]:
        """``sql._enqueue``'s checks and results, with the messages appended to the log."""
        rows = self._device_rows(cursor, account_id)
        if not rows:
            raise UnknownAccount(account_id)
        current = rows if exclude_device not in rows else \
            {d: r for d, r in rows.items() if d != exclude_device}
        given = {m.device_id: m for m in outgoing}

        def logged(device_id: int) -> int:
            return self._bytes.get((account_id, device_id), 0)

        try:
            check_send(cursor, account_id, current, given, byte_budget, logged)
        except QueueFull as refused:
            # Rows another connection deleted (the device removed, or re-registered
            # under the same id) no longer count.
            if not any([self._prune(cursor, (account_id, d)) for d in refused.devices]):
                raise
            check_send(cursor, account_id, current, given, byte_budget, logged)
        sender_account, sender_device = sender if sender else (None, None)
        expires_at = now + ttl * 1000
        return [(m.device_id, self._append(
            cursor, account_id, m.device_id, current[m.device_id][2], sender_account,
            sender_device, m.type, m.content, client_timestamp, now, expires_at))
            for m in outgoing]

    def notice(self, account_id: str, kind: int, content: bytes, now: int, ttl: int,
               exclude_device: int | None, cursor: Any) -> list[Queued]:
        """A message from the relay itself to every device of the account but
        ``exclude_device`` (no sender, no budget: :mod:`.notices`)."""
        rows = self._device_rows(cursor, account_id)
        return [(d, self._append(cursor, account_id, d, row[2], None, None, kind, content,
                                 now, now, now + ttl * 1000))
                for d, row in rows.items() if d != exclude_device]

    def acknowledge(self, account_id: str, device_id: int, guids: list[str], cursor: Any,
                    *, sizes: Mapping[str, int] | None = None) -> int:
        """Delete acknowledged messages, from the log or else from ``messages``; how many
        were still queued."""
        key = (account_id, device_id)
        entries = self._entries.get(key)
        stored: list[str] = []
        found = 0
        for guid in guids:
            row_id = self._take(key, entries, guid) if entries is not None else None
            if row_id is None:
                stored.append(guid)
                continue
            if cursor.execute(_DELETE, (row_id, account_id, device_id)).rowcount:
                found += 1
            else:  # not in the log after all (moved by another program): in the queue?
                stored.append(guid)
        if stored:
            found += self._acknowledge_stored(account_id, device_id, stored, cursor,
                                              sizes=sizes)
            self._devices.pop(account_id, None)  # its queued_bytes may have changed
        return found

    def expire(self, now: int, cursor: Any) -> int:
        """Delete the log's messages whose time is up (``expires_at`` before ``now``, in
        milliseconds); how many. A scan: the log holds seconds of messages."""
        expired = cursor.execute("SELECT id, account_id, device_id, seq FROM queue_log "
                                 "WHERE expires_at < ?", (now,)).fetchall()
        for row_id, account_id, device_id, seq in expired:
            cursor.execute(_DELETE, (row_id, account_id, device_id))
            key = (account_id, int(device_id))
            entry = self._entries.get(key, {}).get(int(seq))
            if entry is not None and entry[0] == row_id:
                self._drop(key, int(seq), entry[2])
        return len(expired)

    def move_all(self, cursor: Any) -> int:
        """Move every row of the log to ``messages`` now (at shutdown, and for tests);
        how many."""
        before = self.moved
        self._move(cursor, None)
        return self.moved - before

    def read(self, cursor: Any, account_id: str, device_id: int, after_seq: int,
             limit: int) -> list[Envelope]:
        """The device's messages in the log after ``after_seq``, oldest first (committed
        ones: called between transactions)."""
        if self._stale:
            self._read_back(cursor)
        key = (account_id, device_id)
        entries = self._entries.get(key)
        if not entries or limit <= 0:
            return []
        seqs = sorted(s for s in entries if s > after_seq)[:limit]
        if not seqs:
            return []
        ids = [entries[s][0] for s in seqs]
        rows = cursor.execute(_READ.format(",".join("?" * len(ids))),
                              (*ids, account_id, device_id)).fetchall()
        if len(rows) < len(ids) and self._prune(cursor, key):
            # Rows another connection deleted (the device removed, or re-registered
            # under the same id) were in the way: read again without them.
            return self.read(cursor, account_id, device_id, after_seq, limit)
        return [envelope_of(r) for r in rows]

    def queued(self, account_id: str, device_id: int) -> tuple[int, int]:
        """Messages and bytes of the device in the log, as this process knows them."""
        key = (account_id, device_id)
        return len(self._entries.get(key, ())), self._bytes.get(key, 0)

    # -- inside -----------------------------------------------------------------------------

    def _device_rows(self, cursor: Any, account_id: str) -> dict[int, DeviceRow]:
        rows = self._devices.get(account_id)
        if rows is None:
            rows = {int(r[0]): (int(r[1]), int(r[2]), int(r[3]))
                    for r in cursor.execute(DEVICES, (account_id,)).fetchall()}
            if len(self._devices) >= 100_000:
                self._devices.clear()
            self._devices[account_id] = rows
        return rows

    def _append(self, cursor: Any, account_id: str, device_id: int, stored_seq: int,
                sender_account: str | None, sender_device: int | None, kind: int,
                content: bytes, client_timestamp: int, now: int,
                expires_at: int) -> Envelope:
        key = (account_id, device_id)
        last = self._last_seq.get(key, 0)
        seq = (last if last > stored_seq else stored_seq) + 1
        guid = envelope_id(seq)
        row_id = self._next_id
        # The content as a bytearray: Python's sqlite3 binds bytes only after looking for
        # an adapter (a dictionary lookup and two attribute lookups that each format an
        # AttributeError), a bytearray at once; the copy costs a fraction of that.
        cursor.execute(_INSERT, (row_id, guid, account_id, device_id, seq, sender_account,
                                 sender_device, kind, bytearray(content), client_timestamp,
                                 now, expires_at))
        self._next_id = row_id + 1
        self._last_seq[key] = seq
        self._add(key, seq, row_id, guid, len(content))
        return new_tuple(Envelope, (seq, guid, sender_account, sender_device, kind, content,
                                    client_timestamp, now))

    def _add(self, key: Key, seq: int, row_id: int, guid: str, size: int) -> None:
        entries = self._entries.get(key)
        if entries is None:
            entries = self._entries[key] = {}
            self._bytes[key] = size
        else:
            self._bytes[key] += size
        entries[seq] = (row_id, guid, size)
        self._order.append((row_id, key, seq))
        self._changes += 1

    def _take(self, key: Key, entries: dict[int, Entry], guid: str) -> int | None:
        """Forget the device's entry of the envelope ``guid`` (``entries``: the device's);
        its row id, or None if the log holds no such envelope of the device."""
        seq = seq_unchecked(guid)
        entry = entries.get(seq)
        if entry is None or entry[1] != guid:
            return None
        self._drop(key, seq, entry[2])
        return entry[0]

    def _drop(self, key: Key, seq: int, size: int) -> None:
        self._changes += 1
        entries = self._entries[key]
        del entries[seq]
        if entries:
            self._bytes[key] -= size
        else:
            del self._entries[key]
            del self._bytes[key]

    def _prune(self, cursor: Any, key: Key) -> bool:
        """Forget the device's entries whose rows are gone (deleted by another
        connection: ``_delete_device`` on the writer thread or in ``cipherpost-admin``,
        committed, so gone for good); whether there were any."""
        entries = self._entries.get(key)
        if not entries:
            return False
        ids = [entry[0] for entry in entries.values()]
        present = {r[0] for r in cursor.execute(
            f"SELECT id FROM queue_log WHERE id IN ({','.join('?' * len(ids))}) "  # noqa: S608
            "AND account_id = ? AND device_id = ?", (*ids, *key)).fetchall()}
        gone = [(seq, entry[2]) for seq, entry in entries.items() if entry[0] not in present]
        for seq, size in gone:
            self._drop(key, seq, size)
        return bool(gone)

    def _read_back(self, cursor: Any) -> None:
        """Memory as the log table holds it now (after a rollback). Sequence numbers
        stay as high as they were: none is handed out twice."""
        self.read_backs += 1
        self._entries.clear()
        self._bytes.clear()
        self._order.clear()
        self._devices.clear()
        deleting = {i for (i,) in self._to_delete} | {i for (i,) in self._deleting}
        for row_id, account_id, device_id, seq, guid, size in cursor.execute(_ROWS):
            key = (account_id, int(device_id))
            if row_id not in deleting:  # acknowledged: not in memory, deleted later
                self._add(key, int(seq), int(row_id), guid, int(size))
            if self._last_seq.get(key, 0) < seq:
                self._last_seq[key] = int(seq)
            if self.ready and self._next_id <= row_id:
                self._next_id = int(row_id) + 1
        self._stale = False

    def _move(self, cursor: Any, upto: int | None) -> None:
        """Move the log's rows (those with ids up to ``upto``; all with None) to
        ``messages``, their bytes and last numbers to their devices' rows."""
        self._run_deletes(cursor)  # acknowledged rows must not move
        last = _ALL if upto is None else upto
        groups = cursor.execute(_GROUPS, (last,)).fetchall()
        if groups:
            cursor.execute(_MOVE, (last,))
            for account_id, device_id, size, top, n in groups:
                cursor.execute(_COUNT_MOVED, (size, top, account_id, device_id))
                self._devices.pop(account_id, None)
                self.moved += n
            cursor.execute(_DELETE_MOVED, (last,))
        order = self._order
        while order and order[0][0] <= last:
            row_id, key, seq = order.popleft()
            entry = self._entries.get(key, {}).get(seq)
            if entry is not None and entry[0] == row_id:
                self._drop(key, seq, entry[2])

    def _run_deletes(self, cursor: Any) -> None:
        """Delete the acknowledged rows waiting (:meth:`forget`) in this transaction."""
        waiting = self._to_delete
        if waiting:
            self._to_delete = []
            self._deleting += waiting
            cursor.executemany(_DELETE_ID, waiting)

    def _run_deletes_apart(self, cursor: Any) -> None:
        """:meth:`_run_deletes` in a savepoint: if they fail, the transaction goes on
        without them (the sends beside them are not refused for it), and they wait for
        the next try a hold later."""
        kept = len(self._deleting)
        cursor.execute("SAVEPOINT queue_log_deletes")
        try:
            self._run_deletes(cursor)
        except Exception:
            cursor.execute("ROLLBACK TO queue_log_deletes")
            cursor.execute("RELEASE queue_log_deletes")
            self._undo_deletes(kept)
            self._delete_since = self._clock()
            log.exception("deleting acknowledged messages failed (tried again later)")
            return
        cursor.execute("RELEASE queue_log_deletes")

    def _undo_deletes(self, kept: int) -> None:
        """The transaction's deletions after the first ``kept`` were rolled back: they
        wait again, first in line, and are due in the next transaction (they were)."""
        if len(self._deleting) > kept:
            self._delete_since = float("-inf")
            self._to_delete[:0] = self._deleting[kept:]
            del self._deleting[kept:]


class Suspensions(Protocol):
    """Where :class:`Sends` reads which accounts are suspended (``sql.Storage``)."""

    @property
    def suspended(self) -> Set[str]: ...


class Sends:
    """Sends into the log through the group commit: ``Storage.enqueue_then`` on SQLite,
    here (compiled) so that the send path reaches the group commit without a Python-level
    call with keywords and a ``functools.partial`` per message."""

    def __init__(self, group: GroupCommit, log: QueueLog, accounts: Suspensions) -> None:
        self._group = group
        self._log = log
        self._accounts = accounts

    def submit(self, done: Done, account_id: str, outgoing: Sequence[OutgoingMessage],
               sender: tuple[str, int] | None, exclude_device: int | None,
               client_timestamp: int, now: int, ttl: int, byte_budget: int,
               on_commit: Callable[[list[Queued]], None] | None) -> None:
        """See ``Storage.enqueue_then``."""
        if account_id in self._accounts.suspended:
            asyncio.get_running_loop().call_soon(done, False, RecipientSuspended(account_id))
            return
        self._group.submit_then(
            done, _Send(self._log, account_id, outgoing, sender, exclude_device,
                        client_timestamp, now, ttl, byte_budget),
            on_commit, lock_order=(account_id, 0))


class _Send:
    """A send as an operation of the group commit (:meth:`QueueLog.enqueue`)."""

    def __init__(self, log: QueueLog, account_id: str, outgoing: Sequence[OutgoingMessage],
                 sender: tuple[str, int] | None, exclude_device: int | None,
                 client_timestamp: int, now: int, ttl: int, byte_budget: int) -> None:
        self.log = log
        self.account_id = account_id
        self.outgoing = outgoing
        self.sender = sender
        self.exclude_device = exclude_device
        self.client_timestamp = client_timestamp
        self.now = now
        self.ttl = ttl
        self.byte_budget = byte_budget

    def __call__(self, cursor: Any) -> list[Queued]:
        return self.log.enqueue(self.account_id, self.outgoing, self.sender,
                                self.exclude_device, self.client_timestamp, self.now,
                                self.ttl, self.byte_budget, cursor)
