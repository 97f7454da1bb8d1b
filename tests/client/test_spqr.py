"""SPQR in the client SDK: sessions run it by default (as libsignal 0.92+), an older
session without it is replaced before the next send, and ``ClientOptions.spqr`` keeps
peers without SPQR reachable."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from pathlib import Path

from cipherpost.client import Client
from cipherpost.client import events as ev
from cipherpost.protocol import PREKEY_TYPE, ProtocolAddress, SpqrSettings
from cipherpost.protocol.address import addresses_field
from cipherpost.protocol.messages import PreKeySignalMessage

from .conftest import Devices, ThreadedRelay


def _texts(events: list[ev.Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, ev.Message)]


def _spqr_version(client: Client, peer: Client) -> int:
    record = client.store.load_session(ProtocolAddress(peer.account_id, peer.device_id))
    assert record is not None and record.current is not None
    return record.current.pq_ratchet.version


async def _register(devices: Devices, name: str, spqr: SpqrSettings) -> Client:
    devices.options = dataclasses.replace(devices.options, spqr=spqr)
    return await devices.register(name)


def test_new_sessions_run_spqr_by_default(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        assert devices.options.spqr == SpqrSettings.REQUIRED  # the default, as libsignal 0.92+
        try:
            alice = await devices.register("alice")
            bob = await devices.register("bob")
            await alice.send_text("bob", "hello")
            assert _texts(await bob.receive()) == ["hello"]
            await bob.send_text("alice", "hi")
            assert _texts(await alice.receive()) == ["hi"]
            assert _spqr_version(alice, bob) == _spqr_version(bob, alice) == 1
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_prekey_messages_name_both_devices_and_a_restamped_one_is_refused(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    """Field 6, as libsignal 0.91+: the SDK's PreKey messages carry sender and recipient
    under the MAC, and the receiver checks them, so a relay that stamps another sender
    device on a message gets it refused (DecryptionFailed), not taken as that device's."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        devices.options = dataclasses.replace(devices.options, sealed_sender=False)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            await alice.send_text("bob", "hello")
            [envelope], _ = await bob.api.fetch()
            assert envelope.type == PREKEY_TYPE
            carried = PreKeySignalMessage.parse(envelope.content).message.addresses
            assert carried is not None and carried == addresses_field(
                ProtocolAddress(alice.account_id, alice.device_id),
                ProtocolAddress(bob.account_id, bob.device_id))
            restamped = dataclasses.replace(envelope, id=str(uuid.uuid4()), sender_device_id=2)
            events, _ = bob.inbox.process(restamped)
            assert [type(e) for e in events] == [ev.DecryptionFailed]
            assert bob.store.load_session(ProtocolAddress(alice.account_id, 2)) is None
            events, _ = bob.inbox.process(envelope)
            assert _texts(events) == ["hello"]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_session_without_spqr_is_replaced_before_the_next_send(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            # Two devices of an older Cipherpost (no SPQR) chat...
            alice = await _register(devices, "alice", SpqrSettings.OFF)
            bob = await _register(devices, "bob", SpqrSettings.OFF)
            await alice.send_text("bob", "before")
            assert _texts(await bob.receive()) == ["before"]
            assert _spqr_version(alice, bob) == 0
            # ...then both update: Alice's next send starts a new session, with SPQR.
            alice.options.spqr = bob.options.spqr = SpqrSettings.REQUIRED
            await alice.send_text("bob", "after")
            assert _texts(await bob.receive()) == ["after"]
            assert _spqr_version(alice, bob) == _spqr_version(bob, alice) == 1
            await bob.send_text("alice", "reply")
            assert _texts(await alice.receive()) == ["reply"]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_offered_talks_to_a_peer_without_spqr(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            old = await _register(devices, "old", SpqrSettings.OFF)
            new = await _register(devices, "new", SpqrSettings.OFFERED)
            await new.send_text("old", "hello from SPQR")
            assert _texts(await old.receive()) == ["hello from SPQR"]
            await old.send_text("new", "hello without")
            assert _texts(await new.receive()) == ["hello without"]
            assert _spqr_version(new, old) == 0  # negotiated down, as OFFERED allows
            await new.send_text("old", "again")
            assert _texts(await old.receive()) == ["again"]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_required_does_not_read_a_peer_without_spqr(tmp_path: Path,
                                                     relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            old = await _register(devices, "old", SpqrSettings.OFF)
            new = await _register(devices, "new", SpqrSettings.REQUIRED)
            await old.send_text("new", "no SPQR here")
            assert _texts(await new.receive()) == []
        finally:
            await devices.close()

    asyncio.run(scenario())
