"""Token-bucket rate limits (in memory, per process)."""

from __future__ import annotations

import time
from collections import OrderedDict

from .errors import rate_limited
from .settings import parse_rate


class TokenBuckets:
    """Buckets keyed by string; the least recently used are forgotten beyond ``max_keys``."""

    def __init__(self, spec: str, *, max_keys: int = 100_000) -> None:
        self.capacity, self.refill = parse_rate(spec)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max_keys = max_keys

    def take(self, key: str, cost: float = 1.0, now: float | None = None) -> None:
        """Spend ``cost`` tokens of ``key``'s bucket.

        Raises:
            ApiError: 429 with Retry-After when the bucket is empty.
        """
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.refill)
        if tokens < cost:
            self._buckets[key] = (tokens, now)
            wait = (cost - tokens) / self.refill if self.refill > 0 else 3600.0
            raise rate_limited(wait)
        self._buckets[key] = (tokens - cost, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
