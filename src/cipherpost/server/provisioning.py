"""Provisioning mailboxes: how an existing device hands a new one what it needs to join
the account (docs/spec/linking.md).

A new device opens a mailbox (an unguessable address, valid for minutes); an existing
device of the account drops one encrypted message in it; the new device takes it out.
The relay sees only the address and ciphertext: the key to open it travels in the QR code
between the two devices. Mailboxes live in memory (they are short-lived and a restart
only costs the user a new QR code); the scale-out work moves them to Redis.

A *code* mailbox (typed-code linking) is found by a short code instead, claimed once by
one device of an account, and carries a few numbered messages each way: the two devices'
key agreement and then the sealed provisioning message. Reads there do not consume (a
retried long poll gets the message again); the new device deletes the mailbox when done.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Literal

MAX_MAILBOXES = 10_000
MAX_MESSAGE = 256 * 1024
#: A code mailbox's messages from the new device (commitment, key, confirmation) are small.
MAX_NEW_MESSAGE = 1024
#: Crockford base32 (no I, L, O, U), 8 characters: 40 bits.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 8
#: How many messages each side of a code mailbox may send.
MAX_FROM: dict[str, int] = {"new": 3, "existing": 2}
Side = Literal["new", "existing"]
#: Bytes of provisioning messages held at once, over all mailboxes: without it the count
#: cap alone let 10,000 full mailboxes hold 2.5 GiB of memory.
MAX_BYTES = 32 * 1024 * 1024


@dataclass
class _Mailbox:
    expires_at: int
    message: bytes | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    #: Code mailboxes only: the code until claimed, the claiming device, messages by side.
    code: str | None = None
    claimer: tuple[str, int] | None = None
    sent: dict[str, list[bytes]] | None = None

    def pulse(self) -> None:
        """Wake everyone waiting on this mailbox (code mailboxes wait again afterwards)."""
        self.ready.set()
        if self.sent is not None:
            self.ready = asyncio.Event()

    def __repr__(self) -> str:
        return f"_Mailbox(expires_at={self.expires_at})"


class MailboxesFull(Exception):
    """Too many open mailboxes, or too many bytes held in them (a flood); try again later."""


class OutOfOrder(Exception):
    """A code mailbox message out of sequence, beyond its side's count, or different from
    the one already sent under that number."""


class Mailboxes:
    """Open mailboxes, bounded in number and in the bytes they hold."""

    def __init__(self, limit: int = MAX_MAILBOXES, max_bytes: int = MAX_BYTES) -> None:
        self._boxes: dict[str, _Mailbox] = {}
        self._limit = limit
        self._max_bytes = max_bytes
        self._bytes = 0
        self._codes: dict[str, str] = {}  # unclaimed code -> address

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
        if box is None or box.message is not None or box.sent is not None:
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
        if box is None or box.sent is not None:
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

    # -- code mailboxes (typed-code linking) ----------------------------------------------

    def open_with_code(self, now_ms: int, ttl_ms: int) -> tuple[str, str]:
        """A new code mailbox: ``(address, code)``.

        Raises:
            MailboxesFull: the relay holds its maximum of open mailboxes.
        """
        address = self.open(now_ms, ttl_ms)
        while True:
            code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
            if code not in self._codes:
                break
        box = self._boxes[address]
        box.code, box.sent = code, {"new": [], "existing": []}
        self._codes[code] = address
        return address, code

    def claim(self, code: str, claimer: tuple[str, int], now_ms: int) -> tuple[str, int]:
        """The address and expiry of the mailbox ``code`` names; the code then names
        nothing any more, and only ``claimer`` (account, device) may act as the existing
        device there.

        Raises:
            KeyError: a wrong, used or expired code.
        """
        self.expire(now_ms)
        address = self._codes.pop(code, None)
        if address is None:
            raise KeyError("code")
        box = self._boxes[address]
        box.code, box.claimer = None, claimer
        return address, box.expires_at

    def send(self, address: str, side: Side, index: int, message: bytes, now_ms: int,
             claimer: tuple[str, int] | None = None) -> None:
        """Message ``index`` from ``side`` (``claimer`` for the existing device's side).
        The same bytes again under the same number are accepted (a retry).

        Raises:
            KeyError: no such code mailbox, or (existing side) not its claimer.
            OutOfOrder: another message under that number, a gap, or one too many.
            MailboxesFull: the mailboxes already hold their maximum of bytes.
        """
        self.expire(now_ms)
        box = self._code_box(address, now_ms, side, claimer)
        queue = box.sent[side] if box.sent is not None else []
        if index < len(queue):
            if hmac.compare_digest(queue[index], message):
                return
            raise OutOfOrder()
        if index != len(queue) or index >= MAX_FROM[side]:
            raise OutOfOrder()
        if self._bytes + len(message) > self._max_bytes:
            raise MailboxesFull()
        queue.append(message)
        self._bytes += len(message)
        box.pulse()

    async def read(self, address: str, side: Side, index: int, now_ms: int, wait: float,
                   claimer: tuple[str, int] | None = None) -> bytes | None:
        """Message ``index`` from ``side`` (None if not there within ``wait`` seconds);
        reading the new device's side needs the ``claimer``.

        Raises:
            KeyError: no such code mailbox (or closed while waiting), not its claimer, or a
                number beyond what that side may send.
        """
        box = self._code_box(address, now_ms, "existing" if side == "new" else "new",
                             claimer)
        if index >= MAX_FROM[side]:
            raise KeyError(address)
        deadline = time.monotonic() + wait
        while box.sent is not None and len(box.sent[side]) <= index:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(box.ready.wait(), remaining)
            if self._boxes.get(address) is not box:
                raise KeyError(address)
        if self._boxes.get(address) is not box or box.sent is None:
            raise KeyError(address)
        queue = box.sent[side]
        return queue[index] if index < len(queue) else None

    def close(self, address: str) -> bool:
        """Delete a mailbox now (the new device cancelled or finished); False if unknown."""
        if address not in self._boxes:
            return False
        self._remove(address)
        return True

    def _code_box(self, address: str, now_ms: int, side: Side,
                  claimer: tuple[str, int] | None) -> _Mailbox:
        """The live code mailbox, for someone acting as ``side``'s sender."""
        box = self._live(address, now_ms)
        if box is None or box.sent is None:
            raise KeyError(address)
        if side == "existing" and (claimer is None or box.claimer != claimer):
            raise KeyError(address)
        return box

    def expire(self, now_ms: int) -> None:
        for address in [a for a, b in self._boxes.items() if b.expires_at <= now_ms]:
            self._remove(address)

    def _remove(self, address: str) -> None:
        box = self._boxes.pop(address)
        if box.message is not None:
            self._bytes -= len(box.message)
            box.message = None
        if box.code is not None:
            self._codes.pop(box.code, None)
        if box.sent is not None:
            self._bytes -= sum(len(m) for q in box.sent.values() for m in q)
            box.sent = None
        box.ready.set()  # waiters on a closed mailbox stop waiting (and find it gone)

    def _live(self, address: str, now_ms: int) -> _Mailbox | None:
        box = self._boxes.get(address)
        if box is None or box.expires_at <= now_ms:
            return None
        return box
