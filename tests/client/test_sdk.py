"""The SDK against a real relay: 1:1 messaging, receipts, safety numbers."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cipherpost.client import events as ev

from .conftest import Devices, ThreadedRelay


def messages(events: list[ev.Event]) -> list[ev.Message]:
    return [e for e in events if isinstance(e, ev.Message)]


def test_two_people_chat(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice = await devices.register("alice")
            bob = await devices.register("bob")
            t1 = await alice.send_text("bob", "hello bob")
            got = await bob.receive()
            assert [(m.author, m.text, m.timestamp) for m in messages(got)] == \
                [(alice.account_id, "hello bob", t1)]
            await bob.send_text("alice", "hi alice")
            got = await alice.receive()
            assert [m.text for m in messages(got)] == ["hi alice"]
            receipts = [e for e in got if isinstance(e, ev.Receipt)]
            assert receipts and receipts[0].timestamps == (t1,)
            assert alice.safety_number(bob.account_id).displayable == \
                bob.safety_number(alice.account_id).displayable
            assert [h.text for h in alice.history(bob.account_id)] == ["hello bob", "hi alice"]
            assert await bob.receive() != []  # bob gets alice's delivery receipt
            assert await bob.receive() == []
        finally:
            await devices.close()

    asyncio.run(scenario())
