"""The API's base64 fields (cipherpost.server.codec) decode exactly as
``base64.b64decode(value, validate=True)`` and encode as ``base64.b64encode``."""

from __future__ import annotations

import base64
import binascii

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cipherpost.server.codec import b64, unb64
from cipherpost.server.errors import ApiError

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


def _reference(value: str) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


@given(st.one_of(st.text(alphabet=_ALPHABET, max_size=40),  # mostly near-valid
                 st.text(max_size=20),  # anything, non-ASCII included
                 st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode())))
def test_decoding_accepts_and_refuses_what_the_standard_library_does(value: str) -> None:
    expected = _reference(value)
    if expected is None:
        with pytest.raises(ApiError) as refused:
            unb64(value, "content")
        assert refused.value.status == 400
        assert refused.value.code == "invalid_request"
    else:
        assert unb64(value, "content") == expected


@given(st.binary(max_size=300))
def test_encoding_is_standard_base64_and_round_trips(data: bytes) -> None:
    assert b64(data) == base64.b64encode(data).decode()
    assert unb64(b64(data), "content") == data


def test_data_beyond_the_limit_is_refused_as_too_large() -> None:
    with pytest.raises(ApiError) as refused:
        unb64(b64(b"x" * 11), "content", max_bytes=10)
    assert refused.value.code == "too_large"
    assert unb64(b64(b"x" * 10), "content", max_bytes=10) == b"x" * 10
