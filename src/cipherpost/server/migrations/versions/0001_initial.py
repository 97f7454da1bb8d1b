"""Initial relay schema: accounts, devices, prekeys, message queues, link codes, blobs.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

#: Row ids that only grow: BIGSERIAL on PostgreSQL (a busy relay passes 2**31 messages),
#: INTEGER on SQLite, where only an INTEGER PRIMARY KEY is the 64-bit rowid.
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("username", sa.String(64), unique=True, nullable=True),
        sa.Column("identity_key", sa.LargeBinary, nullable=False),
        sa.Column("next_device_id", sa.Integer, nullable=False, server_default="2"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "devices",
        sa.Column("account_id", sa.String(36), primary_key=True),
        sa.Column("device_id", sa.Integer, primary_key=True),
        sa.Column("registration_id", sa.Integer, nullable=False),
        sa.Column("token_hash", sa.LargeBinary, nullable=False),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("queued_bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("last_seen", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "signed_prekeys",
        sa.Column("account_id", sa.String(36), primary_key=True),
        sa.Column("device_id", sa.Integer, primary_key=True),
        sa.Column("key_id", sa.BigInteger, nullable=False),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "kyber_prekeys",
        sa.Column("account_id", sa.String(36), primary_key=True),
        sa.Column("device_id", sa.Integer, primary_key=True),
        sa.Column("key_id", sa.BigInteger, primary_key=True),
        sa.Column("last_resort", sa.Boolean, primary_key=True),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "one_time_prekeys",
        sa.Column("account_id", sa.String(36), primary_key=True),
        sa.Column("device_id", sa.Integer, primary_key=True),
        sa.Column("key_id", sa.BigInteger, primary_key=True),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "messages",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("guid", sa.String(36), nullable=False, unique=True),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("device_id", sa.Integer, nullable=False),
        sa.Column("sender_account_id", sa.String(36), nullable=True),
        sa.Column("sender_device_id", sa.Integer, nullable=True),
        sa.Column("type", sa.Integer, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("client_timestamp", sa.BigInteger, nullable=False),
        sa.Column("server_timestamp", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("messages_by_device", "messages", ["account_id", "device_id", "id"])
    op.create_index("messages_by_expiry", "messages", ["expires_at"])
    op.create_table(
        "link_codes",
        sa.Column("code_hash", sa.LargeBinary, primary_key=True),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "attachments",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("attachments_by_expiry", "attachments", ["expires_at"])
    op.create_table(
        "audit_log",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("device_id", sa.Integer, nullable=True),
        sa.Column("event", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    for table in ("audit_log", "attachments", "link_codes", "messages", "one_time_prekeys",
                  "kyber_prekeys", "signed_prekeys", "devices", "accounts"):
        op.drop_table(table)
