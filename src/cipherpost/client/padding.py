"""Plaintext padding (docs/spec/README.md §3): Padmé buckets, a 0x80 marker, zeros.

Padmé (Nikitin et al., PETS 2019) rounds a length up so that only O(log log n) bits of it
show, at most 12% overhead; every padded plaintext is at least ``MIN_PADDED`` bytes.
"""

from __future__ import annotations

MIN_PADDED = 160
MARKER = 0x80


class PaddingError(ValueError):
    """A plaintext without a valid padding marker."""


def padme(length: int) -> int:
    """The Padmé bucket that holds ``length`` bytes."""
    if length < 0:
        raise ValueError("length must not be negative")
    if length < 2:
        return length
    exponent = length.bit_length() - 1            # floor(log2 n)
    size_bits = exponent.bit_length()             # floor(log2 e) + 1
    mask = (1 << (exponent - size_bits)) - 1
    return (length + mask) & ~mask


def pad(data: bytes) -> bytes:
    """``data`` || 0x80 || zeros, to the Padmé bucket of at least :data:`MIN_PADDED`."""
    target = padme(max(len(data) + 1, MIN_PADDED))
    return data + b"\x80" + bytes(target - len(data) - 1)


def unpad(data: bytes) -> bytes:
    """Undo :func:`pad`.

    Raises:
        PaddingError: no 0x80 marker after the trailing zeros.
    """
    end = len(data.rstrip(b"\x00"))
    if end == 0 or data[end - 1] != MARKER:
        raise PaddingError("plaintext padding is malformed")
    return data[:end - 1]
