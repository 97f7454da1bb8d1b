"""Connected devices in this process: wake-ups for new messages, and forced disconnects.

One live connection per device: a newer connection replaces an older one. Later, a
Redis-backed fan-out (several relay processes) implements the same two calls.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class Connection:
    """What the hub knows of one live WebSocket."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int = 1000


class Hub:
    """Registry of live connections keyed by (account id, device id)."""

    def __init__(self) -> None:
        self._connections: dict[tuple[str, int], Connection] = {}

    def __len__(self) -> int:
        return len(self._connections)

    def register(self, account_id: str, device_id: int) -> Connection:
        """Register a new connection, displacing an older one of the same device."""
        key = (account_id, device_id)
        old = self._connections.get(key)
        if old is not None:
            old.close_code = 4409  # replaced by a newer connection
            old.closed.set()
            old.wake.set()
        connection = Connection()
        self._connections[key] = connection
        return connection

    def unregister(self, account_id: str, device_id: int, connection: Connection) -> None:
        """Forget ``connection`` if it is still the device's current one."""
        if self._connections.get((account_id, device_id)) is connection:
            del self._connections[(account_id, device_id)]

    def notify(self, account_id: str, device_id: int) -> None:
        """Wake the device's delivery loop: something new is queued."""
        connection = self._connections.get((account_id, device_id))
        if connection is not None:
            connection.wake.set()

    def disconnect(self, account_id: str, device_id: int, code: int) -> None:
        """Close the device's connection (its credentials died)."""
        connection = self._connections.pop((account_id, device_id), None)
        if connection is not None:
            connection.close_code = code
            connection.closed.set()
            connection.wake.set()
