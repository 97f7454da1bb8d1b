"""Group commits on SQLite run on the event loop, so a backlog is committed in batches of
at most ``MAX_LOOP_BATCH`` operations with the loop's other work between them: a batch of
a thousand held every connection's frames for tens of milliseconds."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cipherpost.server.storage.engine import Database
from cipherpost.server.storage.group import MAX_LOOP_BATCH
from cipherpost.server.storage.models import KeyUpload, NewDevice, OutgoingMessage
from cipherpost.server.storage.sql import Queued, Storage

ACCOUNT = "00000000-0000-4000-8000-000000000001"


def test_a_backlog_commits_in_bounded_batches_with_the_loop_running_between(
        tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/relay.db")
    db.migrate()
    storage = Storage(db)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        await storage.create_account(ACCOUNT, None, b"\x05" + bytes(32),
                                     NewDevice(7, b"h" * 32, None, KeyUpload()), 0)
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

    try:
        asyncio.run(run())
    finally:
        storage.close()
        db.dispose()
