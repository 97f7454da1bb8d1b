"""Base64 fields of the API (ciphertexts, keys): decoded with a clear 400 when malformed."""

from __future__ import annotations

import base64
import binascii

from .errors import bad_request


def unb64(value: str, what: str, *, max_bytes: int | None = None) -> bytes:
    """Decode a base64 field; 400 with a clear message otherwise."""
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{what} is not valid base64") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise bad_request(f"{what} is too large", code="too_large")
    return data


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
