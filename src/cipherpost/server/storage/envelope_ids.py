"""Envelope ids that name their message's place in its device's queue.

An envelope id is what a device acknowledges. It is shaped like a UUID (36 characters,
clients treat it as opaque) and made of the message's per-device sequence number (the
first 48 bits, the key the queue is stored under) and 74 random bits, with the version
nibble 8 (RFC 9562's "custom" UUID) and the RFC variant::

    ssssssss-ssss-8rrr-Vrrr-rrrrrrrrrrrr      s: seq, r: random, V: 8, 9, a or b

An acknowledgement finds its row by primary key (account, device, seq) and deletes it
only if the whole id matches, so the queue needs no index on ids. The random part keeps
ids unique for good: after a restore of an older backup a device's sequence numbers are
handed out again, but never with the same id, so clients (which drop ids they processed)
lose nothing, and a stale acknowledgement cannot delete a newer message. The recipient
device learns its own queue's sequence numbers from its ids, nothing about anyone else.

Rows queued before migration 0008 keep their random UUIDv4 ids (version nibble 4):
:func:`seq_of` says None for them, and they are found by a scan of the device's queue.
"""

from __future__ import annotations

import os
import re

#: The largest sequence number an id can carry (48 bits); beyond it ids are UUIDv4 and
#: found like the ids of rows older than migration 0008.
MAX_SEQ = (1 << 48) - 1

_OURS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


class _RandomPool:
    """Random bytes read from the OS 4 KiB at a time (a read per envelope id costs more
    than formatting it)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._offset = 0

    def take(self, n: int) -> bytes:
        if self._offset + n > len(self._buffer):
            self._buffer = os.urandom(max(4096, n))
            self._offset = 0
        chunk = self._buffer[self._offset:self._offset + n]
        self._offset += n
        return chunk


_random = _RandomPool()
_VARIANT = "89ab"


def envelope_id(seq: int) -> str:
    """A new id for the message ``seq`` of a device's queue (called on the event loop or
    the writer thread, never both at once: group commits run one at a time)."""
    raw = _random.take(10)
    if not 0 < seq <= MAX_SEQ:
        return random_uuid4(raw.hex() + _random.take(6).hex())
    # 74 random bits: the first nine bytes' 72 (18 hex digits) and the variant's two from
    # the tenth byte, which no digit shows (parsing a hex digit back cost as much as the
    # rest of the id). One hex() for the number and the random digits together.
    h = (seq.to_bytes(6, "big") + raw).hex()
    return f"{h[:8]}-{h[8:12]}-8{h[12:15]}-{_VARIANT[raw[9] & 3]}{h[15:18]}-{h[18:30]}"


def random_uuid4(hex32: str) -> str:
    """A UUIDv4 string from 32 random hex digits."""
    h = hex32
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


def seq_of(envelope_id: str) -> int | None:
    """The sequence number an id made by :func:`envelope_id` carries; None for any other
    string (an id of a row older than migration 0008, or not an id of ours at all)."""
    if len(envelope_id) != 36 or not _OURS.fullmatch(envelope_id):
        return None
    return int(envelope_id[:8] + envelope_id[9:13], 16)


def seq_unchecked(envelope_id: str) -> int:
    """:func:`seq_of` without checking the rest of the id, for a caller that compares the
    whole id next (a queue log entry's); -1 where no number can be read."""
    try:
        return int(envelope_id[:8] + envelope_id[9:13], 16) if len(envelope_id) == 36 else -1
    except ValueError:
        return -1
