"""Account security: the TOTP second factor and its recovery codes.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "two_factor",
        sa.Column("account_id", sa.String(36), primary_key=True),
        sa.Column("secret", sa.LargeBinary, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("last_step", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "two_factor_codes",
        sa.Column("account_id", sa.String(36), primary_key=True),
        sa.Column("code_hash", sa.LargeBinary, primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("two_factor_codes")
    op.drop_table("two_factor")
