"""Sealed sender in the SDK (docs/spec/sealed-sender.md): the profile key and the
unidentified-access key (UAK) derived from it, the pinned trust root, the cached sender
certificate, and sealing and opening envelopes.

Sealed messages hide their sender from the relay: the sender certificate that names it
travels inside the encryption to the recipient's identity key. What the relay needs to
accept a sealed send is the recipient's UAK, which only the recipient's contacts learn
(from the profile key inside the recipient's messages to them).

Opening a sealed envelope never touches a session until the certificate is valid
(signed through the server certificate by the pinned trust root, not expired, not from
this device); a sealed envelope that fails there is reported and acknowledged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cipherpost.protocol import IdentityKeyPair, ProtocolError, PublicKey
from cipherpost.protocol.certificates import SenderCertificate
from cipherpost.protocol.sealed_sender import (
    UnidentifiedSenderMessageContent,
    open_sealed,
    seal,
)

from .store.database import Store

#: The relay's envelope type for a sealed message (Signal's UNIDENTIFIED_SENDER).
SEALED_TYPE = 6
PROFILE_KEY_BYTES = 32
ACCESS_KEY_BYTES = 16
#: A cached sender certificate is replaced once less than this is left of it (ms).
REFRESH_BEFORE_MS = 6 * 3600 * 1000

_PROFILE_KEY = "profile_key"
_CONTACT_KEY = "profile_key:"
_CERTIFICATE = "sender_certificate"
_TRUST_ROOT = "trust_root"
_ACCESS_KEY_SENT = "access_key_registered"
_AWAITING = "profile_key_from_sibling"
_REVOKED = "revoked_server_key_ids"
_REVOKED_CHECKED = "revoked_server_key_ids_checked"
#: How often the relay's list of revoked server key ids is fetched (ms).
REVOCATION_CHECK_MS = 3600 * 1000
#: How often the unidentified-access key is registered again (ms; see
#: :func:`access_key_due`).
ACCESS_KEY_REFRESH_MS = 24 * 3600 * 1000
#: How often the relay's copy of the access key is checked (ms): at most this long after
#: the relay lost it (a restore), a device registers it again, well before the daily
#: registration. A new WebSocket connection, and a 401 to one of our own sealed sends,
#: check after ``ACCESS_KEY_RECHECK_MS`` already (the relay restarted, or it refused a
#: contact's key: it may have lost ours too).
ACCESS_KEY_CHECK_MS = 3600 * 1000
ACCESS_KEY_RECHECK_MS = 60 * 1000


class SealedError(Exception):
    """A sealed envelope could not be opened or its certificate is not acceptable.
    ``kind`` is the protocol error kind (``invalid_certificate``, ...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def access_key(profile_key: bytes) -> bytes:
    """The unidentified-access key of a profile key, derived as Signal derives it: the
    first 16 bytes of AES-256-GCM over 16 zero bytes, under the profile key with an
    all-zero nonce (the key is used for this one encryption only, so the fixed nonce is
    safe). The relay stores only its SHA-256.

    Raises:
        ValueError: ``profile_key`` is not 32 bytes.
    """
    if len(profile_key) != PROFILE_KEY_BYTES:
        raise ValueError("a profile key is 32 bytes")
    return AESGCM(profile_key).encrypt(bytes(12), bytes(16), None)[:ACCESS_KEY_BYTES]


# -- what the store keeps ----------------------------------------------------------------


def known_own_profile_key(store: Store) -> bytes | None:
    """This account's profile key, if this device holds it."""
    key = store.get_secret(_PROFILE_KEY)
    return key if key is not None and len(key) == PROFILE_KEY_BYTES else None


def own_profile_key(store: Store) -> bytes:
    """This account's profile key; made now if this device has none (a new account, or
    the first device of an account from before sealed sender)."""
    key = known_own_profile_key(store)
    if key is None:
        key = os.urandom(PROFILE_KEY_BYTES)
        with store.transaction():
            store.set_secret(_PROFILE_KEY, key)
            store.set_meta(_ACCESS_KEY_SENT, "")
    return key


def await_profile_key(store: Store) -> None:
    """This device was linked: it takes the account's profile key from another device of
    ours (the provisioning message, or a sync copy) and makes none of its own."""
    store.set_meta(_AWAITING, "1")


def may_make_profile_key(store: Store) -> bool:
    """False for a linked device (see :func:`await_profile_key`): a key of its own would
    replace the account's, and contacts' sealed sends would be refused until they learn
    it. A first or restored device makes one."""
    return store.get_meta(_AWAITING) != "1"


def adopt_own_profile_key(store: Store, key: bytes) -> None:
    """Take the account's profile key another device of ours holds (linking)."""
    if len(key) == PROFILE_KEY_BYTES and store.get_secret(_PROFILE_KEY) != key:
        store.set_secret(_PROFILE_KEY, key)
        store.set_meta(_ACCESS_KEY_SENT, "")


def contact_profile_key(store: Store, account: str) -> bytes | None:
    """The profile key a contact shared with us, if any."""
    key = store.get_secret(_CONTACT_KEY + account)
    return key if key is not None and len(key) == PROFILE_KEY_BYTES else None


def set_contact_profile_key(store: Store, account: str, key: bytes) -> None:
    """Remember a contact's profile key (from their message, or a sibling device)."""
    if len(key) == PROFILE_KEY_BYTES and store.get_secret(_CONTACT_KEY + account) != key:
        store.set_secret(_CONTACT_KEY + account, key)


def forget_contact_profile_key(store: Store, account: str) -> None:
    """The relay refused the contact's UAK: send identified until they share a new key."""
    store.delete_secret(_CONTACT_KEY + account)


def trust_root(store: Store) -> PublicKey | None:
    """The relay's pinned trust root."""
    text = store.get_meta(_TRUST_ROOT)
    return PublicKey.deserialize(base64.b64decode(text)) if text else None


def pin_trust_root(store: Store, key: PublicKey) -> None:
    store.set_meta(_TRUST_ROOT, base64.b64encode(key.serialize()).decode("ascii"))


def revoked_key_ids(store: Store) -> frozenset[int]:
    """Server key ids whose certificates we refuse (the relay said they leaked)."""
    text = store.get_meta(_REVOKED) or ""
    return frozenset(int(i) for i in text.split(",") if i.isdigit())


def revocations_due(store: Store, now_ms: int) -> bool:
    """True when the relay's revoked key ids were not fetched in the last hour."""
    checked = store.get_meta(_REVOKED_CHECKED) or ""
    return not checked.isdigit() or now_ms - int(checked) >= REVOCATION_CHECK_MS


def add_revoked_key_ids(store: Store, ids: list[int], now_ms: int) -> None:
    """Remember revoked server key ids, for good (a relay cannot take a revocation back),
    and when they were fetched."""
    known = revoked_key_ids(store) | set(ids)
    store.set_meta(_REVOKED, ",".join(str(i) for i in sorted(known)))
    store.set_meta(_REVOKED_CHECKED, str(now_ms))


def _check_not_revoked(store: Store, certificate: SenderCertificate) -> None:
    key_id = certificate.server_certificate().key_id
    if key_id in revoked_key_ids(store):
        raise SealedError("invalid_certificate",
                          f"the server key {key_id} that signed the certificate is revoked")


def access_key_due(store: Store, now_ms: int) -> bool:
    """True when the unidentified-access key was never registered from this device (or
    the profile key changed since), or not in the last ``ACCESS_KEY_REFRESH_MS``.

    Registering again is what brings the relay back in line after it lost the key, e.g.
    restored from a backup made before (review 2026-11-29-sealed-ops, R5): contacts'
    sealed sends would otherwise get 401 and go identified for good. A store from
    before the time was kept holds "1", which counts as long ago; a time ahead of the
    clock (set back since) counts as due too."""
    sent = store.get_meta(_ACCESS_KEY_SENT) or ""
    if not sent.isdigit():
        return True
    elapsed = now_ms - int(sent)
    return elapsed < 0 or elapsed >= ACCESS_KEY_REFRESH_MS


def access_key_held(profile_key: bytes, key_sha256: bytes | None) -> bool:
    """True when the relay's hash of our access key (``key_sha256``, None: it holds
    none) is the hash of ``profile_key``'s access key."""
    return key_sha256 is not None and hmac.compare_digest(
        hashlib.sha256(access_key(profile_key)).digest(), key_sha256)


def mark_access_key_registered(store: Store, now_ms: int) -> None:
    store.set_meta(_ACCESS_KEY_SENT, str(now_ms))


def upkeep_due(store: Store, now_ms: int) -> bool:
    """True when ``Client.sealed_sender_upkeep`` has network work to do: the revoked
    key ids are due, or the access key is and this device knows it. Checked while a
    connection stays open, which may be for days."""
    return revocations_due(store, now_ms) or (
        access_key_due(store, now_ms) and known_own_profile_key(store) is not None)


async def sender_certificate(store: Store, now_ms: int,
                             fetch: Callable[[], Awaitable[bytes]], *, account: str,
                             device: int) -> SenderCertificate:
    """Our sender certificate: the cached one while more than ``REFRESH_BEFORE_MS`` of it
    is left, else a new one from the relay (``fetch``), checked against the pinned root.

    Raises:
        SealedError: the relay's certificate does not validate against the pinned root,
            or names another account, device or identity key than ours (``account``,
            ``device``).
        RelayError, RelayUnavailable: from ``fetch``.
    """
    cached = store.get_secret(_CERTIFICATE)
    identity = store.get_identity_key_pair().public

    def ours(certificate: SenderCertificate) -> bool:
        return (certificate.identity_key == identity and certificate.sender_uuid == account
                and certificate.sender_device_id == device)

    if cached is not None:
        try:
            certificate = SenderCertificate.deserialize(cached)
            # After an identity reset the cached one names the old key: fetch anew.
            if certificate.expires - now_ms > REFRESH_BEFORE_MS and ours(certificate):
                _check_not_revoked(store, certificate)
                return certificate
        except (ProtocolError, SealedError):
            pass
    root = trust_root(store)
    if root is None:
        raise SealedError("invalid_certificate", "no trust root is pinned for this relay")
    try:
        certificate = SenderCertificate.deserialize(await fetch())
        certificate.validate([root], now_ms)
    except ProtocolError as exc:
        raise SealedError(exc.kind, f"the relay's sender certificate: {exc}") from None
    _check_not_revoked(store, certificate)
    if not ours(certificate):
        # Sealed under it, our messages would be opened as another device's (or another
        # account's): the recipient would decrypt them under the wrong session.
        raise SealedError("invalid_certificate", "the relay's sender certificate names "
                                                 "another account, device or identity key")
    with store.relaxed_transaction():
        store.set_secret(_CERTIFICATE, certificate.serialized)
    return certificate


def forget_sender_certificate(store: Store) -> None:
    """Drop the cached certificate (our identity changed, or the relay refused it)."""
    store.delete_secret(_CERTIFICATE)


# -- sealing and opening -----------------------------------------------------------------


def seal_message(identity: IdentityKeyPair, recipient: PublicKey,
                 certificate: SenderCertificate, message_type: int, contents: bytes,
                 group_id: bytes | None = None) -> bytes:
    """Seal one ciphertext (whisper, PreKey or sender key) to ``recipient``'s identity.

    Raises:
        InvalidMessage: ``recipient`` is a small-order key.
    """
    content = UnidentifiedSenderMessageContent.create(message_type, certificate, contents,
                                                      group_id=group_id)
    return seal(identity, recipient, content, rng=os.urandom)


@dataclass(frozen=True, repr=False)
class Opened:
    """A sealed envelope opened: who sent it and the inner ciphertext."""

    sender: str
    device: int
    message_type: int
    contents: bytes

    def __repr__(self) -> str:
        return f"Opened({self.sender}.{self.device}, type {self.message_type})"


def open_envelope(store: Store, data: bytes, *, now_ms: int, local_account: str,
                  local_device: int) -> Opened:
    """Open a sealed envelope and validate its certificate (no session is touched).

    Raises:
        SealedError: malformed or not for us (``invalid_message`` and the like), a
            certificate that fails against the pinned root or has expired
            (``invalid_certificate``, also under a revoked server key id), no pinned
            root, or sent by this very device
            (``sealed_sender_self_send``).
    """
    root = trust_root(store)
    if root is None:
        raise SealedError("invalid_certificate", "no trust root is pinned for this relay")
    try:
        content = open_sealed(store.get_identity_key_pair(), data)
        content.sender.validate([root], now_ms)
    except ProtocolError as exc:
        raise SealedError(exc.kind, str(exc)) from None
    _check_not_revoked(store, content.sender)
    sender = content.sender
    if sender.sender_uuid == local_account and sender.sender_device_id == local_device:
        raise SealedError("sealed_sender_self_send", "a sealed message from this device")
    return Opened(sender.sender_uuid, sender.sender_device_id, content.message_type,
                  content.contents)
