"""An account remembers the invite code it was registered with.

``accounts.invite_hash`` holds the SHA-256 of the code (as ``invites.code_hash``), NULL
for accounts registered without one and for every account made before this migration.
An account deleted by its own device within ``admin.INVITE_RETURN_WINDOW_MS`` (15 minutes)
of its creation gives its code back, unless the code expired meanwhile or came back
before (``invites.returned_at``, so that a code is not a pass for one throwaway account
after another): a sign-up the client withdrew after the relay made the account
(web/src/app/withdraw.ts) no longer spends the person's only code.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("invite_hash", sa.LargeBinary, nullable=True))
    with op.batch_alter_table("invites") as batch:
        batch.add_column(sa.Column("returned_at", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("invites") as batch:
        batch.drop_column("returned_at")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("invite_hash")
