"""One closed tree of protocol errors.

Every error a peer, a message or a store can cause derives from :class:`ProtocolError`
and carries a ``kind`` equal to an error kind of ``shared/interop/PEER.md``, so the
server, the CLI and the interop peer map errors without ``isinstance`` ladders.
Caller misuse (wrong types, impossible arguments) raises ``TypeError``/``ValueError``
instead: that is a bug in the caller, not a hostile peer.

Messages never say which MAC or padding check failed.
"""

from __future__ import annotations

from typing import ClassVar


class ProtocolError(Exception):
    """Base class: something from outside (a peer, a message, a store) was not acceptable."""

    kind: ClassVar[str] = "protocol_error"


class UntrustedIdentity(ProtocolError):
    """The remote identity key is not the one the identity store trusts."""

    kind = "untrusted_identity"


class InvalidMessage(ProtocolError):
    """A message is malformed, truncated, or fails authentication."""

    kind = "invalid_message"


class DuplicatedMessage(InvalidMessage):
    """A message whose key was already used (or trimmed) arrived again."""

    kind = "duplicated_message"


class InvalidKey(ProtocolError):
    """A serialized key has the wrong type byte, length or value."""

    kind = "invalid_key"


class InvalidSignature(ProtocolError):
    """An XEdDSA signature does not verify."""

    kind = "invalid_signature"


class NoSession(ProtocolError):
    """There is no session (usable for this operation) with the remote address."""

    kind = "no_session"


class InvalidPreKeyId(ProtocolError):
    """A PreKey message names a one-time or signed prekey this store does not hold."""

    kind = "invalid_prekey_id"


class InvalidKyberPreKeyId(ProtocolError):
    """A PreKey message names a Kyber prekey this store does not hold."""

    kind = "invalid_kyber_prekey_id"


class UnknownVersion(InvalidMessage):
    """A message carries a version this implementation does not speak."""

    kind = "unknown_version"


class NoSenderKey(ProtocolError):
    """No sender-key state exists for this sender, distribution id and chain."""

    kind = "no_sender_key"


class InvalidCertificate(ProtocolError):
    """A sealed-sender certificate chain is not acceptable (digest §8.4).

    libsignal reports every validation failure alike ("trust root validation failed"),
    so peers share one kind; the leaves below say which check failed, for local logs.
    """

    kind = "invalid_certificate"


class UntrustedCertificate(InvalidCertificate):
    """The server certificate is signed by no trusted root, or the sender certificate is
    not signed by the server certificate's key."""


class ExpiredCertificate(InvalidCertificate):
    """The sender certificate expired before the validation time."""


class RevokedCertificate(InvalidCertificate):
    """The server certificate's key id is on the revoked list."""


class UnknownServerCertificate(InvalidCertificate):
    """A sender certificate refers by id to a server certificate that is not built in."""


class SealedSenderSelfSend(ProtocolError):
    """A sealed-sender message claims to come from this very device."""

    kind = "sealed_sender_self_send"


ALL_ERRORS: tuple[type[ProtocolError], ...] = (
    UntrustedIdentity,
    InvalidMessage,
    DuplicatedMessage,
    InvalidKey,
    InvalidSignature,
    NoSession,
    InvalidPreKeyId,
    InvalidKyberPreKeyId,
    UnknownVersion,
    NoSenderKey,
    InvalidCertificate,
    UntrustedCertificate,
    ExpiredCertificate,
    RevokedCertificate,
    UnknownServerCertificate,
    SealedSenderSelfSend,
)
