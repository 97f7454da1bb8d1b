"""Encode and decode :class:`Content`, the plaintext of every ciphertext (docs/spec/)."""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from .padding import PaddingError, pad, unpad
from .proto.app_pb2 import Content

#: The spec version this implementation follows (``Content.version``).
SPEC_VERSION = 1

#: The largest value any 64-bit integer field may carry (docs/spec/README.md, "Encoding"):
#: 2^53 - 1, exact in a JavaScript number and far from SQLite's signed 64-bit limit.
MAX_INTEGER = 2**53 - 1

_WIDE = frozenset({FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_INT64,
                   FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64,
                   FieldDescriptor.TYPE_SINT64})


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
        content = Content.FromString(unpad(plaintext))
    except (PaddingError, DecodeError) as exc:
        raise InvalidContent(str(exc)) from None
    check_integers(content)
    return content


def check_integers(message: Message) -> None:
    """Every 64-bit integer in ``message`` (nested messages included) lies within
    [-MAX_INTEGER, MAX_INTEGER].

    Raises:
        InvalidContent: naming the first field out of range.
    """
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            items = value if field.is_repeated else [value]
            for item in items:
                check_integers(item)
        elif field.type in _WIDE:
            items = value if field.is_repeated else [value]
            if any(abs(item) > MAX_INTEGER for item in items):
                raise InvalidContent(f"{field.full_name} is out of range")
