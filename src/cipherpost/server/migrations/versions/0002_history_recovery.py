"""Server-stored encrypted history and recovery blobs (docs/spec/history.md).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "history",
        sa.Column("seq", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("event_id", sa.LargeBinary, nullable=False),
        sa.Column("day", sa.Integer, nullable=False),
        sa.Column("blob", sa.LargeBinary, nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("history_by_event", "history", ["account_id", "event_id"], unique=True)
    op.create_index("history_by_account", "history", ["account_id", "seq"])
    op.create_table(
        "history_settings",
        sa.Column("account_id", sa.String(36), primary_key=True),
        sa.Column("retention_days", sa.Integer, nullable=True),
        sa.Column("stored_bytes", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "recovery",
        sa.Column("account_id", sa.String(36), primary_key=True),
        sa.Column("lookup_id", sa.LargeBinary, nullable=False, unique=True),
        sa.Column("auth_hash", sa.LargeBinary, nullable=False),
        sa.Column("blob", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.BigInteger, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("recovery")
    op.drop_table("history_settings")
    op.drop_index("history_by_account", "history")
    op.drop_index("history_by_event", "history")
    op.drop_table("history")
