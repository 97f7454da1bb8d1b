"""The SDK's socket under ``cipherpost.batch.2`` (docs/websocket.md): ``messages`` frames
read in order, acks held for the next ``send`` frame, sent on their own after ACK_DELAY
or at ACK_HOLD ids, and in ``ack`` frames at once when the relay is older."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cipherpost.client import socket as socket_module
from cipherpost.client.api import MalformedEnvelope
from cipherpost.client.socket import RelaySocket, SocketLost

from .test_relay_input import GOOD


class FakeRelay:
    """A connection whose relay echoed ``subprotocol``, answers every ``send`` with 200,
    and records the frames written to it."""

    def __init__(self, subprotocol: str | None, frames: tuple[str, ...] = ()) -> None:
        self.subprotocol = subprotocol
        self.written: list[dict[str, Any]] = []
        self._in: asyncio.Queue[str | None] = asyncio.Queue()
        for frame in frames:
            self._in.put_nowait(frame)

    def __aiter__(self) -> AsyncIterator[str]:
        return self._each()

    async def _each(self) -> AsyncIterator[str]:
        while (frame := await self._in.get()) is not None:
            yield frame

    async def send(self, text: str) -> None:
        frame = json.loads(text)
        self.written.append(frame)
        if frame["type"] == "send":
            self._in.put_nowait(json.dumps({"type": "sent", "id": frame["id"],
                                            "status": 200, "queued": 1}))

    def end(self) -> None:
        self._in.put_nowait(None)


def _envelope(n: int) -> dict[str, Any]:
    return {**GOOD, "id": f"0f8e7c1e-2f36-4a44-9a4e-6c0ed3f5d1{n:02x}"}


def test_acks_ride_on_the_next_send_under_batch_2() -> None:
    async def scenario() -> None:
        relay = FakeRelay("cipherpost.batch.2")
        sock = RelaySocket(relay)
        await sock.ack(["a"])
        await sock.ack(["b", "c"])
        assert relay.written == []  # held
        assert await sock.send("bob", 5, []) == 1
        assert relay.written == [{"type": "send", "id": 1, "account_id": "bob",
                                  "timestamp": 5, "messages": [], "ack": ["a", "b", "c"]}]
        assert await sock.send("bob", 6, []) == 1
        assert "ack" not in relay.written[1]  # nothing held any more
        relay.end()
        await sock.close()
        assert len(relay.written) == 2
    asyncio.run(scenario())


def test_held_acks_go_alone_after_the_delay_at_the_cap_and_at_close(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket_module, "ACK_DELAY", 0.05)

    async def scenario() -> None:
        relay = FakeRelay("cipherpost.batch.2")
        sock = RelaySocket(relay)
        await sock.ack(["a"])
        await asyncio.sleep(0.02)
        await sock.ack(["b"])
        assert relay.written == []
        await asyncio.sleep(0.1)  # the delay counts from the first held ack
        assert relay.written == [{"type": "ack", "ids": ["a", "b"]}]
        ids = [str(i) for i in range(socket_module.ACK_HOLD)]
        for i in ids:
            await sock.ack([i])
        assert relay.written[1:] == [{"type": "ack", "ids": ids}]  # at the cap, at once
        await sock.ack(["last"])
        relay.end()
        await sock.close()  # what is held goes before closing
        assert relay.written[2:] == [{"type": "ack", "ids": ["last"]}]
        await asyncio.sleep(0.1)
        assert len(relay.written) == 3  # the timer was stopped
    asyncio.run(scenario())


@pytest.mark.parametrize("subprotocol", [None, "cipherpost.batch"])
def test_an_older_relay_gets_every_ack_in_an_ack_frame_at_once(subprotocol: str | None) -> None:
    async def scenario() -> None:
        relay = FakeRelay(subprotocol)
        sock = RelaySocket(relay)
        await sock.ack(["a"])
        assert relay.written == [{"type": "ack", "ids": ["a"]}]
        await sock.send("bob", 5, [])
        assert "ack" not in relay.written[1]
        relay.end()
        await sock.close()
    asyncio.run(scenario())


def test_messages_frames_are_read_in_order_and_a_malformed_one_ends_the_connection() -> None:
    async def scenario() -> None:
        relay = FakeRelay("cipherpost.batch.2", (
            json.dumps({"type": "messages", "envelopes": [_envelope(1), _envelope(2)]}),
            json.dumps({"type": "message", "envelope": _envelope(3)}),
            json.dumps({"type": "messages", "envelopes": [_envelope(4), {**GOOD, "type": "x"}]}),
            json.dumps({"type": "messages", "envelopes": [_envelope(5)]})))
        sock = RelaySocket(relay)
        assert [(await sock.next_envelope()).id for _ in range(3)] == \
            [_envelope(n)["id"] for n in (1, 2, 3)]
        with pytest.raises(SocketLost):  # none of the malformed frame's envelopes
            await sock.next_envelope()
        assert isinstance(sock.error, MalformedEnvelope)
        await sock.close()
    asyncio.run(scenario())


def test_a_messages_frame_without_a_list_ends_the_connection() -> None:
    async def scenario() -> None:
        sock = RelaySocket(FakeRelay("cipherpost.batch", (
            json.dumps({"type": "messages", "envelopes": {"0": GOOD}}),)))
        with pytest.raises(SocketLost):
            await sock.next_envelope()
        assert isinstance(sock.error, MalformedEnvelope)
        await sock.close()
    asyncio.run(scenario())


def test_a_failed_write_of_held_acks_is_not_an_unretrieved_task_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The delayed ack write runs in a task nobody awaits: a transport error there (not
    only a closed connection) must end quietly, the acks then come again as redeliveries."""
    monkeypatch.setattr(socket_module, "ACK_DELAY", 0.01)
    unretrieved: list[dict[str, Any]] = []

    class BrokenPipe(FakeRelay):
        async def send(self, text: str) -> None:
            raise OSError("broken pipe")

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, context: unretrieved.append(context))
        relay = BrokenPipe("cipherpost.batch.2")
        sock = RelaySocket(relay)
        await sock.ack(["a"])
        timer = sock._ack_timer
        assert timer is not None
        await asyncio.wait_for(asyncio.shield(timer), 1)
        assert timer.exception() is None
        relay.end()
        await sock.close()
    asyncio.run(scenario())
    gc.collect()
    assert unretrieved == []
