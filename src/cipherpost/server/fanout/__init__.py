"""Fan-out: handing a just-committed message to its device's live connection, wherever
that connection is.

One relay process needs nothing but a dictionary (:class:`.local.LocalFanout`, the
default). Several processes behind one address share a Redis server
(:class:`.redis.RedisFanout`, when ``redis_url`` is set): each message is published on its
device's channel, and the process holding that device's WebSocket is subscribed to it.

What a fan-out may do and what the connection makes of it: offers may come late, twice,
or in another order than the messages committed (two processes publish independently),
and a lost Redis connection may lose some. None of that loses a message, because the
message is in the database first and a connection reads its queue whenever an offer is
not the next one it expects (``Session.offer``), or when told that offers may have been
lost (``Subscriber.resync``).
"""

from __future__ import annotations

from typing import Protocol

from ..settings import Settings
from ..storage.models import Envelope


class Subscriber(Protocol):
    """A live connection as the fan-out sees it."""

    def offer(self, envelope: Envelope) -> None:
        """A message for this device was committed."""

    def kick(self, code: int) -> None:
        """Close the connection with ``code``."""

    def resync(self) -> None:
        """Offers may have been lost: read the queue from the database."""


class Fanout(Protocol):
    """Live connections of every relay process, keyed by (account id, device id)."""

    async def start(self) -> None:
        """Connect (called once, when the app starts)."""

    async def close(self) -> None:
        """Disconnect (when the app stops)."""

    async def register(self, account_id: str, device_id: int, subscriber: Subscriber) -> None:
        """Register a new connection, displacing any older one of the same device (in
        any process: it is kicked with 4409). Returns once every message committed from
        now on will be offered to ``subscriber``: the caller reads the queue after this."""

    def unregister(self, account_id: str, device_id: int, subscriber: Subscriber) -> None:
        """Forget ``subscriber`` if it is still the device's current connection here."""

    def deliver(self, account_id: str, device_id: int, envelope: Envelope) -> None:
        """Offer a just-committed message to the device's connection, wherever it is."""

    def disconnect(self, account_id: str, device_id: int, code: int) -> None:
        """Close the device's connection, wherever it is (its credentials died)."""


def create_fanout(settings: Settings) -> Fanout:
    """Redis when ``settings.redis_url`` is set, else this process alone."""
    if settings.redis_url:
        from .redis_pubsub import RedisFanout
        return RedisFanout(settings.redis_url)
    from .local import LocalFanout
    return LocalFanout()
