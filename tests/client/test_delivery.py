"""Loss, reordering, duplicates and decryption errors: every message arrives exactly once,
in sender-timestamp order; undecryptable ones are re-sent, never dropped in silence."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from cipherpost.client import events as ev
from cipherpost.protocol import ProtocolAddress

from .conftest import Devices, ThreadedRelay


def message_texts(events: list[ev.Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, ev.Message)]


def test_undecryptable_message_is_resent(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            await alice.send_text("bob", "first")
            assert message_texts(await bob.receive()) == ["first"]
            await alice.receive()
            # Bob loses his session (a restored backup, a bug): Alice's next message
            # cannot be decrypted.
            bob.store.delete_session(ProtocolAddress(alice.account_id, 1))
            sent = await alice.send_text("bob", "second")
            got = await bob.receive()
            failed = [e for e in got if isinstance(e, ev.DecryptionFailed)]
            assert failed == [ev.DecryptionFailed(alice.account_id, 1, sent, "no_session")]
            assert message_texts(got) == []
            # Alice reads the decryption-error receipt on a fresh session and resends.
            await alice.receive()
            got = await bob.receive()
            assert message_texts(got) == ["second"]
            assert [h.text for h in bob.history(alice.account_id)] == ["first", "second"]
            # And the repaired session keeps working both ways.
            await bob.send_text("alice", "third")
            assert message_texts(await alice.receive()) == ["third"]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_out_of_order_and_duplicated_delivery(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            bob.options.delivery_receipts = False
            sent = [await alice.send_text("bob", f"m{i}") for i in range(8)]
            envelopes, _ = await bob.api.fetch()
            assert len(envelopes) == 8
            shuffled = envelopes + random.Random(7).sample(envelopes, 5)
            random.Random(3).shuffle(shuffled)
            seen: list[int] = []
            for envelope in shuffled:
                events, _ = bob.inbox.process(envelope)
                seen += [e.timestamp for e in events if isinstance(e, ev.Message)]
            assert sorted(seen) == sent            # each exactly once
            # Not acknowledged yet (as after a crash): the relay redelivers everything
            # and nothing shows twice.
            assert message_texts(await bob.receive()) == []
            assert [h.text for h in bob.history(alice.account_id)] == \
                [f"m{i}" for i in range(8)]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_websocket_delivery(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            received: list[str] = []

            async def listen() -> None:
                async for event in bob.listen():
                    if isinstance(event, ev.Message):
                        received.append(event.text)
                        if len(received) == 3:
                            return

            listener = asyncio.create_task(listen())
            for text in ("a", "b", "c"):
                await alice.send_text("bob", text)
            await asyncio.wait_for(listener, timeout=30)
            assert received == ["a", "b", "c"]
            for _ in range(50):  # acknowledgements are asynchronous
                if (await bob.api.fetch())[0] == []:
                    break
                await asyncio.sleep(0.05)
            assert (await bob.api.fetch())[0] == []
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_sending_inside_the_listen_loop_goes_over_the_socket(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            await alice.send_text("bob", "ping")

            async def no_http(*args: object, **kwargs: object) -> int:
                raise AssertionError("sent over HTTP while a socket was open")

            bob.api.send = no_http  # type: ignore[method-assign]

            async def answer() -> None:
                async for event in bob.listen():
                    if isinstance(event, ev.Message):
                        await bob.send_text(event.author, "pong")   # while frames arrive
                        return

            await asyncio.wait_for(answer(), timeout=30)
            got = await alice.receive()
            assert message_texts(got) == ["pong"]
            assert any(isinstance(e, ev.Receipt) for e in got)   # bob's receipt, also by socket
        finally:
            await devices.close()

    asyncio.run(scenario())
