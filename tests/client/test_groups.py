"""Groups of four with sender keys: membership changes, a forged change by a non-admin
refused, and a removed member unable to read what is sent afterwards."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from cipherpost.client import Client, ClientError
from cipherpost.client import events as ev
from cipherpost.client.api import Envelope
from cipherpost.client.groups import MEMBER, encode_state, sign_change
from cipherpost.client.proto.app_pb2 import Content, DataMessage, GroupContext

from .conftest import Devices, ThreadedRelay


def texts(events: list[ev.Event]) -> list[tuple[str, str]]:
    return [(e.conversation, e.text) for e in events if isinstance(e, ev.Message)]


def of(events: list[ev.Event], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]


async def group_envelopes(client: Client) -> list[Envelope]:
    """The sender-key envelopes waiting for ``client`` (left queued)."""
    return [e for e in (await client.api.fetch())[0] if e.type == 7]


def test_group_of_four(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice = await devices.register("alice")
            alice2 = await devices.link(alice, "alice laptop")
            bob, carol, dave = [await devices.register(n) for n in ("bob", "carol", "dave")]
            await alice.receive()
            group = await alice.create_group("climbing", ["bob", "carol", "dave"])
            conv = group.conversation
            for member in (alice2, bob, carol, dave):
                updates = of(await member.receive(), ev.GroupUpdated)
                assert [(u.title, u.revision, len(u.members)) for u in updates] == \
                    [("climbing", 0, 4)]
                assert member.group(group.id) is not None

            await alice.send_group_text(group.id, "saturday?")
            await bob.send_group_text(group.id, "yes")
            for member in (alice2, carol, dave):
                assert texts(await member.receive()) == [(conv, "saturday?"), (conv, "yes")]
            assert texts(await bob.receive()) == [(conv, "saturday?")]
            assert texts(await alice.receive()) == [(conv, "yes")]

            # Carol is not an admin: her client refuses, and a forged change sent around
            # by hand is refused by everyone.
            with pytest.raises(ClientError, match="not allowed"):
                await carol.remove_members(group.id, ["dave"])
            forged_state = encode_state(group.id, 1, "carol's group",
                                        {a: MEMBER for a in group.members} | {
                                            carol.account_id: 1})
            signed = sign_change(carol.store.get_identity_key_pair(), carol.account_id,
                                 carol.group(group.id), forged_state, 1, os.urandom)
            forged = Content(data=DataMessage(timestamp=carol._timestamp(), group_change=signed,
                                              group=GroupContext(id=group.id, revision=1)))
            for account in (alice.account_id, bob.account_id):
                await carol.outbox.deliver(account, forged, carol._timestamp())
            for member in (alice, bob):
                rejected = of(await member.receive(), ev.GroupChangeRejected)
                assert len(rejected) == 1 and "admin" in rejected[0].reason
                held = member.group(group.id)
                assert held is not None and held.revision == 0 and held.title == "climbing"

            # Alice removes Dave. Afterwards neither Alice's nor Bob's messages can be read
            # with anything Dave holds, even if the server handed him the ciphertexts.
            await alice.remove_members(group.id, ["dave"])
            for member in (alice2, bob, carol, dave):
                updates = of(await member.receive(), ev.GroupUpdated)
                assert [u.revision for u in updates] == [1]
                assert updates[0].removed == (member is dave)
            await alice.send_group_text(group.id, "without dave")
            await bob.send_group_text(group.id, "bye dave")
            leaked = await group_envelopes(carol)
            assert len(leaked) == 2
            for envelope in leaked:
                events, _ = dave.inbox.process(envelope)
                assert of(events, ev.DecryptionFailed) and not texts(events)
            assert texts(await dave.receive()) == []
            assert texts(await carol.receive()) == [(conv, "without dave"), (conv, "bye dave")]
            assert texts(await alice2.receive()) == [(conv, "without dave"), (conv, "bye dave")]

            # Adding a member later: Erin reads what is sent after she joined.
            erin = await devices.register("erin")
            await alice.add_members(group.id, ["erin"])
            assert of(await erin.receive(), ev.GroupUpdated)
            await carol.receive()
            await carol.send_group_text(group.id, "welcome erin")
            assert texts(await erin.receive()) == [(conv, "welcome erin")]
            history = [h.text for h in alice2.history(conv)]
            assert history == ["saturday?", "yes", "without dave", "bye dave"]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_new_member_device_rotates_and_reads(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            group = await alice.create_group("two", ["bob"])
            await bob.receive()
            await alice.send_text(group.id, "first")
            await bob.receive()
            before, _ = alice.store.group_distribution(group.id)
            bob2 = await devices.link(bob, "bob laptop")
            await bob.receive()
            # Bob's new device is unknown to Alice: the relay answers 409, Alice's chain
            # rotates, and the new device gets the new chain with the message.
            await alice.send_text(group.id, "second")
            after, _ = alice.store.group_distribution(group.id)
            assert before is not None and after is not None and after != before
            assert [(e.conversation, e.text) for e in await bob.receive()
                    if isinstance(e, ev.Message)] == [(group.conversation, "second")]
            # bob2 has no group state yet (it joined after the group was made), so it
            # reports the message as for a group it does not share, never shows it.
            got = await bob2.receive()
            assert not [e for e in got if isinstance(e, ev.Message)]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_typing_in_a_group(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob, carol = [await devices.register(n) for n in ("alice", "bob", "carol")]
            group = await alice.create_group("three", ["bob", "carol"])
            await bob.receive()
            await carol.receive()
            await alice.send_typing(group.id)
            for member in (bob, carol):
                typing = of(await member.receive(), ev.Typing)
                assert typing == [ev.Typing(alice.account_id, 1, True, group.id)]
            carol.options.typing_indicators = False
            await bob.send_typing(group.id, started=False)
            assert of(await alice.receive(), ev.Typing) == \
                [ev.Typing(bob.account_id, 1, False, group.id)]
            assert of(await carol.receive(), ev.Typing) == []
        finally:
            await devices.close()

    asyncio.run(scenario())
