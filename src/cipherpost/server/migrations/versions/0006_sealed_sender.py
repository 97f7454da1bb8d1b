"""Sealed sender: the accounts' unidentified-access key hashes, and which devices open
sealed envelopes (none yet: each says so when it registers its account's key).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "unidentified_access",
        sa.Column("account_id", sa.String(36), primary_key=True),
        sa.Column("key_hash", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("sealed_sender", sa.Boolean, nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("sealed_sender")
    op.drop_table("unidentified_access")
