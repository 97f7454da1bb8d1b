"""Linking a device through a provisioning mailbox: the new device shows a link code,
an existing device sends it the account's identity, contacts and groups, encrypted so
that the relay can neither read nor replace it."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from cipherpost.client import ClientError, IdentityNotTrusted, RelayError
from cipherpost.client import events as ev
from cipherpost.client.devices import request_link
from cipherpost.client.linking import LinkError, LinkRequest, new_request, open_envelope, seal
from cipherpost.client.proto.app_pb2 import ProvisionMessage
from cipherpost.client.store.crypto import TEST_PARAMS

from .conftest import Devices, ThreadedRelay


def test_link_request_round_trip_and_tampering() -> None:
    request, private = new_request("https://relay.example", "A" * 43)
    parsed = LinkRequest.parse(request.uri())
    assert parsed == request
    sealed = seal(parsed, ProvisionMessage(account_id="acct", link_code="code"))
    assert open_envelope(request, private, sealed).link_code == "code"
    # Another secret (a relay that swapped the QR's mailbox content) or a flipped byte fail.
    other = dataclasses.replace(request, secret=bytes(16))
    with pytest.raises(LinkError):
        open_envelope(other, private, sealed)
    broken = bytearray(sealed)
    broken[-1] ^= 1
    with pytest.raises(LinkError):
        open_envelope(request, private, bytes(broken))
    for bad in ("https://example.com", "cipherpost://link?v=1&s=x", "cipherpost://link?v=2"):
        with pytest.raises(LinkError):
            LinkRequest.parse(bad)


def test_link_a_device_with_history_of_contacts_and_groups(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            await alice.send_text("bob", "hi")
            await bob.receive()
            alice.trust_identity(bob.account_id, verified=True)
            group = await alice.create_group("pair", ["bob"])
            await bob.receive()

            pending = await request_link(relay.url)
            assert pending.uri.startswith("cipherpost://link?")
            joining = asyncio.create_task(pending.complete(
                tmp_path / "alice-new.db", passphrase="pw", device_name="new laptop",
                argon2=TEST_PARAMS, options=dataclasses.replace(devices.options)))
            await asyncio.sleep(0.2)
            await alice.provision(pending.uri)
            laptop = await asyncio.wait_for(joining, 30)
            devices.clients.append(laptop)
            assert laptop.account_id == alice.account_id and laptop.device_id == 2
            assert laptop.store.get_identity_key_pair().public == \
                alice.store.get_identity_key_pair().public
            # Contacts and trust came along, so did the group.
            record = laptop.store.identity_record(bob.account_id)
            assert record is not None and record.verified
            assert laptop.group(group.id) is not None
            added = [e for e in await alice.receive() if isinstance(e, ev.DeviceAdded)]
            assert added == [ev.DeviceAdded(2, "new laptop")]
            # The new device takes part at once, 1:1 and in the group.
            await bob.send_text(group.id, "to the group")
            await bob.send_text("alice", "to alice")
            got = [(e.conversation, e.text) for e in await laptop.receive()
                   if isinstance(e, ev.Message)]
            assert got == [(group.conversation, "to the group"), (bob.account_id, "to alice")]
            # A link code works once: its mailbox is gone.
            with pytest.raises(RelayError) as again:
                await alice.provision(pending.uri)
            assert again.value.status == 404
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_blocked_contact_stays_blocked_on_the_linked_device(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    """Carol's key changed and Alice has not accepted it: a device linked now must not
    send to Carol either (the block travels with the contact)."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, carol = await devices.register("alice"), await devices.register("carol")
            await alice.send_text("carol", "hi")
            await carol.receive()
            await carol.reset_identity()
            with pytest.raises(IdentityNotTrusted):
                await alice.send_text("carol", "still you?")
            pending = await request_link(relay.url)
            joining = asyncio.create_task(pending.complete(
                tmp_path / "alice-new.db", passphrase="pw", argon2=TEST_PARAMS,
                options=dataclasses.replace(devices.options)))
            await asyncio.sleep(0.2)
            await alice.provision(pending.uri)
            laptop = await asyncio.wait_for(joining, 30)
            devices.clients.append(laptop)
            record = laptop.store.identity_record(carol.account_id)
            assert record is not None and record.send_blocked
            with pytest.raises(IdentityNotTrusted):
                await laptop.send_text("carol", "from the laptop")
            laptop.trust_identity(carol.account_id)
            await laptop.send_text("carol", "accepted")
            assert [e.text for e in await carol.receive() if isinstance(e, ev.Message)] == \
                ["accepted"]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_expired_or_unknown_link_code(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        pending = await request_link(relay.url)
        pending.request = dataclasses.replace(pending.request, address="B" * 43)
        with pytest.raises(ClientError, match="expired"):
            await pending.complete(tmp_path / "x.db", passphrase="pw", argon2=TEST_PARAMS)
        assert not (tmp_path / "x.db").exists()

    asyncio.run(scenario())
