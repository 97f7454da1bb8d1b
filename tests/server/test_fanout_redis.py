"""The Redis fan-out in process: two ``RedisFanout`` objects (two relay processes, as
Redis sees them) on a real Redis, with stand-in connections. What the WebSocket tests
cannot easily show: a Redis restarted or gone silent is reconnected to, every connection
then reads its queue, and publishes meanwhile fail without an error reaching a sender."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable, Iterator

import hiredis
import pytest

from cipherpost.server.fanout import redis_pubsub
from cipherpost.server.fanout.redis_pubsub import RedisFanout
from cipherpost.server.fanout.resp import RespConnection, RespError, encode
from cipherpost.server.storage.models import Envelope
from tests.support.redis import RedisServer, RedisUnavailable

ACCOUNT = "00000000-0000-4000-8000-0000000000f1"


class Connection:
    """A stand-in for a device's WebSocket: what the fan-out did to it."""

    def __init__(self) -> None:
        self.offers: list[Envelope] = []
        self.kicks: list[int] = []
        self.resyncs = 0

    def offer(self, envelope: Envelope) -> None:
        self.offers.append(envelope)

    def kick(self, code: int) -> None:
        self.kicks.append(code)

    def resync(self) -> None:
        self.resyncs += 1


def _envelope(seq: int) -> Envelope:
    return Envelope(seq, f"id-{seq}", ACCOUNT, 1, 1, b"c" * seq, 5, 6)


async def _until(check: Callable[[], bool], seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.01)


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own (it is restarted and stopped)."""
    try:
        server = RedisServer.start()
    except RedisUnavailable as exc:
        pytest.fail(f"Redis could not be started: {exc}", pytrace=False)
    yield server
    if server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


def _run(url: str, body: Callable[[RedisFanout, RedisFanout], Awaitable[None]]) -> None:
    async def run() -> None:
        one, two = RedisFanout(url), RedisFanout(url)
        await one.start()
        await two.start()
        try:
            await body(one, two)
        finally:
            await one.close()
            await two.close()

    asyncio.run(run())


def test_resp_commands_are_what_hiredis_reads_back() -> None:
    reader = hiredis.Reader()
    for command in ([b"PUBLISH", b"ch", b"\r\n\x00" * 100], [b"PING"], [b""]):
        reader.feed(encode(command))
        assert reader.gets() == command


def test_a_message_goes_to_the_process_holding_the_device_once(
        redis_server: RedisServer) -> None:
    async def body(one: RedisFanout, two: RedisFanout) -> None:
        held = Connection()
        await one.register(ACCOUNT, 1, held)
        two.deliver(ACCOUNT, 1, _envelope(1))  # committed by the other process
        one.deliver(ACCOUNT, 1, _envelope(2))  # committed here: offered here only
        await _until(lambda: len(held.offers) == 2)
        await asyncio.sleep(0.2)  # nothing more comes (one's own publish is skipped)
        # 2 at once (in process), 1 through Redis: the connection orders them by seq.
        assert sorted(held.offers, key=lambda e: e.seq) == [_envelope(1), _envelope(2)]
        # The device connects to the other process: the older connection is closed.
        moved = Connection()
        await two.register(ACCOUNT, 1, moved)
        await _until(lambda: held.kicks == [4409])
        one.unregister(ACCOUNT, 1, held)
        one.deliver(ACCOUNT, 1, _envelope(3))
        await _until(lambda: moved.offers == [_envelope(3)])
        one.disconnect(ACCOUNT, 1, 4401)  # its credentials died
        await _until(lambda: moved.kicks == [4401])
        assert one.lost_publishes == two.lost_publishes == 0

    _run(redis_server.url(), body)


def test_after_redis_restarts_the_subscription_comes_back_and_queues_are_read(
        private_redis: RedisServer) -> None:
    async def body(one: RedisFanout, two: RedisFanout) -> None:
        held = Connection()
        await one.register(ACCOUNT, 1, held)
        await asyncio.get_running_loop().run_in_executor(None, private_redis.restart)
        two.deliver(ACCOUNT, 1, _envelope(1))  # may go out before two reconnects ...
        await _until(lambda: held.resyncs == 1)  # ... so one's connections read the queue
        await _until(lambda: one.reconnections >= 1)
        two.deliver(ACCOUNT, 1, _envelope(2))
        await _until(lambda: _envelope(2) in held.offers)

    _run(private_redis.url(), body)


def test_a_silent_redis_is_noticed_and_publishes_fail_quietly(
        private_redis: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_pubsub, "HEALTH_CHECK", 0.3)
    monkeypatch.setattr(redis_pubsub, "TIMEOUT", 0.5)

    async def body(one: RedisFanout, two: RedisFanout) -> None:
        held = Connection()
        await one.register(ACCOUNT, 1, held)
        os.kill(private_redis.process.pid, signal.SIGSTOP)  # up, but answering nothing
        try:
            two.deliver(ACCOUNT, 1, _envelope(1))
            await _until(lambda: two.lost_publishes == 1)
            await asyncio.sleep(1.5)  # one's PING went unanswered: it is reconnecting
            assert held.resyncs == 0
        finally:
            os.kill(private_redis.process.pid, signal.SIGCONT)
        await _until(lambda: held.resyncs >= 1)
        two.deliver(ACCOUNT, 1, _envelope(2))
        await _until(lambda: _envelope(2) in held.offers)

    _run(private_redis.url(), body)


def test_a_password_is_sent_and_a_wrong_one_is_a_clear_error() -> None:
    try:
        server = RedisServer.start(extra=("--requirepass", "s3cret"))
    except RedisUnavailable as exc:
        pytest.fail(f"Redis could not be started: {exc}", pytrace=False)
    try:
        async def run() -> None:
            good = await RespConnection.open(f"redis://:s3cret@127.0.0.1:{server.port}", 5)
            good.send([(b"PING",)])
            assert await good.replies(1) == [b"PONG"]
            good.close()
            with pytest.raises(RespError, match="AUTH"):
                await RespConnection.open(f"redis://:wrong@127.0.0.1:{server.port}", 5)
            fanout = RedisFanout(f"redis://:s3cret@127.0.0.1:{server.port}/0")
            await fanout.start()
            held = Connection()
            await fanout.register(ACCOUNT, 2, held)
            await fanout.close()

        asyncio.run(run())
    finally:
        server.stop()
