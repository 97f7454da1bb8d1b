"""Audit entries commit to whom they are about through a per-account salt (review
2026-11-29-sealed-ops, O3): once an account is deleted, whoever holds the log and knows
its id cannot tell which redacted entries were its; the chain still verifies, entries
from before migration 0009 included, and a restore keeps the salts the log needs."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import insert, select, update

from cipherpost.server import Settings, create_app
from cipherpost.server.backup import backup, restore
from cipherpost.server.storage import audit
from cipherpost.server.storage.engine import Database
from cipherpost.server.storage.schema import audit_head, audit_log, audit_salts

from .conftest import link, register
from .helpers import run_alembic

NOW = 1_800_000_000_000
ALICE = "00000000-0000-4000-8000-00000000000a"


def _verify(db: Database) -> audit.Verdict:
    with db.reader.connect() as conn:
        return audit.verify(conn)


def _unsalted(account_id: str) -> set[bytes]:
    """The digests anyone knowing the account id could compute for its entries."""
    return {audit.subject_digest(account_id, d) for d in (None, *range(1, 11))}


def test_a_deleted_accounts_entries_cannot_be_linked_to_it(client: TestClient,
                                                           db: Database) -> None:
    alice = register(client, "alice")
    link(client, alice)
    bob = register(client, "bob")
    with db.reader.connect() as conn:
        rows = conn.execute(select(audit_log).where(
            audit_log.c.account_id == alice.account_id)).all()
        salt = audit.account_salt(conn, alice.account_id)
        bob_salt = audit.account_salt(conn, bob.account_id)
    assert len(rows) >= 2 and all(r.subject_salted for r in rows)
    assert salt is not None and len(salt) == audit.SALT_BYTES
    assert bob_salt is not None and bob_salt != salt
    assert client.delete("/v1/accounts/me", headers=alice.headers).status_code == 204
    with db.reader.connect() as conn:
        redacted = conn.execute(select(audit_log).where(
            audit_log.c.redacted.is_(True))).all()
        assert audit.account_salt(conn, alice.account_id) is None
        assert not conn.execute(select(audit_salts).where(
            audit_salts.c.account_id == alice.account_id)).all()
    # Its entries, account_deleted included, are there, and none carries a digest that
    # the account id gives (the old unsalted form would, for every one of them).
    assert len(redacted) == len(rows) + 1
    assert "account_deleted" in {r.event for r in redacted}
    digests = {bytes(r.subject_digest) for r in redacted}
    assert not digests & _unsalted(alice.account_id)
    assert {r.account_id for r in redacted} == {audit.SERVER}
    assert _verify(db).ok
    # Still covered: the event of a redacted entry, and the salted flag of a live one.
    with db.writer.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == redacted[0].seq).values(
            event="device_added" if redacted[0].event != "device_added" else "x"))
    assert not _verify(db).ok
    with db.writer.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == redacted[0].seq).values(
            event=redacted[0].event))
        bobs = conn.execute(select(audit_log.c.seq).where(
            audit_log.c.account_id == bob.account_id)).scalars().first()
        conn.execute(update(audit_log).where(audit_log.c.seq == bobs).values(
            subject_salted=False))
    verdict = _verify(db)
    assert (verdict.broken_at, verdict.reason) == (bobs, "the entry was changed")
    with db.writer.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == bobs).values(
            subject_salted=True))
        conn.execute(audit_salts.delete().where(audit_salts.c.account_id == bob.account_id))
    verdict = _verify(db)
    assert (verdict.broken_at, verdict.reason) == (
        bobs, "the salt of the entry's account is missing")


def test_entries_from_before_0009_verify_and_redact(settings: Settings) -> None:
    """A log written before the salts keeps its unsalted digests (the chain covers
    them); entries appended after the upgrade are salted, and both verify, before and
    after the account is redacted."""
    db = Database(settings.database_url)
    try:
        run_alembic(db, "upgrade", "0008")
        previous = audit.GENESIS
        with db.writer.begin() as conn:
            for seq, event in ((1, "account_registered"), (2, "device_added")):
                digest = audit.entry_digest(seq, NOW + seq, audit.subject_digest(ALICE, 1),
                                            event, None, None)
                previous = audit.chain(previous, digest)
                conn.execute(insert(audit_log).values(
                    at=NOW + seq, account_id=ALICE, device_id=1, event=event, seq=seq,
                    digest=digest, chain_hash=previous))
            conn.execute(update(audit_head).where(audit_head.c.id == 1).values(
                seq=2, chain_hash=previous))  # 0005 made the head row
        db.migrate()
        with db.writer.begin() as conn:
            audit.append(conn, NOW + 3, ALICE, 1, "device_removed")
        with db.reader.connect() as conn:
            assert [r.subject_salted for r in conn.execute(
                select(audit_log).order_by(audit_log.c.seq))] == [False, False, True]
        assert _verify(db).ok
        with db.writer.begin() as conn:
            assert audit.redact_account(conn, ALICE) == 3
        assert _verify(db).ok
        with db.reader.connect() as conn:
            kept = [bytes(r.subject_digest) for r in conn.execute(
                select(audit_log).order_by(audit_log.c.seq))]
        # The two old entries stay linkable (documented); the new one does not.
        assert kept[:2] == [audit.subject_digest(ALICE, 1)] * 2
        assert kept[2] not in _unsalted(ALICE)
    finally:
        db.dispose()


def test_a_restore_keeps_the_salts_the_log_needs(settings: Settings, db: Database,
                                                 tmp_path: Path) -> None:
    """An account registered after the backup has its salt only in the live database:
    the restore carries its entries over, and its salt with them, so the log verifies."""
    path = tmp_path / "b.db"
    with TestClient(create_app(settings)) as client:
        register(client, "alice")
        backup(db, path, NOW, "root")
        carol = register(client, "carol")
    done = restore(db, path, NOW + 1, "root")
    assert done.audit_entries_carried >= 1
    with db.reader.connect() as conn:
        assert audit.account_salt(conn, carol.account_id) is not None
        assert conn.execute(select(audit_log).where(
            audit_log.c.account_id == carol.account_id)).all()
    assert _verify(db).ok
