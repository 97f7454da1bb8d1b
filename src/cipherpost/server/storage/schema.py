"""The relay's tables (SQLAlchemy Core). Migrations in ``server/migrations`` create them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
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

messages = Table(
    "messages", metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("guid", String(36), nullable=False, unique=True),
    Column("account_id", String(36), nullable=False),
    Column("device_id", Integer, nullable=False),
    Column("sender_account_id", String(36), nullable=True),
    Column("sender_device_id", Integer, nullable=True),
    Column("type", Integer, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("client_timestamp", BigInteger, nullable=False),
    Column("server_timestamp", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Index("messages_by_device", "account_id", "device_id", "id"),
    Index("messages_by_expiry", "expires_at"),
    # Sequence numbers must never be reused after a delete: delivery cursors rely on it.
    sqlite_autoincrement=True,
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
)
