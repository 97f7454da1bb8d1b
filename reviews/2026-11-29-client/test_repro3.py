from __future__ import annotations
import asyncio
from pathlib import Path
from tests.client.conftest import Devices, ThreadedRelay, relay  # noqa: F401
from cipherpost.client import events as ev


def texts(events):
    return [e.text for e in events if isinstance(e, ev.Message)]


def test_reset_with_offline_device(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario():
        d = Devices(tmp_path, relay)
        try:
            alice = await d.register("alice")
            alice2 = await d.link(alice, "laptop")
            bob = await d.register("bob")
            await alice.receive()
            await bob.send_text("alice", "hi"); await alice.receive(); await alice2.receive()
            await alice.reset_identity()
            # alice2 is offline (has not received the reset yet)
            bob.trust_identity(alice.account_id) if False else None
            for attempt in range(2):
                try:
                    await bob.send_text("alice", "hello?")
                    print("bob send ok")
                except Exception as exc:  # noqa: BLE001
                    print("bob send raised", type(exc).__name__, exc)
                    if type(exc).__name__ == "IdentityNotTrusted":
                        bob.trust_identity(alice.account_id)
            print("alice got", texts(await alice.receive()))
        finally:
            await d.close()
    asyncio.run(scenario())
