"""Rate limits shared by every relay process through Redis.

Theory of operation. Each bucket is a Redis hash (``n``: tokens, ``t``: when ``n`` was
true, in seconds of the Redis server's clock, so that the processes' clocks do not
matter) that a Lua script reads, refills, spends and writes in one atomic step: the
same token bucket as :class:`.ratelimit.TokenBuckets`, with the same Retry-After. A
bucket expires once it would be full again (an absent bucket is a full one), so Redis
holds only the buckets in use. Keys hold a hash of the bucket's key (client addresses
and account ids have no business in Redis, and the key's length stays fixed).

The takes of one event-loop turn go to Redis as one script call, and they are decided,
and their futures resolved, in the order they were made: a device's sends stay in order
although each waits for Redis.

If Redis cannot be reached (or does not answer within :data:`TIMEOUT`), the relay does
not stop serving and does not stop limiting: each process decides with its own in-memory
buckets (the ones it uses without Redis) for :data:`RETRY` seconds, then tries Redis
again, and logs a warning when that starts and when it ends. During an outage a client
can thus get as many tokens as there are processes, no more. Failing closed (503) would
make an outage of Redis, which keeps nothing the relay needs to be correct (the fan-out
works without it, see :mod:`.fanout.redis_pubsub`), an outage of messaging; failing
open would let guesses of link codes and recovery passphrases go unlimited meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .errors import rate_limited
from .ratelimit import NO_REFILL_WAIT, TokenBuckets

log = logging.getLogger("cipherpost.server")

PREFIX = "cipherpost:rl:"
#: Seconds a script call may take before the takes are decided in this process.
TIMEOUT = 1.0
#: Seconds of deciding in this process after Redis failed, before trying it again.
RETRY = 5.0
#: Takes in one script call at most.
BATCH = 500
#: Milliseconds a bucket that never refills is kept.
KEEP_EMPTY_MS = 86_400_000

# KEYS[i]: a bucket. ARGV[3i-2], ARGV[3i-1], ARGV[3i]: its capacity, its refill per
# second, and the cost of the i-th take. Returns per take "" (allowed, spent) or the
# seconds to wait (refused, nothing spent). The same key may come several times.
SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local out = {}
for i, key in ipairs(KEYS) do
  local capacity = tonumber(ARGV[3 * i - 2])
  local refill = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local state = redis.call('HMGET', key, 'n', 't')
  local tokens = capacity
  if state[1] and state[2] then
    local elapsed = math.max(0, now - tonumber(state[2]))
    tokens = math.min(capacity, tonumber(state[1]) + elapsed * refill)
  end
  local wait = ''
  if tokens < cost then
    if refill > 0 then
      wait = string.format('%.6f', (cost - tokens) / refill)
    else
      wait = 'NO_REFILL_WAIT'
    end
  else
    tokens = tokens - cost
  end
  redis.call('HSET', key, 'n', string.format('%.17g', tokens),
             't', string.format('%.17g', now))
  if refill > 0 then
    redis.call('PEXPIRE', key, math.ceil((capacity - tokens) / refill * 1000) + 1000)
  else
    redis.call('PEXPIRE', key, KEEP_EMPTY_MS)
  end
  out[i] = wait
end
return out
""".replace("NO_REFILL_WAIT", repr(NO_REFILL_WAIT)).replace("KEEP_EMPTY_MS", str(KEEP_EMPTY_MS))

_Take = tuple[str, str, TokenBuckets, float, "asyncio.Future[None]"]


def bucket_key(name: str, key: str) -> str:
    """The Redis key of limit ``name``'s bucket for ``key``."""
    return PREFIX + name + ":" + hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


class RedisLimits:
    """Token buckets of every relay process sharing one Redis server."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._redis = Redis.from_url(url, socket_timeout=TIMEOUT,
                                     socket_connect_timeout=TIMEOUT,
                                     retry=Retry(NoBackoff(), 1))
        self._script = self._redis.register_script(SCRIPT)
        self._clock = clock
        self._pending: list[_Take] = []
        self._flusher: asyncio.Task[None] | None = None
        #: when to try Redis again after it failed (this process's monotonic clock)
        self._local_until = 0.0
        self._failing = False
        #: takes decided in this process because Redis failed (metrics and tests)
        self.local_decisions = 0

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self._redis.aclose()

    def take(self, name: str, key: str, buckets: TokenBuckets,
             cost: float = 1.0) -> asyncio.Future[None]:
        """Spend ``cost`` tokens of limit ``name`` (capacity and refill of ``buckets``,
        which also decide when Redis fails) for ``key``. The future resolves to None, or
        raises :class:`.errors.ApiError` 429 with Retry-After; futures resolve in call
        order."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((name, key, buckets, cost, future))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        return future

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(0)  # the rest of this event-loop turn's takes
            while self._pending:
                batch = self._pending[:BATCH]
                del self._pending[:BATCH]
                waits = await self._decide(batch)
                for (_name, _key, _buckets, _cost, future), wait in zip(batch, waits,
                                                                       strict=True):
                    if future.done():  # its request was cancelled
                        continue
                    if wait is None:
                        future.set_result(None)
                    else:
                        future.set_exception(rate_limited(wait))
        finally:
            self._flusher = None

    async def _decide(self, batch: list[_Take]) -> list[float | None]:
        if self._clock() >= self._local_until:
            keys: list[str] = []
            args: list[float] = []
            for name, key, buckets, cost, _future in batch:
                keys.append(bucket_key(name, key))
                args += (buckets.capacity, buckets.refill, cost)
            try:
                answer = await asyncio.wait_for(self._script(keys=keys, args=args),
                                                TIMEOUT * 2)
            except (RedisError, OSError, TimeoutError) as exc:
                self._local_until = self._clock() + RETRY
                if not self._failing:
                    self._failing = True
                    log.warning("rate limits: Redis failed (%s); each relay process uses "
                                "its own buckets until it answers again", type(exc).__name__)
            else:
                if self._failing:
                    self._failing = False
                    log.warning("rate limits: shared through Redis again")
                return [float(w) if w else None for w in answer]
        self.local_decisions += len(batch)
        return [buckets.try_take(key, cost) for _name, key, buckets, cost, _future in batch]
