"""Prekey records and prekey bundles (digest §1.4, §2.1, §3.1).

Records serialize as ``format version byte || protobuf`` so that later formats can keep
loading every earlier one.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import protobuf as pb
from . import xeddsa
from .errors import InvalidKey, InvalidSignature
from .kem import DEFAULT_KEMS, KYBER1024, KemKeyPair, KemPublicKey, KemRegistry
from .keys import IdentityKey, IdentityKeyPair, KeyPair, PublicKey, Random

RECORD_FORMAT = 1
MAX_PREKEY_ID = 0xFFFFFFFF


def _check_id(key_id: int) -> int:
    if not 0 <= key_id <= MAX_PREKEY_ID:
        raise ValueError("prekey ids are u32")
    return key_id


def _load(data: bytes, what: str) -> pb.Fields:
    if not data or data[0] != RECORD_FORMAT:
        raise InvalidKey(f"unknown {what} record format")
    try:
        return pb.decode(data[1:])
    except pb.DecodeError as exc:
        raise InvalidKey(f"malformed {what} record") from exc


def _need_bytes(fields: pb.Fields, number: int, what: str) -> bytes:
    try:
        value = pb.get_bytes(fields, number)
    except pb.DecodeError:  # the field has another wire type
        value = None
    if value is None:
        raise InvalidKey(f"malformed {what} record")
    return value


def _need_int(fields: pb.Fields, number: int, what: str) -> int:
    value = _opt_int(fields, number, what)
    if value is None:
        raise InvalidKey(f"malformed {what} record")
    return value


def _opt_int(fields: pb.Fields, number: int, what: str) -> int | None:
    try:
        return pb.get_int(fields, number)
    except pb.DecodeError:  # the field has another wire type
        raise InvalidKey(f"malformed {what} record") from None


@dataclass(frozen=True, slots=True)
class PreKeyRecord:
    """A one-time Curve25519 prekey."""

    id: int
    key_pair: KeyPair

    @classmethod
    def generate(cls, key_id: int, rng: Random) -> PreKeyRecord:
        """A fresh one-time prekey."""
        return cls(_check_id(key_id), KeyPair.generate(rng))

    def serialize(self) -> bytes:
        """Versioned storage form."""
        return bytes((RECORD_FORMAT,)) + pb.join((
            pb.field_varint(1, self.id),
            pb.field_bytes(2, self.key_pair.public.serialize()),
            pb.field_bytes(3, self.key_pair.private.serialize()),
        ))

    @classmethod
    def deserialize(cls, data: bytes) -> PreKeyRecord:
        """Load a stored record.

        Raises:
            InvalidKey: the record is malformed.
        """
        f = _load(data, "prekey")
        return cls(_need_int(f, 1, "prekey"), KeyPair.from_private(_need_bytes(f, 3, "prekey")))


@dataclass(frozen=True, slots=True)
class SignedPreKeyRecord:
    """A medium-term Curve25519 prekey signed by the identity key."""

    id: int
    key_pair: KeyPair
    signature: bytes
    timestamp: int

    @classmethod
    def generate(cls, key_id: int, identity: IdentityKeyPair, timestamp: int,
                 rng: Random) -> SignedPreKeyRecord:
        """A fresh signed prekey; ``timestamp`` in milliseconds."""
        pair = KeyPair.generate(rng)
        signature = xeddsa.sign(identity.private, pair.public.serialize(), rng)
        return cls(_check_id(key_id), pair, signature, timestamp)

    def serialize(self) -> bytes:
        """Versioned storage form."""
        return bytes((RECORD_FORMAT,)) + pb.join((
            pb.field_varint(1, self.id),
            pb.field_bytes(2, self.key_pair.public.serialize()),
            pb.field_bytes(3, self.key_pair.private.serialize()),
            pb.field_bytes(4, self.signature),
            pb.field_fixed64(5, self.timestamp),
        ))

    @classmethod
    def deserialize(cls, data: bytes) -> SignedPreKeyRecord:
        """Load a stored record.

        Raises:
            InvalidKey: the record is malformed.
        """
        w = "signed prekey"
        f = _load(data, w)
        return cls(_need_int(f, 1, w), KeyPair.from_private(_need_bytes(f, 3, w)),
                   _need_bytes(f, 4, w), _opt_int(f, 5, w) or 0)


@dataclass(frozen=True, slots=True)
class KyberPreKeyRecord:
    """A KEM prekey signed by the identity key; one-time or last resort."""

    id: int
    key_pair: KemKeyPair
    signature: bytes
    timestamp: int
    last_resort: bool = False

    @classmethod
    def generate(cls, key_id: int, identity: IdentityKeyPair, timestamp: int, rng: Random,
                 *, key_type: int = KYBER1024, last_resort: bool = False,
                 kems: KemRegistry = DEFAULT_KEMS) -> KyberPreKeyRecord:
        """A fresh KEM prekey of ``key_type`` (Kyber1024 by default)."""
        pair = KemKeyPair.generate(rng, key_type, kems)
        signature = xeddsa.sign(identity.private, pair.public.serialize(), rng)
        return cls(_check_id(key_id), pair, signature, timestamp, last_resort)

    def serialize(self) -> bytes:
        """Versioned storage form (the private half is the ML-KEM seed)."""
        return bytes((RECORD_FORMAT,)) + pb.join((
            pb.field_varint(1, self.id),
            pb.field_bytes(2, self.key_pair.public.serialize()),
            pb.field_bytes(3, self.key_pair.secret),
            pb.field_bytes(4, self.signature),
            pb.field_fixed64(5, self.timestamp),
            pb.field_varint(6, int(self.last_resort)),
        ))

    @classmethod
    def deserialize(cls, data: bytes, kems: KemRegistry = DEFAULT_KEMS) -> KyberPreKeyRecord:
        """Load a stored record.

        Raises:
            InvalidKey: the record is malformed.
        """
        w = "kyber prekey"
        f = _load(data, w)
        public = KemPublicKey.deserialize(_need_bytes(f, 2, w), kems)
        pair = KemKeyPair(public, _need_bytes(f, 3, w))
        return cls(_need_int(f, 1, w), pair, _need_bytes(f, 4, w), _opt_int(f, 5, w) or 0,
                   bool(_opt_int(f, 6, w)))


@dataclass(frozen=True, slots=True)
class PreKeyBundle:
    """What an initiator fetches to start a session with one device (digest §3.1)."""

    registration_id: int
    device_id: int
    identity_key: IdentityKey
    signed_pre_key_id: int
    signed_pre_key: PublicKey
    signed_pre_key_signature: bytes
    kyber_pre_key_id: int
    kyber_pre_key: KemPublicKey
    kyber_pre_key_signature: bytes
    pre_key_id: int | None = None
    pre_key: PublicKey | None = None

    def __post_init__(self) -> None:
        if (self.pre_key_id is None) != (self.pre_key is None):
            raise ValueError("pre_key_id and pre_key go together")

    def verify_signatures(self) -> None:
        """Check both prekey signatures against the identity key.

        Raises:
            InvalidSignature: either signature fails.
        """
        if not xeddsa.verify(self.identity_key, self.signed_pre_key.serialize(),
                             self.signed_pre_key_signature):
            raise InvalidSignature("signed prekey signature does not verify")
        if not xeddsa.verify(self.identity_key, self.kyber_pre_key.serialize(),
                             self.kyber_pre_key_signature):
            raise InvalidSignature("Kyber prekey signature does not verify")
