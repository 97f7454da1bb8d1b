"""A minimal protobuf wire codec for the handful of libsignal messages.

Why not the ``protobuf`` package: libsignal's messages are a few flat structures, and the
MAC is computed over the exact bytes received, so we need byte-level control of field
order and must never re-encode a received message. Decoding is strict about wire
structure (truncation, overlong varints, bad wire types raise :class:`DecodeError`) and
lenient about unknown fields (skipped, as proto2 readers do).
"""

from __future__ import annotations

from collections.abc import Iterable

VARINT = 0
FIXED64 = 1
LENGTH = 2
FIXED32 = 5


class DecodeError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def encode_varint(value: int) -> bytes:
    """Encode a non-negative integer below 2**64 as a varint."""
    if value < 0 or value >= 1 << 64:
        raise ValueError("varint out of range")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    """One varint field."""
    return encode_varint(number << 3) + encode_varint(value)


def field_bytes(number: int, value: bytes) -> bytes:
    """One length-delimited field."""
    return encode_varint((number << 3) | LENGTH) + encode_varint(len(value)) + value


def field_fixed64(number: int, value: int) -> bytes:
    """One fixed64 field (little-endian)."""
    return encode_varint((number << 3) | FIXED64) + value.to_bytes(8, "little")


def read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Read a varint at ``pos`` (before ``end``); return it and the next position.

    Raises:
        DecodeError: truncated, overlong, or above 2**64.
    """
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise DecodeError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift >= 70:
            raise DecodeError("overlong varint")
    if result >= 1 << 64:
        raise DecodeError("varint out of range")
    return result, pos


Value = int | bytes
Fields = dict[int, list[Value]]


def decode(data: bytes) -> Fields:
    """Decode a message into ``{field number: [values in order]}``.

    Varint, fixed32 and fixed64 values are ints, length-delimited values are bytes.

    Raises:
        DecodeError: the bytes are not a well-formed message.
    """
    fields: Fields = {}
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = read_varint(data, pos, end)
        number = key >> 3
        wire = key & 7
        if number == 0:
            raise DecodeError("field number 0")
        value: Value
        if wire == VARINT:
            value, pos = read_varint(data, pos, end)
        elif wire == LENGTH:
            length, pos = read_varint(data, pos, end)
            if length > end - pos:
                raise DecodeError("truncated field")
            value = data[pos : pos + length]
            pos += length
        elif wire == FIXED64:
            if pos + 8 > end:
                raise DecodeError("truncated fixed64")
            value = int.from_bytes(data[pos : pos + 8], "little")
            pos += 8
        elif wire == FIXED32:
            if pos + 4 > end:
                raise DecodeError("truncated fixed32")
            value = int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
        else:
            raise DecodeError(f"unsupported wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def decode_ordered(data: bytes) -> list[tuple[int, int, Value]]:
    """Decode a message into ``(field number, wire type, value)`` in wire order.

    For messages whose meaning depends on the order of different fields (a ``oneof``:
    the last member on the wire wins) or on the wire type (a field sent with the wrong
    one is an error for prost). :func:`decode` stays the fast path for everything else.

    Raises:
        DecodeError: the bytes are not a well-formed message.
    """
    out: list[tuple[int, int, Value]] = []
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = read_varint(data, pos, end)
        number = key >> 3
        wire = key & 7
        if number == 0:
            raise DecodeError("field number 0")
        value: Value
        if wire == VARINT:
            value, pos = read_varint(data, pos, end)
        elif wire == LENGTH:
            length, pos = read_varint(data, pos, end)
            if length > end - pos:
                raise DecodeError("truncated field")
            value = data[pos : pos + length]
            pos += length
        elif wire == FIXED64:
            if pos + 8 > end:
                raise DecodeError("truncated fixed64")
            value = int.from_bytes(data[pos : pos + 8], "little")
            pos += 8
        elif wire == FIXED32:
            if pos + 4 > end:
                raise DecodeError("truncated fixed32")
            value = int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
        else:
            raise DecodeError(f"unsupported wire type {wire}")
        out.append((number, wire, value))
    return out


def get_bytes(fields: Fields, number: int) -> bytes | None:
    """The last value of a bytes field, or None (proto semantics: last one wins)."""
    values = fields.get(number)
    if not values:
        return None
    value = values[-1]
    if not isinstance(value, bytes):
        raise DecodeError(f"field {number} is not length-delimited")
    return value


def get_int(fields: Fields, number: int) -> int | None:
    """The last value of an integer field, or None."""
    values = fields.get(number)
    if not values:
        return None
    value = values[-1]
    if not isinstance(value, int):
        raise DecodeError(f"field {number} is not an integer")
    return value


def get_uint32(fields: Fields, number: int) -> int | None:
    """An integer field that must fit in 32 bits (protobuf truncates; we refuse)."""
    value = get_int(fields, number)
    if value is not None and value >= 1 << 32:
        raise DecodeError(f"field {number} exceeds uint32")
    return value


def get_repeated_bytes(fields: Fields, number: int) -> list[bytes]:
    """All values of a repeated bytes field."""
    out: list[bytes] = []
    for value in fields.get(number, ()):
        if not isinstance(value, bytes):
            raise DecodeError(f"field {number} is not length-delimited")
        out.append(value)
    return out


def join(parts: Iterable[bytes]) -> bytes:
    """Concatenate encoded fields."""
    return b"".join(parts)
