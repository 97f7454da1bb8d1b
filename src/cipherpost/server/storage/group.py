"""Group commit: the per-message writes of many requests in one transaction.

Operations (functions of a DB-API cursor) submitted from the event loop are collected
for a millisecond (or while the previous batch commits) and run together in one
``BEGIN IMMEDIATE`` ... ``COMMIT``, without a SAVEPOINT each: an operation may refuse
(raise a :class:`~.models.Refusal`) only before it writes, so a refusal does not disturb
the others; any other error rolls the batch back, and its operations are run again one
SAVEPOINT each, so that only the failing one fails. One batch is in flight at a time:
whatever arrives meanwhile goes into the next one, so batches grow with the load.

With SQLite the batch runs on the event loop itself, on a connection of its own: a
commit in WAL mode with ``synchronous=NORMAL`` is a write() to the WAL, cheaper than
handing the batch to a thread (every SQLite call releases the GIL, and a busy event loop
makes a thread wait for it again, up to the 5 ms switch interval, on each statement: a
batch of a hundred sends took seconds that way). The loop's connection never waits for
the lock: when another writer (the writer thread, for the rare requests that are not
per-message, or a checkpoint restarting the WAL) holds it, the batch is tried again 2 ms
later, while the loop goes on. PostgreSQL batches run on the writer thread (each
statement is a round trip to the server, which the loop must not wait for), and there a
batch of sends and acknowledgements runs whole, in four statements whatever its size
(:mod:`.pg_batch`): psycopg's Python work per statement, not the server, was most of the
relay's CPU per message on PostgreSQL.

Nothing is reported before it is durable: an operation's future resolves, and its
``on_commit`` callback runs (on the event loop, in commit order, before any later batch
is reported), only after COMMIT returned. If BEGIN or COMMIT fails, every operation of the
batch fails with that error and none of it was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Generic, Protocol, TypeVar

from .models import Refusal

R = TypeVar("R")
log = logging.getLogger("cipherpost.server")

#: Operations per transaction at most (a bound on the time one batch holds the writer).
MAX_BATCH = 1024
#: Operations per batch run on the event loop at most: the loop reads and writes no
#: frame while a batch runs, at about 40 µs of CPU per operation (a send or an
#: acknowledgement, measured 2026-11-29; about 25 µs compiled), so 1,024 stalled every
#: connection for 40 ms or more whenever a backlog had formed. The commit's own cost
#: (about 25 µs) is spread thin enough over 256, which hold the loop for about 6 ms;
#: the loop gets to its sockets between batches.
MAX_LOOP_BATCH = 256

#: Seconds an operation waits for others to share its commit (when none is under way).
COMMIT_WINDOW = 0.001
#: The wait instead while the relay is loaded (the last batch on the loop held at least
#: :data:`BUSY_BATCH` operations): batches then grow with the load, and with them the
#: frames each connection gets in one ``write()`` (the relay writes a connection's frames
#: of a commit together) and the messages that share the commit's WAL pages. At
#: saturation a connection got one or two frames per write with the shorter wait.
BUSY_WINDOW = 0.002
BUSY_BATCH = 64
#: Seconds a *lazy* operation may wait instead: one whose durability nobody waits for (an
#: acknowledgement the device did not ask to have confirmed). It shares the next commit
#: that someone waits for, and gets one of its own only when none comes: at low rates a
#: send and an acknowledgement each opened a commit (about 25 µs of CPU apiece). A crash
#: before that commit delivers the message again, which clients drop by envelope id, as
#: after any unconfirmed acknowledgement.
LAZY_WINDOW = 0.025
#: Seconds between attempts while another connection holds the write lock.
LOCK_RETRY = 0.002

Results = list[tuple[bool, Any]]
#: Told an operation's outcome once its batch is over: ``(True, result)`` once it is
#: committed, or ``(False, exception)``.
Done = Callable[[bool, Any], None]


class Journal(Protocol):
    """State kept in memory beside the database by the operations of batches run on the
    loop (:class:`.queue_log.QueueLog`): told when a batch's transaction begins, reaches
    a savepoint, rolls back (to it) or commits, so that it keeps only what committed."""

    def begin(self, cursor: Any) -> None: ...

    def savepoint(self) -> int: ...

    def rollback_to(self, mark: int) -> None: ...

    def rollback(self) -> None: ...

    def commit(self) -> None: ...


class Resolve(Generic[R]):
    """A :data:`Done` that settles a future (unless it was cancelled: nobody waits)."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[R]) -> None:
        self.future = future

    def __call__(self, ok: bool, value: Any) -> None:
        future = self.future
        if future.cancelled():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class _Item:
    __slots__ = ("done", "lock_order", "on_commit", "op", "plan")

    def __init__(self, op: Callable[[Any], Any], done: Done,
                 on_commit: Callable[[Any], None] | None, lock_order: tuple[str, int],
                 plan: Any) -> None:
        self.op = op
        self.done = done
        self.on_commit = on_commit
        self.lock_order = lock_order
        self.plan = plan


class GroupCommit:
    """Batches write operations into shared transactions."""

    def __init__(self, executor: Executor,
                 thread_transaction: Callable[[], contextlib.AbstractContextManager[Any]],
                 loop_connection: Callable[[], Any] | None = None,
                 plans: Callable[[Any, list[Any]], Results] | None = None,
                 journal: Journal | None = None) -> None:
        """``thread_transaction`` opens a write transaction on the writer thread (run
        through ``executor``); ``loop_connection`` gives the event loop's own SQLite
        connection (autocommit mode, no busy timeout), if batches may run on the loop.
        ``plans(cursor, plans)`` runs a whole batch on the writer thread at once, when
        every operation of it came with a plan (see ``submit``; PostgreSQL's
        :mod:`.pg_batch`); its results are as ``op``'s would be. ``journal``: told of
        each transaction on the loop's connection (see :class:`Journal`)."""
        self._executor = executor
        self._thread_transaction = thread_transaction
        self._loop_connection = loop_connection
        self._plans = plans
        self._journal = journal
        self._pending: list[_Item] = []
        #: batches are being committed (one follows another while operations are pending)
        self._busy = False
        #: the wait before the next batch starts (None: none is due), and when it ends
        #: (kept here: uvloop answers a ``call_at`` already due with a plain Handle,
        #: which has no ``when()``)
        self._timer: asyncio.Handle | None = None
        self._due = 0.0
        #: batches run on the loop and on the writer thread (for tests and metrics)
        self.batches = [0, 0]
        #: times a batch on the loop found the write lock taken and waited
        self.waits = 0
        #: batches run whole by ``plans`` (not operation by operation)
        self.planned = 0
        #: the last batch on the loop was large: the next one waits :data:`BUSY_WINDOW`
        self._loaded = False

    def submit(self, op: Callable[[Any], R],
               on_commit: Callable[[R], None] | None = None, *,
               lock_order: tuple[str, int] = ("", 0), plan: Any = None,
               lazy: bool = False) -> asyncio.Future[R]:
        """Run ``op(cursor)`` in the next batch; the future resolves once it is committed.

        ``on_commit(result)`` runs on the event loop right after the commit, before the
        future's awaiters resume and before any later operation is reported.
        ``lock_order`` is where the first row lock ``op`` takes falls in the order of
        all writers' locks (see ``sql._delete_device``). ``plan`` describes ``op`` to
        the batch runner given as ``plans`` (which then runs it instead of ``op``).
        A ``lazy`` operation may wait up to :data:`LAZY_WINDOW` for a batch to share
        (operations still commit in the order they were submitted).
        """
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self.submit_then(Resolve(future), op, on_commit, lock_order=lock_order, plan=plan,
                         lazy=lazy)
        return future

    def submit_then(self, done: Done, op: Callable[[Any], R],
                    on_commit: Callable[[R], None] | None = None, *,
                    lock_order: tuple[str, int] = ("", 0), plan: Any = None,
                    lazy: bool = False) -> None:
        """:meth:`submit` for a caller that takes the outcome as a call: ``done(ok,
        value)`` on the event loop, right after ``on_commit`` (never before this returns).
        A connection's sends and acknowledgements come this way: a future, its callback
        and the loop turn that runs it were a tenth of the relay's work per message."""
        self._pending.append(_Item(op, done, on_commit, lock_order, plan))
        if not self._busy:
            # Gather what arrives in the next millisecond into the same commit: at low
            # rates a commit per operation would write the same pages again and again.
            loop = asyncio.get_running_loop()
            when = loop.time() + (LAZY_WINDOW if lazy else
                                  BUSY_WINDOW if self._loaded else COMMIT_WINDOW)
            if self._timer is None or self._due > when:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = loop.call_at(when, self._start, loop)
                self._due = when

    async def flush(self) -> None:
        """Commit everything submitted so far, lazy operations too, and wait for it."""
        await self.submit(_nothing)

    def nudge(self) -> None:
        """Have a transaction run within :data:`LAZY_WINDOW` even if nothing is submitted
        (its journal has work of its own: ``QueueLog.begin``)."""
        self.submit_then(_ignore, _nothing, lazy=True)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._busy = True
        self._flush(loop)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        limit = MAX_LOOP_BATCH if self._loop_connection is not None else MAX_BATCH
        batch = self._pending[:limit]
        del self._pending[:limit]
        if not batch:
            self._busy = False
            return
        if self._loop_connection is not None:
            self._commit_on_loop(loop, batch)
            return
        self.batches[1] += 1
        # On a database server, other relay processes' batches lock the same device rows:
        # in one global order, none waits for another that waits for it (a deadlock). The
        # sort is stable, so a device's sends keep their order.
        batch.sort(key=_lock_order)
        done = loop.run_in_executor(self._executor, self._run_on_thread, batch)
        done.add_done_callback(lambda f: self._done(loop, batch, f))

    def _commit_on_loop(self, loop: asyncio.AbstractEventLoop,
                        batch: list[_Item]) -> None:
        results = self._run_on_loop(batch)
        if results is None:  # the lock is taken: try again shortly, the loop stays free
            self.waits += 1
            loop.call_later(LOCK_RETRY, self._commit_on_loop, loop, batch)
            return
        self.batches[0] += 1
        self._loaded = len(batch) >= BUSY_BATCH
        self._report(batch, results)
        loop.call_soon(self._flush, loop)

    def _run_on_loop(self, batch: list[_Item]) -> Results | None:
        """The batch in one transaction on the loop's connection; None if another
        connection holds the write lock (then nothing was done)."""
        assert self._loop_connection is not None
        connection = self._loop_connection()
        cursor = connection.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return None
            log.exception("a group commit failed")
            return [(False, exc)] * len(batch)
        journal = self._journal
        try:
            try:
                if journal is not None:
                    journal.begin(cursor)
                results = _apply(cursor, batch)
            except Exception:
                connection.rollback()
                if journal is not None:
                    journal.rollback()
                cursor.execute("BEGIN IMMEDIATE")
                if journal is not None:
                    journal.begin(cursor)
                results = _apply_one_by_one(cursor, batch, journal)
            connection.commit()
        except Exception as exc:  # COMMIT failed: none of the batch is durable
            with contextlib.suppress(Exception):
                connection.rollback()
            if journal is not None:
                journal.rollback()
            log.exception("a group commit failed")
            return [(False, exc)] * len(batch)
        finally:
            cursor.close()
        if journal is not None:
            journal.commit()
        return results

    def _run_on_thread(self, batch: list[_Item]) -> Results:
        try:
            try:
                with self._thread_transaction() as cursor:
                    return self._apply_on_thread(cursor, batch)
            except _OperationFailed:  # rolled back: run them again, each on its own
                with self._thread_transaction() as cursor:
                    results = _apply_one_by_one(cursor, batch)
        except Exception as exc:
            # BEGIN or COMMIT failed. Not tried again: a COMMIT whose answer was lost (the
            # connection to a database server broke) may have been durable after all.
            log.exception("a group commit failed")
            return [(False, exc)] * len(batch)
        return results

    def _apply_on_thread(self, cursor: Any, batch: list[_Item]) -> Results:
        if self._plans is None or any(item.plan is None for item in batch):
            return _apply(cursor, batch)
        try:
            results = self._plans(cursor, [item.plan for item in batch])
        except Exception as exc:
            raise _OperationFailed() from exc
        self.planned += 1
        return results

    def _done(self, loop: asyncio.AbstractEventLoop, batch: list[_Item],
              done: asyncio.Future[Results]) -> None:
        try:
            results = done.result()
        except BaseException as exc:  # the executor is shut down
            results = [(False, exc)] * len(batch)
        self._report(batch, results)
        self._flush(loop)

    @staticmethod
    def _report(batch: list[_Item], results: Results) -> None:
        for item, (ok, value) in zip(batch, results, strict=True):
            if ok and item.on_commit is not None:
                try:
                    item.on_commit(value)
                except Exception:
                    log.exception("an on_commit callback failed")
            try:
                item.done(ok, value)
            except Exception:
                log.exception("a group commit's done callback failed")


def _lock_order(item: _Item) -> tuple[str, int]:
    return item.lock_order


def _nothing(_cursor: Any) -> None:
    return None


def _ignore(_ok: bool, _value: Any) -> None:
    return None


class _OperationFailed(Exception):
    """An operation of the batch raised something other than a refusal."""


def _apply(cursor: Any, batch: list[_Item]) -> Results:
    """The operations of the batch in the open transaction; an error other than a
    refusal propagates as :class:`_OperationFailed` (the caller rolls back)."""
    results: Results = []
    for item in batch:
        try:
            value = item.op(cursor)
        except Refusal as exc:
            results.append((False, exc))
        except Exception as exc:
            raise _OperationFailed() from exc
        else:
            results.append((True, value))
    return results


def _apply_one_by_one(cursor: Any, batch: list[_Item],
                      journal: Journal | None = None) -> Results:
    """Each operation of the batch inside a savepoint of the open transaction."""
    results: Results = []
    for item in batch:
        cursor.execute("SAVEPOINT op")
        mark = journal.savepoint() if journal is not None else 0
        try:
            value = item.op(cursor)
        except Exception as exc:
            cursor.execute("ROLLBACK TO op")
            cursor.execute("RELEASE op")
            if journal is not None:
                journal.rollback_to(mark)
            results.append((False, exc))
        else:
            cursor.execute("RELEASE op")
            results.append((True, value))
    return results
