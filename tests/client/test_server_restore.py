"""The SDK across a restore of its relay from a backup (docs/operations.md, "Restore"):
an envelope delivered again with the id it had is dropped, senders get bundles without
one-time prekeys until the device uploads fresh ones, and conversations go on."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import func, select

from cipherpost.client import Client
from cipherpost.client import events as ev
from cipherpost.server.backup import backup, restore
from cipherpost.server.storage.engine import Database
from cipherpost.server.storage.schema import messages

from .conftest import Devices, ThreadedRelay


def texts(events: list[ev.Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, ev.Message)]


def test_clients_carry_on_across_a_restore(tmp_path: Path) -> None:
    workdir = tmp_path / "relay"
    workdir.mkdir()
    relay = ThreadedRelay(workdir)
    relay.start()
    backup_file = tmp_path / "backup.db"

    async def before() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            await alice.send_text("bob", "one")
            assert texts(await bob.receive()) == ["one"]
            await alice.receive()
            await alice.send_text("bob", "two")
            db = Database(relay.settings.database_url)
            try:  # taken while "two" waits in bob's queue
                backup(db, backup_file, 1, "root")
            finally:
                db.dispose()
            assert texts(await bob.receive()) == ["two"]  # acknowledged: deleted
        finally:
            await devices.close()

    asyncio.run(before())
    relay.stop()
    db = Database(relay.settings.database_url)
    try:
        assert restore(db, backup_file, 2, "root").one_time_prekeys_dropped > 0
    finally:
        db.dispose()
    relay = ThreadedRelay(workdir, port=relay.port)
    relay.start()

    async def after() -> None:
        devices = Devices(tmp_path, relay)
        try:
            opened = [await Client.open(next(tmp_path.glob(f"{name}-*.db")),
                                        passphrase="correct horse", options=devices.options)
                      for name in ("alice", "bob")]
            devices.clients += opened
            alice, bob = opened
            # "two" is in the restored queue again, with its old id: dropped, acknowledged.
            assert _queued(relay) == 1
            again = await bob.receive()
            assert texts(again) == []
            # Dropped by its id, not failed to decrypt (its message key is used up).
            assert not [e for e in again if isinstance(e, ev.DecryptionFailed)], again
            assert _queued(relay) == 0
            assert await bob.api.key_counts() == (0, 0)
            # A new contact gets a bundle without one-time keys and still gets through.
            carol = await devices.register("carol")
            await carol.send_text("bob", "three")
            assert texts(await bob.receive()) == ["three"]
            assert await bob.maintain_keys()  # the count is below the low-water mark
            ec, kyber = await bob.api.key_counts()
            assert ec > 0 and kyber > 0
            await alice.send_text("bob", "four")
            assert texts(await bob.receive()) == ["four"]
        finally:
            await devices.close()

    try:
        asyncio.run(after())
    finally:
        relay.stop()


def _queued(relay: ThreadedRelay) -> int:
    db = Database(relay.settings.database_url)
    try:
        with db.reader.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(messages)).scalar_one())
    finally:
        db.dispose()
