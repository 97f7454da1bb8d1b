"""Group commits on SQLite run on the event loop, so a backlog is committed in batches of
at most ``MAX_LOOP_BATCH`` operations with the loop's other work between them: a batch of
a thousand held every connection's frames for tens of milliseconds. A lazy operation (an
acknowledgement nobody waits for) shares the next commit someone waits for."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from cipherpost.server.storage import group
from cipherpost.server.storage.engine import Database
from cipherpost.server.storage.group import MAX_LOOP_BATCH
from cipherpost.server.storage.models import KeyUpload, NewDevice, OutgoingMessage
from cipherpost.server.storage.sql import Queued, Storage

ACCOUNT = "00000000-0000-4000-8000-000000000001"


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    db = Database(f"sqlite:///{tmp_path}/relay.db")
    db.migrate()
    storage = Storage(db)
    yield storage
    storage.close()
    db.dispose()


async def _account(storage: Storage) -> None:
    await storage.create_account(ACCOUNT, None, b"\x05" + bytes(32),
                                 NewDevice(7, b"h" * 32, None, KeyUpload()), 0)


def _send(storage: Storage, i: int) -> asyncio.Future[list[Queued]]:
    """A message to device 1 of ACCOUNT, ``i`` its client timestamp (and content)."""
    return storage.enqueue(ACCOUNT, [OutgoingMessage(1, 7, 2, b"%d" % i)], sender=None,
                           exclude_device=None, client_timestamp=i, now=1, ttl=60,
                           byte_budget=1 << 20)


def test_a_backlog_commits_in_bounded_batches_with_the_loop_running_between(
        storage: Storage) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        await _account(storage)
        committed: list[int] = []
        seen_between: list[int] = []

        def on_commit(queued: list[Queued]) -> None:
            committed.append(queued[0][1].seq)
            if len(committed) == 1:  # ready work of the loop, queued during the first batch
                loop.call_soon(lambda: seen_between.append(len(committed)))

        backlog = 3 * MAX_LOOP_BATCH + 5
        batches_before = storage._group.batches[0]
        futures = [storage.enqueue(ACCOUNT, [OutgoingMessage(1, 7, 2, b"%d" % i)],
                                   sender=None, exclude_device=None, client_timestamp=i,
                                   now=1, ttl=60, byte_budget=1 << 20, on_commit=on_commit)
                   for i in range(backlog)]
        await asyncio.gather(*futures)
        assert committed == list(range(1, backlog + 1))  # all of them, in order
        assert seen_between == [MAX_LOOP_BATCH]  # it ran after the first batch only
        assert storage._group.batches[0] - batches_before == 4

    asyncio.run(run())


def test_a_lazy_acknowledgement_shares_the_next_commit_or_a_flush(
        storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(group, "LAZY_WINDOW", 3600.0)  # only company or a flush commits it

    async def run() -> None:
        await _account(storage)
        first, second = (await _send(storage, 0))[0][1], (await _send(storage, 1))[0][1]
        await asyncio.sleep(0.01)  # the commits under way have ended
        batches = storage._group.batches[0]
        lazy = storage.acknowledge(ACCOUNT, 1, [first.guid], lazy=True)
        await asyncio.sleep(0.05)  # far past COMMIT_WINDOW: still waiting for company
        assert not lazy.done() and storage._group.batches[0] == batches
        await _send(storage, 2)  # a send someone waits for: the acknowledgement goes with it
        assert lazy.done() and lazy.result() == 1
        assert storage._group.batches[0] == batches + 1
        await asyncio.sleep(0.01)
        lazy = storage.acknowledge(ACCOUNT, 1, [second.guid], lazy=True)
        await asyncio.sleep(0.05)
        assert not lazy.done()
        await storage.flush()  # as the app does when it stops
        assert lazy.done() and lazy.result() == 1
        assert [e.client_timestamp for e in await storage.fetch(ACCOUNT, 1, 0, 10)] == [2]

    asyncio.run(run())


def test_submits_while_a_batch_is_due_at_once_under_uvloop(
        storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    """uvloop answers a ``call_at`` that is already due with a plain Handle (no
    ``when()``); further submits before it runs must still work (the relay runs on it)."""
    uvloop = pytest.importorskip("uvloop")
    monkeypatch.setattr(group, "COMMIT_WINDOW", -1.0)

    async def run() -> None:
        await _account(storage)
        first = (await _send(storage, 0))[0][1]
        await asyncio.sleep(0.01)
        lazy = storage.acknowledge(ACCOUNT, 1, [first.guid], lazy=True)  # a timer
        sends = [_send(storage, 1), _send(storage, 2)]  # due at once (a Handle), then one more
        assert [q[0][1].seq for q in await asyncio.gather(*sends)] == [2, 3]
        assert await lazy == 1

    uvloop.run(run())


def test_after_a_large_batch_the_next_waits_longer_for_company(
        storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    """While batches are large (the relay is loaded) an operation waits BUSY_WINDOW for
    others instead of COMMIT_WINDOW; after a small batch, the short wait again."""
    monkeypatch.setattr(group, "BUSY_WINDOW", 0.2)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        await _account(storage)
        await _send(storage, 0)  # a batch of one
        await asyncio.sleep(0.01)
        pending = _send(storage, 1)
        assert storage._group._due - loop.time() <= group.COMMIT_WINDOW
        await pending
        await asyncio.gather(*[_send(storage, i) for i in range(group.BUSY_BATCH)])  # one batch
        await asyncio.sleep(0.01)
        started = loop.time()
        pending = _send(storage, 2)
        assert storage._group._due - started > 0.1
        await asyncio.sleep(0.05)
        assert not pending.done()  # still waiting for company
        await pending  # alone after BUSY_WINDOW: a batch of one, so short waits again
        await asyncio.sleep(0.01)
        pending = _send(storage, 3)
        assert storage._group._due - loop.time() <= group.COMMIT_WINDOW
        await pending

    asyncio.run(run())
