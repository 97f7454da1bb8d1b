"""Base64 fields of the API (ciphertexts, keys): decoded with a clear 400 when malformed.

binascii directly: ``base64.b64decode(value, validate=True)`` is this call behind a
Python-level wrapper, which cost more than the decoding of a message's ciphertext."""

from __future__ import annotations

import binascii

from .errors import bad_request


def unb64(value: str, what: str, *, max_bytes: int | None = None) -> bytes:
    """Decode a base64 field (strictly: the standard alphabet, correct padding, nothing
    after it); 400 with a clear message otherwise."""
    try:
        data = binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):  # ValueError: a non-ASCII string
        raise bad_request(f"{what} is not valid base64") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise bad_request(f"{what} is too large", code="too_large")
    return data


def b64(data: bytes) -> str:
    """Standard base64 with padding, no newline."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")
