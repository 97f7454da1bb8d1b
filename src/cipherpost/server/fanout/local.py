"""The fan-out of one relay process: its own connections, in a dictionary."""

from __future__ import annotations

from ..storage.models import Envelope
from . import Subscriber


class LocalFanout:
    """Registry of this process's live connections keyed by (account id, device id).

    One live connection per device: a newer connection replaces an older one.
    """

    def __init__(self) -> None:
        self._connections: dict[tuple[str, int], Subscriber] = {}

    def __len__(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to disconnect from."""

    async def register(self, account_id: str, device_id: int, subscriber: Subscriber) -> None:
        """Register a new connection, displacing an older one of the same device."""
        self.add(account_id, device_id, subscriber)

    def add(self, account_id: str, device_id: int, subscriber: Subscriber) -> None:
        """:meth:`register`, as a plain call."""
        old = self._connections.get((account_id, device_id))
        if old is not None and old is not subscriber:
            old.kick(4409)  # replaced by a newer connection
        self._connections[(account_id, device_id)] = subscriber

    def get(self, account_id: str, device_id: int) -> Subscriber | None:
        """The device's connection in this process, if any."""
        return self._connections.get((account_id, device_id))

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

    def resync_all(self) -> None:
        """Every connection reads its queue (offers may have been lost)."""
        for subscriber in list(self._connections.values()):
            subscriber.resync()
