"""SignalMessage encoding and parsing: the fast paths agree with the general protobuf codec."""

from __future__ import annotations

import random

import pytest

from cipherpost.protocol import protobuf as pb
from cipherpost.protocol.errors import InvalidMessage
from cipherpost.protocol.messages import (
    LARGE,
    SignalMessage,
    header_prefix,
    header_rest,
    varint,
)

KEY = b"\x05" + bytes(range(32))
VALUES = [0, 1, 127, 128, 300, 16383, 16384, 2**21, 2**32 - 1]


def _general(data: bytes) -> tuple[bytes, int, int, bytes]:
    fields = pb.decode(data[1:-8])
    return (pb.get_bytes(fields, 1) or b"", pb.get_int(fields, 2) or 0,
            pb.get_int(fields, 3) or 0, pb.get_bytes(fields, 4) or b"")


def test_varints_match_the_protobuf_encoder() -> None:
    for value in [*range(20_000), 2**28, 2**35, 2**64 - 1]:
        assert varint(value) == pb.encode_varint(value)
    with pytest.raises(ValueError):
        varint(-1)
    for counter in VALUES:
        for previous in VALUES:
            for length in (0, 112, 127, 128, 4096, 16383, 16384, 65552):
                assert header_rest(counter, previous, length) == (
                    pb.encode_varint(counter) + pb.field_varint(3, previous)
                    + b"\x22" + pb.encode_varint(length))


@pytest.mark.parametrize("size", [0, 16, 112, LARGE - 16, LARGE, 16_384, 65_552])
def test_parse_agrees_with_the_general_decoder(size: int) -> None:
    ciphertext = random.Random(size).randbytes(size)
    for counter in VALUES:
        for previous in (0, 127, 128, 2**32 - 1):
            data = SignalMessage.encode_body(4, KEY, counter, previous, ciphertext) + bytes(8)
            message = SignalMessage.parse(data)
            assert (message.ratchet_key_bytes, message.counter, message.previous_counter,
                    bytes(message.ciphertext)) == _general(data)
            assert data.startswith(header_prefix(4, KEY))


def test_non_minimal_varints_parse_as_the_general_decoder_reads_them() -> None:
    ciphertext = bytes(16)
    body = (header_prefix(4, KEY) + b"\x85\x00" + b"\x18" + b"\x80\x80\x00" + b"\x22"
            + b"\x90\x00" + ciphertext)
    data = body + bytes(8)
    message = SignalMessage.parse(data)
    assert (message.ratchet_key_bytes, message.counter, message.previous_counter,
            message.ciphertext) == _general(data) == (KEY, 5, 0, ciphertext)


def _general_trailer(data: bytes) -> tuple[bytes, bytes | None]:
    fields = pb.decode(data[1:-8])
    return pb.get_bytes(fields, 5) or b"", pb.get_bytes(fields, 6)


@pytest.mark.parametrize("pq_size", [0, 4, 37, 127, 128, 300, 16_383, 16_384])
def test_spqr_and_address_fields_parse_as_the_general_decoder_reads_them(pq_size: int) -> None:
    """SPQR messages (field 5, and field 6 on the PreKey path) take the fast parser too."""
    rnd = random.Random(pq_size)
    pq = rnd.randbytes(pq_size)
    for size in (0, 112, LARGE):
        ciphertext = rnd.randbytes(size)
        for counter in (0, 300, 2**32 - 1):
            body = SignalMessage.encode_body(4, KEY, counter, 5, ciphertext, pq)
            for extra in (b"", pb.field_bytes(6, rnd.randbytes(36))):
                data = body + extra + bytes(8)
                message = SignalMessage.parse(data)
                assert (message.ratchet_key_bytes, message.counter, message.previous_counter,
                        bytes(message.ciphertext)) == _general(data)
                assert (message.pq_ratchet, message.addresses) == _general_trailer(data)
                assert message.pq_ratchet == pq


def test_unusual_trailers_parse_as_the_general_decoder_reads_them() -> None:
    """Fields 5 and 6 in another order, repeated, or unknown fields after the ciphertext
    leave the fast parser for the general decoder, with the same result."""
    ciphertext = bytes(16)
    body = SignalMessage.encode_body(4, KEY, 7, 0, ciphertext)
    five, six = pb.field_bytes(5, b"\x01\x01\x01\x00"), pb.field_bytes(6, bytes(range(36)))
    for trailer in (six + five, five + five, five + pb.field_varint(9, 1), six,
                    five + six + five, pb.field_bytes(5, b"") + six,
                    b"\x2a\x80\x01" + bytes(128)):
        data = body + trailer + bytes(8)
        message = SignalMessage.parse(data)
        assert (message.counter, bytes(message.ciphertext)) == (7, ciphertext)
        assert (message.pq_ratchet, message.addresses) == _general_trailer(data)


def test_truncated_trailers_are_refused_as_by_the_general_decoder() -> None:
    body = SignalMessage.encode_body(4, KEY, 7, 0, bytes(16), b"\x01\x01\x01\x00")
    for cut in range(1, 6):
        data = body[:-cut] + bytes(8)
        with pytest.raises(InvalidMessage):
            SignalMessage.parse(data)
