"""The client's local store: one SQLite file, secrets sealed under the local key.

It implements the protocol core's store Protocols (identity, prekeys, signed and Kyber
prekeys, sessions, sender keys) and keeps the app's data: credentials, contacts, message
history, processed envelope ids and the resend log.

Durability: WAL with ``synchronous=FULL`` so a committed transaction survives a crash or
power loss; ``secure_delete`` so deleted rows (spent keys, deleted messages) are
overwritten, and :meth:`Store.checkpoint` to fold the WAL back so old pages leave it too.
Work that must be atomic (decrypt + store + mark processed) runs in
:meth:`Store.transaction`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cipherpost.protocol import (
    IdentityKey,
    IdentityKeyPair,
    InvalidMessage,
    KyberPreKeyRecord,
    PreKeyRecord,
    ProtocolAddress,
    PublicKey,
    SessionRecord,
    SignedPreKeyRecord,
)
from cipherpost.protocol.errors import InvalidKyberPreKeyId, InvalidPreKeyId
from cipherpost.protocol.sender_keys import SenderKeyRecord
from cipherpost.protocol.stores import Direction, SenderKeyRecordLike

from .crypto import Argon2Params, LocalKey, UnusableParams, check_params, derive_key, keyring_key

SCHEMA_VERSION = 7
KEYRING_SERVICE = "cipherpost"

_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE prekeys (id INTEGER PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE signed_prekeys (id INTEGER PRIMARY KEY, created_at INTEGER NOT NULL,
                             value BLOB NOT NULL);
CREATE TABLE kyber_prekeys (id INTEGER PRIMARY KEY, last_resort INTEGER NOT NULL,
                            created_at INTEGER NOT NULL, value BLOB NOT NULL);
CREATE TABLE kyber_used (kyber_id INTEGER NOT NULL, signed_id INTEGER NOT NULL,
                         base_key_hash BLOB NOT NULL,
                         PRIMARY KEY (kyber_id, signed_id, base_key_hash));
CREATE TABLE sessions (account TEXT NOT NULL, device INTEGER NOT NULL, value BLOB NOT NULL,
                       PRIMARY KEY (account, device));
CREATE TABLE identities (account TEXT PRIMARY KEY, identity_key BLOB NOT NULL,
                         verified INTEGER NOT NULL DEFAULT 0,
                         send_blocked INTEGER NOT NULL DEFAULT 0,
                         updated_at INTEGER NOT NULL);
CREATE TABLE sender_keys (account TEXT NOT NULL, device INTEGER NOT NULL,
                          distribution_id BLOB NOT NULL, value BLOB NOT NULL,
                          PRIMARY KEY (account, device, distribution_id));
CREATE TABLE contacts (account TEXT PRIMARY KEY, username TEXT);
CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT,
                       conversation TEXT NOT NULL, author TEXT NOT NULL,
                       author_device INTEGER NOT NULL, timestamp INTEGER NOT NULL,
                       received_at INTEGER NOT NULL, outgoing INTEGER NOT NULL,
                       body BLOB NOT NULL, UNIQUE (author, timestamp));
CREATE INDEX messages_by_conversation ON messages (conversation, timestamp, id);
CREATE TABLE envelopes (id TEXT PRIMARY KEY, processed_at INTEGER NOT NULL);
CREATE TABLE resend_log (destination TEXT NOT NULL, timestamp INTEGER NOT NULL,
                         created_at INTEGER NOT NULL, value BLOB NOT NULL,
                         PRIMARY KEY (destination, timestamp));
"""


#: Schema version 2: groups (docs/spec/groups.md) and which member devices hold our
#: sender key. A store of an earlier version is migrated when opened.
_SCHEMA_V2 = """
CREATE TABLE groups (id BLOB PRIMARY KEY, state BLOB NOT NULL, distribution_id BLOB,
                     rotate INTEGER NOT NULL DEFAULT 0);
CREATE TABLE group_key_sent (group_id BLOB NOT NULL, account TEXT NOT NULL,
                             device INTEGER NOT NULL, distribution_id BLOB NOT NULL,
                             PRIMARY KEY (group_id, account, device));
"""
#: Schema version 3: disappearing messages, edits and reactions.
_SCHEMA_V3 = """
ALTER TABLE messages ADD COLUMN expire_timer INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN expires_at INTEGER;
ALTER TABLE messages ADD COLUMN edited INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_by_expiry ON messages (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE conversations (id TEXT PRIMARY KEY, expire_timer INTEGER NOT NULL,
                            expire_timer_version INTEGER NOT NULL);
CREATE TABLE reactions (target_author TEXT NOT NULL, target_timestamp INTEGER NOT NULL,
                        reactor TEXT NOT NULL, emoji BLOB NOT NULL,
                        PRIMARY KEY (target_author, target_timestamp, reactor));
"""
#: Schema version 4: who a group message was sent to (resends go to them only), which
#: group a member's sender key belongs to, the sending status of our messages, and the
#: network work decided while processing an envelope (done after acknowledging it).
_SCHEMA_V4 = """
ALTER TABLE resend_log ADD COLUMN recipients BLOB;
ALTER TABLE messages ADD COLUMN status TEXT NOT NULL DEFAULT 'sent';
CREATE TABLE sender_key_groups (account TEXT NOT NULL, device INTEGER NOT NULL,
                                distribution_id BLOB NOT NULL, group_id BLOB NOT NULL,
                                PRIMARY KEY (account, device, distribution_id));
CREATE TABLE follow_ups (id TEXT PRIMARY KEY, created_at INTEGER NOT NULL,
                         value BLOB NOT NULL);
"""
#: Schema version 5: server-stored history (docs/spec/history.md): sealed entries waiting
#: to be uploaded (NULL: a deletion), and which event names which message.
_SCHEMA_V5 = """
CREATE TABLE history_outbox (event_id BLOB PRIMARY KEY, created_at INTEGER NOT NULL,
                             blob BLOB);
CREATE TABLE history_names (event_id BLOB PRIMARY KEY, author TEXT NOT NULL,
                            timestamp INTEGER NOT NULL);
"""
#: history_names also names the edits and reactions of a message (their entries go with
#: it); found by the message's author and timestamp.
_SCHEMA_V6 = """
CREATE INDEX history_names_target ON history_names (author, timestamp);
"""
#: A reaction's entry names its reactor too: the reactor's next reaction to the message
#: replaces it in the history (one entry per person per message, as the reactions).
_SCHEMA_V7 = """
ALTER TABLE history_names ADD COLUMN reactor TEXT;
"""
_MIGRATIONS = {1: _SCHEMA, 2: _SCHEMA_V2, 3: _SCHEMA_V3, 4: _SCHEMA_V4, 5: _SCHEMA_V5,
               6: _SCHEMA_V6, 7: _SCHEMA_V7}

#: The sending status of an outgoing message.
SENDING, SENT, FAILED = "sending", "sent", "failed"


def _migrate(db: sqlite3.Connection) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError("this store was written by a newer Cipherpost; upgrade first")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _MIGRATIONS[target].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {target}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


class StoreError(Exception):
    """The local store cannot be opened or used (with a sentence saying why)."""


@dataclass(frozen=True)
class StoredMessage:
    """A row of the message history (``body`` is the serialized DataMessage)."""

    id: int
    conversation: str
    author: str
    author_device: int
    timestamp: int
    received_at: int
    outgoing: bool
    body: bytes
    status: str = "sent"


@dataclass(frozen=True)
class IdentityRecord:
    account: str
    identity_key: IdentityKey
    verified: bool
    send_blocked: bool


class Store:
    """An open local store. Not thread-safe: use it from one thread (the client's loop)."""

    def __init__(self, db: sqlite3.Connection, key: LocalKey) -> None:
        self._db = db
        self._key = key
        self._depth = 0
        self._identity: IdentityKeyPair | None = None
        #: The policy for a contact whose identity key changed (docs/spec §7).
        self.accept_changed_identities = False

    # -- opening ------------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, *, passphrase: str | None = None,
               params: Argon2Params | None = None) -> Store:
        """Make a new store at ``path``: under a passphrase (Argon2id), or else a key kept
        in the OS keyring.

        Raises:
            StoreError: the file exists, or no passphrase and no usable keyring.
            UnusableParams: ``params`` past :data:`crypto.MAX_PARAMS` (or invalid).
        """
        if path.exists():
            raise StoreError(f"a store already exists at {path}")
        params = check_params(params or Argon2Params())
        path.parent.mkdir(parents=True, exist_ok=True)
        salt = os.urandom(16)
        if passphrase is not None:
            key, source = derive_key(passphrase, salt, params), "passphrase"
        else:
            found = keyring_key(KEYRING_SERVICE, str(path.resolve()), create=True)
            if found is None:
                raise StoreError("no OS keyring is available here: set a passphrase")
            key, source = found, "keyring"
        local = LocalKey(key)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        db = _connect(path)
        _migrate(db)
        db.executemany("INSERT INTO meta VALUES (?, ?)", [
            ("key_source", source), ("salt", salt.hex()), ("argon2", params.encode()),
            ("key_check", local.check_value().hex()),
        ])
        return cls(db, local)

    @classmethod
    def open(cls, path: Path, *, passphrase: str | None = None) -> Store:
        """Open an existing store.

        Raises:
            StoreError: missing file, newer schema, no key available, or key parameters
                that are malformed or cost more than :data:`crypto.MAX_PARAMS`.
            WrongKey: the passphrase (or keyring key) does not open it.
        """
        if not path.exists():
            raise StoreError(f"no store at {path}: register or link a device first")
        db = _connect(path)
        _migrate(db)
        meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
        if meta["key_source"] == "passphrase":
            if passphrase is None:
                raise StoreError("this store is locked with a passphrase")
            try:
                params = check_params(Argon2Params.decode(meta["argon2"]))
                salt = bytes.fromhex(meta["salt"])
            except UnusableParams as exc:
                db.close()
                raise StoreError(f"this store's key parameters are refused: {exc}") from None
            except (ValueError, KeyError):
                db.close()
                raise StoreError("this store's key parameters are malformed") from None
            key = derive_key(passphrase, salt, params)
        else:
            found = keyring_key(KEYRING_SERVICE, str(path.resolve()), create=False)
            if found is None:
                raise StoreError("the store's key is not in this machine's keyring")
            key = found
        local = LocalKey(key)
        local.verify(bytes.fromhex(meta["key_check"]))
        return cls(db, local)

    def close(self) -> None:
        self.checkpoint()
        self._db.close()

    # -- transactions -------------------------------------------------------------------

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside a transaction: undo only this block's writes if it raises."""
        if self._depth == 0:
            raise StoreError("a savepoint needs an open transaction")
        self._db.execute("SAVEPOINT block")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK TO block")
            self._db.execute("RELEASE block")
            raise
        self._db.execute("RELEASE block")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing (nests: the outermost one commits)."""
        if self._depth == 0:
            self._db.execute("BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("ROLLBACK")
            raise
        self._depth -= 1
        if self._depth == 0:
            self._db.execute("COMMIT")

    @contextlib.contextmanager
    def relaxed_transaction(self) -> Iterator[None]:
        """A transaction whose commit is not flushed to disk on its own (the next ordinary
        commit flushes it): for writes whose loss in a power cut is harmless, such as a
        send's status turning "sent" (it would read "sending") or done follow-ups (they
        would run again, and repeats are dropped by name). Saves an fsync each."""
        if self._depth:
            with self.transaction():
                yield
            return
        self._db.execute("PRAGMA synchronous = NORMAL")
        try:
            with self.transaction():
                yield
        finally:
            self._db.execute("PRAGMA synchronous = FULL")

    def checkpoint(self) -> None:
        """Fold the WAL into the database file and truncate it (erases deleted pages)."""
        if self._depth == 0:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- sealed values ------------------------------------------------------------------

    def _seal(self, table: str, key: str, value: bytes) -> bytes:
        return self._key.seal(value, f"{table}|{key}".encode())

    def _open(self, table: str, key: str, sealed: bytes) -> bytes:
        return self._key.open(sealed, f"{table}|{key}".encode())

    def get_meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, name: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

    def get_secret(self, name: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
        return None if row is None else self._open("secrets", name, row[0])

    def set_secret(self, name: str, value: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO secrets VALUES (?, ?)",
                         (name, self._seal("secrets", name, value)))

    def delete_secret(self, name: str) -> None:
        self._db.execute("DELETE FROM secrets WHERE name = ?", (name,))

    def next_id(self, counter: str, start: int = 1) -> int:
        """The next value of a persistent counter (key ids, for example)."""
        value = int(self.get_meta(counter) or start)
        self.set_meta(counter, str(value + 1))
        return value

    # -- IdentityKeyStore ---------------------------------------------------------------

    def set_identity(self, identity: IdentityKeyPair, registration_id: int) -> None:
        with self.transaction():
            self.set_secret("identity", identity.serialize())
            self.set_meta("registration_id", str(registration_id))
        self._identity = identity

    def get_identity_key_pair(self) -> IdentityKeyPair:
        if self._identity is None:
            data = self.get_secret("identity")
            if data is None:
                raise StoreError("this store has no identity yet")
            self._identity = IdentityKeyPair.deserialize(data)
        return self._identity

    def get_local_registration_id(self) -> int:
        return int(self.get_meta("registration_id") or 0)

    def identity_record(self, account: str) -> IdentityRecord | None:
        row = self._db.execute(
            "SELECT identity_key, verified, send_blocked FROM identities WHERE account = ?",
            (account,)).fetchone()
        if row is None:
            return None
        return IdentityRecord(account, PublicKey.deserialize(row[0]), bool(row[1]),
                              bool(row[2]))

    def identity_records(self) -> list[IdentityRecord]:
        """Every account whose identity key this device knows."""
        return [IdentityRecord(str(a), PublicKey.deserialize(k), bool(v), bool(b))
                for a, k, v, b in self._db.execute(
                    "SELECT account, identity_key, verified, send_blocked FROM identities "
                    "ORDER BY account")]

    def save_identity(self, address: ProtocolAddress, identity: IdentityKey) -> bool:
        """TOFU per account; a different key replaces the old one, clears ``verified``
        and (unless the policy accepts changes and it was not verified) blocks sending
        until :meth:`trust_identity`. Returns True when the key changed."""
        if self._is_own_account(address.name):
            # Our own devices share our identity key; nothing may replace it here (only an
            # identity reset from one of our devices, through set_identity).
            return False
        known = self.identity_record(address.name)
        if known is not None and known.identity_key == identity:
            return False
        blocked = known is not None and (known.verified or not self.accept_changed_identities)
        self._db.execute(
            "INSERT OR REPLACE INTO identities (account, identity_key, verified, "
            "send_blocked, updated_at) VALUES (?, ?, 0, ?, strftime('%s','now'))",
            (address.name, identity.serialize(), int(blocked)))
        return known is not None

    def is_trusted_identity(self, address: ProtocolAddress, identity: IdentityKey,
                            direction: Direction) -> bool:
        if self._is_own_account(address.name):
            # A session with "one of our devices" under another identity key is a forgery
            # (by the relay, which assigns sender addresses): refuse it in both directions.
            return identity == self.get_identity_key_pair().public
        known = self.identity_record(address.name)
        if known is None:
            return True
        if direction is Direction.RECEIVING:
            # Messages from a changed key are accepted and shown with a notice (spec §7).
            return True
        return known.identity_key == identity and not known.send_blocked

    def _is_own_account(self, account: str) -> bool:
        own = self.get_meta("account_id")
        return own is not None and account == own

    def get_identity(self, address: ProtocolAddress) -> IdentityKey | None:
        known = self.identity_record(address.name)
        return None if known is None else known.identity_key

    def trust_identity(self, account: str, identity: IdentityKey, *,
                       verified: bool) -> None:
        """The user accepted (or verified) ``identity`` for ``account``.

        Raises:
            StoreError: ``account`` is our own and ``identity`` is not our identity key.
        """
        if self._is_own_account(account) and identity != self.get_identity_key_pair().public:
            raise StoreError("our own account's identity key changes only by an identity reset")
        self._db.execute(
            "INSERT OR REPLACE INTO identities (account, identity_key, verified, "
            "send_blocked, updated_at) VALUES (?, ?, ?, 0, strftime('%s','now'))",
            (account, identity.serialize(), int(verified)))

    def restore_identity(self, account: str, identity: IdentityKey, *, verified: bool,
                         send_blocked: bool) -> None:
        """A contact's key and trust exactly as another device of ours holds them (linking).

        Raises:
            StoreError: ``account`` is our own.
        """
        if self._is_own_account(account):
            raise StoreError("our own identity key is not restored from a contact list")
        self._db.execute(
            "INSERT OR REPLACE INTO identities (account, identity_key, verified, "
            "send_blocked, updated_at) VALUES (?, ?, ?, ?, strftime('%s','now'))",
            (account, identity.serialize(), int(verified), int(send_blocked)))

    # -- PreKeyStore, SignedPreKeyStore, KyberPreKeyStore ---------------------------------

    def get_pre_key(self, pre_key_id: int) -> PreKeyRecord:
        row = self._db.execute("SELECT value FROM prekeys WHERE id = ?",
                               (pre_key_id,)).fetchone()
        if row is None:
            raise InvalidPreKeyId(f"no prekey with id {pre_key_id}")
        return PreKeyRecord.deserialize(self._open("prekeys", str(pre_key_id), row[0]))

    def save_pre_key(self, record: PreKeyRecord) -> None:
        self._db.execute("INSERT OR REPLACE INTO prekeys VALUES (?, ?)",
                         (record.id, self._seal("prekeys", str(record.id), record.serialize())))

    def remove_pre_key(self, pre_key_id: int) -> None:
        self._db.execute("DELETE FROM prekeys WHERE id = ?", (pre_key_id,))

    def get_signed_pre_key(self, signed_pre_key_id: int) -> SignedPreKeyRecord:
        row = self._db.execute("SELECT value FROM signed_prekeys WHERE id = ?",
                               (signed_pre_key_id,)).fetchone()
        if row is None:
            raise InvalidPreKeyId(f"no signed prekey with id {signed_pre_key_id}")
        return SignedPreKeyRecord.deserialize(
            self._open("signed_prekeys", str(signed_pre_key_id), row[0]))

    def save_signed_pre_key(self, record: SignedPreKeyRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO signed_prekeys VALUES (?, ?, ?)",
            (record.id, record.timestamp,
             self._seal("signed_prekeys", str(record.id), record.serialize())))

    def get_kyber_pre_key(self, kyber_pre_key_id: int) -> KyberPreKeyRecord:
        row = self._db.execute("SELECT value FROM kyber_prekeys WHERE id = ?",
                               (kyber_pre_key_id,)).fetchone()
        if row is None:
            raise InvalidKyberPreKeyId(f"no Kyber prekey with id {kyber_pre_key_id}")
        return KyberPreKeyRecord.deserialize(
            self._open("kyber_prekeys", str(kyber_pre_key_id), row[0]))

    def save_kyber_pre_key(self, record: KyberPreKeyRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO kyber_prekeys VALUES (?, ?, ?, ?)",
            (record.id, int(record.last_resort), record.timestamp,
             self._seal("kyber_prekeys", str(record.id), record.serialize())))

    def mark_kyber_pre_key_used(self, kyber_pre_key_id: int, signed_pre_key_id: int,
                                base_key: bytes) -> None:
        row = self._db.execute("SELECT last_resort FROM kyber_prekeys WHERE id = ?",
                               (kyber_pre_key_id,)).fetchone()
        if row is None:
            return
        if not row[0]:
            self._db.execute("DELETE FROM kyber_prekeys WHERE id = ?", (kyber_pre_key_id,))
            return
        digest = hashlib.sha256(base_key).digest()
        try:
            self._db.execute("INSERT INTO kyber_used VALUES (?, ?, ?)",
                             (kyber_pre_key_id, signed_pre_key_id, digest))
        except sqlite3.IntegrityError:
            raise InvalidMessage("reused base key") from None

    def signed_pre_keys(self) -> list[tuple[int, int]]:
        """(id, created_at ms) of every signed prekey, oldest first."""
        return [(int(a), int(b)) for a, b in self._db.execute(
            "SELECT id, created_at FROM signed_prekeys ORDER BY created_at, id")]

    def last_resort_kyber_pre_keys(self) -> list[tuple[int, int]]:
        """(id, created_at ms) of every last-resort Kyber prekey, oldest first."""
        return [(int(a), int(b)) for a, b in self._db.execute(
            "SELECT id, created_at FROM kyber_prekeys WHERE last_resort = 1 "
            "ORDER BY created_at, id")]

    def remove_one_time_keys_below(self, ec_below: int, kyber_below: int) -> None:
        """Erase one-time EC prekeys with a smaller id than ``ec_below`` and one-time
        (not last-resort) Kyber prekeys below ``kyber_below``."""
        self._db.execute("DELETE FROM prekeys WHERE id < ?", (ec_below,))
        self._db.execute("DELETE FROM kyber_prekeys WHERE id < ? AND last_resort = 0",
                         (kyber_below,))

    def one_time_key_ids(self) -> tuple[list[int], list[int]]:
        """The ids of the one-time EC and one-time Kyber prekeys held."""
        return ([int(r[0]) for r in self._db.execute("SELECT id FROM prekeys ORDER BY id")],
                [int(r[0]) for r in self._db.execute(
                    "SELECT id FROM kyber_prekeys WHERE last_resort = 0 ORDER BY id")])

    def remove_signed_pre_key(self, key_id: int) -> None:
        self._db.execute("DELETE FROM signed_prekeys WHERE id = ?", (key_id,))

    def remove_kyber_pre_key(self, key_id: int) -> None:
        self._db.execute("DELETE FROM kyber_prekeys WHERE id = ?", (key_id,))
        self._db.execute("DELETE FROM kyber_used WHERE kyber_id = ?", (key_id,))

    # -- SessionStore -------------------------------------------------------------------

    def load_session(self, address: ProtocolAddress) -> SessionRecord | None:
        row = self._db.execute("SELECT value FROM sessions WHERE account = ? AND device = ?",
                               (address.name, address.device_id)).fetchone()
        if row is None:
            return None
        return SessionRecord.deserialize(self._open("sessions", str(address), row[0]))

    def store_session(self, address: ProtocolAddress, record: SessionRecord) -> None:
        self._db.execute("INSERT OR REPLACE INTO sessions VALUES (?, ?, ?)",
                         (address.name, address.device_id,
                          self._seal("sessions", str(address), record.serialize())))

    def delete_session(self, address: ProtocolAddress) -> None:
        self._db.execute("DELETE FROM sessions WHERE account = ? AND device = ?",
                         (address.name, address.device_id))

    def forget_sessions(self) -> None:
        """Drop every session and rotate every group chain (after an identity reset: new
        sessions carry the new identity key, to contacts and our own devices alike)."""
        self._db.execute("DELETE FROM sessions")
        self._db.execute("UPDATE groups SET rotate = 1")

    def session_devices(self, account: str) -> list[int]:
        return [int(r[0]) for r in self._db.execute(
            "SELECT device FROM sessions WHERE account = ? ORDER BY device", (account,))]

    # -- SenderKeyStore -----------------------------------------------------------------

    def load_sender_key(self, sender: ProtocolAddress,
                        distribution_id: uuid.UUID) -> SenderKeyRecordLike | None:
        row = self._db.execute(
            "SELECT value FROM sender_keys WHERE account = ? AND device = ? "
            "AND distribution_id = ?",
            (sender.name, sender.device_id, distribution_id.bytes)).fetchone()
        if row is None:
            return None
        return SenderKeyRecord.deserialize(
            self._open("sender_keys", f"{sender}|{distribution_id}", row[0]))

    def store_sender_key(self, sender: ProtocolAddress, distribution_id: uuid.UUID,
                         record: SenderKeyRecordLike) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO sender_keys VALUES (?, ?, ?, ?)",
            (sender.name, sender.device_id, distribution_id.bytes,
             self._seal("sender_keys", f"{sender}|{distribution_id}", record.serialize())))

    def bind_sender_key(self, sender: ProtocolAddress, distribution_id: uuid.UUID,
                        group_id: bytes) -> bool:
        """Tie a member's sender key to the group it was distributed for; False when it is
        already tied to another group."""
        row = self._db.execute(
            "SELECT group_id FROM sender_key_groups WHERE account = ? AND device = ? "
            "AND distribution_id = ?",
            (sender.name, sender.device_id, distribution_id.bytes)).fetchone()
        if row is not None:
            return bytes(row[0]) == group_id
        self._db.execute("INSERT INTO sender_key_groups VALUES (?, ?, ?, ?)",
                         (sender.name, sender.device_id, distribution_id.bytes, group_id))
        return True

    def sender_key_group(self, sender: ProtocolAddress,
                         distribution_id: uuid.UUID) -> bytes | None:
        row = self._db.execute(
            "SELECT group_id FROM sender_key_groups WHERE account = ? AND device = ? "
            "AND distribution_id = ?",
            (sender.name, sender.device_id, distribution_id.bytes)).fetchone()
        return None if row is None else bytes(row[0])

    # -- server-stored history (docs/spec/history.md) --------------------------------------

    def history_enqueue(self, event_id: bytes, blob: bytes | None, now_ms: int) -> None:
        """An entry to upload (``blob``, already sealed for the relay) or, with None, to
        delete there; a later call for the same event replaces an earlier one."""
        self._db.execute("INSERT OR REPLACE INTO history_outbox VALUES (?, ?, ?)",
                         (event_id, now_ms, blob))

    def history_pending(self, limit: int) -> list[tuple[bytes, bytes | None]]:
        rows = self._db.execute("SELECT event_id, blob FROM history_outbox "
                                "ORDER BY created_at, rowid LIMIT ?", (limit,))
        return [(bytes(e), None if b is None else bytes(b)) for e, b in rows]

    def history_clear_pending(self) -> None:
        self._db.execute("DELETE FROM history_outbox")

    def all_messages(self) -> Iterator[StoredMessage]:
        """Every stored message, oldest first."""
        rows = self._db.execute(
            "SELECT id, conversation, author, author_device, timestamp, received_at, "
            "outgoing, body, status FROM messages ORDER BY timestamp, id").fetchall()
        for r in rows:
            yield StoredMessage(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]),
                                self._open("messages", f"{r[2]}|{r[4]}", r[7]), str(r[8]))

    def history_done(self, event_ids: Iterable[bytes]) -> None:
        self._db.executemany("DELETE FROM history_outbox WHERE event_id = ?",
                             [(e,) for e in event_ids])

    def name_history_event(self, event_id: bytes, author: str, timestamp: int,
                           reactor: str | None = None) -> None:
        """``event_id`` names the message (``author``, ``timestamp``): the message's own
        entry, an edit's or (with ``reactor``) a reaction's."""
        self._db.execute("INSERT OR REPLACE INTO history_names (event_id, author, timestamp, "
                         "reactor) VALUES (?, ?, ?, ?)", (event_id, author, timestamp, reactor))

    def take_reaction_names(self, author: str, timestamp: int, reactor: str,
                            keep: bytes) -> list[bytes]:
        """Forget the entries of ``reactor``'s reactions to the message but ``keep``:
        which they were (their entries are to be deleted)."""
        names = [bytes(row[0]) for row in self._db.execute(
            "SELECT event_id FROM history_names WHERE author = ? AND timestamp = ? AND "
            "reactor = ? AND event_id != ?", (author, timestamp, reactor, keep))]
        self._db.executemany("DELETE FROM history_names WHERE event_id = ?",
                             [(name,) for name in names])
        return names

    def history_names_of(self, author: str, timestamp: int) -> list[bytes]:
        """The history entries that name the message (``author``, ``timestamp``): its
        own and those of its edits and reactions."""
        return [bytes(row[0]) for row in self._db.execute(
            "SELECT event_id FROM history_names WHERE author = ? AND timestamp = ?",
            (author, timestamp))]

    def history_named(self, event_id: bytes) -> tuple[str, int] | None:
        row = self._db.execute("SELECT author, timestamp FROM history_names "
                               "WHERE event_id = ?", (event_id,)).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    # -- network work left to do after an envelope was acknowledged ----------------------

    def add_follow_up(self, value: bytes, now_ms: int) -> None:
        key = str(uuid.uuid4())
        self._db.execute("INSERT INTO follow_ups VALUES (?, ?, ?)",
                         (key, now_ms, self._seal("follow_ups", key, value)))

    def follow_ups(self) -> list[tuple[str, bytes]]:
        """(id, value) in the order they were added."""
        rows = self._db.execute("SELECT id, value FROM follow_ups ORDER BY created_at, rowid")
        return [(str(k), self._open("follow_ups", str(k), v)) for k, v in rows]

    def remove_follow_up(self, key: str) -> None:
        self._db.execute("DELETE FROM follow_ups WHERE id = ?", (key,))

    # -- contacts -----------------------------------------------------------------------

    def set_contact(self, account: str, username: str | None) -> None:
        self._db.execute("INSERT OR REPLACE INTO contacts VALUES (?, ?)", (account, username))

    def contacts(self) -> list[tuple[str, str | None]]:
        return [(str(a), u) for a, u in self._db.execute(
            "SELECT account, username FROM contacts ORDER BY username, account")]

    def find_contact(self, username: str) -> str | None:
        row = self._db.execute("SELECT account FROM contacts WHERE username = ?",
                               (username,)).fetchone()
        return None if row is None else str(row[0])

    # -- groups -------------------------------------------------------------------------

    def get_group(self, group_id: bytes) -> bytes | None:
        """The accepted state bytes of a group (see :mod:`cipherpost.client.groups`)."""
        row = self._db.execute("SELECT state FROM groups WHERE id = ?", (group_id,)).fetchone()
        return None if row is None else self._open("groups", group_id.hex(), row[0])

    def save_group(self, group_id: bytes, state: bytes) -> None:
        sealed = self._seal("groups", group_id.hex(), state)
        if self._db.execute("UPDATE groups SET state = ? WHERE id = ?",
                            (sealed, group_id)).rowcount == 0:
            self._db.execute("INSERT INTO groups (id, state) VALUES (?, ?)", (group_id, sealed))

    def group_ids(self) -> list[bytes]:
        return [bytes(r[0]) for r in self._db.execute("SELECT id FROM groups ORDER BY id")]

    def group_distribution(self, group_id: bytes) -> tuple[uuid.UUID | None, bool]:
        """Our sender-key distribution id for the group, and whether it must rotate."""
        row = self._db.execute("SELECT distribution_id, rotate FROM groups WHERE id = ?",
                               (group_id,)).fetchone()
        if row is None or row[0] is None:
            return None, False
        return uuid.UUID(bytes=bytes(row[0])), bool(row[1])

    def set_group_distribution(self, group_id: bytes, distribution_id: uuid.UUID) -> None:
        """Start a new sending chain: nobody holds it yet."""
        self._db.execute("UPDATE groups SET distribution_id = ?, rotate = 0 WHERE id = ?",
                         (distribution_id.bytes, group_id))
        self._db.execute("DELETE FROM group_key_sent WHERE group_id = ?", (group_id,))

    def rotate_group_key(self, group_id: bytes) -> None:
        """Our next group message must use a new chain (membership or devices shrank)."""
        self._db.execute("UPDATE groups SET rotate = 1 WHERE id = ?", (group_id,))

    def key_sent_devices(self, group_id: bytes, distribution_id: uuid.UUID,
                         account: str) -> set[int]:
        return {int(r[0]) for r in self._db.execute(
            "SELECT device FROM group_key_sent WHERE group_id = ? AND account = ? "
            "AND distribution_id = ?", (group_id, account, distribution_id.bytes))}

    def mark_key_sent(self, group_id: bytes, distribution_id: uuid.UUID, account: str,
                      devices: list[int]) -> None:
        self._db.executemany("INSERT OR REPLACE INTO group_key_sent VALUES (?, ?, ?, ?)",
                             [(group_id, account, d, distribution_id.bytes) for d in devices])

    # -- history, processed envelopes, resend log ---------------------------------------

    def envelope_seen(self, envelope_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM envelopes WHERE id = ?",
                                (envelope_id,)).fetchone() is not None

    def mark_envelope(self, envelope_id: str, now_ms: int) -> None:
        self._db.execute("INSERT OR IGNORE INTO envelopes VALUES (?, ?)", (envelope_id, now_ms))

    def forget_envelopes(self, before_ms: int) -> None:
        self._db.execute("DELETE FROM envelopes WHERE processed_at < ?", (before_ms,))

    def add_message(self, *, conversation: str, author: str, author_device: int,
                    timestamp: int, received_at: int, outgoing: bool, body: bytes,
                    expire_timer: int = 0, expires_at: int | None = None,
                    status: str = SENT) -> bool:
        """Store a message; False if one with the same (author, timestamp) exists."""
        key = f"{author}|{timestamp}"
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO messages (conversation, author, author_device, timestamp, "
            "received_at, outgoing, body, expire_timer, expires_at, status) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (conversation, author, author_device, timestamp, received_at, int(outgoing),
             self._seal("messages", key, body), expire_timer, expires_at, status))
        return cursor.rowcount == 1

    def set_status(self, author: str, timestamp: int, status: str) -> None:
        """The sending status of one of our messages (SENDING, SENT or FAILED)."""
        self._db.execute("UPDATE messages SET status = ? WHERE author = ? AND timestamp = ?",
                         (status, author, timestamp))

    def message_conversation(self, author: str, timestamp: int) -> str | None:
        row = self._db.execute("SELECT conversation FROM messages WHERE author = ? AND "
                               "timestamp = ?", (author, timestamp)).fetchone()
        return None if row is None else str(row[0])

    def replace_body(self, author: str, timestamp: int, body: bytes) -> bool:
        """An edit: the message's new content (it keeps its place in the conversation)."""
        cursor = self._db.execute(
            "UPDATE messages SET body = ?, edited = 1 WHERE author = ? AND timestamp = ?",
            (self._seal("messages", f"{author}|{timestamp}", body), author, timestamp))
        return cursor.rowcount == 1

    def start_expiry(self, author: str, timestamp: int, now_ms: int) -> None:
        """The message was read (or sent): its timer starts now, unless it already did."""
        self._db.execute(
            "UPDATE messages SET expires_at = ? + expire_timer * 1000 WHERE author = ? AND "
            "timestamp = ? AND expire_timer > 0 AND expires_at IS NULL",
            (now_ms, author, timestamp))

    def expire(self, now_ms: int) -> list[tuple[str, str, int]]:
        """Delete every message whose time is up; (conversation, author, timestamp) of each."""
        rows = self._db.execute(
            "SELECT conversation, author, timestamp FROM messages WHERE expires_at <= ?",
            (now_ms,)).fetchall()
        if rows:
            # Ours: what a contact's resend request would get goes too, as for a deletion.
            self._db.executemany(
                "DELETE FROM resend_log WHERE destination = ? AND timestamp = ?",
                [(r[0], r[2]) for r in rows])
            self._db.execute("DELETE FROM messages WHERE expires_at <= ?", (now_ms,))
            self._db.executemany(
                "DELETE FROM reactions WHERE target_author = ? AND target_timestamp = ?",
                [(r[1], r[2]) for r in rows])
        return [(str(c), str(a), int(t)) for c, a, t in rows]

    def conversation_timer(self, conversation: str) -> tuple[int, int]:
        """(seconds, version) of the conversation's disappearing-messages timer."""
        row = self._db.execute("SELECT expire_timer, expire_timer_version FROM conversations "
                               "WHERE id = ?", (conversation,)).fetchone()
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    def expire_timers(self) -> dict[str, int]:
        """Every conversation with disappearing messages on: its timer in seconds."""
        rows = self._db.execute("SELECT id, expire_timer FROM conversations "
                                "WHERE expire_timer > 0 ORDER BY id").fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def set_conversation_timer(self, conversation: str, seconds: int, version: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO conversations VALUES (?, ?, ?)",
                         (conversation, seconds, version))

    def set_reaction(self, target_author: str, target_timestamp: int, reactor: str,
                     emoji: str | None) -> None:
        """Record (or with None remove) ``reactor``'s reaction to a message."""
        self._db.execute("DELETE FROM reactions WHERE target_author = ? AND "
                         "target_timestamp = ? AND reactor = ?",
                         (target_author, target_timestamp, reactor))
        if emoji is not None:
            key = f"{target_author}|{target_timestamp}|{reactor}"
            self._db.execute("INSERT INTO reactions VALUES (?, ?, ?, ?)",
                             (target_author, target_timestamp, reactor,
                              self._seal("reactions", key, emoji.encode())))

    def reactions(self, target_author: str, target_timestamp: int) -> dict[str, str]:
        """reactor → emoji for one message."""
        rows = self._db.execute("SELECT reactor, emoji FROM reactions WHERE target_author = ? "
                                "AND target_timestamp = ?", (target_author, target_timestamp))
        return {str(r): self._open("reactions", f"{target_author}|{target_timestamp}|{r}",
                                   e).decode() for r, e in rows}

    def messages(self, conversation: str, limit: int = 100) -> list[StoredMessage]:
        """The latest ``limit`` messages of a conversation, in display order (sender
        timestamp, ties by arrival)."""
        rows = self._db.execute(
            "SELECT id, conversation, author, author_device, timestamp, received_at, "
            "outgoing, body, status FROM messages WHERE conversation = ? "
            "ORDER BY timestamp DESC, id DESC LIMIT ?", (conversation, limit)).fetchall()
        return [StoredMessage(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]),
                              self._open("messages", f"{r[2]}|{r[4]}", r[7]), str(r[8]))
                for r in reversed(rows)]

    def delete_message(self, author: str, timestamp: int) -> bool:
        # Ours, deleted for everyone: a contact's resend request (a decryption error, a
        # session reset) must not bring the text back (review of 44ea519).
        self._db.execute("DELETE FROM resend_log WHERE timestamp = ? AND destination = "
                         "(SELECT conversation FROM messages WHERE author = ? AND "
                         "timestamp = ?)", (timestamp, author, timestamp))
        cursor = self._db.execute("DELETE FROM messages WHERE author = ? AND timestamp = ?",
                                  (author, timestamp))
        self._db.execute("DELETE FROM reactions WHERE target_author = ? AND "
                         "target_timestamp = ?", (author, timestamp))
        return cursor.rowcount == 1

    def log_sent(self, destination: str, timestamp: int, content: bytes, now_ms: int,
                 recipients: Iterable[str] = ()) -> None:
        """Keep a sent message for resends; for a group, ``recipients`` are the accounts
        it went to (a member added later must not get it by asking)."""
        key = f"{destination}|{timestamp}"
        listed = "\n".join(sorted(recipients)).encode()
        self._db.execute(
            "INSERT OR REPLACE INTO resend_log (destination, timestamp, created_at, value, "
            "recipients) VALUES (?, ?, ?, ?, ?)",
            (destination, timestamp, now_ms, self._seal("resend_log", key, content),
             self._seal("resend_log", key + "|recipients", listed)))

    def find_group_sent(self, account: str, timestamp: int) -> bytes | None:
        """A group message sent at ``timestamp`` to (among others) ``account``."""
        rows = self._db.execute(
            "SELECT destination, value, recipients FROM resend_log WHERE timestamp = ? "
            "AND destination LIKE 'group:%'", (timestamp,)).fetchall()
        for destination, value, recipients in rows:
            key = f"{destination}|{timestamp}"
            if recipients is None:
                continue  # logged before recipients were kept: not resent to anyone
            listed = self._open("resend_log", key + "|recipients", recipients).decode()
            if account in listed.split("\n"):
                return self._open("resend_log", key, value)
        return None

    def revise_sent(self, destination: str, timestamp: int, content: bytes) -> bool:
        """Replace what a resend of our message sends (after an edit); False if it is
        not kept."""
        cursor = self._db.execute(
            "UPDATE resend_log SET value = ? WHERE destination = ? AND timestamp = ?",
            (self._seal("resend_log", f"{destination}|{timestamp}", content), destination,
             timestamp))
        return cursor.rowcount == 1

    def find_sent(self, destination: str, timestamp: int) -> bytes | None:
        row = self._db.execute(
            "SELECT value FROM resend_log WHERE destination = ? AND timestamp = ?",
            (destination, timestamp)).fetchone()
        if row is None:
            return None
        return self._open("resend_log", f"{destination}|{timestamp}", row[0])

    def recent_sent(self, destination: str, limit: int,
                    after: int = 0) -> list[tuple[int, bytes]]:
        """The newest ``limit`` messages logged for a 1:1 ``destination`` with a timestamp
        above ``after``, oldest first, as (timestamp, content)."""
        rows = self._db.execute(
            "SELECT timestamp, value FROM resend_log WHERE destination = ? AND timestamp > ? "
            "ORDER BY timestamp DESC LIMIT ?", (destination, after, limit)).fetchall()
        return [(int(t), self._open("resend_log", f"{destination}|{t}", v))
                for t, v in reversed(rows)]

    def prune_resend_log(self, before_ms: int) -> None:
        self._db.execute("DELETE FROM resend_log WHERE created_at < ?", (before_ms,))

    def __repr__(self) -> str:
        return "Store(<local store>)"


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA secure_delete = ON")
    db.execute("PRAGMA foreign_keys = ON")
    return db
