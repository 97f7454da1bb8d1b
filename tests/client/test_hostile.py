"""Hostile peers and a hostile relay (findings of reviews/2026-11-29-client): what a
forged or malformed message may not do to a device."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest

from cipherpost.client import ClientError
from cipherpost.client import content as codec
from cipherpost.client import events as ev
from cipherpost.client.api import Envelope
from cipherpost.client.groups import ADMIN, MEMBER, encode_state, sign_change
from cipherpost.client.proto.app_pb2 import (
    Content,
    DataMessage,
    DecryptionErrorMessage,
    GroupContext,
    MessageRef,
    Reaction,
    ReceiptMessage,
    SyncMessage,
)
from cipherpost.client.store.crypto import TEST_PARAMS
from cipherpost.client.store.database import Store, StoreError
from cipherpost.protocol import (
    IdentityKeyPair,
    ProtocolAddress,
    encrypt,
    process_prekey_bundle,
)
from cipherpost.protocol.sender_keys import group_encrypt

from .conftest import Devices, ThreadedRelay


def texts(events: list[ev.Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, ev.Message)]


def test_relay_cannot_pose_as_one_of_our_devices(tmp_path: Path,
                                                 relay: ThreadedRelay) -> None:
    """The relay assigns sender addresses: it can stamp "alice, device 99" on a PreKey
    message made under an identity key of its own. Alice must not take it as a sync from
    one of her devices (here an identity reset to a key pair the relay knows, and a forged
    "sent from my other device" message)."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            own_key = alice.store.get_identity_key_pair().public
            target = ProtocolAddress(alice.account_id, 1)
            planted = IdentityKeyPair.generate(os.urandom)
            forgeries = [
                Content(sync=SyncMessage(identity_reset=SyncMessage.IdentityReset(
                    identity_key_pair=planted.serialize(), registration_id=77))),
                Content(sync=SyncMessage(sent=SyncMessage.Sent(
                    destination=bob.account_id,
                    message=DataMessage(timestamp=5, text="I owe you $1000")))),
            ]
            for n, forged in enumerate(forgeries):
                evil = Store.create(tmp_path / f"evil{n}.db", passphrase="x",
                                    params=TEST_PARAMS)
                evil.set_identity(IdentityKeyPair.generate(os.urandom), 1234)
                [bundle] = await bob.api.bundles(alice.account_id, 1)  # the relay has these
                process_prekey_bundle(evil, target, bundle, rng=os.urandom,
                                      now=alice._now() // 1000)
                message = encrypt(evil, target, codec.encode(forged), now=alice._now() // 1000,
                                  rng=os.urandom)
                envelope = Envelope(str(uuid.uuid4()), alice.account_id, 99,
                                    message.message_type, message.serialized, alice._now(),
                                    alice._now())
                events, follow_ups = alice.inbox.process(envelope)
                assert [type(e) for e in events] == [ev.DecryptionFailed]
                assert isinstance(events[0], ev.DecryptionFailed)
                assert events[0].reason == "untrusted_identity"
                assert "republish" not in [f.kind for f in follow_ups]
                evil.close()
            assert alice.store.get_identity_key_pair().public == own_key
            assert alice.history(bob.account_id) == []
            record = alice.store.identity_record(alice.account_id)
            assert record is not None and record.identity_key == own_key
            with pytest.raises(StoreError):
                alice.store.trust_identity(alice.account_id, planted.public, verified=False)
            # The real account still works both ways.
            await bob.send_text("alice", "still here")
            assert texts(await alice.receive()) == ["still here"]
        finally:
            await devices.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("content", [
    Content(data=DataMessage(timestamp=2**63, text="boom")),
    Content(data=DataMessage(timestamp=1, text="x",
                             quote=MessageRef(author="a", timestamp=2**64 - 1))),
    Content(data=DataMessage(timestamp=1, delete=MessageRef(author="a", timestamp=2**53))),
    Content(receipt=ReceiptMessage(type=ReceiptMessage.TYPE_READ, timestamps=[1, 2**63])),
], ids=["data", "quote", "delete", "receipt"])
def test_out_of_range_integers_are_reported_not_jamming(
        tmp_path: Path, relay: ThreadedRelay, content: Content) -> None:
    """A timestamp SQLite cannot hold once raised inside processing and left the envelope
    queued forever: every 64-bit integer is range-checked at decoding now."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, mallory = await devices.register("alice"), await devices.register("mallory")
            bob = await devices.register("bob")
            await mallory.send_text("alice", "first")
            await mallory.outbox.deliver(alice.account_id, content, mallory._timestamp())
            await bob.send_text("alice", "hello")
            got = await alice.receive()
            assert texts(got) == ["first", "hello"]
            unsupported = [e for e in got if isinstance(e, ev.Unsupported)]
            assert len(unsupported) == 1 and "out of range" in unsupported[0].reason
            assert await alice.receive() == []            # acknowledged, nothing left
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_bug_while_handling_is_reported_and_acknowledged(
        tmp_path: Path, relay: ThreadedRelay, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever fails after decryption (here an error injected into storing a message)
    rolls back that message's writes, keeps the session moving and acknowledges it."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            await bob.send_text("alice", "one")
            await bob.set_expire_timer("alice", 60)
            assert texts(await alice.receive()) == ["one"]
            assert alice.store.conversation_timer(bob.account_id)[0] == 60
            real_add = alice.store.add_message

            def broken(**fields: object) -> bool:
                raise OverflowError("injected")

            monkeypatch.setattr(alice.store, "add_message", broken)
            # A message that also raises the timer: the timer is written, then storing the
            # message fails; both writes go back.
            await bob.send_data(alice.account_id, DataMessage(
                text="two", expire_timer=300, expire_timer_version=50))
            got = await alice.receive()
            assert [e.reason for e in got if isinstance(e, ev.Unsupported)] == [
                "could not process the message (OverflowError)"]
            assert not any(isinstance(e, ev.ExpireTimerChanged) for e in got)
            assert alice.store.conversation_timer(bob.account_id)[0] == 60
            monkeypatch.setattr(alice.store, "add_message", real_add)
            await bob.send_text("alice", "three")      # the session moved on
            assert texts(await alice.receive()) == ["three"]
            assert [h.text for h in alice.history(bob.account_id)] == ["one", "three"]
            assert await alice.receive() == []
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_check_integers_walks_nested_and_repeated_fields() -> None:
    fine = Content(receipt=ReceiptMessage(timestamps=[1, codec.MAX_INTEGER]))
    codec.check_integers(fine)
    with pytest.raises(codec.InvalidContent, match="timestamps"):
        codec.check_integers(Content(receipt=ReceiptMessage(
            timestamps=[1, codec.MAX_INTEGER + 1])))
    with pytest.raises(codec.InvalidContent, match=r"MessageRef\.timestamp"):
        codec.check_integers(Content(data=DataMessage(
            quote=MessageRef(timestamp=2**60))))


def test_a_reaction_must_target_a_message_of_its_conversation(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob, carol = [await devices.register(n) for n in ("alice", "bob", "carol")]
            sent = await bob.send_text("alice", "private to alice")
            await alice.receive()
            # Carol reacts to a message of the Alice-Bob conversation she never saw.
            await carol.send_data(alice.account_id, DataMessage(reaction=Reaction(
                emoji="X", target=MessageRef(author=bob.account_id, timestamp=sent))))
            got = await alice.receive()
            assert not [e for e in got if isinstance(e, ev.Reaction)]
            assert [e.reason for e in got if isinstance(e, ev.Unsupported)] == [
                "a reaction to a message not in its conversation"]
            assert alice.store.reactions(bob.account_id, sent) == {}
            await bob.react("alice", (bob.account_id, sent), "Y")   # Bob may
            got = await alice.receive()
            assert [e.emoji for e in got if isinstance(e, ev.Reaction)] == ["Y"]
            assert alice.store.reactions(bob.account_id, sent) == {bob.account_id: "Y"}
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_group_timer_is_part_of_the_signed_state(tmp_path: Path,
                                                   relay: ThreadedRelay) -> None:
    """In a group whose attributes only admins may change, a member can neither change
    the timer through the API nor by sending a timer update as a data message."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            await alice.send_text("bob", "hi")
            await bob.receive()
            state = encode_state(os.urandom(32), 0, "admins only",
                                 {alice.account_id: ADMIN, bob.account_id: MEMBER},
                                 attributes_by_admins_only=True)
            group = await alice._change_group(None, state)
            await bob.receive()
            with pytest.raises(ClientError, match="not allowed"):
                await bob.set_expire_timer(group.id, 5)
            await bob.send_data(alice.account_id, DataMessage(     # around the API
                expire_timer=5, expire_timer_version=99, expire_timer_update=True,
                group=GroupContext(id=group.id, revision=group.revision)))
            got = await alice.receive()
            assert not [e for e in got if isinstance(e, ev.ExpireTimerChanged)]
            assert alice.store.conversation_timer(group.conversation)[0] == 0
            # The admin changes it: a signed change every member applies.
            await alice.set_expire_timer(group.id, 60)
            got = await bob.receive()
            assert [(e.conversation, e.seconds) for e in got
                    if isinstance(e, ev.ExpireTimerChanged)] == [(group.conversation, 60)]
            current = bob.group(group.id)
            assert current is not None and current.expire_timer == 60
            await bob.send_text(group.id, "now disappearing")
            [message] = [e for e in await alice.receive() if isinstance(e, ev.Message)]
            assert message.expire_timer == 60
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_forged_creation_not_listing_us_does_not_block_the_real_group(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob, mallory = [await devices.register(n)
                                   for n in ("alice", "bob", "mallory")]
            group = await bob.create_group("real", ["mallory"])
            await mallory.receive()
            # Mallory knows the id and sends Alice a "creation" of it listing only herself.
            state = encode_state(group.id, 0, "fake", {mallory.account_id: ADMIN})
            timestamp = mallory._timestamp()
            signed = sign_change(mallory.store.get_identity_key_pair(), mallory.account_id,
                                 None, state, timestamp, os.urandom)
            await mallory.outbox.deliver(alice.account_id, Content(data=DataMessage(
                timestamp=timestamp, group_change=signed,
                group=GroupContext(id=group.id, revision=0))), timestamp)
            got = await alice.receive()
            assert [e.reason for e in got if isinstance(e, ev.GroupChangeRejected)] == [
                "a group we are not a member of"]
            assert alice.group(group.id) is None
            await bob.add_members(group.id, ["alice"])
            got = await alice.receive()
            assert [e.title for e in got if isinstance(e, ev.GroupUpdated)] == ["real"]
            await bob.send_text(group.id, "welcome")
            assert texts(await alice.receive()) == ["welcome"]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_member_added_later_cannot_get_earlier_messages_by_asking(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    """A resend request names a message by timestamp: group messages are resent only to
    members they were sent to."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob, carol = [await devices.register(n) for n in ("alice", "bob", "carol")]
            group = await alice.create_group("g", ["bob"])
            await bob.receive()
            sent = await alice.send_text(group.id, "before carol joined")
            await alice.add_members(group.id, ["carol"])
            await carol.receive()
            assert texts(await bob.receive()) == ["before carol joined"]
            for asker in (carol, bob):
                ask = Content(decryption_error=DecryptionErrorMessage(timestamp=sent,
                                                                      device_id=1))
                await asker.outbox.deliver(alice.account_id, ask, asker._timestamp())
            got = await alice.receive()
            assert [e.account for e in got if isinstance(e, ev.ResendUnavailable)] == [
                carol.account_id]
            assert texts(await carol.receive()) == []
            # Bob was a member then: he gets it again (and drops it as a duplicate, having
            # stored it already), over the 1:1 session.
            envelopes, _ = await bob.api.fetch()
            assert len(envelopes) == 1 and envelopes[0].type != 7
            assert texts(await bob.receive()) == []
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_sender_key_is_tied_to_its_group(tmp_path: Path, relay: ThreadedRelay) -> None:
    """Bob shares two groups with Alice; a ciphertext of his chain for group A that
    claims group B inside is refused."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            first = await alice.create_group("a", ["bob"])
            second = await alice.create_group("b", ["bob"])
            await bob.receive()
            await bob.send_text(first.id, "in a")
            assert texts(await alice.receive()) == ["in a"]
            # Bob's client encrypts a message naming group B under group A's chain.
            distribution, _ = bob.store.group_distribution(first.id)
            assert distribution is not None
            data = DataMessage(timestamp=bob._timestamp(), text="smuggled",
                               group=GroupContext(id=second.id, revision=0))
            with bob.store.transaction():
                ciphertext = group_encrypt(bob.store, bob.outbox.address, distribution,
                                           codec.encode(Content(data=data)), rng=os.urandom)
            assert await bob.outbox.send_to_members(first, ciphertext, data.timestamp)
            got = await alice.receive()
            assert texts(got) == []
            assert [e.reason for e in got if isinstance(e, ev.Unsupported)] == [
                "a group ciphertext under another group's key"]
            await bob.send_text(second.id, "in b")           # its own chain works
            assert texts(await alice.receive()) == ["in b"]
        finally:
            await devices.close()

    asyncio.run(scenario())
