"""Attachments, edits, deletes, reactions, read receipts, typing and disappearing
messages, between real SDK clients through a real relay."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from cipherpost.client import attachments
from cipherpost.client import events as ev

from .conftest import Devices, ThreadedRelay


def of(events: list[ev.Event], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]


def test_attachment_crypto() -> None:
    data = os.urandom(1000)
    enc = attachments.encrypt(data, key=bytes(range(64)), iv=bytes(16))
    assert attachments.decrypt(enc.blob, enc.key, enc.digest, enc.size) == data
    assert len(enc.blob) == 16 + 1024 + 16 + 32  # Padmé(1000) = 1024, then a PKCS#7 block
    tampered = bytearray(enc.blob)
    tampered[40] ^= 1
    with pytest.raises(attachments.AttachmentError, match="digest"):
        attachments.decrypt(bytes(tampered), enc.key, enc.digest, enc.size)
    import hashlib
    with pytest.raises(attachments.AttachmentError, match="MAC"):
        attachments.decrypt(bytes(tampered), enc.key, hashlib.sha256(tampered).digest(),
                            enc.size)
    with pytest.raises(attachments.AttachmentError, match="size"):
        attachments.decrypt(enc.blob, enc.key, enc.digest, 5000)


def test_attachments_edits_reactions_deletes(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            photo = os.urandom(700_000)
            uploaded: list[tuple[int, int]] = []
            pointer = await alice.upload_attachment(
                photo, file_name="photo.jpg", content_type="image/jpeg",
                progress=lambda done, total: uploaded.append((done, total)))
            assert uploaded[-1][0] == uploaded[-1][1] and len(uploaded) > 1
            sent = await alice.send_text("bob", "look", attachments=[pointer])
            message = of(await bob.receive(), ev.Message)[0]
            assert message.text == "look" and len(message.attachments) == 1
            info = message.attachments[0]
            assert (info.file_name, info.content_type, info.size) == \
                ("photo.jpg", "image/jpeg", len(photo))
            assert await bob.download(info) == photo

            await bob.react(alice.account_id, (alice.account_id, sent), "👍")
            await bob.send_text("alice", "nice", quote=(alice.account_id, sent))
            got = await alice.receive()
            assert of(got, ev.Reaction)[0].emoji == "👍"
            assert of(got, ev.Message)[0].quote == (alice.account_id, sent)
            assert alice.store.reactions(alice.account_id, sent) == {bob.account_id: "👍"}

            original = alice.store.find_sent(bob.account_id, sent)
            assert original is not None
            await alice.edit(bob.account_id, sent, "look at this")
            # A resend (Bob could not decrypt it, or reset the session) sends the edited
            # text, which the original would undo on his side (review of 44ea519).
            from cipherpost.client.proto.app_pb2 import Content
            resent = alice.store.find_sent(bob.account_id, sent)
            assert resent is not None and Content.FromString(resent).data.text == \
                "look at this"
            assert Content.FromString(original).data.text != "look at this"
            edited = of(await bob.receive(), ev.MessageEdited)
            assert edited == [ev.MessageEdited(alice.account_id, alice.account_id, sent,
                                               "look at this")]
            assert bob.history(alice.account_id)[0].text == "look at this"

            # Bob cannot edit or delete Alice's message: both are ignored.
            from cipherpost.client.proto.app_pb2 import DataMessage, MessageRef
            ref = MessageRef(author=alice.account_id, timestamp=sent)
            await bob.send_data(alice.account_id, DataMessage(text="forged", edit=ref))
            await bob.send_data(alice.account_id, DataMessage(delete=ref))
            got = await alice.receive()
            assert not of(got, ev.MessageEdited) and not of(got, ev.MessageDeleted)
            assert [h.text for h in alice.history(bob.account_id)] == ["look at this", "nice"]

            await alice.delete_for_everyone(bob.account_id, sent)
            assert alice.store.find_sent(bob.account_id, sent) is None  # never resent
            assert of(await bob.receive(), ev.MessageDeleted)
            assert [h.text for h in bob.history(alice.account_id)] == ["nice"]
            assert [h.text for h in alice.history(bob.account_id)] == ["nice"]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_receipts_typing_and_switches(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            sent = await alice.send_text("bob", "read me")
            await bob.receive()
            await alice.send_typing("bob")
            assert of(await bob.receive(), ev.Typing) == [ev.Typing(alice.account_id, 1, True)]
            await bob.mark_read(alice.account_id, [(alice.account_id, sent)])
            receipts = of(await alice.receive(), ev.Receipt)
            assert sorted((r.kind, r.timestamps) for r in receipts) == \
                [("delivery", (sent,)), ("read", (sent,))]
            # The user turns read receipts and typing indicators off.
            bob.options.read_receipts = False
            bob.options.typing_indicators = False
            second = await alice.send_text("bob", "again")
            await alice.send_typing("bob")
            assert not of(await bob.receive(), ev.Typing)
            await bob.mark_read(alice.account_id, [(alice.account_id, second)])
            await bob.send_typing("alice")
            got = await alice.receive()
            assert [r.kind for r in of(got, ev.Receipt)] == ["delivery"]
            assert not of(got, ev.Typing)
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_disappearing_messages(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            bob2 = await devices.link(bob, "bob laptop")
            await bob.receive()
            await alice.set_expire_timer("bob", 1)
            changes = of(await bob.receive(), ev.ExpireTimerChanged)
            assert changes == [ev.ExpireTimerChanged(alice.account_id, alice.account_id, 1)]
            sent = await alice.send_text("bob", "self-destructing")
            assert alice.store.find_sent(bob.account_id, sent) is not None
            message = of(await bob.receive(), ev.Message)[0]
            assert message.expire_timer == 1
            await bob2.receive()
            sealed = bob.store._db.execute("SELECT body FROM messages").fetchone()[0]
            await bob.mark_read(alice.account_id, [(alice.account_id, sent)])
            assert of(await bob2.receive(), ev.MessagesRead)   # read on another device
            await asyncio.sleep(1.2)
            assert bob.history(alice.account_id) == []
            assert bob2.history(alice.account_id) == []
            assert alice.history(bob.account_id) == []
            # nor can bob's resend request (a decryption error) bring it back from alice
            assert alice.store.find_sent(bob.account_id, sent) is None
            db = Path(bob.store._db.execute("PRAGMA database_list").fetchone()[2])
            on_disk = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
            assert sealed not in on_disk
            # Turning it off: later messages stay.
            await alice.set_expire_timer("bob", 0)
            await alice.send_text("bob", "stays")
            await bob.receive()
            await asyncio.sleep(0.1)
            assert [h.text for h in bob.history(alice.account_id)] == ["stays"]
        finally:
            await devices.close()

    asyncio.run(scenario())
