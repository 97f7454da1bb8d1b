from __future__ import annotations
import asyncio
from pathlib import Path
from tests.client.conftest import Devices, ThreadedRelay, relay  # noqa: F401
from cipherpost.client import events as ev, RelayUnavailable


def texts(events):
    return [e.text for e in events if isinstance(e, ev.Message)]


def test_ack_failure_loses_events(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario():
        d = Devices(tmp_path, relay)
        try:
            alice, bob = await d.register("alice"), await d.register("bob")
            await bob.send_text("alice", "important")
            real_ack = alice.api.ack
            async def flaky(ids):
                alice.api.ack = real_ack
                raise RelayUnavailable("network blip")
            alice.api.ack = flaky
            try:
                await alice.receive()
            except RelayUnavailable:
                print("first receive raised (network blip on ack)")
            print("second receive texts:", texts(await alice.receive()))
            print("in history:", [h.text for h in alice.history(bob.account_id)])
            print("delivery receipts bob got:", [e for e in await bob.receive() if isinstance(e, ev.Receipt)])
        finally:
            await d.close()
    asyncio.run(scenario())


def test_failed_send_in_history(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario():
        d = Devices(tmp_path, relay)
        try:
            alice, bob = await d.register("alice"), await d.register("bob")
            await alice.send_text("bob", "hi"); await bob.receive()
            await bob.reset_identity()
            try:
                await alice.send_text("bob", "never delivered")
            except Exception as exc:  # noqa: BLE001
                print("send raised", type(exc).__name__)
            print("alice history:", [h.text for h in alice.history(bob.account_id)])
        finally:
            await d.close()
    asyncio.run(scenario())
