"""The systematic Reed-Solomon code that splits SPQR values into 32-byte chunks.

Theory of operation (spqr-digest §6.1). A value of L bytes (L a multiple of 32) is read as
L/2 big-endian 16-bit symbols; symbol k belongs to polynomial k mod 16 at x = k div 16.
Each of the 16 polynomials thus has n = L/32 points at x = 0..n-1 and is the unique
polynomial of degree < n through them. Chunk c is the 16 values P_0(c) .. P_15(c), so
chunks 0..n-1 are the value itself and chunks from n on are parity: any n chunks with
distinct indices give the value back. Because every chunk carries one point of every
polynomial at the same x, the decoder simply keeps chunks by index.

Everything here is a pure value: ``Encoder.next`` and ``Decoder.add`` return new objects,
so a tentative receive can be thrown away.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from operator import xor
from types import MappingProxyType

from .gf16 import EXP, LOG, ORDER
from .wire import CHUNK_SIZE, MAX_CHUNK_INDEX, Chunk

_SYMBOLS = CHUNK_SIZE // 2  # 16 polynomials
_CHUNK = struct.Struct(f">{_SYMBOLS}H")

# The combination sum_j w_j * row_j is computed in the log domain, a whole row at a time:
# w_j * s = EXP[log w_j + log s]. The log of 0 is taken as 2 * ORDER, past every sum of two
# real logs, where the extended table holds 0, so zero symbols need no test.
_LOG_ZERO = 2 * ORDER
_EXP0 = EXP + array("H", bytes(2 * ORDER))
_LOG0 = array("I", [_LOG_ZERO, *LOG[1:]])


def _log_row(row: bytes) -> tuple[int, ...]:
    """The logs of a 32-byte chunk's 16 symbols (zero as :data:`_LOG_ZERO`)."""
    return tuple([_LOG0[s] for s in _CHUNK.unpack(row)])


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


def _combine(log_weights: Sequence[int], log_rows: Sequence[Sequence[int]]) -> bytes:
    """sum_j w_j * row_j, symbol by symbol, as a 32-byte chunk."""
    if len(log_rows) == 3:  # a header's parity chunks, the most common: one pass
        a, b, c = log_weights
        return _CHUNK.pack(*[_EXP0[a + x] ^ _EXP0[b + y] ^ _EXP0[c + z]
                             for x, y, z in zip(*log_rows, strict=True)])
    acc: list[int] | None = None
    for lw, row in zip(log_weights, log_rows, strict=True):
        values = [_EXP0[lw + v] for v in row]
        acc = values if acc is None else list(map(xor, acc, values))
    assert acc is not None
    return _CHUNK.pack(*acc)


@lru_cache(maxsize=16)
def _log_rows(message: bytes) -> tuple[tuple[int, ...], ...]:
    """The log rows of a value's data chunks, computed once per value (an epoch's header,
    ek, ct1 or ct2, all public), so each parity chunk is one pass over them."""
    return tuple(_log_row(message[j:j + CHUNK_SIZE])
                 for j in range(0, len(message), CHUNK_SIZE))


def chunk_at(message: bytes, index: int) -> bytes:
    """Chunk ``index`` (0..65535) of ``message`` (a positive multiple of 32 bytes)."""
    if not message or len(message) % CHUNK_SIZE:
        raise ValueError("the message must be a positive multiple of 32 bytes")
    n = len(message) // CHUNK_SIZE
    if index < n:
        return message[index * CHUNK_SIZE:(index + 1) * CHUNK_SIZE]
    if index > MAX_CHUNK_INDEX:
        raise ValueError("chunk index beyond 65535")
    if n == 3:  # a header's parity chunks, the most common, inline
        a, b, c = LOG[index], LOG[index ^ 1], LOG[index ^ 2]
        d0, d1, d2 = _data_denominators(3)
        total = a + b + c
        return _combine(((total - a - d0) % ORDER, (total - b - d1) % ORDER,
                         (total - c - d2) % ORDER), _log_rows(message))
    return _combine(_parity_log_weights(n, index), _log_rows(message))


@dataclass(frozen=True, slots=True)
class Encoder:
    """Emits chunk 0, 1, 2, ... of a value, one per call, never repeating.

    The counter is 32 bits and goes onto the wire truncated to 16, as libsignal does.
    """

    message: bytes = field(repr=False)
    next_index: int = 0

    def __post_init__(self) -> None:
        if not self.message or len(self.message) % CHUNK_SIZE:
            raise ValueError("the message must be a positive multiple of 32 bytes")

    def next(self) -> tuple[Encoder, Chunk]:
        """``(encoder after this chunk, the chunk)``."""
        encoder, index, data = self.advance()
        return encoder, Chunk(index, data)

    def advance(self) -> tuple[Encoder, int, bytes]:
        """:meth:`next` without the :class:`Chunk`: ``(encoder after, index, data)``."""
        index = self.next_index & MAX_CHUNK_INDEX
        return (Encoder(self.message, (self.next_index + 1) & 0xFFFFFFFF), index,
                chunk_at(self.message, index))


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
        rows = [_log_row(self.chunks[x]) for x in xs]
        out = []
        for x in range(n):
            held = self.chunks.get(x)
            out.append(held if held is not None else _combine(_log_weights(xs, x), rows))
        return b"".join(out)


__all__ = ["Decoder", "Encoder", "chunk_at"]
