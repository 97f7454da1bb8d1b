"""Curve25519 keys in libsignal's serialized forms (digest §1.1, §1.3).

Randomness is never drawn here: every generator takes ``rng``, a callable returning
``n`` random bytes (the caller passes ``os.urandom`` or a seeded test double).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from nacl.bindings import crypto_core_ed25519_is_valid_point, crypto_scalarmult
from nacl.exceptions import CryptoError

from . import protobuf as pb
from .errors import InvalidKey

#: A source of randomness: ``rng(n)`` returns ``n`` bytes from a CSPRNG.
Random = Callable[[int], bytes]

DJB_TYPE = 0x05
_P = 2**255 - 19


def clamp(private: bytes) -> bytes:
    """Clamp a 32-byte Curve25519 scalar the way libsignal stores it."""
    if len(private) != 32:
        raise InvalidKey("private key must be 32 bytes")
    k = bytearray(private)
    k[0] &= 0xF8
    k[31] = (k[31] & 0x7F) | 0x40
    return bytes(k)


class PublicKey:
    """A Curve25519 public key; ``serialize()`` gives the 33-byte ``0x05 || u`` form."""

    __slots__ = ("_raw", "_serialized", "_x25519")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise InvalidKey("public key must be 32 bytes")
        self._raw = bytes(raw)
        self._serialized = b"\x05" + self._raw
        self._x25519: X25519PublicKey | None = None

    @classmethod
    def from_stored(cls, serialized: bytes) -> PublicKey:
        """Rebuild a key from 33 serialized bytes this library stored or parsed itself
        (length and type byte checked; no copy)."""
        if len(serialized) != 33 or serialized[0] != DJB_TYPE:
            raise InvalidKey("bad stored public key")
        key = cls.__new__(cls)
        key._raw = serialized[1:]
        key._serialized = serialized
        key._x25519 = None
        return key

    @classmethod
    def deserialize(cls, data: bytes) -> PublicKey:
        """Parse ``0x05 || u``; trailing bytes are ignored as libsignal does.

        Raises:
            InvalidKey: empty input, wrong type byte, or fewer than 32 key bytes.
        """
        if not data:
            raise InvalidKey("empty public key")
        if data[0] != DJB_TYPE:
            raise InvalidKey(f"bad key type {data[0]:#04x}")
        if len(data) < 33:
            raise InvalidKey("public key too short")
        return cls(data[1:33])

    @property
    def raw(self) -> bytes:
        """The 32-byte Montgomery u coordinate."""
        return self._raw

    def serialize(self) -> bytes:
        """The 33-byte serialized form."""
        return self._serialized

    def x25519(self) -> X25519PublicKey:
        """The key as a ``cryptography`` object (cached)."""
        if self._x25519 is None:
            self._x25519 = X25519PublicKey.from_public_bytes(self._raw)
        return self._x25519

    def is_canonical(self) -> bool:
        """True when u < p, bit 255 is clear and the point is in the prime-order subgroup.

        libsignal requires this of the PQXDH base key a responder receives (digest §1.1).
        """
        u = int.from_bytes(self._raw, "little")
        if u >= _P:
            return False
        if (u + 1) % _P == 0:
            return False
        y = (u - 1) * pow(u + 1, -1, _P) % _P
        return bool(crypto_core_ed25519_is_valid_point(y.to_bytes(32, "little")))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other._raw == self._raw

    def __ne__(self, other: object) -> bool:
        return not (isinstance(other, PublicKey) and other._raw == self._raw)

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"PublicKey({self._raw.hex()})"


class PrivateKey:
    """A clamped Curve25519 private key. Its repr never shows the key."""

    __slots__ = ("_public", "_raw", "_x25519")

    def __init__(self, raw: bytes) -> None:
        self._raw = clamp(raw)
        self._x25519: X25519PrivateKey | None = None
        self._public: PublicKey | None = None

    @classmethod
    def generate(cls, rng: Random) -> PrivateKey:
        """A fresh private key from ``rng``."""
        return cls(rng(32))

    @classmethod
    def from_stored(cls, raw: bytes) -> PrivateKey:
        """Rebuild a key this library stored itself: already clamped, so not clamped again."""
        if len(raw) != 32 or raw[0] & 7 or raw[31] & 0x80 or not raw[31] & 0x40:
            raise InvalidKey("bad stored private key")
        key = cls.__new__(cls)
        key._raw = raw
        key._x25519 = None
        key._public = None
        return key

    def serialize(self) -> bytes:
        """The 32 clamped scalar bytes."""
        return self._raw

    def x25519(self) -> X25519PrivateKey:
        """The key as a ``cryptography`` object (cached)."""
        if self._x25519 is None:
            self._x25519 = X25519PrivateKey.from_private_bytes(self._raw)
        return self._x25519

    def public_key(self) -> PublicKey:
        """The matching public key (cached)."""
        if self._public is None:
            self._public = PublicKey(self.x25519().public_key().public_bytes_raw())
        return self._public

    def agree(self, public: PublicKey) -> bytes:
        """X25519 with ``public``.

        A key already loaded into ``cryptography`` agrees there. A key rebuilt from
        storage and not loaded yet agrees through libsodium instead, which takes the
        scalar as bytes: loading it into ``cryptography`` would first compute its public
        key, a second scalar multiplication. Both are RFC 7748 X25519 (same clamping, bit
        255 of ``u`` ignored, ``u`` reduced mod p) and both refuse an all-zero result;
        ``tests/protocol/test_primitives.py`` checks that they agree, low-order points
        included.

        Raises:
            InvalidKey: the agreement is all zeros (a small-order public key).
        """
        key = self._x25519
        if key is None:
            try:
                return bytes(crypto_scalarmult(self._raw, public._raw))
            except CryptoError as exc:  # libsodium refuses small-order points, zero output
                raise InvalidKey("invalid key agreement") from exc
        try:
            return key.exchange(public.x25519())
        except ValueError as exc:  # cryptography refuses an all-zero output
            raise InvalidKey("invalid key agreement") from exc

    def __repr__(self) -> str:
        return "PrivateKey(<redacted>)"


@dataclass(frozen=True, slots=True, repr=False)
class KeyPair:
    """A Curve25519 key pair."""

    public: PublicKey
    private: PrivateKey

    @classmethod
    def generate(cls, rng: Random) -> KeyPair:
        """A fresh key pair from ``rng``."""
        private = PrivateKey.generate(rng)
        return cls(private.public_key(), private)

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        """Rebuild a pair from its 32 private bytes."""
        key = PrivateKey(private)
        return cls(key.public_key(), key)

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public!r}, private=<redacted>)"


IdentityKey = PublicKey


@dataclass(frozen=True, slots=True, repr=False)
class IdentityKeyPair:
    """An identity key pair; serializes as libsignal's ``IdentityKeyPairStructure``."""

    public: PublicKey
    private: PrivateKey

    @classmethod
    def generate(cls, rng: Random) -> IdentityKeyPair:
        """A fresh identity key pair from ``rng``."""
        pair = KeyPair.generate(rng)
        return cls(pair.public, pair.private)

    def serialize(self) -> bytes:
        """The 69-byte protobuf ``{1: public(33), 2: private(32)}``."""
        return pb.field_bytes(1, self.public.serialize()) + pb.field_bytes(
            2, self.private.serialize())

    @classmethod
    def deserialize(cls, data: bytes) -> IdentityKeyPair:
        """Parse :meth:`serialize`'s output.

        Raises:
            InvalidKey: malformed structure or keys.
        """
        try:
            fields = pb.decode(data)
            public = pb.get_bytes(fields, 1)
            private = pb.get_bytes(fields, 2)
        except pb.DecodeError as exc:
            raise InvalidKey("malformed identity key pair") from exc
        if public is None or private is None or len(private) != 32:
            raise InvalidKey("malformed identity key pair")
        key = PrivateKey(private)
        pub = PublicKey.deserialize(public)
        if key.public_key() != pub:
            raise InvalidKey("identity key pair halves do not match")
        return cls(pub, key)

    def __repr__(self) -> str:
        return f"IdentityKeyPair(public={self.public!r}, private=<redacted>)"
