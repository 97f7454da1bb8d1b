"""The recovery blob sealed under a passphrase (docs/spec/history.md).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recovery_passphrase",
        sa.Column("account_id", sa.String(36), primary_key=True),
        sa.Column("salt", sa.LargeBinary, nullable=False),
        sa.Column("params", sa.String(64), nullable=False),
        sa.Column("verifier_hash", sa.LargeBinary, nullable=False),
        sa.Column("blob", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.BigInteger, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("recovery_passphrase")
