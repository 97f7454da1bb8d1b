"""Sealed-sender certificates (digest §8.4): a *server certificate* (key id, server key)
signed by a trust root, and over it a *sender certificate* (uuid, optional E.164, device
id, identity key, expiry in milliseconds) signed by the server key.

Kept apart from :mod:`.sealed_sender` so that the relay, which issues sender
certificates, imports no session code. Certificates are parsed the way libsignal's prost
decoder reads them (unknown fields skipped, last value wins, the last member of a
``oneof`` wins, wrong wire types refused) and keep the exact bytes received, so
signatures are checked over those.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from . import protobuf as pb
from . import xeddsa
from .errors import (
    ExpiredCertificate,
    InvalidMessage,
    RevokedCertificate,
    UnknownServerCertificate,
    UntrustedCertificate,
)
from .keys import PrivateKey, PublicKey, Random

#: Server certificate key ids libsignal refuses (its test id, digest §8.4).
REVOKED_SERVER_CERTIFICATE_IDS = frozenset({0xDEADC357})

U32 = 0xFFFFFFFF


# -- parsing helpers --------------------------------------------------------------------


def read_fields(data: bytes, wires: dict[int, int]) -> dict[int, tuple[int, pb.Value]]:
    """Known fields as ``{number: (position of its last occurrence, last value)}``.

    Raises:
        pb.DecodeError: malformed, or a known field with the wrong wire type.
    """
    out: dict[int, tuple[int, pb.Value]] = {}
    for position, (number, wire, value) in enumerate(pb.decode_ordered(data)):
        expected = wires.get(number)
        if expected is None:
            continue
        if wire != expected:
            raise pb.DecodeError(f"field {number} has wire type {wire}")
        out[number] = (position, value)
    return out


def get_bytes(fields: dict[int, tuple[int, pb.Value]], number: int) -> bytes | None:
    entry = fields.get(number)
    if entry is None:
        return None
    value = entry[1]
    assert isinstance(value, bytes)  # guaranteed by the wire type check
    return value


def get_int(fields: dict[int, tuple[int, pb.Value]], number: int) -> int | None:
    entry = fields.get(number)
    if entry is None:
        return None
    value = entry[1]
    assert isinstance(value, int)
    return value


def oneof(fields: dict[int, tuple[int, pb.Value]], *numbers: int) -> int | None:
    """Which member of a ``oneof`` is set: the one that came last on the wire."""
    present = [(fields[n][0], n) for n in numbers if n in fields]
    return max(present)[1] if present else None


def uint32(value: int) -> int:
    # prost reads a uint32 as the low 32 bits of the varint.
    return value & U32


def int32_varint(value: int) -> int:
    # prost writes an enum (int32) sign-extended to 64 bits.
    return value if value < 1 << 31 else value - (1 << 32) + (1 << 64)


# -- certificates -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    """A server key and its id, signed by a trust root (digest §8.4)."""

    key_id: int
    key: PublicKey
    certificate: bytes
    signature: bytes
    serialized: bytes

    @classmethod
    def create(cls, key_id: int, key: PublicKey, trust_root: PrivateKey, *,
               rng: Random) -> ServerCertificate:
        """Issue a server certificate (as a deployment's offline tooling would).

        Raises:
            ValueError: ``key_id`` is not a u32.
        """
        if not 0 <= key_id <= U32:
            raise ValueError("key_id must be a u32")
        certificate = pb.field_varint(1, key_id) + pb.field_bytes(2, key.serialize())
        signature = xeddsa.sign(trust_root, certificate, rng)
        serialized = pb.field_bytes(1, certificate) + pb.field_bytes(2, signature)
        return cls(key_id, key, certificate, signature, serialized)

    @classmethod
    def deserialize(cls, data: bytes) -> ServerCertificate:
        """Parse a serialized ``ServerCertificate``.

        Raises:
            InvalidMessage: malformed, or a required field is missing.
            InvalidKey: the server key is not a Curve25519 key.
        """
        try:
            outer = read_fields(data, {1: pb.LENGTH, 2: pb.LENGTH})
            certificate = get_bytes(outer, 1)
            signature = get_bytes(outer, 2)
            if certificate is None or signature is None:
                raise InvalidMessage("server certificate lacks a required field")
            inner = read_fields(certificate, {1: pb.VARINT, 2: pb.LENGTH})
        except pb.DecodeError as exc:
            raise InvalidMessage("malformed server certificate") from exc
        key_id = get_int(inner, 1)
        key = get_bytes(inner, 2)
        if key_id is None or key is None:
            raise InvalidMessage("server certificate lacks a required field")
        return cls(uint32(key_id), PublicKey.deserialize(key), certificate, signature,
                   bytes(data))

    def is_signed_by(self, trust_root: PublicKey) -> bool:
        """True when the id is not revoked and ``trust_root`` signed this certificate."""
        if self.key_id in REVOKED_SERVER_CERTIFICATE_IDS:
            return False
        return xeddsa.verify(trust_root, self.certificate, self.signature)


def _builtin(hex_certificate: str) -> ServerCertificate:
    return ServerCertificate.deserialize(bytes.fromhex(hex_certificate))


#: The server certificates libsignal knows by id (digest §8.4), for ``signer.id``.
KNOWN_SERVER_CERTIFICATES: dict[int, ServerCertificate] = {
    2: _builtin(
        "0a25080212210539450d63ebd0752c0fd4038b9d07a916f5e174b756d409b5ca79f4c97400631e12"
        "4064c5a38b1e927497d3d4786b101a623ab34a7da3954fae126b04dba9d7a3604ed88cdc8550950f"
        "0d4a9134ceb7e19b94139151d2c3d6e1c81e9d1128aafca806"),
    3: _builtin(
        "0a250803122105bc9d1d290be964810dfa7e94856480a3f7060d004c9762c24c575a1522353a5a12"
        "40c11ec3c401eb0107ab38f8600e8720a63169e0e2eb8a3fae24f63099f85ea319c3c1c46d345470"
        "6ae2a679d1fee690a488adda98a2290b66c906bb60295ed781"),
    0x7357C357: _builtin(
        "0a2908d786df9a07122105847c0d2c375234f365e660955187a3735a0f7613d1609d3a6a4d8c53ae"
        "aa5a221240e0b9ebacdfc3aa2827f7924b697784d1c25e44ca05dd433e1a38dc6382eb2730d419ca"
        "9a250b1be9d5a9463e61efd6781777a91b83c97b844d014206e2829785"),
}


@dataclass(frozen=True, slots=True)
class SenderCertificate:
    """Who sent a sealed message, signed by a server certificate (digest §8.4).

    ``signer`` is the embedded :class:`ServerCertificate`, or the id of a built-in one.
    ``expires`` is in milliseconds since the epoch.
    """

    sender_uuid: str
    sender_e164: str | None
    sender_device_id: int
    expires: int
    identity_key: PublicKey
    signer: ServerCertificate | int
    certificate: bytes
    signature: bytes
    serialized: bytes

    @classmethod
    def create(cls, *, sender_uuid: str, sender_e164: str | None, sender_device_id: int,
               identity_key: PublicKey, expires: int, signer: ServerCertificate,
               signer_key: PrivateKey, rng: Random) -> SenderCertificate:
        """Issue a sender certificate, written as libsignal writes it (uuid as a string,
        the server certificate embedded).

        Raises:
            ValueError: a device id outside 1..127 or an expiry outside u64.
        """
        if not 1 <= sender_device_id <= 127:
            raise ValueError("sender_device_id must be 1..127")
        if not 0 <= expires < 1 << 64:
            raise ValueError("expires must be a u64 (milliseconds)")
        parts = []
        if sender_e164 is not None:
            parts.append(pb.field_bytes(1, sender_e164.encode()))
        parts += [
            pb.field_varint(2, sender_device_id),
            pb.field_fixed64(3, expires),
            pb.field_bytes(4, identity_key.serialize()),
            pb.field_bytes(5, signer.serialized),
            pb.field_bytes(6, sender_uuid.encode()),
        ]
        certificate = b"".join(parts)
        signature = xeddsa.sign(signer_key, certificate, rng)
        serialized = pb.field_bytes(1, certificate) + pb.field_bytes(2, signature)
        return cls(sender_uuid, sender_e164, sender_device_id, expires, identity_key, signer,
                   certificate, signature, serialized)

    @classmethod
    def deserialize(cls, data: bytes) -> SenderCertificate:
        """Parse a serialized ``SenderCertificate`` (nothing is validated yet).

        Raises:
            InvalidMessage: malformed, a required field missing, or a device id
                outside 1..127.
            InvalidKey: the identity or server key is not a Curve25519 key.
        """
        try:
            outer = read_fields(data, {1: pb.LENGTH, 2: pb.LENGTH})
            certificate = get_bytes(outer, 1)
            signature = get_bytes(outer, 2)
            if certificate is None or signature is None:
                raise InvalidMessage("sender certificate lacks a required field")
            inner = read_fields(certificate, {
                1: pb.LENGTH, 2: pb.VARINT, 3: pb.FIXED64, 4: pb.LENGTH, 5: pb.LENGTH,
                6: pb.LENGTH, 7: pb.LENGTH, 8: pb.VARINT,
            })
            e164_raw = get_bytes(inner, 1)
            e164 = e164_raw.decode("utf-8") if e164_raw is not None else None
            uuid_field = oneof(inner, 6, 7)
            sender_uuid: str | None = None
            if uuid_field == 6:
                sender_uuid = (get_bytes(inner, 6) or b"").decode("utf-8")
            elif uuid_field == 7:
                raw_uuid = get_bytes(inner, 7) or b""
                if len(raw_uuid) != 16:
                    raise InvalidMessage("sender uuid must be 16 bytes")
                sender_uuid = str(uuid.UUID(bytes=raw_uuid))
        except (pb.DecodeError, UnicodeDecodeError) as exc:
            raise InvalidMessage("malformed sender certificate") from exc
        device = get_int(inner, 2)
        expires = get_int(inner, 3)
        identity = get_bytes(inner, 4)
        signer_field = oneof(inner, 5, 8)
        if device is None or expires is None or identity is None or sender_uuid is None \
                or signer_field is None:
            raise InvalidMessage("sender certificate lacks a required field")
        device = uint32(device)
        if not 1 <= device <= 127:
            raise InvalidMessage("sender device id must be 1..127")
        signer: ServerCertificate | int
        if signer_field == 5:
            signer = ServerCertificate.deserialize(get_bytes(inner, 5) or b"")
        else:
            signer = uint32(get_int(inner, 8) or 0)
        return cls(sender_uuid, e164, device, expires, PublicKey.deserialize(identity),
                   signer, certificate, signature, bytes(data))

    def server_certificate(self) -> ServerCertificate:
        """The signing server certificate: embedded, or built in by id.

        Raises:
            UnknownServerCertificate: an id that names no built-in certificate.
        """
        if isinstance(self.signer, ServerCertificate):
            return self.signer
        known = KNOWN_SERVER_CERTIFICATES.get(self.signer)
        if known is None:
            raise UnknownServerCertificate(f"unknown server certificate id {self.signer:#x}")
        return known

    def validate(self, trust_roots: Sequence[PublicKey], now_ms: int) -> None:
        """Check the chain up to one of ``trust_roots`` and the expiry (digest §8.4).

        Every root is tried, whichever signed, so timing does not tell which one did.
        ``now_ms == expires`` is valid; one millisecond later is not.

        Raises:
            UnknownServerCertificate: the signer id names no built-in certificate.
            RevokedCertificate: the server certificate's id is revoked.
            UntrustedCertificate: no root signed the server certificate, or the server
                key did not sign this one.
            ExpiredCertificate: ``now_ms`` is after ``expires``.
        """
        server = self.server_certificate()
        if server.key_id in REVOKED_SERVER_CERTIFICATE_IDS:
            raise RevokedCertificate(f"server certificate id {server.key_id:#x} is revoked")
        trusted = False
        for root in trust_roots:
            trusted |= server.is_signed_by(root)
        if not trusted:
            raise UntrustedCertificate("server certificate not signed by a trust root")
        if not xeddsa.verify(server.key, self.certificate, self.signature):
            raise UntrustedCertificate("sender certificate not signed by the server")
        if now_ms > self.expires:
            raise ExpiredCertificate("sender certificate expired")
