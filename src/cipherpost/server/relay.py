"""The relay's shared state: settings, storage, live connections, limits, metrics, clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import ApiError
from .fanout import Fanout
from .fanout.local import LocalFanout
from .key_chain import KeyChain
from .metrics import Metrics
from .provisioning import Mailboxes
from .ratelimit import TokenBuckets
from .settings import Settings, sealed_byte_rate
from .storage.sql import Storage

if TYPE_CHECKING:  # Redis is needed only when configured
    from .ratelimit_redis import RedisLimits


@dataclass
class Relay:
    """Everything a request handler needs."""

    settings: Settings
    storage: Storage
    #: live connections of every relay process (see :mod:`.fanout`)
    hub: Fanout = field(default_factory=LocalFanout)
    #: the buckets of ``limits`` shared by every relay process (None: this process's own)
    shared_limits: RedisLimits | None = None
    metrics: Metrics = field(default_factory=Metrics)
    clock: Callable[[], float] = time.time
    limits: dict[str, TokenBuckets] = field(default_factory=dict)
    mailboxes: Mailboxes = field(default_factory=Mailboxes)
    #: The sealed-sender key chain (loaded when the app starts; see :mod:`.key_chain`).
    key_chain: KeyChain | None = None
    _seen_day: dict[tuple[str, int], int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.limits = {
            "register": TokenBuckets(s.rate_register_per_ip),
            "prekeys": TokenBuckets(s.rate_prekey_fetch_per_account),
            "messages": TokenBuckets(s.rate_messages_per_pair),
            "provisioning": TokenBuckets(s.rate_provisioning_per_ip),
            "provisioning_put": TokenBuckets(s.rate_provisioning_put_per_account),
            "provisioning_claim": TokenBuckets(s.rate_provisioning_claim),
            "provisioning_claim_ip": TokenBuckets(s.rate_provisioning_claim),
            "history_put": TokenBuckets(s.rate_history_put_per_account),
            "recovery": TokenBuckets(s.rate_recovery_per_ip),
            "sealed_recipient": TokenBuckets(s.rate_sealed_per_recipient),
            "sealed_ip": TokenBuckets(s.rate_sealed_per_ip),
            "sealed_recipient_bytes": TokenBuckets(sealed_byte_rate(s)),
        }
        self.mailboxes = Mailboxes(s.max_provisioning_mailboxes, s.provisioning_byte_budget)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def seen(self, account_id: str, device_id: int) -> None:
        """Note that a device authenticated: its ``last_seen`` is written at most once a
        day (idle devices are removed after ``settings.device_idle_days``)."""
        now = self.now_ms()
        day = now // 86_400_000
        key = (account_id, device_id)
        if self._seen_day.get(key) == day:
            return
        self._seen_day[key] = day
        if len(self._seen_day) > 1_000_000:
            self._seen_day.clear()
        await self.storage.touch_device(account_id, device_id, now)

    async def limit(self, name: str, key: str, cost: float = 1.0) -> None:
        """Spend ``cost`` tokens (one request, or bytes) of limit ``name`` for ``key``; a
        cost above the bucket's capacity spends a full bucket.

        Raises:
            ApiError: 429 with Retry-After when its bucket is empty.
        """
        pending = self.limit_nowait(name, key, cost)
        if pending is not None:
            await pending

    def limit_nowait(self, name: str, key: str,
                     cost: float = 1.0) -> asyncio.Future[None] | None:
        """:meth:`limit` for a caller that must not wait: None when allowed at once, or
        (limits shared through Redis) a future of the decision. Decisions are made in
        call order: a later call's future never resolves before an earlier one's.

        Raises:
            ApiError: 429 with Retry-After, refused at once (the future raises it when
                refused later).
        """
        buckets = self.limits[name]
        cost = min(cost, buckets.capacity)  # else it could never be spent
        if self.shared_limits is None:
            try:
                buckets.take(key, cost)
            except ApiError:
                self.metrics.rate_limited.labels(name).inc()
                raise
            return None
        pending = self.shared_limits.take(name, key, buckets, cost)
        counter = self.metrics.rate_limited.labels(name)
        pending.add_done_callback(
            lambda f: None if f.cancelled() or f.exception() is None else counter.inc())
        return pending
