"""The relay's Prometheus metrics (served at ``/metrics``)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from .tally import Tally


class _Tallies(Collector):
    """The :class:`Tally` counters of a registry, read when it is scraped."""

    def __init__(self) -> None:
        self.tallies: list[tuple[str, str, Tally]] = []

    def add(self, name: str, documentation: str) -> Tally:
        tally = Tally()
        self.tallies.append((name, documentation, tally))
        return tally

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, documentation, tally in self.tallies:
            yield CounterMetricFamily(name, documentation, value=tally.value)


class Metrics:
    """Prometheus metrics of one app (a registry per app keeps tests independent)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        tallies = _Tallies()
        self.messages_queued = tallies.add("cipherpost_messages_queued", "Ciphertexts accepted")
        self.messages_delivered = tallies.add("cipherpost_messages_acknowledged",
                                              "Ciphertexts acknowledged by their device")
        self.registry.register(tallies)
        self.messages_expired = Counter("cipherpost_messages_expired",
                                        "Ciphertexts expired unacknowledged",
                                        registry=self.registry)
        self.requests = Counter("cipherpost_http_requests", "HTTP requests",
                                ["route", "status"], registry=self.registry)
        self.websockets = Gauge("cipherpost_websocket_connections", "Live WebSockets",
                                registry=self.registry)
        self.rate_limited = Counter("cipherpost_rate_limited", "Requests refused with 429",
                                    ["limit"], registry=self.registry)
