"""The application protocol's encoding: generated code, padding, content vectors,
and forward compatibility."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cipherpost.client import content as codec
from cipherpost.client.padding import PaddingError, pad, padme, unpad
from cipherpost.client.proto.app_pb2 import Content

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "vectors"


def test_generated_code_matches_the_schema() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_proto.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_padding_vectors() -> None:
    data = json.loads((VECTORS / "app-padding.json").read_text())
    for case in data["lengths"]:
        assert len(pad(bytes(case["length"]))) == case["padded"]
    for case in data["cases"]:
        plaintext, padded = bytes.fromhex(case["plaintext"]), bytes.fromhex(case["padded"])
        assert pad(plaintext) == padded
        assert unpad(padded) == plaintext


@given(st.binary(max_size=5000))
def test_padding_round_trips_and_bounds_overhead(data: bytes) -> None:
    padded = pad(data)
    assert unpad(padded) == data
    assert len(padded) >= 160
    assert len(padded) <= max(160, int((len(data) + 1) * 1.12) + 1)


def test_padme_is_monotonic_and_idempotent() -> None:
    previous = 0
    for n in range(1, 70000, 7):
        bucket = padme(n)
        assert bucket >= n and bucket >= previous and padme(bucket) == bucket
        previous = bucket


@pytest.mark.parametrize("bad", [b"", b"\x00" * 160, b"abc", b"abc\x81" + bytes(10)])
def test_unpad_refuses_missing_marker(bad: bytes) -> None:
    with pytest.raises(PaddingError):
        unpad(bad)


def test_content_vectors_both_ways() -> None:
    from google.protobuf import json_format

    data = json.loads((VECTORS / "app-content.json").read_text())
    assert len(data["cases"]) >= 9
    for case in data["cases"]:
        expected = bytes.fromhex(case["serialized"])
        parsed = Content.FromString(expected)
        assert json_format.MessageToDict(parsed) == case["json"], case["name"]
        assert json_format.ParseDict(case["json"], Content()).SerializeToString() == expected


def test_unknown_fields_and_bodies_are_ignored() -> None:
    # A newer sender: an unknown body (field 20, a length-delimited message) and an
    # unknown field inside a known DataMessage (field 40).
    newer = bytes.fromhex("0802") + bytes([0xA2, 0x01, 0x02, 0x08, 0x01])
    parsed = codec.decode(pad(newer))
    assert parsed.version == 2 and parsed.WhichOneof("body") is None
    data = bytes.fromhex("0801") + bytes([0x12, 0x07, 0x12, 0x02]) + b"hi" + \
        bytes([0xC0, 0x02, 0x07])
    parsed = codec.decode(pad(data))
    assert parsed.data.text == "hi"


def test_garbage_plaintext_is_invalid_content() -> None:
    with pytest.raises(codec.InvalidContent):
        codec.decode(pad(b"\xff\xff\xff"))
    with pytest.raises(codec.InvalidContent):
        codec.decode(b"no padding")


def test_group_change_vector() -> None:
    from cipherpost.client.groups import GroupChangeRejected, verify_change
    from cipherpost.client.proto.app_pb2 import SignedGroupChange
    from cipherpost.protocol import PublicKey

    case = json.loads((VECTORS / "app-content.json").read_text())["group_change"]
    key = PublicKey.deserialize(bytes.fromhex(case["author_identity_key"]))
    signed = SignedGroupChange.FromString(bytes.fromhex(case["signed_change"]))
    group = verify_change(signed, None, key)
    assert group.state_bytes.hex() == case["state"] and group.title == "climbing"
    assert group.is_admin(case["author"])
    tampered = SignedGroupChange(change=signed.change[:-1] + bytes([signed.change[-1] ^ 1]),
                                 signature=signed.signature)
    with pytest.raises(GroupChangeRejected):
        verify_change(tampered, None, key)
