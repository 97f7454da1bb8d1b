"""The relay's tables (SQLAlchemy Core). Migrations in ``server/migrations`` create them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Subquery,
    Table,
    Text,
    false,
    select,
    union_all,
)

metadata = MetaData()

#: Row ids that only grow: BIGSERIAL on PostgreSQL, the 64-bit rowid on SQLite.
ROW_ID = BigInteger().with_variant(Integer(), "sqlite")

accounts = Table(
    "accounts", metadata,
    Column("id", String(36), primary_key=True),
    Column("username", String(64), unique=True, nullable=True),
    Column("identity_key", LargeBinary, nullable=False),
    Column("next_device_id", Integer, nullable=False, server_default="2"),
    Column("created_at", BigInteger, nullable=False),
    #: Set while an operator has the account suspended (docs/operations.md).
    Column("suspended_at", BigInteger, nullable=True),
    #: SHA-256 of the invite code the account was registered with (migration 0011): an
    #: account its own device deletes within ``admin.INVITE_RETURN_WINDOW_MS`` of its
    #: creation gives the code back (a sign-up the client withdrew, docs/operations.md).
    Column("invite_hash", LargeBinary, nullable=True),
    Index("accounts_suspended", "suspended_at"),
)

devices = Table(
    "devices", metadata,
    Column("account_id", String(36), primary_key=True),
    Column("device_id", Integer, primary_key=True),
    Column("registration_id", Integer, nullable=False),
    Column("token_hash", LargeBinary, nullable=False),
    Column("name", Text, nullable=True),
    Column("queued_bytes", BigInteger, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    Column("last_seen", BigInteger, nullable=False),
    #: The ``seq`` of the device's latest queued message (taken under the row lock).
    Column("last_seq", BigInteger, nullable=False, server_default="0"),
    #: The device opens sealed-sender envelopes (it said so with its account's UAK).
    Column("sealed_sender", Boolean, nullable=False, server_default=false()),
)

signed_prekeys = Table(
    "signed_prekeys", metadata,
    Column("account_id", String(36), primary_key=True),
    Column("device_id", Integer, primary_key=True),
    Column("key_id", BigInteger, nullable=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("signature", LargeBinary, nullable=False),
)

kyber_prekeys = Table(
    "kyber_prekeys", metadata,
    Column("account_id", String(36), primary_key=True),
    Column("device_id", Integer, primary_key=True),
    Column("key_id", BigInteger, primary_key=True),
    Column("last_resort", Boolean, primary_key=True),
    Column("public_key", LargeBinary, nullable=False),
    Column("signature", LargeBinary, nullable=False),
)

one_time_prekeys = Table(
    "one_time_prekeys", metadata,
    Column("account_id", String(36), primary_key=True),
    Column("device_id", Integer, primary_key=True),
    Column("key_id", BigInteger, primary_key=True),
    Column("public_key", LargeBinary, nullable=False),
)

#: Queued ciphertexts, stored under their place in the device's queue (migration 0008):
#: a send inserts and an acknowledgement deletes one row of one b-tree (SQLite: WITHOUT
#: ROWID), nothing else. ``guid`` is the envelope id; ids made since 0008 carry ``seq``
#: (:mod:`.envelope_ids`), so an acknowledgement needs no index on it. Expiry reads each
#: device's oldest message (``sql.Storage.expire``), so ``expires_at`` needs none either.
def _envelope_columns() -> list[Column[Any]]:
    """A queued message's columns after its key (``messages`` and ``queue_log``)."""
    return [
        Column("guid", String(36), nullable=False),
        Column("sender_account_id", String(36), nullable=True),
        Column("sender_device_id", Integer, nullable=True),
        Column("type", Integer, nullable=False),
        Column("content", LargeBinary, nullable=False),
        Column("client_timestamp", BigInteger, nullable=False),
        Column("server_timestamp", BigInteger, nullable=False),
        Column("expires_at", BigInteger, nullable=False),
    ]


messages = Table(
    "messages", metadata,
    Column("account_id", String(36), primary_key=True),
    Column("device_id", Integer, primary_key=True),
    #: Per device: 1, 2, 3, ... in commit order, never reused (see ``devices.last_seq``).
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    *_envelope_columns(),
    sqlite_with_rowid=False,
)

#: Messages as they arrive, on SQLite (:mod:`.queue_log`): appended in arrival order (the
#: id), deleted when acknowledged, and those still here after a few seconds moved to
#: ``messages`` (a device that is offline or slow). A message acknowledged within seconds,
#: as most are, never touches ``messages`` or its device's row. No index: the relay keeps
#: which rows belong to which device in memory, and moves every row to ``messages`` when
#: it starts. Empty on PostgreSQL.
queue_log = Table(
    "queue_log", metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=False),
    Column("account_id", String(36), nullable=False),
    Column("device_id", Integer, nullable=False),
    Column("seq", BigInteger, nullable=False),
    *_envelope_columns(),
)

link_codes = Table(
    "link_codes", metadata,
    Column("code_hash", LargeBinary, primary_key=True),
    Column("account_id", String(36), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)

attachments = Table(
    "attachments", metadata,
    Column("id", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Index("attachments_by_expiry", "expires_at"),
)

audit_log = Table(
    "audit_log", metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("account_id", String(36), nullable=False),
    Column("device_id", Integer, nullable=True),
    Column("event", String(64), nullable=False),
    # The hash chain (storage/audit.py): position, who acted (an operator's name; NULL for
    # the account itself or the server), what (JSON, never content), SHA-256 of the
    # canonical entry and the chain hash over it. ``redacted`` entries (their account was
    # deleted) lose the account and device ids but keep a digest of them
    # (``subject_digest``), so the rest of the entry is still checked.
    Column("seq", BigInteger, nullable=True),
    Column("actor", String(64), nullable=True),
    Column("details", Text, nullable=True),
    Column("redacted", Boolean, nullable=False, server_default=false()),
    Column("subject_digest", LargeBinary, nullable=True),
    Column("digest", LargeBinary, nullable=True),
    Column("chain_hash", LargeBinary, nullable=True),
    # The subject digest is keyed by the account's salt in ``audit_salts`` (entries from
    # migration 0009 on), so that once the salt is deleted with the account its redacted
    # entries cannot be matched to its id.
    Column("subject_salted", Boolean, nullable=False, server_default=false()),
    Index("audit_by_seq", "seq", unique=True),
    Index("audit_by_account", "account_id"),
)

#: One random salt per account with audit entries (storage/audit.py), deleted with the
#: account (review 2026-11-29-sealed-ops, O3).
audit_salts = Table(
    "audit_salts", metadata,
    Column("account_id", String(36), primary_key=True),
    Column("salt", LargeBinary, nullable=False),
)

#: The newest audit entry's position and chain hash (one row, id 1): appends lock it, so
#: concurrent writers (several relay processes) extend the chain one at a time, and
#: ``verify`` sees a log cut short at its end.
audit_head = Table(
    "audit_head", metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("chain_hash", LargeBinary, nullable=False),
)

#: People who run the admin command (server/admin): a role and a token stored hashed.
operators = Table(
    "operators", metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("token_hash", LargeBinary, nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
)

#: Invite codes for ``registration = "invite"``: single use, expiring, stored hashed.
invites = Table(
    "invites", metadata,
    Column("code_hash", LargeBinary, primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("created_by", String(64), nullable=True),
    Column("used_at", BigInteger, nullable=True),
    #: When the code came back from an account deleted minutes after its sign-up
    #: (migration 0011): a code comes back once at most.
    Column("returned_at", BigInteger, nullable=True),
)

#: Token hashes of removed devices: a restore from an older backup deletes the devices
#: they name, so a removed device's token stays dead (server/backup.py).
device_removals = Table(
    "device_removals", metadata,
    Column("token_hash", LargeBinary, primary_key=True),
    Column("removed_at", BigInteger, nullable=False),
)

#: Small facts about the server itself, e.g. its epoch (bumped by each restore).
server_state = Table(
    "server_state", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# Server-stored history (docs/spec/history.md): opaque, padded blobs named by an event id
# the client derives; ``blob`` NULL is a tombstone (a deleted event is not stored again).
history = Table(
    "history", metadata,
    Column("seq", ROW_ID, primary_key=True, autoincrement=True),
    Column("account_id", String(36), nullable=False),
    Column("event_id", LargeBinary, nullable=False),
    Column("day", Integer, nullable=False),
    Column("blob", LargeBinary, nullable=True),
    Index("history_by_event", "account_id", "event_id", unique=True),
    Index("history_by_account", "account_id", "seq"),
    sqlite_autoincrement=True,
)

history_settings = Table(
    "history_settings", metadata,
    Column("account_id", String(36), primary_key=True),
    Column("retention_days", Integer, nullable=True),
    Column("stored_bytes", BigInteger, nullable=False, server_default="0"),
)

# Recovery blobs (docs/spec/history.md): sealed on the client under a key the relay never
# sees, released to whoever presents the secret whose hash is kept here.
recovery = Table(
    "recovery", metadata,
    Column("account_id", String(36), primary_key=True),
    Column("lookup_id", LargeBinary, nullable=False, unique=True),
    Column("auth_hash", LargeBinary, nullable=False),
    Column("blob", LargeBinary, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", BigInteger, nullable=False, server_default="0"),
)

# The recovery blob sealed under a passphrase-derived key (docs/spec/history.md): found by
# username, with the Argon2id salt and parameters the client derives its keys with.
recovery_passphrase = Table(
    "recovery_passphrase", metadata,
    Column("account_id", String(36), primary_key=True),
    Column("salt", LargeBinary, nullable=False),
    Column("params", String(64), nullable=False),
    Column("verifier_hash", LargeBinary, nullable=False),
    Column("blob", LargeBinary, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", BigInteger, nullable=False, server_default="0"),
)

# Sealed sender (docs/server.md): a SHA-256 of the account's unidentified-access key, which
# authorises sealed sends to it (the key itself, derived from the profile key, never).
unidentified_access = Table(
    "unidentified_access", metadata,
    Column("account_id", String(36), primary_key=True),
    Column("key_hash", LargeBinary, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

#: The sealed-sender trust root the relay processes of this database serve (one row, id
#: 1), stored at the first start: a process whose key file holds another root refuses to
#: start (server/key_chain.py, :func:`check_trust_root`).
sealed_sender_root = Table(
    "sealed_sender_root", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("trust_root", LargeBinary, nullable=False),
    Column("stored_at", BigInteger, nullable=False),
)

# -- account security (docs/server.md, "Account security") ----------------------------------

#: An account's TOTP second factor (RFC 6238). ``secret`` must be kept in the clear to
#: check codes (docs/threat-model.md); ``enabled`` is false until the user confirmed a
#: first code. ``last_step`` is the newest time step used (replays and older steps are
#: refused); ``failures``/``next_attempt_at`` slow guessing like the recovery blobs.
two_factor = Table(
    "two_factor", metadata,
    Column("account_id", String(36), primary_key=True),
    Column("secret", LargeBinary, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("last_step", BigInteger, nullable=False, server_default="0"),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", BigInteger, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
)

#: Single-use recovery codes for a lost authenticator, stored hashed (SHA-256 over a
#: label, the account id and the 80-bit code).
two_factor_codes = Table(
    "two_factor_codes", metadata,
    Column("account_id", String(36), primary_key=True),
    Column("code_hash", LargeBinary, primary_key=True),
)


def queued() -> Subquery:
    """Every queued message, as (account_id, device_id, content): the per-device queues
    and the queue log (for counts; a message is in exactly one of them)."""
    return union_all(
        select(messages.c.account_id, messages.c.device_id, messages.c.content),
        select(queue_log.c.account_id, queue_log.c.device_id, queue_log.c.content),
    ).subquery("queued")
