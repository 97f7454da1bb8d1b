"""Sealed sender v1: messages whose sender only the recipient learns (digest §8).

Theory of operation. The sender wraps an ordinary 1:1 ciphertext, together with a
*sender certificate*, in an ``UnidentifiedSenderMessageContent`` (USMC), and encrypts
that to the recipient's identity key in two layers:

1. an ephemeral key ``E`` agrees with the recipient's identity ``IK_R``; HKDF gives a
   chain key and the keys that encrypt the sender's identity key ``IK_S`` (the
   *static* layer);
2. ``IK_S`` agrees with ``IK_R``; HKDF over the chain key and the static ciphertext
   gives the keys that encrypt the USMC (the *message* layer).

Both layers are AES-256-CTR (zero initial counter) followed by a 10-byte HMAC-SHA256
tag, checked in constant time before anything is decrypted. Only a holder of
``IK_R``'s private key can open either layer, and the message layer authenticates the
sender's identity key, which must equal the one the certificate names.

The certificate says who the sender is: a *server certificate* (key id, server key)
signed by a *trust root* the app pins, and over it a *sender certificate* (uuid,
optional E.164, device id, identity key, expiry in milliseconds) signed by the server
key. :meth:`SenderCertificate.validate` checks the chain, the revoked-id list and the
expiry (``now_ms == expires`` is still valid, as in libsignal).

:func:`decrypt` opens the envelope, validates the certificate, refuses a message from
this very device, and only then hands the inner message to :mod:`.session`, whose
decryption is all-or-nothing; so a rejected sealed message changes no session state.
Certificates are parsed the way libsignal's prost decoder reads them (unknown fields
skipped, last value wins, the last member of a ``oneof`` wins, wrong wire types
refused) and keep the exact bytes received, so signatures are checked over those.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from . import protobuf as pb
from . import session, xeddsa
from .address import ProtocolAddress
from .errors import (
    ExpiredCertificate,
    InvalidKey,
    InvalidMessage,
    NoSession,
    RevokedCertificate,
    SealedSenderSelfSend,
    UnknownServerCertificate,
    UnknownVersion,
    UntrustedCertificate,
)
from .kem import DEFAULT_KEMS, KemRegistry
from .keys import IdentityKeyPair, KeyPair, PrivateKey, PublicKey, Random
from .messages import PREKEY_TYPE, SENDERKEY_TYPE, WHISPER_TYPE
from .ratchet import hkdf, hmac_sha256
from .spqr.ratchet import SpqrSettings
from .stores import IdentityKeyStore, ProtocolStore

#: CiphertextMessageType of a plaintext content (decryption-error messages).
PLAINTEXT_TYPE = 8

#: The full version byte libsignal writes (major 1, minor 1).
VERSION_BYTE = 0x11
#: HKDF salt prefix of the ephemeral layer (digest §8.2).
EPHEMERAL_SALT_PREFIX = b"UnidentifiedDelivery"
#: Length of the truncated HMAC-SHA256 tag of each layer.
TAG_LENGTH = 10
#: Server certificate key ids libsignal refuses (its test id, digest §8.4).
REVOKED_SERVER_CERTIFICATE_IDS = frozenset({0xDEADC357})

# USMC ``type`` values on the wire, and CiphertextMessageType: only PreKey differs.
_WIRE_TO_TYPE = {1: PREKEY_TYPE, 2: WHISPER_TYPE, 7: SENDERKEY_TYPE, 8: PLAINTEXT_TYPE}
_TYPE_TO_WIRE = {value: key for key, value in _WIRE_TO_TYPE.items()}

_ZERO_COUNTER = bytes(16)
_U32 = 0xFFFFFFFF


# -- parsing helpers --------------------------------------------------------------------


def _fields(data: bytes, wires: dict[int, int]) -> dict[int, tuple[int, pb.Value]]:
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


def _bytes(fields: dict[int, tuple[int, pb.Value]], number: int) -> bytes | None:
    entry = fields.get(number)
    if entry is None:
        return None
    value = entry[1]
    assert isinstance(value, bytes)  # guaranteed by the wire type check
    return value


def _int(fields: dict[int, tuple[int, pb.Value]], number: int) -> int | None:
    entry = fields.get(number)
    if entry is None:
        return None
    value = entry[1]
    assert isinstance(value, int)
    return value


def _oneof(fields: dict[int, tuple[int, pb.Value]], *numbers: int) -> int | None:
    """Which member of a ``oneof`` is set: the one that came last on the wire."""
    present = [(fields[n][0], n) for n in numbers if n in fields]
    return max(present)[1] if present else None


def _uint32(value: int) -> int:
    # prost reads a uint32 as the low 32 bits of the varint.
    return value & _U32


def _int32_varint(value: int) -> int:
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
        if not 0 <= key_id <= _U32:
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
            outer = _fields(data, {1: pb.LENGTH, 2: pb.LENGTH})
            certificate = _bytes(outer, 1)
            signature = _bytes(outer, 2)
            if certificate is None or signature is None:
                raise InvalidMessage("server certificate lacks a required field")
            inner = _fields(certificate, {1: pb.VARINT, 2: pb.LENGTH})
        except pb.DecodeError as exc:
            raise InvalidMessage("malformed server certificate") from exc
        key_id = _int(inner, 1)
        key = _bytes(inner, 2)
        if key_id is None or key is None:
            raise InvalidMessage("server certificate lacks a required field")
        return cls(_uint32(key_id), PublicKey.deserialize(key), certificate, signature,
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
            outer = _fields(data, {1: pb.LENGTH, 2: pb.LENGTH})
            certificate = _bytes(outer, 1)
            signature = _bytes(outer, 2)
            if certificate is None or signature is None:
                raise InvalidMessage("sender certificate lacks a required field")
            inner = _fields(certificate, {
                1: pb.LENGTH, 2: pb.VARINT, 3: pb.FIXED64, 4: pb.LENGTH, 5: pb.LENGTH,
                6: pb.LENGTH, 7: pb.LENGTH, 8: pb.VARINT,
            })
            e164_raw = _bytes(inner, 1)
            e164 = e164_raw.decode("utf-8") if e164_raw is not None else None
            uuid_field = _oneof(inner, 6, 7)
            sender_uuid: str | None = None
            if uuid_field == 6:
                sender_uuid = (_bytes(inner, 6) or b"").decode("utf-8")
            elif uuid_field == 7:
                raw_uuid = _bytes(inner, 7) or b""
                if len(raw_uuid) != 16:
                    raise InvalidMessage("sender uuid must be 16 bytes")
                sender_uuid = str(uuid.UUID(bytes=raw_uuid))
        except (pb.DecodeError, UnicodeDecodeError) as exc:
            raise InvalidMessage("malformed sender certificate") from exc
        device = _int(inner, 2)
        expires = _int(inner, 3)
        identity = _bytes(inner, 4)
        signer_field = _oneof(inner, 5, 8)
        if device is None or expires is None or identity is None or sender_uuid is None \
                or signer_field is None:
            raise InvalidMessage("sender certificate lacks a required field")
        device = _uint32(device)
        if not 1 <= device <= 127:
            raise InvalidMessage("sender device id must be 1..127")
        signer: ServerCertificate | int
        if signer_field == 5:
            signer = ServerCertificate.deserialize(_bytes(inner, 5) or b"")
        else:
            signer = _uint32(_int(inner, 8) or 0)
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


# -- the inner content ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnidentifiedSenderMessageContent:
    """The sealed payload: an inner ciphertext and its sender's certificate (digest §8.3).

    ``message_type`` is a CiphertextMessageType (3 PreKey, 2 whisper, 7 sender key,
    8 plaintext); ``content_hint`` 0 is the default, other values are kept as given.
    """

    message_type: int
    sender: SenderCertificate
    contents: bytes
    content_hint: int
    group_id: bytes | None
    serialized: bytes

    @classmethod
    def create(cls, message_type: int, sender: SenderCertificate, contents: bytes, *,
               content_hint: int = 0,
               group_id: bytes | None = None) -> UnidentifiedSenderMessageContent:
        """Build the content as libsignal serializes it.

        Raises:
            ValueError: an unknown message type or a hint outside u32.
        """
        wire_type = _TYPE_TO_WIRE.get(message_type)
        if wire_type is None:
            raise ValueError(f"message type {message_type} cannot be sealed")
        if not 0 <= content_hint <= _U32:
            raise ValueError("content_hint must be a u32")
        parts = [pb.field_varint(1, wire_type), pb.field_bytes(2, sender.serialized),
                 pb.field_bytes(3, contents)]
        if content_hint:
            parts.append(pb.field_varint(4, _int32_varint(content_hint)))
        if group_id:
            parts.append(pb.field_bytes(5, group_id))
        return cls(message_type, sender, contents, content_hint, group_id or None,
                   b"".join(parts))

    @classmethod
    def deserialize(cls, data: bytes) -> UnidentifiedSenderMessageContent:
        """Parse serialized content.

        Raises:
            InvalidMessage: malformed, a required field missing, an unknown type, or a
                malformed sender certificate.
            InvalidKey: a key in the certificate is not a Curve25519 key.
        """
        try:
            fields = _fields(data, {1: pb.VARINT, 2: pb.LENGTH, 3: pb.LENGTH,
                                    4: pb.VARINT, 5: pb.LENGTH})
        except pb.DecodeError as exc:
            raise InvalidMessage("malformed sealed sender content") from exc
        wire_type = _int(fields, 1)
        certificate = _bytes(fields, 2)
        contents = _bytes(fields, 3)
        if wire_type is None or certificate is None or contents is None:
            raise InvalidMessage("sealed sender content lacks a required field")
        message_type = _WIRE_TO_TYPE.get(wire_type & _U32)
        if message_type is None:
            raise InvalidMessage("unknown sealed sender content type")
        hint = _int(fields, 4)
        sender = SenderCertificate.deserialize(certificate)
        return cls(message_type, sender, contents, 0 if hint is None else hint & _U32,
                   _bytes(fields, 5), bytes(data))


# -- the two encryption layers ----------------------------------------------------------


def _ctr(key: bytes, data: bytes) -> bytes:
    cipher = Cipher(algorithms.AES256(key), modes.CTR(_ZERO_COUNTER)).encryptor()
    return cipher.update(data) + cipher.finalize()


def aes256_ctr_hmac_encrypt(cipher_key: bytes, mac_key: bytes, plaintext: bytes) -> bytes:
    """AES-256-CTR from a zero counter, then a 10-byte HMAC-SHA256 tag (digest §8.2)."""
    ciphertext = _ctr(cipher_key, plaintext)
    return ciphertext + hmac_sha256(mac_key, ciphertext)[:TAG_LENGTH]


def aes256_ctr_hmac_decrypt(cipher_key: bytes, mac_key: bytes, data: bytes) -> bytes:
    """Check the tag in constant time, then decrypt.

    Raises:
        InvalidMessage: too short for a tag, or the tag does not match.
    """
    if len(data) < TAG_LENGTH:
        raise InvalidMessage("invalid sealed sender message")
    ciphertext, tag = data[:-TAG_LENGTH], data[-TAG_LENGTH:]
    if not hmac.compare_digest(hmac_sha256(mac_key, ciphertext)[:TAG_LENGTH], tag):
        raise InvalidMessage("invalid sealed sender message")
    return _ctr(cipher_key, ciphertext)


def _agree(private: PrivateKey, public: PublicKey) -> bytes:
    try:
        return private.agree(public)
    except InvalidKey as exc:  # a small-order key: nothing can authenticate
        raise InvalidMessage("invalid sealed sender message") from exc


def _ephemeral_keys(shared: bytes, recipient: PublicKey,
                    ephemeral: PublicKey) -> tuple[bytes, bytes, bytes]:
    salt = EPHEMERAL_SALT_PREFIX + recipient.serialize() + ephemeral.serialize()
    okm = hkdf(shared, salt, b"", 96)
    return okm[:32], okm[32:64], okm[64:]


def _static_keys(shared: bytes, chain_key: bytes, encrypted_static: bytes) -> tuple[bytes, bytes]:
    okm = hkdf(shared, chain_key + encrypted_static, b"", 96)
    return okm[32:64], okm[64:]


def seal(identity: IdentityKeyPair, recipient: PublicKey,
         content: UnidentifiedSenderMessageContent, *, rng: Random) -> bytes:
    """Encrypt ``content`` to ``recipient``'s identity key (digest §8.2); the wire bytes.

    Raises:
        InvalidMessage: ``recipient`` is a small-order key.
    """
    ephemeral = KeyPair.generate(rng)
    chain_key, cipher_key, mac_key = _ephemeral_keys(
        _agree(ephemeral.private, recipient), recipient, ephemeral.public)
    encrypted_static = aes256_ctr_hmac_encrypt(cipher_key, mac_key,
                                               identity.public.serialize())
    static_cipher, static_mac = _static_keys(_agree(identity.private, recipient), chain_key,
                                             encrypted_static)
    encrypted_message = aes256_ctr_hmac_encrypt(static_cipher, static_mac, content.serialized)
    return bytes((VERSION_BYTE,)) + pb.field_bytes(1, ephemeral.public.serialize()) \
        + pb.field_bytes(2, encrypted_static) + pb.field_bytes(3, encrypted_message)


def encrypt(store: IdentityKeyStore, destination: ProtocolAddress,
            content: UnidentifiedSenderMessageContent, *, rng: Random) -> bytes:
    """Seal ``content`` for ``destination``, whose identity the store holds.

    Raises:
        NoSession: the store holds no identity key for ``destination``.
    """
    recipient = store.get_identity(destination)
    if recipient is None:
        raise NoSession(f"no identity for {destination}")
    return seal(store.get_identity_key_pair(), recipient, content, rng=rng)


def encrypt_message(store: ProtocolStore, destination: ProtocolAddress,
                    sender: SenderCertificate, plaintext: bytes, *, now: int, rng: Random,
                    local_address: ProtocolAddress | None = None) -> bytes:
    """Encrypt ``plaintext`` on the 1:1 session and seal it (libsignal's
    ``sealedSenderEncryptMessage``). ``now`` is in seconds, as for :func:`session.encrypt`.

    The recipient's identity is looked up first, so a failure leaves the session as it
    was.

    Raises:
        NoSession: no identity or no session for ``destination``.
        ProtocolError: see :func:`session.encrypt`.
    """
    recipient = store.get_identity(destination)
    if recipient is None:
        raise NoSession(f"no identity for {destination}")
    message = session.encrypt(store, destination, plaintext, now=now, rng=rng,
                              local_address=local_address)
    content = UnidentifiedSenderMessageContent.create(message.message_type, sender,
                                                      message.serialized)
    return seal(store.get_identity_key_pair(), recipient, content, rng=rng)


def _parse_envelope(data: bytes) -> tuple[PublicKey, bytes, bytes]:
    if not data:
        raise InvalidMessage("empty sealed sender message")
    version = data[0] >> 4
    if version not in (0, 1):
        raise UnknownVersion(f"sealed sender version {version} is not supported")
    try:
        fields = _fields(data[1:], {1: pb.LENGTH, 2: pb.LENGTH, 3: pb.LENGTH})
    except pb.DecodeError as exc:
        raise InvalidMessage("malformed sealed sender message") from exc
    ephemeral = _bytes(fields, 1)
    encrypted_static = _bytes(fields, 2)
    encrypted_message = _bytes(fields, 3)
    if ephemeral is None or encrypted_static is None or encrypted_message is None:
        raise InvalidMessage("sealed sender message lacks a required field")
    return PublicKey.deserialize(ephemeral), encrypted_static, encrypted_message


def open_sealed(identity: IdentityKeyPair, data: bytes) -> UnidentifiedSenderMessageContent:
    """Open a sealed message addressed to ``identity``; the certificate is *not*
    validated yet (libsignal's ``sealedSenderDecryptToUsmc``).

    Raises:
        UnknownVersion: a version other than 0 or 1 (v2 is not supported).
        InvalidMessage: malformed, a tag mismatch, or the sealed identity key is not
            the certificate's.
        InvalidKey: a malformed key inside.
    """
    ephemeral, encrypted_static, encrypted_message = _parse_envelope(data)
    chain_key, cipher_key, mac_key = _ephemeral_keys(
        _agree(identity.private, ephemeral), identity.public, ephemeral)
    static_bytes = aes256_ctr_hmac_decrypt(cipher_key, mac_key, encrypted_static)
    static_key = PublicKey.deserialize(static_bytes)
    static_cipher, static_mac = _static_keys(_agree(identity.private, static_key), chain_key,
                                             encrypted_static)
    content = UnidentifiedSenderMessageContent.deserialize(
        aes256_ctr_hmac_decrypt(static_cipher, static_mac, encrypted_message))
    if not hmac.compare_digest(static_bytes, content.sender.identity_key.serialize()):
        raise InvalidMessage("sender certificate key does not match the sealed key")
    return content


@dataclass(frozen=True, slots=True, repr=False)
class DecryptionResult:
    """A decrypted sealed message: who sent it, and the plaintext."""

    sender_uuid: str
    sender_e164: str | None
    device_id: int
    message_type: int
    plaintext: bytes

    @property
    def sender(self) -> ProtocolAddress:
        """The sender's address (uuid string, device id)."""
        return ProtocolAddress(self.sender_uuid, self.device_id)

    def __repr__(self) -> str:
        return (f"DecryptionResult(sender={self.sender_uuid}.{self.device_id}, "
                f"message_type={self.message_type}, plaintext=<redacted>)")


def decrypt(store: ProtocolStore, data: bytes, *, trust_roots: Sequence[PublicKey],
            now_ms: int, local_uuid: str, local_device_id: int,
            local_e164: str | None = None, rng: Random, kems: KemRegistry = DEFAULT_KEMS,
            spqr: SpqrSettings = SpqrSettings.OFF,
            local_address: ProtocolAddress | None = None) -> DecryptionResult:
    """Open, validate and decrypt a sealed 1:1 message (libsignal's
    ``sealedSenderDecryptMessage``, digest §8.4).

    The certificate is validated at ``now_ms`` (milliseconds) against ``trust_roots``;
    a message from this device (same uuid, or same E.164 when both are known, and same
    device id) is refused; then the inner whisper or PreKey message is decrypted on the
    session with ``(sender uuid, sender device)``. ``local_address`` is passed on to
    check a PreKey message's addresses. Nothing changes unless everything succeeds.

    Raises:
        InvalidMessage, UnknownVersion, InvalidKey: see :func:`open_sealed`; also a
            sealed sender-key or plaintext content (not a 1:1 message).
        InvalidCertificate: see :meth:`SenderCertificate.validate`.
        SealedSenderSelfSend: the message claims to come from this device.
        ProtocolError: see :func:`session.decrypt`.
    """
    content = open_sealed(store.get_identity_key_pair(), data)
    sender = content.sender
    sender.validate(trust_roots, now_ms)
    same_account = sender.sender_uuid == local_uuid or (
        local_e164 is not None and sender.sender_e164 == local_e164)
    if same_account and sender.sender_device_id == local_device_id:
        raise SealedSenderSelfSend("sealed sender message from this device")
    if content.message_type not in (WHISPER_TYPE, PREKEY_TYPE):
        raise InvalidMessage(f"sealed message type {content.message_type} is not 1:1")
    try:
        address = ProtocolAddress(sender.sender_uuid, sender.sender_device_id)
    except ValueError as exc:
        raise InvalidMessage("sender certificate names no usable address") from exc
    plaintext = session.decrypt(store, address, content.message_type, content.contents,
                                rng=rng, kems=kems, spqr=spqr, local_address=local_address)
    return DecryptionResult(sender.sender_uuid, sender.sender_e164, sender.sender_device_id,
                            content.message_type, plaintext)
