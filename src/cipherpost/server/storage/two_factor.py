"""An account's TOTP second factor and its recovery codes (docs/server.md, "Account
security").

Every check runs in one write transaction holding the account's ``two_factor`` row lock,
so two requests with the same code (or two relay processes) cannot both use it: the
matched step becomes ``last_step`` and that step and every older one are refused from
then on. Wrong codes are counted per account; after ``FREE_FAILURES`` each one makes the
next attempt wait, doubling from one second up to an hour (slowed, never locked out).
Functions take the storage as their first argument, like :mod:`.history`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select, update

from .. import totp
from .schema import two_factor, two_factor_codes
from .sql import Storage, _audit, reads, writes

FREE_FAILURES = 5
MAX_WAIT_MS = 3600 * 1000


class Check(enum.Enum):
    """The outcome of a code."""

    OK = "ok"
    WRONG = "wrong"
    NOT_ENABLED = "not_enabled"


class SecondFactorWait(Exception):
    """Too many wrong codes lately: try again after ``retry_after_ms``."""

    def __init__(self, retry_after_ms: int) -> None:
        super().__init__(retry_after_ms)
        self.retry_after_ms = retry_after_ms


@dataclass(frozen=True)
class State:
    enabled: bool
    created_at: int
    recovery_codes_left: int
    failures: int
    next_attempt_at: int


def _wait_after(failures: int) -> int:
    return 0 if failures <= FREE_FAILURES else min(
        1000 * 2 ** (failures - FREE_FAILURES - 1), MAX_WAIT_MS)


@reads
def get_state(storage: Storage, account_id: str) -> State | None:
    """The account's second factor, None when it has none (not even a pending one)."""
    with storage._tx(storage.db.reader) as conn:
        row = conn.execute(select(two_factor).where(
            two_factor.c.account_id == account_id)).first()
        if row is None:
            return None
        left = conn.execute(select(func.count()).select_from(two_factor_codes).where(
            two_factor_codes.c.account_id == account_id)).scalar_one()
    return State(bool(row.enabled), int(row.created_at), int(left), int(row.failures),
                 int(row.next_attempt_at))


@writes
def begin(storage: Storage, account_id: str, secret: bytes, now: int) -> bool:
    """Start enrolment with ``secret`` (replacing an unconfirmed one); False when a
    confirmed second factor exists (disable it first)."""
    with storage._tx(storage.db.writer) as conn:
        row = conn.execute(select(two_factor.c.enabled).where(
            two_factor.c.account_id == account_id).with_for_update()).first()
        if row is not None and row.enabled:
            return False
        conn.execute(delete(two_factor).where(two_factor.c.account_id == account_id))
        conn.execute(insert(two_factor).values(
            account_id=account_id, secret=secret, enabled=False, last_step=0, failures=0,
            next_attempt_at=0, created_at=now))
    return True


@writes
def confirm(storage: Storage, account_id: str, code: str, code_hashes: list[bytes],
            now: int) -> Check:
    """Turn a pending second factor on with a first code from the authenticator, and
    store the recovery codes' hashes (replacing any). NOT_ENABLED: nothing pending.

    Raises:
        SecondFactorWait: too many wrong codes lately.
    """
    with storage._tx(storage.db.writer) as conn:
        row = _locked(conn, account_id)
        if row is None or row.enabled:
            return Check.NOT_ENABLED
        outcome = _check_locked(conn, row, account_id, code, now, recovery=False)
        if outcome is Check.OK:
            conn.execute(update(two_factor).where(
                two_factor.c.account_id == account_id).values(enabled=True))
            _replace_codes(conn, account_id, code_hashes)
            _audit(conn, now, account_id, None, "two_factor_enabled")
    return outcome


@writes
def check(storage: Storage, account_id: str, code: str, now: int) -> Check:
    """Check ``code`` (a TOTP code or a recovery code, which is then used up) against the
    account's enabled second factor. NOT_ENABLED: the account has none.

    Raises:
        SecondFactorWait: too many wrong codes lately.
    """
    with storage._tx(storage.db.writer) as conn:
        row = _locked(conn, account_id)
        if row is None or not row.enabled:
            return Check.NOT_ENABLED
        return _check_locked(conn, row, account_id, code, now, recovery=True)


@writes
def new_recovery_codes(storage: Storage, account_id: str, code_hashes: list[bytes],
                       now: int) -> bool:
    """Replace the recovery codes (the caller checked a code); False: not enabled."""
    with storage._tx(storage.db.writer) as conn:
        row = _locked(conn, account_id)
        if row is None or not row.enabled:
            return False
        _replace_codes(conn, account_id, code_hashes)
        _audit(conn, now, account_id, None, "two_factor_recovery_codes_replaced")
    return True


@writes
def disable(storage: Storage, account_id: str, now: int) -> None:
    """Remove the second factor and its recovery codes (the caller checked a code)."""
    with storage._tx(storage.db.writer) as conn:
        removed = conn.execute(delete(two_factor).where(
            two_factor.c.account_id == account_id)).rowcount
        conn.execute(delete(two_factor_codes).where(
            two_factor_codes.c.account_id == account_id))
        if removed:
            _audit(conn, now, account_id, None, "two_factor_disabled")


def _locked(conn: Connection, account_id: str) -> Row[Any] | None:
    return conn.execute(select(two_factor).where(
        two_factor.c.account_id == account_id).with_for_update()).first()


def _replace_codes(conn: Connection, account_id: str, code_hashes: list[bytes]) -> None:
    conn.execute(delete(two_factor_codes).where(two_factor_codes.c.account_id == account_id))
    if code_hashes:
        conn.execute(insert(two_factor_codes), [
            {"account_id": account_id, "code_hash": h} for h in code_hashes])


def _check_locked(conn: Connection, row: Row[Any], account_id: str, code: str, now: int, *,
                  recovery: bool) -> Check:
    next_attempt_at = int(row.next_attempt_at)
    if now < next_attempt_at:
        raise SecondFactorWait(next_attempt_at - now)
    ok = False
    normalized = totp.normalize_recovery_code(code) if recovery else None
    if normalized is not None:
        ok = bool(conn.execute(delete(two_factor_codes).where(
            two_factor_codes.c.account_id == account_id,
            two_factor_codes.c.code_hash == totp.hash_recovery_code(account_id, normalized),
        )).rowcount)
        if ok:
            _audit(conn, now, account_id, None, "two_factor_recovery_code_used")
    else:
        step = totp.matching_step(bytes(row.secret), code, now, after=int(row.last_step))
        if step is not None:
            ok = True
            conn.execute(update(two_factor).where(
                two_factor.c.account_id == account_id).values(last_step=step))
    failures = int(row.failures)
    if ok:
        if failures:
            conn.execute(update(two_factor).where(
                two_factor.c.account_id == account_id).values(failures=0, next_attempt_at=0))
        return Check.OK
    failures += 1
    conn.execute(update(two_factor).where(two_factor.c.account_id == account_id).values(
        failures=failures, next_attempt_at=now + _wait_after(failures)))
    return Check.WRONG
