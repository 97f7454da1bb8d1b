"""Provisioning mailboxes: how an existing device hands a new one what it needs to join
the account (docs/spec/linking.md).

A new device opens a mailbox (an unguessable address, valid for minutes); an existing
device of the account drops one encrypted message in it; the new device takes it out.
The relay sees only the address and ciphertext: the key to open it travels in the QR code
between the two devices. Mailboxes live in memory (they are short-lived and a restart
only costs the user a new QR code); the scale-out work moves them to Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass, field

MAX_MAILBOXES = 10_000
MAX_MESSAGE = 256 * 1024
#: Bytes of provisioning messages held at once, over all mailboxes: without it the count
#: cap alone let 10,000 full mailboxes hold 2.5 GiB of memory.
MAX_BYTES = 32 * 1024 * 1024


@dataclass
class _Mailbox:
    expires_at: int
    message: bytes | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class MailboxesFull(Exception):
    """Too many open mailboxes, or too many bytes held in them (a flood); try again later."""


class Mailboxes:
    """Open mailboxes, bounded in number and in the bytes they hold."""

    def __init__(self, limit: int = MAX_MAILBOXES, max_bytes: int = MAX_BYTES) -> None:
        self._boxes: dict[str, _Mailbox] = {}
        self._limit = limit
        self._max_bytes = max_bytes
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._boxes)

    @property
    def bytes_held(self) -> int:
        return self._bytes

    def open(self, now_ms: int, ttl_ms: int) -> str:
        """A new mailbox address.

        Raises:
            MailboxesFull: the relay holds its maximum of open mailboxes.
        """
        self.expire(now_ms)
        if len(self._boxes) >= self._limit:
            raise MailboxesFull()
        address = secrets.token_urlsafe(32)
        self._boxes[address] = _Mailbox(now_ms + ttl_ms)
        return address

    def put(self, address: str, message: bytes, now_ms: int) -> bool:
        """Leave the one message of a mailbox; False if it is unknown, expired or full.

        Raises:
            MailboxesFull: the mailboxes already hold their maximum of bytes.
        """
        self.expire(now_ms)
        box = self._live(address, now_ms)
        if box is None or box.message is not None:
            return False
        if self._bytes + len(message) > self._max_bytes:
            raise MailboxesFull()
        box.message = message
        self._bytes += len(message)
        box.ready.set()
        return True

    async def take(self, address: str, now_ms: int, wait: float) -> bytes | None:
        """The message (the mailbox closes), waiting up to ``wait`` seconds for it. Of
        several concurrent takers exactly one gets it; the others find the mailbox gone.

        Raises:
            KeyError: no such mailbox (unknown, expired or already emptied).
        """
        box = self._live(address, now_ms)
        if box is None:
            raise KeyError(address)
        if box.message is None and wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(box.ready.wait(), wait)
        # Every waiter wakes when the message arrives: only the one that still finds the
        # mailbox open takes it (nothing below awaits, so the claim cannot interleave).
        if self._boxes.get(address) is not box:
            raise KeyError(address)
        message = box.message
        if message is None:
            return None
        self._remove(address)
        return message

    def expire(self, now_ms: int) -> None:
        for address in [a for a, b in self._boxes.items() if b.expires_at <= now_ms]:
            self._remove(address)

    def _remove(self, address: str) -> None:
        box = self._boxes.pop(address)
        if box.message is not None:
            self._bytes -= len(box.message)
            box.message = None
        box.ready.set()  # waiters on a closed mailbox stop waiting (and find it gone)

    def _live(self, address: str, now_ms: int) -> _Mailbox | None:
        box = self._boxes.get(address)
        if box is None or box.expires_at <= now_ms:
            return None
        return box
