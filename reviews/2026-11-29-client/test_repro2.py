from __future__ import annotations
import asyncio, dataclasses
from pathlib import Path
import pytest
from tests.client.conftest import Devices, ThreadedRelay, relay  # noqa: F401
from cipherpost.client import events as ev, IdentityNotTrusted
from cipherpost.client.devices import request_link
from cipherpost.client.store.crypto import TEST_PARAMS


def texts(events):
    return [e.text for e in events if isinstance(e, ev.Message)]


def test_provision_unblocks_changed_identity(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario():
        d = Devices(tmp_path, relay)
        try:
            alice, bob = await d.register("alice"), await d.register("bob")
            await alice.send_text("bob", "hi"); await bob.receive()
            await bob.reset_identity()                       # or: the relay swaps bob's key
            await bob.send_text("alice", "new key")
            await alice.receive()
            print("alice record", alice.store.identity_record(bob.account_id).send_blocked)
            with pytest.raises(IdentityNotTrusted):
                await alice.send_text("bob", "blocked?")
            pending = await request_link(relay.url)
            joining = asyncio.create_task(pending.complete(
                tmp_path / "alice-new.db", passphrase="pw", argon2=TEST_PARAMS,
                options=dataclasses.replace(d.options)))
            await asyncio.sleep(0.2)
            await alice.provision(pending.uri)
            laptop = await asyncio.wait_for(joining, 30)
            d.clients.append(laptop)
            print("laptop record send_blocked:",
                  laptop.store.identity_record(bob.account_id).send_blocked)
            await laptop.send_text(bob.account_id, "sent without accepting the new key")
            print("bob got", texts(await bob.receive()))
        finally:
            await d.close()
    asyncio.run(scenario())


def test_device_removal_via_1to1_no_rotation(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario():
        d = Devices(tmp_path, relay)
        try:
            alice, bob = await d.register("alice"), await d.register("bob")
            bob2 = await d.link(bob, "phone")
            await bob.receive()
            group = await alice.create_group("g", ["bob"])
            await bob.receive(); await bob2.receive()
            await alice.send_text(group.id, "one")
            print("bob2 got", texts(await bob2.receive()))
            before = alice.store.group_distribution(group.id)
            await bob.api.remove_device(bob2.device_id)      # bob2 stolen, removed
            await alice.send_text("bob", "1:1 after removal")  # 409 extra -> session dropped
            await alice.send_text(group.id, "two")
            after = alice.store.group_distribution(group.id)
            print("distribution before", before, "after", after, "same:", before[0] == after[0])
        finally:
            await d.close()
    asyncio.run(scenario())


def test_reset_skips_device_without_session(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario():
        d = Devices(tmp_path, relay)
        try:
            alice = await d.register("alice")
            alice2 = await d.link(alice, "laptop")
            # alice has not processed alice2's DeviceAdded yet: no session with device 2
            await alice.reset_identity()   # returns without error
            got = await alice2.receive()
            print("alice2 events", [type(e).__name__ for e in got])
            print("alice2 key == alice key:",
                  alice2.store.get_identity_key_pair().public == alice.store.get_identity_key_pair().public)
        finally:
            await d.close()
    asyncio.run(scenario())
