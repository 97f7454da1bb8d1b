"""A connection's delivery when messages are offered out of order, as several relay
processes (through the fan-out) offer them: nothing is skipped, nothing is sent twice."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from cipherpost.server.api.websocket import Session
from cipherpost.server.auth import DeviceIdentity
from cipherpost.server.relay import Relay
from cipherpost.server.settings import Settings
from cipherpost.server.storage.models import Envelope


class _Queue:
    """The device's queue as the database holds it."""

    def __init__(self) -> None:
        self.rows: list[Envelope] = []
        self.reads = 0

    async def fetch(self, _account: str, _device: int, after: int,
                    limit: int) -> list[Envelope]:
        self.reads += 1
        await asyncio.sleep(0)
        return [e for e in self.rows if e.seq > after][:limit]


def _envelope(seq: int) -> Envelope:
    return Envelope(seq, f"guid-{seq}", None, None, 2, b"%d" % seq, 0, 0)


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_an_offer_past_a_gap_reads_the_queue_instead_of_skipping() -> None:
    async def run() -> list[str]:
        queue = _Queue()  # the session reads its queue alone
        relay = Relay(Settings(), queue)  # type: ignore[arg-type]
        pushed: list[str] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.send":
                pushed.append(orjson.loads(message["text"])["envelope"]["id"])

        session = Session(relay, DeviceIdentity("a", 1), send, batch=False)  # type: ignore[arg-type]
        session.catch_up()  # connected: the queue is empty
        await _settle()
        assert not session.behind
        # Relay process 2 commits message 1, then this process commits message 2 and
        # offers it at once; process 2's offer of message 1 comes through the fan-out
        # after it.
        queue.rows += [_envelope(1), _envelope(2)]
        session.offer(_envelope(2))
        await _settle()
        session.offer(_envelope(1))
        session.offer(_envelope(2))
        await _settle()
        queue.rows.append(_envelope(3))
        session.offer(_envelope(3))  # the next one: pushed from memory
        reads = queue.reads
        await _settle()
        assert queue.reads == reads
        return pushed

    assert asyncio.run(run()) == ["guid-1", "guid-2", "guid-3"]
