"""The queue log: messages in arrival order before they reach ``messages`` (SQLite).

On SQLite a send appends its messages to ``queue_log`` and an acknowledgement deletes
them there; only messages still unacknowledged after a few seconds move to ``messages``,
the per-device queues (:mod:`cipherpost.server.storage.queue_log`). The table has no
index (its id is the rowid); the relay moves all of it to ``messages`` when it starts.
PostgreSQL gets the table too, and leaves it empty.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  primary_key=True, autoincrement=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("device_id", sa.Integer, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("guid", sa.String(36), nullable=False),
        sa.Column("sender_account_id", sa.String(36), nullable=True),
        sa.Column("sender_device_id", sa.Integer, nullable=True),
        sa.Column("type", sa.Integer, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("client_timestamp", sa.BigInteger, nullable=False),
        sa.Column("server_timestamp", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    # Whatever is still in the log is a queued message: it moves to ``messages`` first,
    # its bytes and number to its device's row, as the relay moves it (the relay is
    # stopped during a migration). PostgreSQL's log is always empty.
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "UPDATE devices SET queued_bytes = queued_bytes + (SELECT coalesce(sum("
            "length(q.content)), 0) FROM queue_log q WHERE q.account_id = devices.account_id "
            "AND q.device_id = devices.device_id), last_seq = max(last_seq, (SELECT "
            "coalesce(max(q.seq), 0) FROM queue_log q WHERE q.account_id = devices.account_id "
            "AND q.device_id = devices.device_id))")
        op.execute(
            "INSERT INTO messages (guid, account_id, device_id, seq, sender_account_id, "
            "sender_device_id, type, content, client_timestamp, server_timestamp, "
            "expires_at) SELECT guid, account_id, device_id, seq, sender_account_id, "
            "sender_device_id, type, content, client_timestamp, server_timestamp, expires_at "
            "FROM queue_log q WHERE EXISTS (SELECT 1 FROM devices d "
            "WHERE d.account_id = q.account_id AND d.device_id = q.device_id)")
    op.drop_table("queue_log")
