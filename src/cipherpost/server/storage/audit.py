"""The tamper-evident audit log: account, device and operator events, never content.

Entry ``n`` stores ``digest_n = SHA-256(canonical entry)`` and
``hash_n = SHA-256(hash_{n-1} || digest_n)`` (``hash_0`` is 32 zero bytes); the newest
position and hash are kept in ``audit_head``. :func:`verify` recomputes every digest and
hash in order and reports the first entry that does not match: an edited, deleted,
inserted or reordered row breaks the chain from there on, and a log cut short at its end
disagrees with the head. Someone who can write the database can of course rebuild the
whole chain; what defeats that is a head published elsewhere (the transparency report
prints it), against which a rebuilt chain no longer matches.

The canonical entry is JSON with sorted keys and no spaces of ``seq``, ``at``, ``event``,
``actor``, ``details`` and ``subject``, a digest of ``[account_id, device_id]``: for an
account, HMAC-SHA256 keyed by the account's random salt (``audit_salts``, made with its
first entry; ``subject_salted`` set), for the server as a whole and for entries written
before migration 0009, SHA-256. Deleting an account redacts its entries' ids
(:func:`redact_account`), keeps that digest, so the rest of a redacted entry is still
checked, and deletes the salt: whoever holds the log and knows the account id (its
contacts do) can no longer tell which entries were that account's (review
2026-11-29-sealed-ops, O3). Entries from before 0009 keep their unsalted digest.

Functions take an open SQLAlchemy ``Connection`` inside a transaction: appends run in the
transaction of the change they record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from .schema import audit_head, audit_log, audit_salts

GENESIS = bytes(32)
SALT_BYTES = 32
#: ``account_id`` of events about the server as a whole (operators, invites, restores).
SERVER = ""


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def subject_digest(account_id: str, device_id: int | None,
                   salt: bytes | None = None) -> bytes:
    """The digest of whom an entry is about: HMAC-SHA256 keyed by the account's
    ``salt``, or SHA-256 without one (the server's entries, and those before 0009)."""
    subject = _canonical([account_id, device_id])
    if salt is None:
        return hashlib.sha256(subject).digest()
    return hmac.new(salt, subject, hashlib.sha256).digest()


def account_salt(conn: Connection, account_id: str) -> bytes | None:
    """The account's audit salt, if it has one (it is deleted with the account)."""
    found = conn.execute(select(audit_salts.c.salt).where(
        audit_salts.c.account_id == account_id)).scalar_one_or_none()
    return None if found is None else bytes(found)


def _salt_for_append(conn: Connection, account_id: str) -> bytes | None:
    """The salt an entry about ``account_id`` is appended under: made with the first one.
    Called with the head row locked, so concurrent appends do not make two."""
    if account_id == SERVER:
        return None
    salt = account_salt(conn, account_id)
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
        conn.execute(insert(audit_salts).values(account_id=account_id, salt=salt))
    return salt


def entry_digest(seq: int, at: int, subject: bytes, event: str, actor: str | None,
                 details: str | None) -> bytes:
    """SHA-256 of an entry's canonical form."""
    return hashlib.sha256(_canonical({
        "seq": seq, "at": at, "subject": subject.hex(), "event": event, "actor": actor,
        "details": details})).digest()


def chain(previous: bytes, digest: bytes) -> bytes:
    return hashlib.sha256(previous + digest).digest()


def append(conn: Connection, now: int, account_id: str, device_id: int | None, event: str,
           *, actor: str | None = None, details: dict[str, Any] | None = None) -> int:
    """Add an entry at the end of the chain; its position.

    The head row is locked first (``FOR UPDATE`` on PostgreSQL; SQLite's writer holds the
    whole database), so concurrent appends of several relay processes take turns. Call it
    last in a transaction that also locks device or account rows."""
    head = conn.execute(select(audit_head.c.seq, audit_head.c.chain_hash).where(
        audit_head.c.id == 1).with_for_update()).first()
    if head is None:
        conn.execute(insert(audit_head).values(id=1, seq=0, chain_hash=GENESIS))
        seq, previous = 1, GENESIS
    else:
        seq, previous = int(head.seq) + 1, bytes(head.chain_hash)
    text = None if details is None else _canonical(details).decode()
    salt = _salt_for_append(conn, account_id)
    digest = entry_digest(seq, now, subject_digest(account_id, device_id, salt), event,
                          actor, text)
    chain_hash = chain(previous, digest)
    conn.execute(insert(audit_log).values(
        at=now, account_id=account_id, device_id=device_id, event=event, seq=seq,
        actor=actor, details=text, digest=digest, chain_hash=chain_hash,
        subject_salted=salt is not None))
    conn.execute(update(audit_head).where(audit_head.c.id == 1).values(
        seq=seq, chain_hash=chain_hash))
    return seq


def redact_account(conn: Connection, account_id: str) -> int:
    """Take a deleted account's ids out of its entries, keeping the chain verifiable,
    and delete its salt, so that the digests kept cannot be matched to the account id
    any more; the number of entries redacted."""
    salt = account_salt(conn, account_id)
    rows = conn.execute(select(audit_log.c.id, audit_log.c.device_id,
                               audit_log.c.subject_salted).where(
        audit_log.c.account_id == account_id, audit_log.c.redacted.is_(False))).all()
    redacted = 0
    for row in rows:
        if row.subject_salted and salt is None:
            # Its salt is gone: the entry cannot be redacted verifiably. Leave it for
            # verify to report rather than writing a digest that cannot be right.
            continue
        redacted += 1
        conn.execute(update(audit_log).where(audit_log.c.id == row.id).values(
            account_id=SERVER, device_id=None, redacted=True,
            subject_digest=subject_digest(account_id, row.device_id,
                                          salt if row.subject_salted else None)))
    conn.execute(delete(audit_salts).where(audit_salts.c.account_id == account_id))
    return redacted


@dataclass(frozen=True)
class Entry:
    """An audit entry as shown to operators."""

    seq: int
    at: int
    account_id: str
    device_id: int | None
    event: str
    actor: str | None
    details: str | None
    redacted: bool


@dataclass(frozen=True)
class Verdict:
    """What :func:`verify` found: ``broken_at`` is the position of the first entry that
    does not match (None: the chain holds), ``reason`` says how."""

    entries: int
    head: bytes
    broken_at: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def _rows(conn: Connection) -> Iterator[Any]:
    result = conn.execution_options(yield_per=1000).execute(
        select(audit_log).order_by(audit_log.c.seq.is_(None), audit_log.c.seq,
                                   audit_log.c.id))
    yield from result


def verify(conn: Connection) -> Verdict:
    """Walk the whole chain in order; the first entry that breaks it, if any."""
    previous, expected, count = GENESIS, 1, 0
    salts: dict[str, bytes | None] = {}
    for row in _rows(conn):
        count += 1
        if row.seq is None or row.digest is None or row.chain_hash is None:
            return Verdict(count, previous, row.seq or expected,
                           f"entry id {row.id} is outside the chain")
        if row.seq != expected:
            return Verdict(count, previous, expected,
                           f"entry {expected} is missing (next found: {row.seq})")
        if row.redacted:
            if row.subject_digest is None:
                return Verdict(count, previous, expected, "a redacted entry lost its subject")
            subject = bytes(row.subject_digest)
        elif row.subject_salted:
            if row.account_id not in salts:
                if len(salts) > 100_000:
                    salts.clear()
                salts[row.account_id] = account_salt(conn, row.account_id)
            salt = salts[row.account_id]
            if salt is None:
                return Verdict(count, previous, expected,
                               "the salt of the entry's account is missing")
            subject = subject_digest(row.account_id, row.device_id, salt)
        else:
            subject = subject_digest(row.account_id, row.device_id)
        digest = entry_digest(int(row.seq), int(row.at), subject, row.event, row.actor,
                              row.details)
        if digest != bytes(row.digest):
            return Verdict(count, previous, expected, "the entry was changed")
        previous = chain(previous, digest)
        if previous != bytes(row.chain_hash):
            return Verdict(count, previous, expected, "the chain hash does not follow")
        expected += 1
    head = conn.execute(select(audit_head.c.seq, audit_head.c.chain_hash).where(
        audit_head.c.id == 1)).first()
    head_seq, head_hash = (0, GENESIS) if head is None else (int(head.seq),
                                                              bytes(head.chain_hash))
    if head_seq != expected - 1 or head_hash != previous:
        return Verdict(count, previous, min(head_seq, expected - 1) + 1,
                       f"the log ends at entry {expected - 1} but its head is at {head_seq}")
    return Verdict(count, previous)


def head(conn: Connection) -> tuple[int, bytes]:
    """The newest position and chain hash (0 and zeros for an empty log)."""
    row = conn.execute(select(audit_head.c.seq, audit_head.c.chain_hash).where(
        audit_head.c.id == 1)).first()
    return (0, GENESIS) if row is None else (int(row.seq), bytes(row.chain_hash))


def position_of(conn: Connection, chain_hash: bytes) -> int | None:
    """The position whose chain hash is ``chain_hash`` (a head published earlier), if the
    log still holds it."""
    found = conn.execute(select(audit_log.c.seq).where(
        audit_log.c.chain_hash == chain_hash)).scalar_one_or_none()
    return None if found is None else int(found)


def entries(conn: Connection, *, since: int = 0, account_id: str | None = None,
            after_seq: int = 0, limit: int = 1000) -> list[Entry]:
    """Entries at or after time ``since`` (ms) and after position ``after_seq``, oldest
    first."""
    query = select(audit_log).where(audit_log.c.at >= since,
                                    audit_log.c.seq > after_seq).order_by(audit_log.c.seq)
    if account_id is not None:
        query = query.where(audit_log.c.account_id == account_id)
    return [Entry(int(r.seq or 0), int(r.at), r.account_id, r.device_id, r.event, r.actor,
                  r.details, bool(r.redacted))
            for r in conn.execute(query.limit(limit))]
