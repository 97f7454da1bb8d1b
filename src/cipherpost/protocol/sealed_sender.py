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
The certificates live in :mod:`.certificates` (re-exported here), which the relay
imports to issue them without importing any session code.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from . import protobuf as pb
from . import session
from .address import ProtocolAddress
from .certificates import (  # the certificates are re-exported: part of this API
    KNOWN_SERVER_CERTIFICATES as KNOWN_SERVER_CERTIFICATES,
)
from .certificates import (
    REVOKED_SERVER_CERTIFICATE_IDS as REVOKED_SERVER_CERTIFICATE_IDS,
)
from .certificates import (
    U32,
    get_bytes,
    get_int,
    int32_varint,
    read_fields,
)
from .certificates import (
    SenderCertificate as SenderCertificate,
)
from .certificates import (
    ServerCertificate as ServerCertificate,
)
from .errors import (
    InvalidKey,
    InvalidMessage,
    NoSession,
    SealedSenderSelfSend,
    UnknownVersion,
)
from .kem import DEFAULT_KEMS, KemRegistry
from .keys import IdentityKeyPair, KeyPair, PrivateKey, PublicKey, Random
from .messages import PREKEY_TYPE, SENDERKEY_TYPE, WHISPER_TYPE
from .ratchet import hkdf, hmac_sha256
from .spqr.ratchet import DEFAULT_SPQR, SpqrSettings
from .stores import IdentityKeyStore, ProtocolStore

#: CiphertextMessageType of a plaintext content (decryption-error messages).
PLAINTEXT_TYPE = 8

#: The full version byte libsignal writes (major 1, minor 1).
VERSION_BYTE = 0x11
#: HKDF salt prefix of the ephemeral layer (digest §8.2).
EPHEMERAL_SALT_PREFIX = b"UnidentifiedDelivery"
#: Length of the truncated HMAC-SHA256 tag of each layer.
TAG_LENGTH = 10

# USMC ``type`` values on the wire, and CiphertextMessageType: only PreKey differs.
_WIRE_TO_TYPE = {1: PREKEY_TYPE, 2: WHISPER_TYPE, 7: SENDERKEY_TYPE, 8: PLAINTEXT_TYPE}
_TYPE_TO_WIRE = {value: key for key, value in _WIRE_TO_TYPE.items()}

_ZERO_COUNTER = bytes(16)


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
        if not 0 <= content_hint <= U32:
            raise ValueError("content_hint must be a u32")
        parts = [pb.field_varint(1, wire_type), pb.field_bytes(2, sender.serialized),
                 pb.field_bytes(3, contents)]
        if content_hint:
            parts.append(pb.field_varint(4, int32_varint(content_hint)))
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
            fields = read_fields(data, {1: pb.VARINT, 2: pb.LENGTH, 3: pb.LENGTH,
                                    4: pb.VARINT, 5: pb.LENGTH})
        except pb.DecodeError as exc:
            raise InvalidMessage("malformed sealed sender content") from exc
        wire_type = get_int(fields, 1)
        certificate = get_bytes(fields, 2)
        contents = get_bytes(fields, 3)
        if wire_type is None or certificate is None or contents is None:
            raise InvalidMessage("sealed sender content lacks a required field")
        message_type = _WIRE_TO_TYPE.get(wire_type & U32)
        if message_type is None:
            raise InvalidMessage("unknown sealed sender content type")
        hint = get_int(fields, 4)
        sender = SenderCertificate.deserialize(certificate)
        return cls(message_type, sender, contents, 0 if hint is None else hint & U32,
                   get_bytes(fields, 5), bytes(data))


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
        fields = read_fields(data[1:], {1: pb.LENGTH, 2: pb.LENGTH, 3: pb.LENGTH})
    except pb.DecodeError as exc:
        raise InvalidMessage("malformed sealed sender message") from exc
    ephemeral = get_bytes(fields, 1)
    encrypted_static = get_bytes(fields, 2)
    encrypted_message = get_bytes(fields, 3)
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
            spqr: SpqrSettings = DEFAULT_SPQR,
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
