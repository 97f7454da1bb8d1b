"""Store interfaces as typed Protocols, with in-memory reference implementations.

Every real store (the client's encrypted SQLite, the browser's IndexedDB) implements
these and passes the same contract tests. Stores are synchronous: the protocol core does
no I/O, and a caller with an asynchronous database loads the records it needs first.
"""

from __future__ import annotations

import enum
import uuid
from typing import Protocol

from .address import ProtocolAddress
from .errors import InvalidKyberPreKeyId, InvalidMessage, InvalidPreKeyId
from .keys import IdentityKey, IdentityKeyPair
from .prekeys import KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord
from .state import SessionRecord


class Direction(enum.Enum):
    """Why an identity is being checked."""

    SENDING = "sending"
    RECEIVING = "receiving"


class IdentityKeyStore(Protocol):
    """Our identity and the identities we trust."""

    def get_identity_key_pair(self) -> IdentityKeyPair: ...

    def get_local_registration_id(self) -> int: ...

    def save_identity(self, address: ProtocolAddress, identity: IdentityKey) -> bool:
        """Remember ``identity``; True if it replaced a different key."""
        ...

    def is_trusted_identity(self, address: ProtocolAddress, identity: IdentityKey,
                            direction: Direction) -> bool: ...

    def get_identity(self, address: ProtocolAddress) -> IdentityKey | None: ...


class PreKeyStore(Protocol):
    """One-time Curve25519 prekeys."""

    def get_pre_key(self, pre_key_id: int) -> PreKeyRecord:
        """Raises: InvalidPreKeyId when absent."""
        ...

    def save_pre_key(self, record: PreKeyRecord) -> None: ...

    def remove_pre_key(self, pre_key_id: int) -> None: ...


class SignedPreKeyStore(Protocol):
    """Signed prekeys."""

    def get_signed_pre_key(self, signed_pre_key_id: int) -> SignedPreKeyRecord:
        """Raises: InvalidPreKeyId when absent."""
        ...

    def save_signed_pre_key(self, record: SignedPreKeyRecord) -> None: ...


class KyberPreKeyStore(Protocol):
    """KEM prekeys, one-time and last resort."""

    def get_kyber_pre_key(self, kyber_pre_key_id: int) -> KyberPreKeyRecord:
        """Raises: InvalidKyberPreKeyId when absent."""
        ...

    def save_kyber_pre_key(self, record: KyberPreKeyRecord) -> None: ...

    def mark_kyber_pre_key_used(self, kyber_pre_key_id: int, signed_pre_key_id: int,
                                base_key: bytes) -> None:
        """Consume a one-time key; a last-resort key may refuse a reused base key.

        Raises:
            InvalidMessage: this (key, signed prekey, base key) triple was used before.
        """
        ...


class SessionStore(Protocol):
    """Session records per remote device."""

    def load_session(self, address: ProtocolAddress) -> SessionRecord | None: ...

    def store_session(self, address: ProtocolAddress, record: SessionRecord) -> None: ...


class SenderKeyStore(Protocol):
    """Sender-key records per (sender, distribution id)."""

    def load_sender_key(self, sender: ProtocolAddress,
                        distribution_id: uuid.UUID) -> SenderKeyRecordLike | None: ...

    def store_sender_key(self, sender: ProtocolAddress, distribution_id: uuid.UUID,
                         record: SenderKeyRecordLike) -> None: ...


class SenderKeyRecordLike(Protocol):
    """What a sender-key store holds (see :mod:`.sender_keys`)."""

    def serialize(self) -> bytes: ...


class ProtocolStore(IdentityKeyStore, PreKeyStore, SignedPreKeyStore, KyberPreKeyStore,
                    SessionStore, Protocol):
    """Everything the 1:1 session code needs."""


# -- in-memory reference implementations --------------------------------------------------


class InMemoryIdentityKeyStore:
    """Trust on first use; a changed key is untrusted until replaced by ``save_identity``."""

    def __init__(self, identity: IdentityKeyPair, registration_id: int) -> None:
        self._identity = identity
        self._registration_id = registration_id
        self._known: dict[ProtocolAddress, IdentityKey] = {}

    def get_identity_key_pair(self) -> IdentityKeyPair:
        return self._identity

    def get_local_registration_id(self) -> int:
        return self._registration_id

    def save_identity(self, address: ProtocolAddress, identity: IdentityKey) -> bool:
        old = self._known.get(address)
        if old is identity:
            return False
        self._known[address] = identity
        return old is not None and old != identity

    def is_trusted_identity(self, address: ProtocolAddress, identity: IdentityKey,
                            direction: Direction) -> bool:
        known = self._known.get(address)
        return known is None or known is identity or known == identity

    def get_identity(self, address: ProtocolAddress) -> IdentityKey | None:
        return self._known.get(address)


class InMemoryPreKeyStore:
    """One-time prekeys in a dict."""

    def __init__(self) -> None:
        self._pre_keys: dict[int, PreKeyRecord] = {}

    def get_pre_key(self, pre_key_id: int) -> PreKeyRecord:
        try:
            return self._pre_keys[pre_key_id]
        except KeyError:
            raise InvalidPreKeyId(f"no prekey with id {pre_key_id}") from None

    def save_pre_key(self, record: PreKeyRecord) -> None:
        self._pre_keys[record.id] = record

    def remove_pre_key(self, pre_key_id: int) -> None:
        self._pre_keys.pop(pre_key_id, None)


class InMemorySignedPreKeyStore:
    """Signed prekeys in a dict."""

    def __init__(self) -> None:
        self._signed_keys: dict[int, SignedPreKeyRecord] = {}

    def get_signed_pre_key(self, signed_pre_key_id: int) -> SignedPreKeyRecord:
        try:
            return self._signed_keys[signed_pre_key_id]
        except KeyError:
            raise InvalidPreKeyId(f"no signed prekey with id {signed_pre_key_id}") from None

    def save_signed_pre_key(self, record: SignedPreKeyRecord) -> None:
        self._signed_keys[record.id] = record


class InMemoryKyberPreKeyStore:
    """Kyber prekeys in a dict; one-time keys are removed on use, last-resort reuse refused."""

    def __init__(self) -> None:
        self._kyber_keys: dict[int, KyberPreKeyRecord] = {}
        self._used: set[tuple[int, int, bytes]] = set()

    def get_kyber_pre_key(self, kyber_pre_key_id: int) -> KyberPreKeyRecord:
        try:
            return self._kyber_keys[kyber_pre_key_id]
        except KeyError:
            raise InvalidKyberPreKeyId(f"no Kyber prekey with id {kyber_pre_key_id}") from None

    def save_kyber_pre_key(self, record: KyberPreKeyRecord) -> None:
        self._kyber_keys[record.id] = record

    def mark_kyber_pre_key_used(self, kyber_pre_key_id: int, signed_pre_key_id: int,
                                base_key: bytes) -> None:
        record = self._kyber_keys.get(kyber_pre_key_id)
        if record is None:
            return
        if not record.last_resort:
            del self._kyber_keys[kyber_pre_key_id]
            return
        triple = (kyber_pre_key_id, signed_pre_key_id, base_key)
        if triple in self._used:
            raise InvalidMessage("reused base key")
        self._used.add(triple)


class InMemorySessionStore:
    """Session records kept as objects (the fastest store; no serialization)."""

    def __init__(self) -> None:
        self._sessions: dict[ProtocolAddress, SessionRecord] = {}

    def load_session(self, address: ProtocolAddress) -> SessionRecord | None:
        return self._sessions.get(address)

    def store_session(self, address: ProtocolAddress, record: SessionRecord) -> None:
        self._sessions[address] = record


class SerializingSessionStore:
    """Session records kept as bytes, as a database-backed store keeps them.

    Every load parses and every store serializes, so this measures (and tests) the
    record format on every message.
    """

    def __init__(self) -> None:
        self._sessions: dict[ProtocolAddress, bytes] = {}

    def load_session(self, address: ProtocolAddress) -> SessionRecord | None:
        data = self._sessions.get(address)
        return SessionRecord.deserialize(data) if data is not None else None

    def store_session(self, address: ProtocolAddress, record: SessionRecord) -> None:
        self._sessions[address] = record.serialize()


class InMemorySenderKeyStore:
    """Sender-key records in a dict."""

    def __init__(self) -> None:
        self._records: dict[tuple[ProtocolAddress, uuid.UUID], SenderKeyRecordLike] = {}

    def load_sender_key(self, sender: ProtocolAddress,
                        distribution_id: uuid.UUID) -> SenderKeyRecordLike | None:
        return self._records.get((sender, distribution_id))

    def store_sender_key(self, sender: ProtocolAddress, distribution_id: uuid.UUID,
                         record: SenderKeyRecordLike) -> None:
        self._records[(sender, distribution_id)] = record


class InMemoryProtocolStore(InMemoryIdentityKeyStore, InMemoryPreKeyStore,
                            InMemorySignedPreKeyStore, InMemoryKyberPreKeyStore):
    """All 1:1 stores in memory; ``session_store`` picks object or serializing sessions."""

    def __init__(self, identity: IdentityKeyPair, registration_id: int,
                 session_store: SessionStore | None = None) -> None:
        InMemoryIdentityKeyStore.__init__(self, identity, registration_id)
        InMemoryPreKeyStore.__init__(self)
        InMemorySignedPreKeyStore.__init__(self)
        InMemoryKyberPreKeyStore.__init__(self)
        self.sessions: SessionStore = session_store or InMemorySessionStore()

    def load_session(self, address: ProtocolAddress) -> SessionRecord | None:
        return self.sessions.load_session(address)

    def store_session(self, address: ProtocolAddress, record: SessionRecord) -> None:
        self.sessions.store_session(address, record)
