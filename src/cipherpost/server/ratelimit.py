"""Token-bucket rate limits, in this process's memory (the default; with ``redis_url`` set
they are shared by every relay process through Redis: :mod:`.ratelimit_redis`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .errors import rate_limited
from .settings import Settings, parse_rate

if TYPE_CHECKING:  # Redis is needed only when configured
    from .ratelimit_redis import RedisLimits

#: Seconds a refused request is told to wait when its bucket never refills.
NO_REFILL_WAIT = 3600.0


class TokenBuckets:
    """Buckets keyed by string; the least recently used are forgotten beyond ``max_keys``."""

    def __init__(self, spec: str, *, max_keys: int = 100_000) -> None:
        self.capacity, self.refill = parse_rate(spec)
        #: (tokens, time) by key, least recently used first (a plain dict keeps insertion
        #: order, and each use takes its key out and puts it back at the end)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._max_keys = max_keys

    def take(self, key: str, cost: float = 1.0, now: float | None = None) -> None:
        """Spend ``cost`` tokens of ``key``'s bucket.

        Raises:
            ApiError: 429 with Retry-After when the bucket is empty.
        """
        wait = self.try_take(key, cost, now)
        if wait is not None:
            raise rate_limited(wait)

    def try_take(self, key: str, cost: float = 1.0, now: float | None = None) -> float | None:
        """Spend ``cost`` tokens of ``key``'s bucket: None, or (the bucket is empty, nothing
        is spent) the seconds until it holds them."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.refill)
        if tokens < cost:
            self._buckets[key] = (tokens, now)
            return (cost - tokens) / self.refill if self.refill > 0 else NO_REFILL_WAIT
        self._buckets[key] = (tokens - cost, now)
        while len(self._buckets) > self._max_keys:
            del self._buckets[next(iter(self._buckets))]
        return None

    def remaining(self, key: str, now: float | None = None) -> float:
        """Tokens ``key`` has now in this process (the capacity when it was never used
        or is forgotten); changes nothing."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - last) * self.refill)


def create_shared_limits(settings: Settings) -> RedisLimits | None:
    """Buckets shared through Redis when ``settings.redis_url`` is set."""
    if not settings.redis_url:
        return None
    from .ratelimit_redis import RedisLimits
    return RedisLimits(settings.redis_url)
