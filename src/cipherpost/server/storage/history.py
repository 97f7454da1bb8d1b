"""Server-stored encrypted history and recovery blobs (docs/spec/history.md).

The relay holds opaque blobs: an account's history log (each entry named by an event id
the client derives, stored once however many devices upload it) and one recovery blob
per account, released to whoever presents the secret whose hash is kept. It can read
neither. Functions here run on the storage's threads like :class:`.sql.Storage`'s
methods (``@writes``/``@reads``) and take the storage as their first argument.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, update

from .schema import accounts, history, history_settings, recovery, recovery_passphrase
from .sql import Storage, reads, writes

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class HistoryEntry:
    seq: int
    event_id: bytes
    day: int
    blob: bytes | None  # None: the event was deleted


class HistoryFull(Exception):
    """The account's history holds its byte budget."""


@writes
def put_history(storage: Storage, account_id: str, event_id: bytes, blob: bytes,
                now: int, max_bytes: int) -> int | None:
    """Store an entry; its sequence number, or None when the event is stored (or was
    deleted) already: the first upload wins.

    Raises:
        HistoryFull: storing it would pass ``max_bytes`` for the account.
    """
    with storage._tx(storage.db.writer) as conn:
        existing = conn.execute(select(history.c.seq).where(
            history.c.account_id == account_id, history.c.event_id == event_id)).first()
        if existing is not None:
            return None
        settings = conn.execute(select(history_settings.c.stored_bytes).where(
            history_settings.c.account_id == account_id).with_for_update()).first()
        stored = 0 if settings is None else int(settings.stored_bytes)
        if stored + len(blob) > max_bytes:
            raise HistoryFull()
        if settings is None:
            conn.execute(insert(history_settings).values(account_id=account_id,
                                                         stored_bytes=len(blob)))
        else:
            conn.execute(update(history_settings).where(
                history_settings.c.account_id == account_id).values(
                    stored_bytes=history_settings.c.stored_bytes + len(blob)))
        seq = conn.execute(insert(history).values(
            account_id=account_id, event_id=event_id, day=now // DAY_MS,
            blob=blob).returning(history.c.seq)).scalar_one()
    return int(seq)


@reads
def list_history(storage: Storage, account_id: str, after: int,
                 limit: int) -> list[HistoryEntry]:
    """Entries after sequence number ``after``, oldest first (tombstones included, so a
    device replaying the log learns of deletions)."""
    with storage._tx(storage.db.reader) as conn:
        rows = conn.execute(select(history.c.seq, history.c.event_id, history.c.day,
                                   history.c.blob).where(
            history.c.account_id == account_id, history.c.seq > after).order_by(
                history.c.seq).limit(limit)).all()
    return [HistoryEntry(int(r.seq), bytes(r.event_id), int(r.day),
                         None if r.blob is None else bytes(r.blob)) for r in rows]


@writes
def delete_history_entry(storage: Storage, account_id: str, event_id: bytes,
                         now: int) -> None:
    """Replace an entry by a tombstone (kept so that a late upload does not bring the
    event back); a tombstone for an event never uploaded is written too."""
    with storage._tx(storage.db.writer) as conn:
        row = conn.execute(select(history.c.seq, func.length(history.c.blob)).where(
            history.c.account_id == account_id, history.c.event_id == event_id)).first()
        if row is None:
            conn.execute(insert(history).values(account_id=account_id, event_id=event_id,
                                                day=now // DAY_MS, blob=None))
            return
        if row[1] is None:
            return
        conn.execute(delete(history).where(history.c.seq == row.seq))
        # A new sequence number, so devices paging from an old position see the deletion.
        conn.execute(insert(history).values(account_id=account_id, event_id=event_id,
                                            day=now // DAY_MS, blob=None))
        conn.execute(update(history_settings).where(
            history_settings.c.account_id == account_id).values(
                stored_bytes=history_settings.c.stored_bytes - int(row[1])))


@writes
def clear_history(storage: Storage, account_id: str) -> int:
    """Delete the account's whole history and its settings; the number of entries."""
    with storage._tx(storage.db.writer) as conn:
        removed = conn.execute(delete(history).where(
            history.c.account_id == account_id)).rowcount
        conn.execute(delete(history_settings).where(
            history_settings.c.account_id == account_id))
    return int(removed)


@writes
def set_history_retention(storage: Storage, account_id: str, days: int | None) -> None:
    with storage._tx(storage.db.writer) as conn:
        updated = conn.execute(update(history_settings).where(
            history_settings.c.account_id == account_id).values(retention_days=days)).rowcount
        if not updated:
            conn.execute(insert(history_settings).values(account_id=account_id,
                                                         retention_days=days))


@reads
def history_retention(storage: Storage, account_id: str) -> tuple[int | None, int]:
    """(retention in days or None, stored bytes)."""
    with storage._tx(storage.db.reader) as conn:
        row = conn.execute(select(history_settings.c.retention_days,
                                  history_settings.c.stored_bytes).where(
            history_settings.c.account_id == account_id)).first()
    return (None, 0) if row is None else (row.retention_days, int(row.stored_bytes))


@writes
def expire_history(storage: Storage, now: int) -> int:
    """Apply every account's retention: delete entries (and tombstones) older than it."""
    today = now // DAY_MS
    removed = 0
    with storage._tx(storage.db.writer) as conn:
        accounts = conn.execute(select(history_settings.c.account_id,
                                       history_settings.c.retention_days).where(
            history_settings.c.retention_days.is_not(None))).all()
        for account_id, days in accounts:
            old = conn.execute(delete(history).where(
                history.c.account_id == account_id,
                history.c.day < today - int(days)).returning(
                    func.coalesce(func.length(history.c.blob), 0))).all()
            if old:
                removed += len(old)
                conn.execute(update(history_settings).where(
                    history_settings.c.account_id == account_id).values(
                        stored_bytes=history_settings.c.stored_bytes
                        - sum(int(r[0]) for r in old)))
    return removed


# -- recovery ---------------------------------------------------------------------------


class RecoveryWait(Exception):
    """Too many wrong secrets lately: try again after ``retry_after_ms``."""

    def __init__(self, retry_after_ms: int) -> None:
        super().__init__(retry_after_ms)
        self.retry_after_ms = retry_after_ms


class SecretChanged(Exception):
    """A put that was to seal the blob again under the account's current secret found
    another secret (or none) there: another device changed it since the caller looked."""


@writes
def put_recovery(storage: Storage, account_id: str, lookup_id: bytes, auth_hash: bytes,
                 blob: bytes, now: int, *, same_secret: bool = False) -> bool:
    """Store (or replace) the account's recovery blob; False when another account uses
    ``lookup_id`` (which a client only gets by a collision of random 128-bit ids).

    Raises:
        SecretChanged: ``same_secret`` was asked (the caller checked that the stored blob
            is under this lookup id and secret, and so skipped the second factor) and it
            no longer is. The check and the write are one transaction, so a secret
            changed in between is never put back.
    """
    with storage._tx(storage.db.writer) as conn:
        if same_secret:
            row = conn.execute(select(recovery.c.lookup_id, recovery.c.auth_hash).where(
                recovery.c.account_id == account_id).with_for_update()).first()
            if row is None or bytes(row.lookup_id) != lookup_id \
                    or not hmac.compare_digest(bytes(row.auth_hash), auth_hash):
                raise SecretChanged
        other = conn.execute(select(recovery.c.account_id).where(
            recovery.c.lookup_id == lookup_id)).scalar_one_or_none()
        if other is not None and other != account_id:
            return False
        conn.execute(delete(recovery).where(recovery.c.account_id == account_id))
        conn.execute(insert(recovery).values(
            account_id=account_id, lookup_id=lookup_id, auth_hash=auth_hash, blob=blob,
            updated_at=now))
    return True


@writes
def delete_recovery(storage: Storage, account_id: str) -> None:
    with storage._tx(storage.db.writer) as conn:
        conn.execute(delete(recovery).where(recovery.c.account_id == account_id))


#: Wrong secrets for one recovery blob: free ones, then waits doubling from one second
#: up to an hour (slowing a guesser, never locking the owner out for long).
FREE_FAILURES = 5
MAX_WAIT_MS = 3600 * 1000


def _wait_after(failures: int) -> int:
    return 0 if failures <= FREE_FAILURES else min(
        1000 * 2 ** (failures - FREE_FAILURES - 1), MAX_WAIT_MS)


@writes
def open_recovery(storage: Storage, lookup_id: bytes, auth_hash: bytes,
                  now: int) -> tuple[str, bytes] | None:
    """(account id, blob) when ``auth_hash`` matches; None for an unknown lookup id or a
    wrong secret (counted).

    Raises:
        RecoveryWait: too many wrong secrets for this blob lately.
    """
    with storage._tx(storage.db.writer) as conn:
        row = conn.execute(select(recovery).where(
            recovery.c.lookup_id == lookup_id).with_for_update()).first()
        if row is None:
            return None
        if now < row.next_attempt_at:
            raise RecoveryWait(int(row.next_attempt_at) - now)
        if not hmac.compare_digest(bytes(row.auth_hash), auth_hash):
            failures = int(row.failures) + 1
            conn.execute(update(recovery).where(recovery.c.account_id == row.account_id)
                         .values(failures=failures,
                                 next_attempt_at=now + _wait_after(failures)))
            return None
        if row.failures:
            conn.execute(update(recovery).where(recovery.c.account_id == row.account_id)
                         .values(failures=0, next_attempt_at=0))
        return str(row.account_id), bytes(row.blob)


# -- recovery by passphrase ---------------------------------------------------------------


@writes
def put_passphrase_recovery(storage: Storage, account_id: str, salt: bytes, params: str,
                            verifier_hash: bytes, blob: bytes, now: int, *,
                            same_secret: bool = False) -> None:
    """Store (or replace) the account's passphrase-sealed recovery blob.

    Raises:
        SecretChanged: ``same_secret`` was asked and the stored blob is no longer under
            this salt, parameters and verifier (as :func:`put_recovery`).
    """
    with storage._tx(storage.db.writer) as conn:
        if same_secret:
            row = conn.execute(select(
                recovery_passphrase.c.salt, recovery_passphrase.c.params,
                recovery_passphrase.c.verifier_hash).where(
                recovery_passphrase.c.account_id == account_id).with_for_update()).first()
            if row is None or bytes(row.salt) != salt or row.params != params \
                    or not hmac.compare_digest(bytes(row.verifier_hash), verifier_hash):
                raise SecretChanged
        conn.execute(delete(recovery_passphrase).where(
            recovery_passphrase.c.account_id == account_id))
        conn.execute(insert(recovery_passphrase).values(
            account_id=account_id, salt=salt, params=params, verifier_hash=verifier_hash,
            blob=blob, updated_at=now))


@writes
def delete_passphrase_recovery(storage: Storage, account_id: str) -> None:
    with storage._tx(storage.db.writer) as conn:
        conn.execute(delete(recovery_passphrase).where(
            recovery_passphrase.c.account_id == account_id))


@reads
def passphrase_salt(storage: Storage, username: str) -> tuple[bytes, str] | None:
    """(salt, Argon2id parameters) of the account with ``username``, if it set a
    recovery passphrase."""
    with storage._tx(storage.db.reader) as conn:
        row = conn.execute(select(recovery_passphrase.c.salt, recovery_passphrase.c.params)
                           .select_from(recovery_passphrase.join(
                               accounts, accounts.c.id == recovery_passphrase.c.account_id))
                           .where(accounts.c.username == username)).first()
    return None if row is None else (bytes(row.salt), str(row.params))


@writes
def open_passphrase_recovery(storage: Storage, username: str, verifier_hash: bytes,
                             now: int) -> tuple[str, bytes] | None:
    """(account id, blob) when the verifier matches; None otherwise (a wrong one is
    counted).

    Raises:
        RecoveryWait: too many wrong verifiers for this account lately.
    """
    with storage._tx(storage.db.writer) as conn:
        account_id = conn.execute(select(accounts.c.id).where(
            accounts.c.username == username)).scalar_one_or_none()
        if account_id is None:
            return None
        row = conn.execute(select(recovery_passphrase).where(
            recovery_passphrase.c.account_id == account_id).with_for_update()).first()
        if row is None:
            return None
        if now < row.next_attempt_at:
            raise RecoveryWait(int(row.next_attempt_at) - now)
        if not hmac.compare_digest(bytes(row.verifier_hash), verifier_hash):
            failures = int(row.failures) + 1
            conn.execute(update(recovery_passphrase).where(
                recovery_passphrase.c.account_id == account_id).values(
                    failures=failures, next_attempt_at=now + _wait_after(failures)))
            return None
        if row.failures:
            conn.execute(update(recovery_passphrase).where(
                recovery_passphrase.c.account_id == account_id).values(
                    failures=0, next_attempt_at=0))
        return str(account_id), bytes(row.blob)
