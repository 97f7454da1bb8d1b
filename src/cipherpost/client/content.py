"""Encode and decode :class:`Content`, the plaintext of every ciphertext (docs/spec/)."""

from __future__ import annotations

from google.protobuf.message import DecodeError

from .padding import PaddingError, pad, unpad
from .proto.app_pb2 import Content

#: The spec version this implementation follows (``Content.version``).
SPEC_VERSION = 1


class InvalidContent(ValueError):
    """A decrypted plaintext that is not a padded :class:`Content`."""


def encode(content: Content) -> bytes:
    """Padded serialization, stamped with our spec version."""
    content.version = SPEC_VERSION
    return pad(content.SerializeToString())


def decode(plaintext: bytes) -> Content:
    """Parse a padded :class:`Content`.

    Raises:
        InvalidContent: bad padding or not a Content.
    """
    try:
        return Content.FromString(unpad(plaintext))
    except (PaddingError, DecodeError) as exc:
        raise InvalidContent(str(exc)) from None
