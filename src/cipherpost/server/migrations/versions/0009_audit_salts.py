"""Audit entries commit to whom they are about through a per-account random salt.

``audit_salts`` holds one 32-byte salt per account, deleted with the account; entries
appended from now on have ``subject_salted`` set and their subject digest is
HMAC-SHA256(salt, [account id, device id]), so a redacted entry of a deleted account can
no longer be matched to an account id (review 2026-11-29-sealed-ops, O3). Entries written
before keep their unsalted digest (the chain covers it, so it cannot change).

Downgrading drops the salts: entries appended since then no longer verify.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_salts",
        sa.Column("account_id", sa.String(36), primary_key=True),
        sa.Column("salt", sa.LargeBinary, nullable=False),
    )
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("subject_salted", sa.Boolean, nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("subject_salted")
    op.drop_table("audit_salts")
