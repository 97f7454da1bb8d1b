"""Wire bytes, GF(2^16) and the erasure code against the recorded vectors (spqr-digest §6)."""

from __future__ import annotations

import itertools
import random

import pytest

from cipherpost.protocol.errors import InvalidMessage
from cipherpost.protocol.spqr import gf16
from cipherpost.protocol.spqr.erasure import Decoder, Encoder, chunk_at
from cipherpost.protocol.spqr.errors import MalformedSpqrMessage
from cipherpost.protocol.spqr.wire import (
    V0,
    V1,
    Chunk,
    PayloadType,
    SpqrMessage,
    decode_varint,
    encode_varint,
    message_version,
)

from .helpers import RUNS, H, load

TYPES = {"None": PayloadType.NONE, "Hdr": PayloadType.HDR, "Ek": PayloadType.EK,
         "EkCt1Ack": PayloadType.EK_CT1_ACK, "Ct1Ack": PayloadType.CT1_ACK,
         "Ct1": PayloadType.CT1, "Ct2": PayloadType.CT2}


def _recorded_messages() -> list[dict[str, object]]:
    out = []
    for name in RUNS:
        out += load(name)["messages"]
    for mode in ("spqr", "badmac"):
        result = load("py-alice-to-libsignal.json")["results"][mode]
        out.append({"pq_ratchet": result["reply_decoded_by_python"]["pq_ratchet"],
                    "pq_decoded": result["reply_decoded_by_python"]["pq_decoded"]})
    return out


MESSAGES = _recorded_messages()


def test_every_recorded_message_is_covered() -> None:
    assert len(MESSAGES) > 200
    assert {m["pq_decoded"]["type"] for m in MESSAGES} == set(TYPES)  # type: ignore[index]


@pytest.mark.parametrize("recorded", MESSAGES, ids=lambda m: str(m["pq_ratchet"])[:12])
def test_recorded_spqr_bytes_decode_and_reencode(recorded: dict) -> None:
    raw = H(recorded["pq_ratchet"])
    want = recorded["pq_decoded"]
    msg = SpqrMessage.decode(raw)
    assert (msg.epoch, msg.index, msg.payload) == (want["epoch"], want["index"],
                                                  TYPES[want["type"]])
    if msg.chunk is None:
        assert "chunk" not in want
    else:
        assert (msg.chunk.index, msg.chunk.data.hex()) == (want["chunk_index"], want["chunk"])
    assert want["trailing"] == 0
    assert msg.encode() == raw
    assert message_version(raw) == V1


@pytest.mark.parametrize("case", load("model-fixed-inputs.json")["wire"], ids=lambda c: c["type"])
def test_model_wire_encodings(case: dict) -> None:
    chunk = None
    if "chunk_index" in case:
        chunk = Chunk(case["chunk_index"], bytes(32))
    msg = SpqrMessage(case["epoch"], case["index"], TYPES[case["type"]], chunk)
    assert msg.encode().hex() == case["bytes"]
    assert SpqrMessage.decode(H(case["bytes"])) == msg


def test_trailing_bytes_are_ignored() -> None:
    raw = H(MESSAGES[0]["pq_ratchet"])  # type: ignore[arg-type]
    assert SpqrMessage.decode(raw + b"future") == SpqrMessage.decode(raw)


def test_versions() -> None:
    assert message_version(b"") == V0
    assert message_version(b"\x00anything") == V0
    assert message_version(b"\x01\x01\x01\x00") == V1
    assert message_version(b"\x02\x01\x01\x00") is None
    assert message_version(b"\xff") is None


@pytest.mark.parametrize("raw", [
    "", "00", "02010100", "01", "0100", "010101", "01000100",  # epoch 0
    "0101808080801000",  # index 2^32
    "01010107",  # unknown payload type
    "0101010100",  # Hdr without chunk
    "010101010000",  # Hdr with a short chunk
    "01010101808004" + "00" * 32,  # chunk index 65536
    "01" + "80" * 10 + "0001" + "00",  # 11-byte varint
    "01ff",  # truncated varint
])
def test_malformed_spqr_bytes(raw: str) -> None:
    with pytest.raises(MalformedSpqrMessage) as info:
        SpqrMessage.decode(H(raw))
    assert isinstance(info.value, InvalidMessage)


def test_every_truncation_of_a_chunk_message_is_refused() -> None:
    raw = H(MESSAGES[0]["pq_ratchet"])  # type: ignore[arg-type]
    for cut in range(len(raw)):
        with pytest.raises(MalformedSpqrMessage):
            SpqrMessage.decode(raw[:cut])


def test_random_bytes_never_crash() -> None:
    rnd = random.Random(7)
    for _ in range(3000):
        raw = bytes([1]) + rnd.randbytes(rnd.randrange(0, 45))
        try:
            msg = SpqrMessage.decode(raw)
        except MalformedSpqrMessage:
            continue
        assert raw.startswith(msg.encode()[:2])


def test_varints() -> None:
    assert encode_varint(0x012C) == b"\xac\x02"
    assert decode_varint(b"\xff\xac\x02\xff", 1) == (0x012C, 3)
    for value in (0, 1, 127, 128, 2**32 - 1, 2**63, 2**64 - 1):
        assert decode_varint(encode_varint(value), 0) == (value, len(encode_varint(value)))
    # A 10th byte's bits beyond 64 are dropped, as in libsignal.
    assert decode_varint(b"\xff" * 9 + b"\x7f", 0) == (2**64 - 1, 10)
    with pytest.raises(ValueError):
        encode_varint(2**64)


def test_message_constructor_rejects_inconsistent_values() -> None:
    with pytest.raises(ValueError):
        SpqrMessage(1, 1, PayloadType.HDR)
    with pytest.raises(ValueError):
        SpqrMessage(1, 1, PayloadType.NONE, Chunk(0, bytes(32)))
    with pytest.raises(ValueError):
        SpqrMessage(0, 1, PayloadType.NONE)
    with pytest.raises(ValueError):
        Chunk(65536, bytes(32))


# -- GF(2^16) -------------------------------------------------------------------------------

def test_gf16_vectors() -> None:
    vectors = load("model-fixed-inputs.json")["gf16"]
    assert int(vectors["poly"], 16) == gf16.POLY
    for a, b, product in vectors["mul"]:
        assert gf16.mul(a, b) == product
        assert gf16.mul(b, a) == product
    for a, inverse in vectors["inv"]:
        assert gf16.inv(a) == inverse
        assert gf16.mul(a, inverse) == 1


def _slow_mul(a: int, b: int) -> int:
    out = 0
    while b:
        if b & 1:
            out ^= a
        a <<= 1
        if a & 0x10000:
            a ^= gf16.POLY
        b >>= 1
    return out


def test_gf16_tables_match_shift_and_add() -> None:
    rnd = random.Random(3)
    for _ in range(2000):
        a, b = rnd.randrange(65536), rnd.randrange(65536)
        assert gf16.mul(a, b) == _slow_mul(a, b)
        if b:
            assert gf16.mul(gf16.div(a, b), b) == a
    with pytest.raises(ValueError):
        gf16.inv(0)
    with pytest.raises(ValueError):
        gf16.div(1, 0)


# -- erasure code ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", load("model-fixed-inputs.json")["erasure"],
                         ids=lambda c: str(len(c["message"]) // 2))
def test_model_erasure_chunks(case: dict) -> None:
    message = H(case["message"])
    for index, chunk in case["chunks"].items():
        assert chunk_at(message, int(index)).hex() == chunk
    decoder = Decoder(len(message))
    parity = sorted((int(i) for i in case["chunks"]), reverse=True)
    for index in parity[:len(message) // 32]:
        decoder = decoder.add(Chunk(index, H(case["chunks"][str(index)])))
    assert decoder.decoded() == message


def _epochs() -> list[tuple[str, dict]]:
    return [(f"{name[4:9]}-e{e['epoch']}", e) for name in RUNS for e in load(name)["epochs"]]


VALUES = {"hdr": ("hdr", "hdr_mac"), "ek": ("ek",), "ct1": ("ct1",), "ct2": ("ct2", "ct_mac")}


@pytest.mark.parametrize(("name", "epoch"), _epochs(), ids=[n for n, _ in _epochs()])
def test_recorded_wire_chunks_reencode(name: str, epoch: dict) -> None:
    for what, parts in VALUES.items():
        value = b"".join(H(epoch[p]) for p in parts)
        chunks = {int(i): H(c) for i, c in epoch["wire_chunks"][what].items()}
        assert len(chunks) >= len(value) // 32
        for index, data in chunks.items():
            assert chunk_at(value, index) == data, (what, index)
        # The encoder emits them in order.
        encoder = Encoder(value)
        for index in range(max(chunks) + 1):
            encoder, chunk = encoder.next()
            assert chunk.index == index
            if index in chunks:
                assert chunk.data == chunks[index]


def test_decoder_from_any_n_chunks() -> None:
    rnd = random.Random(11)
    for length in (96, 160, 960, 1152):
        value = rnd.randbytes(length)
        n = length // 32
        for _ in range(3):
            indices = rnd.sample(range(n + 30), n)
            decoder = Decoder(length)
            for count, index in enumerate(indices, 1):
                decoder = decoder.add(Chunk(index, chunk_at(value, index)))
                assert (decoder.decoded() is None) == (count < n)
            assert decoder.decoded() == value


def test_decoder_keeps_data_chunks_and_drops_surplus_parity() -> None:
    value = bytes(range(96))
    decoder = Decoder(96)
    for index in (5, 6, 7):
        decoder = decoder.add(Chunk(index, chunk_at(value, index)))
    assert decoder.decoded() == value
    full = decoder
    assert full.add(Chunk(8, chunk_at(value, 8))) is full  # surplus parity: not kept
    assert full.add(Chunk(5, bytes(32))) is full  # a held parity index is not replaced
    with_data = full.add(Chunk(1, chunk_at(value, 1)))  # a data chunk always is
    assert sorted(with_data.chunks) == [1, 5, 6, 7]
    assert with_data.decoded() == value
    # Adding never changes the decoder it was called on.
    assert sorted(full.chunks) == [5, 6, 7]


def test_decoder_duplicates_do_not_count() -> None:
    value = bytes(range(96))
    decoder = Decoder(96)
    for _ in range(5):
        decoder = decoder.add(Chunk(4, chunk_at(value, 4)))
    assert decoder.decoded() is None


def test_encoder_wraps_the_wire_index() -> None:
    value = bytes(range(96))
    encoder, chunk = Encoder(value, 65536 + 2).next()
    assert chunk.index == 2 and chunk.data == value[64:]
    assert encoder.next_index == 65539
    for bad in (b"", bytes(31)):
        with pytest.raises(ValueError):
            Encoder(bad)
        with pytest.raises(ValueError):
            Decoder(len(bad))


def test_lagrange_over_all_small_subsets() -> None:
    value = bytes(range(160))
    for subset in itertools.combinations(range(9), 5):
        decoder = Decoder(160)
        for index in subset:
            decoder = decoder.add(Chunk(index, chunk_at(value, index)))
        assert decoder.decoded() == value


def _reference_chunk(value: bytes, index: int) -> bytes:
    """Chunk ``index`` symbol by symbol with textbook Lagrange interpolation over the data
    nodes, field element by field element (the fast forms in erasure.py work on whole
    chunks and, for headers, on a linear form)."""
    n = len(value) // 32
    out = b""
    for p in range(16):
        total = 0
        for j in range(n):
            weight = 1
            for m in range(n):
                if m != j:
                    weight = gf16.mul(weight, gf16.div(index ^ m, j ^ m))
            symbol = int.from_bytes(value[32 * j + 2 * p:32 * j + 2 * p + 2], "big")
            total ^= gf16.mul(weight, symbol)
        out += total.to_bytes(2, "big")
    return out


@pytest.mark.parametrize("length", [32, 64, 96, 160, 960, 1152])
def test_parity_chunks_match_textbook_lagrange(length: int) -> None:
    rnd = random.Random(length)
    n = length // 32
    for _ in range(2):
        value = rnd.randbytes(length)
        indices = [n, n + 1, 255, 256, 257, 4096, 65534, 65535,
                   *rnd.sample(range(n, 65536), 6)]
        for index in indices:
            assert chunk_at(value, index) == _reference_chunk(value, index), index


def test_per_message_fields_agree_with_the_message_codec() -> None:
    """encode_fields/decode_fields (the per-message forms, with one- and two-byte varints
    inline) against SpqrMessage and the general varint code, around every length step."""
    from cipherpost.protocol.spqr.wire import decode_fields, encode_fields

    steps = [0, 1, 127, 128, 129, 255, 300, 16383, 16384, 16385, 65535]
    rnd = random.Random(7)
    for index in [*steps, 2**21 - 1, 2**21, 2**32 - 1]:
        for chunk_index in steps:
            epoch = rnd.choice([1, 2, 127, 128, 2**40])
            chunk = Chunk(chunk_index, rnd.randbytes(32))
            raw = encode_fields(epoch, index, PayloadType.EK, chunk_index, chunk.data)
            assert raw == SpqrMessage(epoch, index, PayloadType.EK, chunk).encode()
            assert decode_fields(raw) == (epoch, index, PayloadType.EK, chunk_index, chunk.data)
        raw = encode_fields(3, index, PayloadType.CT1_ACK, 0, None)
        assert decode_fields(raw) == (3, index, PayloadType.CT1_ACK, 0, None)
    # Two-byte varints that are not canonical read as the general decoder reads them.
    for first, second in ((0x80, 0x00), (0xFF, 0x7F), (0x81, 0x01)):
        raw = bytes((1, 1, first, second, 2, first, second)) + bytes(32)
        value = decode_varint(bytes((first, second)), 0)[0]
        assert decode_fields(raw) == (1, value, 2, value, bytes(32))
    # Truncated right after a two-byte index or chunk index.
    for raw in (b"\x01\x01\x80\x01", b"\x01\x01\x01\x02\x80\x01" + bytes(31)):
        with pytest.raises(MalformedSpqrMessage):
            decode_fields(raw)


def _fields_varint_by_varint(data: bytes) -> tuple[int, int, int, int, bytes | None]:
    """decode_fields' contract read the slow way, one general varint at a time."""
    if not data or data[0] != 1:
        raise MalformedSpqrMessage("not V1")
    epoch, at = decode_varint(data, 1)
    index, at = decode_varint(data, at)
    if epoch == 0 or index > 2**32 - 1 or at >= len(data) or data[at] > 6:
        raise MalformedSpqrMessage("bad header")
    payload = data[at]
    if payload in (PayloadType.NONE, PayloadType.CT1_ACK):
        return epoch, index, payload, 0, None
    chunk_index, at = decode_varint(data, at + 1)
    if chunk_index > 65535 or at + 32 > len(data):
        raise MalformedSpqrMessage("bad chunk")
    return epoch, index, payload, chunk_index, data[at:at + 32]


def test_per_message_decode_agrees_with_varint_by_varint_reading() -> None:
    """decode_fields (whose usual message is read from one struct of its first 7 bytes)
    accepts and refuses exactly what a general varint reading does, on random bytes
    biased towards the varint boundaries, truncations and bad payload types."""
    from cipherpost.protocol.spqr.wire import decode_fields

    rnd = random.Random(11)
    edges = [0x00, 0x01, 0x02, 0x06, 0x07, 0x7F, 0x80, 0x81, 0xFF]
    accepted = 0
    for _ in range(20_000):
        size = rnd.randrange(0, 44)
        head = [rnd.choice(edges) if rnd.random() < 0.7 else rnd.randrange(256)
                for _ in range(min(size, 8))]
        raw = bytes(head) + rnd.randbytes(size - len(head))
        if raw and rnd.random() < 0.8:
            raw = b"\x01" + raw[1:]
        try:
            expected: object = _fields_varint_by_varint(raw)
        except MalformedSpqrMessage:
            expected = MalformedSpqrMessage
        try:
            got: object = decode_fields(raw)
        except MalformedSpqrMessage:
            got = MalformedSpqrMessage
        assert got == expected, raw.hex()
        accepted += expected is not MalformedSpqrMessage
    assert accepted > 1_000  # the inputs reach the accepting paths, not only the errors
