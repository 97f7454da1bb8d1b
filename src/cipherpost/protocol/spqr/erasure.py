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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType

from .gf16 import EXP, LOG, ORDER, div, mul
from .wire import CHUNK_SIZE, MAX_CHUNK_INDEX, Chunk

_SYMBOLS = CHUNK_SIZE // 2  # 16 polynomials


def _symbols(data: bytes) -> list[int]:
    return [(data[i] << 8) | data[i + 1] for i in range(0, len(data), 2)]


def _weights(xs: Sequence[int], x: int) -> list[int]:
    """Lagrange weights w_j with P(x) = sum_j w_j * P(xs[j]); ``x`` not in ``xs``."""
    out = []
    for j, xj in enumerate(xs):
        num = 1
        den = 1
        for m, xm in enumerate(xs):
            if m != j:
                num = mul(num, x ^ xm)
                den = mul(den, xj ^ xm)
        out.append(div(num, den))
    return out


@lru_cache(maxsize=512)
def _parity_weights(n: int, x: int) -> tuple[int, ...]:
    return tuple(_weights(range(n), x))


def _combine(weights: Sequence[int], rows: Sequence[bytes]) -> bytes:
    """sum_j weights[j] * rows[j], symbol by symbol, as a 32-byte chunk."""
    acc = [0] * _SYMBOLS
    for w, row in zip(weights, rows, strict=True):
        if w == 0:
            continue
        lw = LOG[w]
        for p in range(_SYMBOLS):
            s = (row[2 * p] << 8) | row[2 * p + 1]
            if s:
                acc[p] ^= EXP[lw + LOG[s]]
    return b"".join(v.to_bytes(2, "big") for v in acc)


def chunk_at(message: bytes, index: int) -> bytes:
    """Chunk ``index`` (0..65535) of ``message`` (a positive multiple of 32 bytes)."""
    if not message or len(message) % CHUNK_SIZE:
        raise ValueError("the message must be a positive multiple of 32 bytes")
    n = len(message) // CHUNK_SIZE
    if index < n:
        return message[index * CHUNK_SIZE:(index + 1) * CHUNK_SIZE]
    rows = [message[j * CHUNK_SIZE:(j + 1) * CHUNK_SIZE] for j in range(n)]
    return _combine(_parity_weights(n, index), rows)


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
        index = self.next_index & MAX_CHUNK_INDEX
        chunk = Chunk(index, chunk_at(self.message, index))
        return Encoder(self.message, (self.next_index + 1) & 0xFFFFFFFF), chunk


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
        if chunk.index >= self.needed and len(self.chunks) >= self.needed:
            return self
        chunks = dict(self.chunks)
        chunks[chunk.index] = chunk.data
        return Decoder(self.length, MappingProxyType(chunks))

    def decoded(self) -> bytes | None:
        """The value, once n chunks are held; else ``None``."""
        n = self.needed
        if len(self.chunks) < n:
            return None
        xs = sorted(self.chunks)[:n]
        rows = [self.chunks[x] for x in xs]
        out = []
        for x in range(n):
            held = self.chunks.get(x)
            out.append(held if held is not None else _combine(_weights(xs, x), rows))
        return b"".join(out)


__all__ = ["ORDER", "Decoder", "Encoder", "chunk_at"]
