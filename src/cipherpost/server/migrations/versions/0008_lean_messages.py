"""Queued messages in one b-tree keyed by (account, device, seq).

A send wrote five b-trees (the rowid table, the unique guid index, the queue index, the
expiry index, and AUTOINCREMENT's ``sqlite_sequence``) and an acknowledgement four; each
commit wrote each of their pages to the WAL. The queue order is the primary key now (on
SQLite a WITHOUT ROWID table, so the row lives in that b-tree), with no global id, no
guid index (new envelope ids carry their ``seq``: ``storage/envelope_ids.py``) and no
expiry index (expiry reads each device's oldest message). Every queued message is kept,
with its id, its ``seq`` and its order.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_FIELDS = ("account_id, device_id, seq, guid, sender_account_id, sender_device_id, type, "
           "content, client_timestamp, server_timestamp, expires_at")


def _payload() -> list[sa.Column[object]]:
    return [
        sa.Column("sender_account_id", sa.String(36), nullable=True),
        sa.Column("sender_device_id", sa.Integer, nullable=True),
        sa.Column("type", sa.Integer, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("client_timestamp", sa.BigInteger, nullable=False),
        sa.Column("server_timestamp", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "messages_lean",
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("device_id", sa.Integer, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("guid", sa.String(36), nullable=False),
        *_payload(),
        sa.PrimaryKeyConstraint("account_id", "device_id", "seq",
                                name="messages_lean_pkey"),
        sqlite_with_rowid=False,
    )
    op.execute(f"INSERT INTO messages_lean ({_FIELDS}) "  # noqa: S608 (constants)
               f"SELECT {_FIELDS} FROM messages")
    op.drop_table("messages")  # with its indexes (and its sqlite_sequence row)
    op.rename_table("messages_lean", "messages")
    if op.get_context().dialect.name == "postgresql":
        op.execute("ALTER TABLE messages RENAME CONSTRAINT messages_lean_pkey "
                   "TO messages_pkey")


def downgrade() -> None:
    bind = op.get_context().dialect.name
    op.create_table(
        "messages_wide",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("guid", sa.String(36), nullable=False, unique=True),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("device_id", sa.Integer, nullable=False),
        *_payload(),
        sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"),
        sqlite_autoincrement=True,
    )
    op.execute(f"INSERT INTO messages_wide ({_FIELDS}) "  # noqa: S608 (constants)
               f"SELECT {_FIELDS} FROM messages ORDER BY account_id, device_id, seq")
    op.drop_table("messages")
    op.rename_table("messages_wide", "messages")
    if bind == "postgresql":
        for old, new in (("messages_wide_pkey", "messages_pkey"),
                         ("messages_wide_guid_key", "messages_guid_key")):
            op.execute(f"ALTER TABLE messages RENAME CONSTRAINT {old} TO {new}")
        op.execute("ALTER SEQUENCE messages_wide_id_seq RENAME TO messages_id_seq")
    op.create_index("messages_by_device", "messages", ["account_id", "device_id", "seq"],
                    unique=True)
    op.create_index("messages_by_expiry", "messages", ["expires_at"])
