"""Connected devices in this process: delivery of new messages, and forced disconnects.

One live connection per device: a newer connection replaces an older one. Later, a
Redis-backed fan-out (several relay processes) implements the same calls.
"""

from __future__ import annotations

from typing import Protocol

from .storage.models import Envelope


class Subscriber(Protocol):
    """A live connection as the hub sees it."""

    def offer(self, envelope: Envelope) -> None:
        """A message for this device was committed (called in commit order)."""

    def kick(self, code: int) -> None:
        """Close the connection with ``code``."""


class Hub:
    """Registry of live connections keyed by (account id, device id)."""

    def __init__(self) -> None:
        self._connections: dict[tuple[str, int], Subscriber] = {}

    def __len__(self) -> int:
        return len(self._connections)

    def register(self, account_id: str, device_id: int, subscriber: Subscriber) -> None:
        """Register a new connection, displacing an older one of the same device."""
        old = self._connections.get((account_id, device_id))
        if old is not None:
            old.kick(4409)  # replaced by a newer connection
        self._connections[(account_id, device_id)] = subscriber

    def unregister(self, account_id: str, device_id: int, subscriber: Subscriber) -> None:
        """Forget ``subscriber`` if it is still the device's current connection."""
        if self._connections.get((account_id, device_id)) is subscriber:
            del self._connections[(account_id, device_id)]

    def deliver(self, account_id: str, device_id: int, envelope: Envelope) -> None:
        """Hand a just-committed message to the device's connection, if it has one."""
        subscriber = self._connections.get((account_id, device_id))
        if subscriber is not None:
            subscriber.offer(envelope)

    def disconnect(self, account_id: str, device_id: int, code: int) -> None:
        """Close the device's connection (its credentials died)."""
        subscriber = self._connections.pop((account_id, device_id), None)
        if subscriber is not None:
            subscriber.kick(code)
