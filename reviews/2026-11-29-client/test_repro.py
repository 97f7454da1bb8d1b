from __future__ import annotations
import asyncio, dataclasses
from pathlib import Path
import pytest
from tests.client.conftest import Devices, ThreadedRelay, relay  # noqa: F401
from cipherpost.client import events as ev
from cipherpost.client.proto.app_pb2 import (Content, DataMessage, DecryptionErrorMessage,
                                              MessageRef, Reaction, GroupContext)


def texts(events):
    return [e.text for e in events if isinstance(e, ev.Message)]


def test_poison_timestamp(tmp_path: Path, relay: ThreadedRelay) -> None:
    """A contact sends a DataMessage with timestamp >= 2**63: the receiver's inbox is stuck."""
    async def scenario():
        d = Devices(tmp_path, relay)
        try:
            alice, mallory = await d.register("alice"), await d.register("mallory")
            bob = await d.register("bob")
            await mallory.send_text("alice", "first")
            await mallory.outbox.deliver(alice.account_id, Content(data=DataMessage(timestamp=2**63, text="boom")), mallory._timestamp())
            await bob.send_text("alice", "hello")
            for _ in range(2):
                try:
                    got = await alice.receive()
                    print("received", texts(got))
                except Exception as exc:  # noqa: BLE001
                    print("receive raised", type(exc).__name__, exc)
        finally:
            await d.close()
    asyncio.run(scenario())


def test_group_resend_leaks_history(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario():
        d = Devices(tmp_path, relay)
        try:
            alice, bob, carol = (await d.register("alice"), await d.register("bob"),
                                 await d.register("carol"))
            group = await alice.create_group("g", ["bob"])
            await bob.receive()
            t = await alice.send_text(group.id, "secret before carol joined")
            await alice.add_members(group.id, ["carol"])
            await carol.receive()
            # carol asks for a "resend" of a message sent before she was added
            err = Content(decryption_error=DecryptionErrorMessage(timestamp=t, device_id=1))
            await carol.outbox.deliver(alice.account_id, err, carol._timestamp())
            await alice.receive()
            got = await carol.receive()
            print("carol got", [(e.conversation, e.text) for e in got if isinstance(e, ev.Message)])
        finally:
            await d.close()
    asyncio.run(scenario())


def test_reaction_anywhere(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario():
        d = Devices(tmp_path, relay)
        try:
            alice, bob, carol = (await d.register("alice"), await d.register("bob"),
                                 await d.register("carol"))
            t = await bob.send_text("alice", "private to alice")
            await alice.receive()
            # carol reacts to a message of the alice<->bob conversation she never saw
            await carol.send_data(alice.account_id, DataMessage(reaction=Reaction(
                emoji="💩", target=MessageRef(author=bob.account_id, timestamp=t))))
            got = await alice.receive()
            print("events", [e for e in got if isinstance(e, ev.Reaction)])
            print("reactions on bob's message", alice.store.reactions(bob.account_id, t))
        finally:
            await d.close()
    asyncio.run(scenario())


def test_group_timer_by_non_admin(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario():
        from cipherpost.client.groups import ADMIN, MEMBER, encode_state
        import os
        d = Devices(tmp_path, relay)
        try:
            alice, bob = await d.register("alice"), await d.register("bob")
            await alice.send_text("bob", "hi"); await bob.receive()
            state = encode_state(os.urandom(32), 0, "admins only",
                                 {alice.account_id: ADMIN, bob.account_id: MEMBER},
                                 attributes_by_admins_only=True)
            group = await alice._change_group(None, state)
            await bob.receive()
            await bob.set_expire_timer(group.id, 5)   # bob is not an admin
            got = await alice.receive()
            print("alice events", [e for e in got if isinstance(e, ev.ExpireTimerChanged)])
            print("alice timer", alice.store.conversation_timer(group.conversation),
                  "group state timer", alice.group(group.id).expire_timer)
        finally:
            await d.close()
    asyncio.run(scenario())
