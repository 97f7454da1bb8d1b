"""Long absences, lost group keys, a directory that disagrees with the device, and the
OS-keyring key source."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend

from cipherpost.client import Client, ClientOptions
from cipherpost.client import events as ev
from cipherpost.client.api import RelayUnavailable
from cipherpost.client.keys import DAY_MS

from .conftest import Devices, ThreadedRelay

HOUR_MS = 3600 * 1000


def test_offline_for_days_then_everything_arrives_once_in_order(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    now = [time.time_ns() // 1_000_000]

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        devices.options.clock = lambda: now[0]
        try:
            alice, bob, carol = [await devices.register(n) for n in ("alice", "bob", "carol")]
            await alice.send_text("bob", "before")
            await bob.receive()
            await alice.receive()
            # Bob is offline for eight simulated days; Alice writes every few hours and her
            # keys rotate meanwhile; Carol, a new contact, writes too.
            sent: list[tuple[int, str]] = []
            for hour in range(0, 8 * 24, 6):
                now[0] += 6 * HOUR_MS
                text = f"h{hour}"
                sender = carol if hour % 24 == 0 else alice
                sent.append((await sender.send_text("bob", text), text))
                if hour % 48 == 0 or hour == 186:
                    await alice.maintain_keys()
            assert len(alice.store.signed_pre_keys()) >= 2   # rotated while Bob was away
            now[0] += DAY_MS
            envelopes, _ = await bob.api.fetch(limit=1000)
            for envelope in envelopes[:10]:      # a first attempt that crashed before acking
                bob.inbox.process(envelope)
            got = await bob.receive()
            texts = [e.text for e in got if isinstance(e, ev.Message)]
            assert texts == [t for _, t in sent[10:]]   # the first ten were stored already
            merged = bob.history(alice.account_id, limit=1000) + \
                bob.history(carol.account_id, limit=1000)
            shown = [h.text for h in sorted(merged, key=lambda h: h.timestamp)]
            assert shown == ["before"] + [t for _, t in sent]
            assert await bob.receive() == []
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_lost_group_key_is_repaired_by_a_resend(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            group = await alice.create_group("pair", ["bob"])
            await bob.receive()
            await alice.send_text(group.id, "one")
            assert [e.text for e in await bob.receive() if isinstance(e, ev.Message)] == ["one"]
            bob.store._db.execute("DELETE FROM sender_keys")      # Bob loses Alice's key
            sent = await alice.send_text(group.id, "two")
            failed = [e for e in await bob.receive() if isinstance(e, ev.DecryptionFailed)]
            assert [(f.timestamp, f.reason) for f in failed] == [(sent, "no_sender_key")]
            await alice.receive()                                   # resends over 1:1
            got = [e for e in await bob.receive() if isinstance(e, ev.Message)]
            assert [(m.conversation, m.text) for m in got] == [(group.conversation, "two")]
            assert [h.text for h in bob.history(group.conversation)] == ["one", "two"]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_directory_out_of_step_is_republished(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            # Bob's device lost its one-time prekeys (a restored backup) but the relay still
            # hands them out: Alice's first message names a key Bob no longer has.
            bob.store._db.execute("DELETE FROM prekeys")
            sent = await alice.send_text("bob", "hello")
            failed = [e for e in await bob.receive() if isinstance(e, ev.DecryptionFailed)]
            assert [(f.timestamp, f.reason) for f in failed] == [(sent, "invalid_prekey_id")]
            # The republish replaced every one-time key the relay held for Bob.
            assert await bob.api.key_counts() == (bob.options.keys.one_time_batch,
                                                  bob.options.keys.kyber_batch)
            for _ in range(3):  # every bundle handed out now names a key Bob holds
                bundle = (await alice.api.bundles(bob.account_id, 1))[0]
                assert bundle.pre_key_id is not None
                bob.store.get_pre_key(bundle.pre_key_id)
                bob.store.get_kyber_pre_key(bundle.kyber_pre_key_id)
            await alice.receive()
            assert [e.text for e in await bob.receive() if isinstance(e, ev.Message)] == \
                ["hello"]
        finally:
            await devices.close()

    asyncio.run(scenario())


class MemoryKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.values.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.values[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.values.pop((service, username), None)


def test_store_key_in_the_os_keyring(tmp_path: Path, relay: ThreadedRelay) -> None:
    backend = MemoryKeyring()
    previous = keyring.get_keyring()
    keyring.set_keyring(backend)

    async def scenario() -> None:
        path = tmp_path / "k.db"
        client = await Client.register(path, relay.url, username="kara", history=False,
                                       options=ClientOptions())
        account = client.account_id
        await client.close()
        assert len(backend.values) == 1
        reopened = await Client.open(path)
        assert reopened.account_id == account
        await reopened.close()
        backend.values.clear()
        from cipherpost.client import StoreError
        with pytest.raises(StoreError, match="keyring"):
            await Client.open(path)

    try:
        asyncio.run(scenario())
    finally:
        keyring.set_keyring(previous)


def test_housekeeping_forgets_on_schedule(tmp_path: Path, relay: ThreadedRelay) -> None:
    now = [time.time_ns() // 1_000_000]

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        devices.options.clock = lambda: now[0]
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            sent = await alice.send_text("bob", "kept a day for resends")
            await bob.receive()
            assert alice.store.find_sent(bob.account_id, sent) is not None
            now[0] += 23 * HOUR_MS
            alice.housekeeping()
            assert alice.store.find_sent(bob.account_id, sent) is not None
            now[0] += 2 * HOUR_MS
            alice.housekeeping()
            assert alice.store.find_sent(bob.account_id, sent) is None
            seen = bob.store._db.execute("SELECT count(*) FROM envelopes").fetchone()[0]
            assert seen >= 1
            now[0] += 28 * DAY_MS            # 29 days after: a redelivery is still possible
            bob.housekeeping()
            assert bob.store._db.execute("SELECT count(*) FROM envelopes").fetchone()[0] \
                == seen
            now[0] += 2 * DAY_MS
            bob.housekeeping()
            assert bob.store._db.execute("SELECT count(*) FROM envelopes").fetchone()[0] == 0
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_work_decided_before_a_failed_acknowledgement_is_still_done(
        tmp_path: Path, relay: ThreadedRelay, monkeypatch: pytest.MonkeyPatch) -> None:
    """The delivery receipt is decided while the envelope is processed; the ack fails,
    the redelivered envelope is dropped as already seen, and the receipt still goes."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            sent = await bob.send_text("alice", "hello")
            real_ack = alice.api.ack

            async def lost(ids: list[str]) -> None:
                raise RelayUnavailable("connection reset")

            monkeypatch.setattr(alice.api, "ack", lost)
            with pytest.raises(RelayUnavailable):
                await alice.receive()
            monkeypatch.setattr(alice.api, "ack", real_ack)
            assert await alice.receive() == []       # redelivered, known, dropped
            receipts = [e for e in await bob.receive() if isinstance(e, ev.Receipt)]
            assert [(r.kind, r.timestamps) for r in receipts] == [("delivery", (sent,))]
            assert alice.store.follow_ups() == []
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_removed_device_found_by_a_1to1_send_rotates_shared_groups(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            bob2 = await devices.link(bob, "bob laptop")
            await bob.receive()
            group = await alice.create_group("g", ["bob"])
            await alice.send_text(group.id, "first")
            first, rotate = alice.store.group_distribution(group.id)
            assert first is not None and not rotate
            await bob.api.remove_device(bob2.device_id)
            await alice.send_text("bob", "1:1")      # the relay's 409 names the gone device
            assert alice.store.group_distribution(group.id)[1]
            await alice.send_text(group.id, "second")
            assert alice.store.group_distribution(group.id)[0] not in (None, first)
            assert [e.text for e in await bob.receive() if isinstance(e, ev.Message)] == [
                "first", "1:1", "second"]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_failed_send_is_shown_as_failed(tmp_path: Path, relay: ThreadedRelay,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            await alice.send_text("bob", "works")
            real = alice.outbox.send_request

            async def down(*args: object, **kw: object) -> None:
                raise RelayUnavailable("no route")

            monkeypatch.setattr(alice.outbox, "send_request", down)
            with pytest.raises(RelayUnavailable):
                await alice.send_text("bob", "does not")
            monkeypatch.setattr(alice.outbox, "send_request", real)
            assert [(h.text, h.status) for h in alice.history(bob.account_id)] == [
                ("works", "sent"), ("does not", "failed")]
        finally:
            await devices.close()

    asyncio.run(scenario())
