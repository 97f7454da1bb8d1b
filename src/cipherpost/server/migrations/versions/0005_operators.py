"""Operator tools (docs/operations.md): a hash-chained audit log, operators with roles,
invite codes, account suspension, removed-device tombstones and the server's epoch.

Audit entries already stored are chained here, in id order, so ``verify`` covers the
whole log. The chain's encoding is frozen in this file (``_digest``), as it is in
``storage/audit.py`` at this revision.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

GENESIS = bytes(32)


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _digest(seq: int, at: int, account_id: str, device_id: int | None, event: str,
            actor: str | None, details: str | None) -> bytes:
    subject = hashlib.sha256(_canonical([account_id, device_id])).digest()
    return hashlib.sha256(_canonical({
        "seq": seq, "at": at, "subject": subject.hex(), "event": event, "actor": actor,
        "details": details})).digest()


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("suspended_at", sa.BigInteger, nullable=True))
    op.create_index("accounts_suspended", "accounts", ["suspended_at"])
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("actor", sa.String(64), nullable=True))
        batch.add_column(sa.Column("details", sa.Text, nullable=True))
        batch.add_column(sa.Column("redacted", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("subject_digest", sa.LargeBinary, nullable=True))
        batch.add_column(sa.Column("digest", sa.LargeBinary, nullable=True))
        batch.add_column(sa.Column("chain_hash", sa.LargeBinary, nullable=True))
    op.create_index("audit_by_seq", "audit_log", ["seq"], unique=True)
    op.create_index("audit_by_account", "audit_log", ["account_id"])
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("chain_hash", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "operators",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.LargeBinary, nullable=False, unique=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "invites",
        sa.Column("code_hash", sa.LargeBinary, primary_key=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=True),
        sa.Column("used_at", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "device_removals",
        sa.Column("token_hash", sa.LargeBinary, primary_key=True),
        sa.Column("removed_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "server_state",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )

    conn = op.get_bind()
    log = sa.table("audit_log", sa.column("id"), sa.column("at"), sa.column("account_id"),
                   sa.column("device_id"), sa.column("event"), sa.column("seq"),
                   sa.column("digest"), sa.column("chain_hash"))
    previous, seq = GENESIS, 0
    rows = conn.execute(sa.select(log.c.id, log.c.at, log.c.account_id, log.c.device_id,
                                  log.c.event).order_by(log.c.id)).all()
    for row in rows:
        seq += 1
        digest = _digest(seq, int(row.at), row.account_id, row.device_id, row.event,
                         None, None)
        previous = hashlib.sha256(previous + digest).digest()
        conn.execute(sa.update(log).where(log.c.id == row.id).values(
            seq=seq, digest=digest, chain_hash=previous))
    op.bulk_insert(head, [{"id": 1, "seq": seq, "chain_hash": previous}])


def downgrade() -> None:
    for table in ("server_state", "device_removals", "invites", "operators", "audit_head"):
        op.drop_table(table)
    op.drop_index("audit_by_account", "audit_log")
    op.drop_index("audit_by_seq", "audit_log")
    with op.batch_alter_table("audit_log") as batch:
        for column in ("chain_hash", "digest", "subject_digest", "redacted", "details",
                       "actor", "seq"):
            batch.drop_column(column)
    op.drop_index("accounts_suspended", "accounts")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("suspended_at")
