"""The systematic Reed-Solomon code that splits SPQR values into 32-byte chunks.

Theory of operation (spqr-digest §6.1). A value of L bytes (L a multiple of 32) is read as
L/2 big-endian 16-bit symbols; symbol k belongs to polynomial k mod 16 at x = k div 16.
Each of the 16 polynomials thus has n = L/32 points at x = 0..n-1 and is the unique
polynomial of degree < n through them. Chunk c is the 16 values P_0(c) .. P_15(c), so
chunks 0..n-1 are the value itself and chunks from n on are parity: any n chunks with
distinct indices give the value back. Because every chunk carries one point of every
polynomial at the same x, the decoder simply keeps chunks by index.

Arithmetic works on whole chunks: a chunk read as one 256-bit integer holds the 16
symbols in 16-bit lanes, so XOR adds all 16 at once, and multiplying all 16 by the same
field element is four lookups in tables made once per chunk (:func:`_scale_tables`). A
parity chunk is then a combination of the data chunks with Lagrange weights. The value
that is most often sent past its data chunks, the 3-chunk header (an EK sender sends one
header chunk per message until the peer answers, so a one-way burst is all parity),
gets a faster form: a polynomial of degree < 3 is P(x) = c0 + c1 x + c2 x^2, and since
x -> x^2 is additive in characteristic 2, P(x) - c0 is linear in the bits of x, so a
chunk is c0 and two lookups in 256-entry tables made once per header.

Everything here is a pure value: ``Encoder.next`` and ``Decoder.add`` return new objects,
so a tentative receive can be thrown away. The caches hold only values that go on the
wire (headers, ek, ct1, ct2 and their MACs), never secrets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import NamedTuple

from .gf16 import EXP, LOG, ORDER, POLY, div, mul
from .wire import CHUNK_SIZE, MAX_CHUNK_INDEX, Chunk

_SYMBOLS = CHUNK_SIZE // 2  # 16 polynomials, 16 lanes

#: ``tuple.__new__``: makes a named tuple from a tuple of its fields without the generated
#: constructor (or ``_make``, slower still), for the per-message paths.
_new = tuple.__new__

# -- whole chunks as 256-bit integers ----------------------------------------------------------

#: Bit 0 and bit 15 of every 16-bit lane.
_LANE_LOW = int.from_bytes(b"\x00\x01" * _SYMBOLS, "big")
_LANE_TOP = _LANE_LOW << 15
_REDUCTION = POLY & 0xFFFF  # x^16 reduced: what a lane's carry out of bit 15 adds

#: Four tables t with ``s * lanes = t[0][s & 15] ^ t[1][s >> 4 & 15] ^ t[2][s >> 8 & 15]
#: ^ t[3][s >> 12]`` for every field element s (see :func:`_scale_tables`).
ScaleTables = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def _lanes(chunk: bytes) -> int:
    return int.from_bytes(chunk, "big")


def _times_x(lanes: int) -> int:
    """Every lane multiplied by x: shifted left, with the carry out of bit 15 reduced."""
    top = lanes & _LANE_TOP
    return ((lanes ^ top) << 1) ^ ((top >> 15) * _REDUCTION)


def _times_x_powers(lanes: int, count: int) -> list[int]:
    """``[lanes, x * lanes, ..., x^(count-1) * lanes]``."""
    out = [lanes]
    for _ in range(count - 1):
        lanes = _times_x(lanes)
        out.append(lanes)
    return out


def _subset_xors(basis: Sequence[int]) -> tuple[int, ...]:
    """``table[d]`` = the XOR of ``basis[i]`` over the bits i set in d."""
    table = [0] * (1 << len(basis))
    for d in range(1, len(table)):
        low = d & -d
        table[d] = table[d ^ low] ^ basis[low.bit_length() - 1]
    return tuple(table)


def _scale_tables(lanes: int) -> ScaleTables:
    """The tables that multiply ``lanes`` by any field element, a nibble at a time:
    multiplying by s is linear in the bits of s, and bit i contributes x^i * lanes."""
    p = _times_x_powers(lanes, 16)
    return (_subset_xors(p[0:4]), _subset_xors(p[4:8]), _subset_xors(p[8:12]),
            _subset_xors(p[12:16]))


def _scale(s: int, t: ScaleTables) -> int:
    """``s * lanes`` for the ``lanes`` that ``t`` was made from."""
    return t[0][s & 15] ^ t[1][s >> 4 & 15] ^ t[2][s >> 8 & 15] ^ t[3][s >> 12]


def _combination(log_weights: Sequence[int], tables: Sequence[ScaleTables]) -> bytes:
    """sum_j w_j * row_j as a chunk, given log w_j and the rows' tables."""
    acc = 0
    for lw, t in zip(log_weights, tables, strict=True):
        s = EXP[lw]
        acc ^= t[0][s & 15] ^ t[1][s >> 4 & 15] ^ t[2][s >> 8 & 15] ^ t[3][s >> 12]
    return acc.to_bytes(CHUNK_SIZE, "big")


# -- Lagrange weights --------------------------------------------------------------------------

def _log_weights(xs: Sequence[int], x: int) -> list[int]:
    """logs of the Lagrange weights w_j with P(x) = sum_j w_j * P(xs[j]).

    ``xs`` are distinct and ``x`` is not among them, so no factor is zero. In characteristic
    2, w_j = prod_{m != j} (x ^ x_m) / (x_j ^ x_m).
    """
    total = sum([LOG[x ^ m] for m in xs])
    return [(total - LOG[x ^ xj] - sum([LOG[xj ^ m] for m in xs if m != xj])) % ORDER
            for xj in xs]


@lru_cache(maxsize=8)
def _data_denominators(n: int) -> tuple[int, ...]:
    """For nodes 0..n-1: log prod_{m != j} (j ^ m), per j."""
    return tuple(sum(LOG[j ^ m] for m in range(n) if m != j) % ORDER for j in range(n))


def _parity_log_weights(n: int, x: int) -> list[int]:
    """:func:`_log_weights` for the data nodes 0..n-1 (x >= n), denominators cached."""
    logs = [LOG[x ^ m] for m in range(n)]
    total = sum(logs)
    return [(total - lx - d) % ORDER for lx, d in zip(logs, _data_denominators(n), strict=True)]


@lru_cache(maxsize=16)
def _data_tables(message: bytes) -> tuple[ScaleTables, ...]:
    """The scale tables of a value's data chunks, made once per value (an epoch's ek, ct1
    or ct2, all public), so that each parity chunk is n table combinations."""
    return tuple(_scale_tables(_lanes(message[j:j + CHUNK_SIZE]))
                 for j in range(0, len(message), CHUNK_SIZE))


# -- values of at most 3 chunks (the header): a linear form -----------------------------------

def _monomial_coefficients(n: int) -> list[list[int]]:
    """``c[j][k]``: the coefficient of x^k in the Lagrange polynomial of node j of 0..n-1."""
    out = []
    for j in range(n):
        poly, denominator = [1], 1
        for m in range(n):
            if m != j:  # poly *= (x + m)
                poly = [a ^ mul(b, m) for a, b in zip([0, *poly], [*poly, 0], strict=True)]
                denominator = mul(denominator, j ^ m)
        out.append([div(c, denominator) for c in poly])
    return out


@lru_cache(maxsize=16)
def _linear_form(message: bytes) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """``(c0, low, high)`` with chunk x = c0 ^ low[x & 255] ^ high[x >> 8] for a value of
    n <= 3 chunks: P(x) = c0 + c1 x + c2 x^2, and x -> c1 x + c2 x^2 is additive."""
    n = len(message) // CHUNK_SIZE
    rows = [_scale_tables(_lanes(message[i:i + CHUNK_SIZE]))
            for i in range(0, len(message), CHUNK_SIZE)]
    coefficients = _monomial_coefficients(n)
    c = [0, 0, 0]
    for k in range(n):
        for j in range(n):
            c[k] ^= _scale(coefficients[j][k], rows[j])
    linear = _times_x_powers(c[1], 16)
    square = _times_x_powers(c[2], 31)
    basis = [linear[i] ^ square[2 * i] for i in range(16)]  # P(2^i) - c0
    return c[0], _subset_xors(basis[:8]), _subset_xors(basis[8:])


def chunk_at(message: bytes, index: int) -> bytes:
    """Chunk ``index`` (0..65535) of ``message`` (a positive multiple of 32 bytes)."""
    if not message or len(message) % CHUNK_SIZE:
        raise ValueError("the message must be a positive multiple of 32 bytes")
    n = len(message) // CHUNK_SIZE
    if index < n:
        return message[index * CHUNK_SIZE:(index + 1) * CHUNK_SIZE]
    if index > MAX_CHUNK_INDEX:
        raise ValueError("chunk index beyond 65535")
    if n <= 3:
        c0, low, high = _linear_form(message)
        return (c0 ^ low[index & 0xFF] ^ high[index >> 8]).to_bytes(CHUNK_SIZE, "big")
    return _combination(_parity_log_weights(n, index), _data_tables(message))


class _EncoderFields(NamedTuple):
    message: bytes
    next_index: int


class Encoder(_EncoderFields):
    """Emits chunk 0, 1, 2, ... of a value, one per call, never repeating.

    The counter is 32 bits and goes onto the wire truncated to 16, as libsignal does. A
    named tuple: immutable, and cheap to make once per message sent.
    """

    __slots__ = ()

    def __new__(cls, message: bytes, next_index: int = 0) -> Encoder:
        if not message or len(message) % CHUNK_SIZE:
            raise ValueError("the message must be a positive multiple of 32 bytes")
        return super().__new__(cls, message, next_index)

    def __repr__(self) -> str:
        return f"Encoder({len(self.message)} bytes, next_index={self.next_index})"

    def next(self) -> tuple[Encoder, Chunk]:
        """``(encoder after this chunk, the chunk)``."""
        encoder, index, data = self.advance()
        return encoder, Chunk(index, data)

    def advance(self) -> tuple[Encoder, int, bytes]:
        """:meth:`next` without the :class:`Chunk`: ``(encoder after, index, data)``."""
        message, next_index = self
        index = next_index & MAX_CHUNK_INDEX
        # _new: the message was checked when this encoder was made. The header's parity
        # chunks (a one-way burst sends one per message) as chunk_at makes them, inline.
        n = len(message) // CHUNK_SIZE
        if n <= 3 <= index:
            c0, low, high = _linear_form(message)
            data = (c0 ^ low[index & 0xFF] ^ high[index >> 8]).to_bytes(CHUNK_SIZE, "big")
        else:
            data = chunk_at(message, index)
        return _new(Encoder, (message, (next_index + 1) & 0xFFFFFFFF)), index, data


_EMPTY: Mapping[int, bytes] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Decoder:
    """Collects chunks of a value of ``length`` bytes until any n = length/32 are held.

    A chunk is kept if its index is below n (a data chunk) or if fewer than n chunks are
    held (a kept chunk whose index is already held replaces it). Decoding takes the data chunks
    held and interpolates the others from the n lowest indices held.
    """

    length: int
    chunks: Mapping[int, bytes] = field(default_factory=lambda: _EMPTY, repr=False)

    def __post_init__(self) -> None:
        if self.length <= 0 or self.length % CHUNK_SIZE:
            raise ValueError("the length must be a positive multiple of 32 bytes")

    @property
    def needed(self) -> int:
        """n: how many chunks with distinct indices make the value."""
        return self.length // CHUNK_SIZE

    def add(self, chunk: Chunk) -> Decoder:
        """This decoder with ``chunk`` taken in (or unchanged if it is not kept)."""
        return self.add_data(chunk.index, chunk.data)

    def add_data(self, index: int, data: bytes) -> Decoder:
        """:meth:`add` for a chunk given as its index (0..65535) and 32 bytes."""
        if index >= self.needed and len(self.chunks) >= self.needed:
            return self
        chunks = dict(self.chunks)
        chunks[index] = data
        return Decoder(self.length, MappingProxyType(chunks))

    def decoded(self) -> bytes | None:
        """The value, once n chunks are held; else ``None``."""
        n = self.needed
        if len(self.chunks) < n:
            return None
        xs = sorted(self.chunks)[:n]
        if xs[-1] == n - 1:  # all data chunks: the value as it is
            return b"".join([self.chunks[x] for x in xs])
        rows = [_scale_tables(_lanes(self.chunks[x])) for x in xs]
        out = []
        for x in range(n):
            held = self.chunks.get(x)
            out.append(held if held is not None else _combination(_log_weights(xs, x), rows))
        return b"".join(out)


__all__ = ["Decoder", "Encoder", "chunk_at"]
