"""A counter for the event loop's thread (compiled with the per-message modules, so that
counting a message is a plain addition; :mod:`.metrics` exports it to Prometheus)."""

from __future__ import annotations


class Tally:
    """A counter for the event loop's thread alone, exported as a Prometheus counter.

    prometheus_client's ``Counter`` takes a lock on every increment, for threads; the
    counts of every message are made on the loop, where a plain addition is enough."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount
