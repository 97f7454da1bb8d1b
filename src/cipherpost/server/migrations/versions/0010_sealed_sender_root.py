"""The sealed-sender trust root every relay process of this database serves.

``sealed_sender_root`` holds one row (id 1): the trust root's public key, stored by the
first relay process that starts with a key file, and compared with its own key file's
root by every process that starts after it. A relay whose key file was not shared with
the others (a second host given its own file, a restore onto a new host without the
file) used to make a root of its own silently, and clients pinning the first one dropped
the sealed messages it certified; now it refuses to start (server/key_chain.py).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sealed_sender_root",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("trust_root", sa.LargeBinary, nullable=False),
        sa.Column("stored_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sealed_sender_root")
