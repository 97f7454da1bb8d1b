"""Per-device message sequence numbers.

A message's ``seq`` is taken from its device's ``last_seq`` under the device's row lock,
in the transaction that queues it, so a device's messages commit in ``seq`` order with no
gap even when several relay processes write at once (the global ``id`` does not: a
smaller id may commit after a larger one, and a delivery cursor past it would skip it).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("last_seq", sa.BigInteger, nullable=False,
                                   server_default="0"))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"))
    # Messages already queued keep their order: their id becomes their seq, and each
    # device goes on from its largest.
    op.execute("UPDATE messages SET seq = id")
    op.execute("UPDATE devices SET last_seq = COALESCE((SELECT max(m.id) FROM messages m "
               "WHERE m.account_id = devices.account_id "
               "AND m.device_id = devices.device_id), 0)")
    op.drop_index("messages_by_device", "messages")
    op.create_index("messages_by_device", "messages", ["account_id", "device_id", "seq"],
                    unique=True)


def downgrade() -> None:
    op.drop_index("messages_by_device", "messages")
    op.create_index("messages_by_device", "messages", ["account_id", "device_id", "id"])
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("seq")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("last_seq")
