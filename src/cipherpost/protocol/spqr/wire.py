"""The SPQR bytes of a SignalMessage (field 5), spqr-digest §6.

Not protobuf::

    0x01 | varint epoch (>= 1) | varint index (u32) | type (0..6)
         [| varint chunk index (<= 65535) | 32 chunk bytes]   for types 1, 2, 3, 5, 6

Varints are LEB128 of at most 10 bytes; bits beyond 64 are dropped, as libsignal does.
Anything after the payload is ignored (room for later versions). An empty field means
V0 (no SPQR); a first byte 0x00 also means V0; any other first byte is a version this
implementation does not know.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from .errors import MalformedSpqrMessage

V0 = 0
V1 = 1

CHUNK_SIZE = 32
MAX_CHUNK_INDEX = 0xFFFF
_MAX_VARINT_LEN = 10
_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1


class PayloadType(enum.IntEnum):
    """What one SPQR message carries (spqr-digest §4.2)."""

    NONE = 0
    HDR = 1
    EK = 2
    EK_CT1_ACK = 3
    CT1_ACK = 4
    CT1 = 5
    CT2 = 6


_WITH_CHUNK = frozenset({PayloadType.HDR, PayloadType.EK, PayloadType.EK_CT1_ACK,
                         PayloadType.CT1, PayloadType.CT2})


@dataclass(frozen=True, slots=True)
class Chunk:
    """One 32-byte piece of an erasure-coded value, with its index."""

    index: int
    data: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.index <= MAX_CHUNK_INDEX or len(self.data) != CHUNK_SIZE:
            raise ValueError("a chunk is 32 bytes with an index in 0..65535")


@dataclass(frozen=True, slots=True)
class SpqrMessage:
    """A decoded V1 message: the SCKA epoch, the chain key index, and the payload."""

    epoch: int
    index: int
    payload: PayloadType
    chunk: Chunk | None = None

    def __post_init__(self) -> None:
        if (self.chunk is not None) != (self.payload in _WITH_CHUNK):
            raise ValueError(f"payload {self.payload.name} and chunk do not agree")
        if not 1 <= self.epoch <= _U64 or not 0 <= self.index <= _U32:
            raise ValueError("epoch must be in 1..2^64-1 and index in 0..2^32-1")

    def encode(self) -> bytes:
        """The wire bytes (always canonical varints)."""
        out = bytearray((V1,))
        out += encode_varint(self.epoch)
        out += encode_varint(self.index)
        out.append(self.payload)
        if self.chunk is not None:
            out += encode_varint(self.chunk.index)
            out += self.chunk.data
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> SpqrMessage:
        """Parse V1 bytes; trailing bytes are ignored.

        Raises:
            MalformedSpqrMessage: not V1, truncated, epoch 0, index beyond u32, unknown
                payload type, or chunk index beyond 65535.
        """
        epoch, index, payload, chunk_index, chunk_data = decode_fields(data)
        return cls(epoch, index, PayloadType(payload),
                   None if chunk_data is None else Chunk(chunk_index, chunk_data))


#: Per payload type 0..6: whether it carries a chunk.
_HAS_CHUNK = tuple(t in _WITH_CHUNK for t in range(len(PayloadType)))
_ONE_BYTE = tuple(bytes((i,)) for i in range(0x80))
_PACK_4, _PACK_5, _PACK_6, _PACK_7 = (struct.Struct(f"{n}B").pack for n in range(4, 8))
_UNPACK_7 = struct.Struct("7B").unpack_from

Fields = tuple[int, int, int, int, bytes | None]


def encode_fields(epoch: int, index: int, payload: int, chunk_index: int,
                  chunk_data: bytes | None) -> bytes:
    """:meth:`SpqrMessage.encode` without the object, for the per-message path: the values
    come from our own state (epoch >= 1, a u32 index, a chunk exactly when the payload
    type has one, its index <= 65535).

    The usual message (an epoch below 128, key and chunk indices below 16384) is one
    ``struct`` call on the header bytes, then the chunk: the varints' bytes computed
    inline (a two-byte varint is ``v & 0x7F | 0x80, v >> 7``).
    """
    if epoch < 0x80 and index < 0x4000:
        if chunk_data is None:
            if index < 0x80:
                return _PACK_4(V1, epoch, index, payload)
            return _PACK_5(V1, epoch, index & 0x7F | 0x80, index >> 7, payload)
        if chunk_index < 0x4000:
            if index < 0x80:
                if chunk_index < 0x80:
                    return _PACK_5(V1, epoch, index, payload, chunk_index) + chunk_data
                return _PACK_6(V1, epoch, index, payload, chunk_index & 0x7F | 0x80,
                               chunk_index >> 7) + chunk_data
            if chunk_index < 0x80:
                return _PACK_6(V1, epoch, index & 0x7F | 0x80, index >> 7, payload,
                               chunk_index) + chunk_data
            return _PACK_7(V1, epoch, index & 0x7F | 0x80, index >> 7, payload,
                           chunk_index & 0x7F | 0x80, chunk_index >> 7) + chunk_data
    out = b"\x01" + encode_varint(epoch) + encode_varint(index) + _ONE_BYTE[payload]
    if chunk_data is None:
        return out
    return out + encode_varint(chunk_index) + chunk_data


def decode_fields(data: bytes) -> Fields:
    """:meth:`SpqrMessage.decode` without the objects: ``(epoch, index, payload type,
    chunk index, chunk data)``, the last two ``0, None`` for a payload without a chunk.
    Varints of one byte (the usual epoch) and two bytes (indices up to 16383) are read
    inline.

    Raises:
        MalformedSpqrMessage: as :meth:`SpqrMessage.decode`.
    """
    n = len(data)
    if n >= 7:
        # The usual message with a chunk: a one-byte epoch, then one- or two-byte index
        # and chunk index, all within the first 7 bytes, read in one struct call.
        version, epoch, b2, b3, b4, b5, b6 = _UNPACK_7(data, 0)
        if version == V1 and 0 < epoch < 0x80:
            if b2 < 0x80:
                index, payload, c0, c1, at = b2, b3, b4, b5, 4
            elif b3 < 0x80:
                index, payload, c0, c1, at = b2 & 0x7F | b3 << 7, b4, b5, b6, 5
            else:
                payload = -1
            if 0 <= payload < len(_HAS_CHUNK) and _HAS_CHUNK[payload]:
                if c0 < 0x80:
                    at += 1
                    if at + CHUNK_SIZE <= n:
                        return epoch, index, payload, c0, bytes(data[at:at + CHUNK_SIZE])
                elif c1 < 0x80:
                    at += 2
                    if at + CHUNK_SIZE <= n:
                        return (epoch, index, payload, c0 & 0x7F | c1 << 7,
                                bytes(data[at:at + CHUNK_SIZE]))
    if not n or data[0] != V1:
        raise MalformedSpqrMessage("not an SPQR V1 message")
    if n > 1 and data[1] < 0x80:
        epoch, at = data[1], 2
    else:
        epoch, at = decode_varint(data, 1)
    if epoch == 0:
        raise MalformedSpqrMessage("SPQR epoch 0")
    if at < n and data[at] < 0x80:
        index = data[at]
        at += 1
    elif at + 1 < n and data[at + 1] < 0x80:  # two bytes: index 128..16383
        index = data[at] & 0x7F | data[at + 1] << 7
        at += 2
    else:
        index, at = decode_varint(data, at)
        if index > _U32:
            raise MalformedSpqrMessage("SPQR key index beyond 32 bits")
    if at >= n:
        raise MalformedSpqrMessage("truncated SPQR message")
    payload = data[at]
    if payload >= len(_HAS_CHUNK):
        raise MalformedSpqrMessage("unknown SPQR payload type")
    at += 1
    if not _HAS_CHUNK[payload]:
        return epoch, index, payload, 0, None
    if at < n and data[at] < 0x80:
        chunk_index = data[at]
        at += 1
    elif at + 1 < n and data[at + 1] < 0x80:  # two bytes: chunk 128..16383
        chunk_index = data[at] & 0x7F | data[at + 1] << 7
        at += 2
    else:
        chunk_index, at = decode_varint(data, at)
    if chunk_index > MAX_CHUNK_INDEX or at + CHUNK_SIZE > n:
        raise MalformedSpqrMessage("bad SPQR chunk")
    return epoch, index, payload, chunk_index, bytes(data[at:at + CHUNK_SIZE])


def message_version(data: bytes) -> int | None:
    """The SPQR version of field-5 bytes: V0 for empty or 0x00, V1, or None if unknown."""
    if not data:
        return V0
    return data[0] if data[0] in (V0, V1) else None


def encode_varint(value: int) -> bytes:
    """LEB128 of an unsigned 64-bit value."""
    if not 0 <= value <= _U64:
        raise ValueError("varint out of range")
    out = bytearray()
    while value >= 0x80:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes, at: int) -> tuple[int, int]:
    """``(value, position after it)``; at most 10 bytes, bits past 64 dropped.

    Raises:
        MalformedSpqrMessage: no bytes left, or no terminating byte within 10 bytes.
    """
    value = 0
    for i in range(min(_MAX_VARINT_LEN, len(data) - at)):
        byte = data[at + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value & _U64, at + i + 1
    raise MalformedSpqrMessage("truncated or overlong varint")
