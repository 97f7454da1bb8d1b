"""Arithmetic in GF(2^16) with the reduction polynomial x^16 + x^12 + x^3 + x + 1.

(spqr-digest §6.1.) Addition is XOR; multiplication goes through log/antilog tables
over the generator x (= 2, primitive for this polynomial), built once on import. The
tables are compact arrays of machine integers (384 KiB together) rather than lists of
Python ints: the erasure code reads them at scattered places, and a list's pointers and
int objects spread over 7 MiB made every lookup a cache miss.
"""

from __future__ import annotations

from array import array

POLY = 0x1100B
ORDER = 0xFFFF  # size of the multiplicative group

_EXP = array("H", bytes(2 * 2 * ORDER))
_LOG = array("H", bytes(2 * (ORDER + 1)))


def _build_tables() -> None:
    value = 1
    for power in range(ORDER):
        _EXP[power] = value
        _LOG[value] = power
        value <<= 1
        if value & 0x10000:
            value ^= POLY
    for power in range(ORDER, 2 * ORDER):
        _EXP[power] = _EXP[power - ORDER]


_build_tables()

#: Read-only views for the hot loops of the erasure code.
EXP = _EXP
LOG = _LOG


def mul(a: int, b: int) -> int:
    """Product of two field elements (integers in 0..65535)."""
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def inv(a: int) -> int:
    """Multiplicative inverse; ``ValueError`` for 0."""
    if a == 0:
        raise ValueError("0 has no inverse")
    return _EXP[ORDER - _LOG[a]]


def div(a: int, b: int) -> int:
    """``a / b``; ``ValueError`` if ``b`` is 0."""
    if b == 0:
        raise ValueError("division by 0")
    if a == 0:
        return 0
    return _EXP[_LOG[a] + ORDER - _LOG[b]]
