"""Rate limits shared by relay processes through Redis (``redis_url``): one bucket for
all of them, the in-process bucket's semantics and Retry-After, and what happens when
Redis is down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cipherpost.server import Settings, create_app
from cipherpost.server.errors import ApiError
from cipherpost.server.ratelimit import TokenBuckets
from cipherpost.server.ratelimit_redis import RETRY, RedisLimits, bucket_key
from tests.support.redis import RedisServer

from .conftest import register
from .helpers import KeyMaker, b64


def _decisions(futures: list[asyncio.Future[None]]) -> list[float | None]:
    """None for an allowed take, the Retry-After (seconds) of a refused one."""
    out: list[float | None] = []
    for future in futures:
        exc = future.exception()
        if exc is None:
            out.append(None)
        else:
            assert isinstance(exc, ApiError) and exc.status == 429
            out.append(float(exc.headers["Retry-After"]))
    return out


def test_two_relay_apps_on_one_redis_spend_one_bucket(tmp_path: Path,
                                                       redis_server: RedisServer) -> None:
    """Two relays (their own databases, so that only Redis links them) with one client
    address: the registrations of both count against one bucket of 3, and the refusal's
    Retry-After is the in-process bucket's (1 token at 0.001/s: 1000 s)."""
    url = redis_server.url()

    def settings(name: str) -> Settings:
        return Settings(database_url=f"sqlite:///{tmp_path}/{name}.db",
                        attachment_dir=str(tmp_path / name), redis_url=url,
                        rate_register_per_ip="3/0.001")

    with TestClient(create_app(settings("one"))) as one, \
            TestClient(create_app(settings("two"))) as two:
        for client in (one, two, one):
            assert client.post("/v1/accounts", json=KeyMaker().device_body()).status_code \
                == 201
        for client in (two, one):
            refused = client.post("/v1/accounts", json=KeyMaker().device_body())
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "rate_limited"
            assert 990 <= int(refused.headers["retry-after"]) <= 1000
        assert 'cipherpost_rate_limited_total{limit="register"} 1.0' in one.get("/metrics").text


def test_the_redis_bucket_is_the_in_process_bucket(redis_server: RedisServer) -> None:
    """The same takes against Redis and against :class:`TokenBuckets`, with a
    refill fast enough to see: the same decisions and Retry-After; takes of one turn
    are decided in call order, keys and limits do not share buckets."""

    async def run() -> None:
        limits = RedisLimits(redis_server.url())
        try:
            fast = TokenBuckets("2/4")  # 2 tokens, one more every 0.25 s
            futures = [limits.take("a", "k", fast) for _ in range(3)]
            futures.append(limits.take("a", "other key", fast))
            futures.append(limits.take("b", "k", fast))
            order: list[int] = []
            for i, future in enumerate(futures):
                future.add_done_callback(lambda _f, i=i: order.append(i))
            await asyncio.gather(*futures, return_exceptions=True)
            assert order == [0, 1, 2, 3, 4]
            decisions = _decisions(futures)
            assert decisions[:2] == [None, None] and decisions[3:] == [None, None]
            assert decisions[2] == 1  # 0.25 s, rounded up to the header's 1 s
            await asyncio.sleep(0.3)  # one token back
            again = [limits.take("a", "k", fast) for _ in range(2)]
            await asyncio.gather(*again, return_exceptions=True)
            assert _decisions(again) == [None, 1]
            assert limits.local_decisions == 0
            # The bucket expires from Redis once it would be full again.
            ttl = await limits._redis.pttl(bucket_key("a", "k"))
            assert 0 < ttl <= 2 / 4 * 1000 + 1000
            # A bucket that never refills: 3600 s, like the in-process one.
            never = TokenBuckets("1/0")
            decided = [limits.take("n", "k", never) for _ in range(2)]
            await asyncio.gather(*decided, return_exceptions=True)
            assert _decisions(decided) == [None, 3600]
        finally:
            await limits.close()

    asyncio.run(run())


@pytest.fixture
def lost_redis() -> Iterator[str]:
    """The URL of a Redis server that has stopped."""
    server = RedisServer.start()
    url = server.url()
    server.stop()
    yield url


def test_redis_down_each_process_limits_with_its_own_buckets(
        lost_redis: str, caplog: pytest.LogCaptureFixture) -> None:
    """Redis unreachable: the relay neither stops answering (503) nor stops limiting
    (fail open); it decides with the process's own buckets, says so once in the log,
    and tries Redis again after RETRY seconds."""
    now = [1000.0]

    async def run() -> None:
        limits = RedisLimits(lost_redis, clock=lambda: now[0])
        try:
            buckets = TokenBuckets("2/0.001")
            with caplog.at_level(logging.WARNING, logger="cipherpost.server"):
                futures = [limits.take("recovery", "198.51.100.7", buckets) for _ in range(3)]
                await asyncio.gather(*futures, return_exceptions=True)
                assert _decisions(futures) == [None, None, 1000]
                assert limits.local_decisions == 3
                # Within RETRY seconds Redis is not asked again (no connection attempt
                # per request), and the buckets stay this process's.
                refused = limits.take("recovery", "198.51.100.7", buckets)
                await asyncio.gather(refused, return_exceptions=True)
                assert _decisions([refused]) == [1000]
                now[0] += RETRY + 1
                later = limits.take("recovery", "198.51.100.8", buckets)
                assert await later is None
            assert limits.local_decisions == 5
            warnings = [r.getMessage() for r in caplog.records
                        if "rate limits: Redis failed" in r.getMessage()]
            assert len(warnings) == 1, warnings
        finally:
            await limits.close()

    asyncio.run(run())


def test_a_relay_whose_redis_stops_still_limits(tmp_path: Path) -> None:
    """The relay app end to end: Redis stops under it, registration is still answered
    and still limited per client address, by the process's own bucket (which has not
    seen the registration that Redis counted: an outage gives each process's budget)."""
    server = RedisServer.start()
    try:
        settings = Settings(database_url=f"sqlite:///{tmp_path}/relay.db",
                            attachment_dir=str(tmp_path / "blobs"),
                            redis_url=server.url(), rate_register_per_ip="2/0.001")
        with TestClient(create_app(settings)) as client:
            assert client.post("/v1/accounts", json=KeyMaker().device_body()).status_code \
                == 201
            server.stop()
            for _ in range(2):
                assert client.post("/v1/accounts",
                                   json=KeyMaker().device_body()).status_code == 201
            refused = client.post("/v1/accounts", json=KeyMaker().device_body())
            assert refused.status_code == 429, refused.text
    finally:
        server.stop()



def test_websocket_sends_wait_for_redis_in_order_and_refusals_are_429(
        tmp_path: Path, redis_server: RedisServer) -> None:
    """Sends over the WebSocket wait for the shared bucket's decision without blocking
    the connection: they queue in the order sent, and those refused are answered 429
    in their ``sent`` frame (not 500), with nothing queued for them."""
    settings = Settings(database_url=f"sqlite:///{tmp_path}/relay.db",
                        attachment_dir=str(tmp_path / "blobs"), redis_url=redis_server.url(),
                        rate_messages_per_pair="20/0.001")
    with TestClient(create_app(settings)) as client:
        alice, bob = register(client), register(client)
        with client.websocket_connect("/v1/websocket", headers=dict(alice.headers)) as ws:
            for i in range(25):
                ws.send_json({"type": "send", "id": i, "account_id": bob.account_id,
                              "timestamp": i, "messages": [{
                                  "device_id": 1, "registration_id": bob.keys.registration_id,
                                  "type": 2, "content": b64(b"%d" % i)}]})
            answers = {}
            while len(answers) < 25:
                frame = ws.receive_json()
                assert frame["type"] == "sent", frame
                answers[frame["id"]] = frame
        assert [answers[i]["status"] for i in range(25)] == [200] * 20 + [429] * 5
        assert all(answers[i]["error"]["code"] == "rate_limited" for i in range(20, 25))
        queued = client.get("/v1/messages", headers=bob.headers).json()["messages"]
        assert [m["client_timestamp"] for m in queued] == list(range(20))


def test_a_redis_take_spends_its_cost(redis_server: RedisServer) -> None:
    """Byte budgets (the sealed per-recipient one, review R6) take many tokens at once:
    Redis spends the cost, and a refusal spends nothing and says when it would fit."""

    async def run() -> None:
        limits = RedisLimits(redis_server.url())
        try:
            bytes_ = TokenBuckets("1000/100")
            futures = [limits.take("b", "k", bytes_, 600), limits.take("b", "k", bytes_, 600),
                       limits.take("b", "k", bytes_, 400)]
            await asyncio.gather(*futures, return_exceptions=True)
            decisions = _decisions(futures)
            assert decisions[0] is None and decisions[2] is None
            assert decisions[1] == 2  # 200 missing at 100/s, rounded up: 2 s
            assert limits.local_decisions == 0
        finally:
            await limits.close()

    asyncio.run(run())
