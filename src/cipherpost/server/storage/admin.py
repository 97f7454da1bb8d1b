"""What the admin command does to the database (server/admin): operators, invite codes,
suspensions, and views of accounts and devices that hold no content and no keys beyond
fingerprints.

Functions take an open SQLAlchemy ``Connection`` inside a transaction; every change is
recorded in the audit log in the same transaction, with the operator as its actor.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, insert, or_, select, update

from . import audit
from .schema import (
    accounts,
    attachments,
    audit_log,
    audit_salts,
    devices,
    history,
    invites,
    kyber_prekeys,
    metadata,
    one_time_prekeys,
    operators,
)
from .schema import queued as queued_rows

ROLES = ("admin", "auditor")


class AdminError(Exception):
    """An admin request that cannot be carried out (the message says why)."""


# -- operators ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Operator:
    name: str
    role: str
    created_at: int
    revoked_at: int | None


def operator_for_token(conn: Connection, token_hash: bytes) -> Operator | None:
    """The active operator whose token hashes to ``token_hash``."""
    row = conn.execute(select(operators).where(operators.c.token_hash == token_hash,
                                               operators.c.revoked_at.is_(None))).first()
    return None if row is None else Operator(row.name, row.role, int(row.created_at), None)


def active_operators(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(operators).where(
        operators.c.revoked_at.is_(None))).scalar_one())


def list_operators(conn: Connection) -> list[Operator]:
    return [Operator(r.name, r.role, int(r.created_at), r.revoked_at)
            for r in conn.execute(select(operators).order_by(operators.c.name))]


def add_operator(conn: Connection, name: str, role: str, token_hash: bytes, now: int,
                 actor: str | None) -> None:
    """Add an operator (or give a revoked name a new token and role).

    Raises:
        AdminError: an unknown role, or an active operator of that name exists.
    """
    if role not in ROLES:
        raise AdminError(f"role must be one of {', '.join(ROLES)}")
    existing = conn.execute(select(operators.c.revoked_at).where(
        operators.c.name == name).with_for_update()).first()
    if existing is not None and existing.revoked_at is None:
        raise AdminError(f"operator {name!r} exists (revoke it first)")
    conn.execute(delete(operators).where(operators.c.name == name))
    conn.execute(insert(operators).values(name=name, role=role, token_hash=token_hash,
                                          created_at=now, revoked_at=None))
    audit.append(conn, now, audit.SERVER, None, "operator_added", actor=actor,
                 details={"operator": name, "role": role})


def revoke_operator(conn: Connection, name: str, now: int, actor: str) -> None:
    """Revoke an operator's token.

    Raises:
        AdminError: no active operator of that name, or it is the last active admin.
    """
    row = conn.execute(select(operators.c.role).where(
        operators.c.name == name, operators.c.revoked_at.is_(None)).with_for_update()).first()
    if row is None:
        raise AdminError(f"no active operator {name!r}")
    if row.role == "admin":
        admins = conn.execute(select(func.count()).select_from(operators).where(
            operators.c.role == "admin", operators.c.revoked_at.is_(None))).scalar_one()
        if admins <= 1:
            raise AdminError("the last admin cannot be revoked (add another first)")
    conn.execute(update(operators).where(operators.c.name == name).values(revoked_at=now))
    audit.append(conn, now, audit.SERVER, None, "operator_revoked", actor=actor,
                 details={"operator": name})


# -- accounts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountSummary:
    account_id: str
    username: str | None
    created_at: int
    suspended_at: int | None
    devices: int
    queued_messages: int
    queued_bytes: int
    #: SHA-256 of the identity public key, first 16 bytes in hex (never the key itself).
    identity_fingerprint: str


@dataclass(frozen=True)
class DeviceSummary:
    device_id: int
    name: str | None
    created_at: int
    last_seen: int
    queued_messages: int
    queued_bytes: int
    one_time_prekeys: int
    kyber_prekeys: int


def fingerprint(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()[:32]


def resolve_account(conn: Connection, ref: str) -> str:
    """An account id from an id or a username (``@name`` or ``name``).

    Raises:
        AdminError: no such account.
    """
    name = ref.removeprefix("@")
    try:
        uuid.UUID(ref)
    except ValueError:
        found = conn.execute(select(accounts.c.id).where(
            accounts.c.username == name)).scalar_one_or_none()
    else:
        found = conn.execute(select(accounts.c.id).where(
            or_(accounts.c.id == ref, accounts.c.username == name))).scalar_one_or_none()
    if found is None:
        raise AdminError(f"no account {ref!r}")
    return str(found)


def list_accounts(conn: Connection, *, limit: int = 100, offset: int = 0,
                  suspended_only: bool = False,
                  reserved_only: bool = False) -> list[AccountSummary]:
    """Accounts in creation order, with device and queue counts; ``reserved_only``:
    those without a device (usernames held for their owners, :func:`release_username`)."""
    rows = queued_rows()
    queued = select(rows.c.account_id, func.count().label("n"),
                    func.sum(func.length(rows.c.content)).label("bytes")).group_by(
        rows.c.account_id).subquery()
    device_stats = select(devices.c.account_id, func.count().label("n")).group_by(
        devices.c.account_id).subquery()
    query = select(accounts.c.id, accounts.c.username, accounts.c.created_at,
                   accounts.c.suspended_at, accounts.c.identity_key,
                   device_stats.c.n, queued.c.bytes, queued.c.n.label("queued")
                   ).outerjoin(device_stats, device_stats.c.account_id == accounts.c.id
                   ).outerjoin(queued, queued.c.account_id == accounts.c.id
                   ).order_by(accounts.c.created_at, accounts.c.id).limit(limit).offset(offset)
    if suspended_only:
        query = query.where(accounts.c.suspended_at.is_not(None))
    if reserved_only:
        query = query.where(~accounts.c.id.in_(select(devices.c.account_id)))
    return [AccountSummary(r.id, r.username, int(r.created_at), r.suspended_at,
                           int(r.n or 0), int(r.queued or 0), int(r.bytes or 0),
                           fingerprint(bytes(r.identity_key)))
            for r in conn.execute(query)]


def account_summary(conn: Connection, account_id: str) -> AccountSummary:
    row = conn.execute(select(accounts).where(accounts.c.id == account_id)).first()
    if row is None:
        raise AdminError(f"no account {account_id!r}")
    n_devices = conn.execute(select(func.count()).where(
        devices.c.account_id == account_id)).scalar_one()
    rows = queued_rows()
    queued, queued_bytes = conn.execute(select(
        func.count(), func.coalesce(func.sum(func.length(rows.c.content)), 0)).where(
            rows.c.account_id == account_id)).one()
    return AccountSummary(row.id, row.username, int(row.created_at), row.suspended_at,
                          int(n_devices), int(queued), int(queued_bytes),
                          fingerprint(bytes(row.identity_key)))


def list_devices(conn: Connection, account_id: str) -> list[DeviceSummary]:
    """The account's devices with counts (no token hashes, no keys)."""
    out = []
    for r in conn.execute(select(devices).where(devices.c.account_id == account_id
                                                ).order_by(devices.c.device_id)):
        rows = queued_rows()
        queued, queued_bytes = conn.execute(select(
            func.count(), func.coalesce(func.sum(func.length(rows.c.content)), 0)).where(
                rows.c.account_id == account_id, rows.c.device_id == r.device_id)).one()
        ec = conn.execute(select(func.count()).select_from(one_time_prekeys).where(
            one_time_prekeys.c.account_id == account_id,
            one_time_prekeys.c.device_id == r.device_id)).scalar_one()
        kyber = conn.execute(select(func.count()).select_from(kyber_prekeys).where(
            kyber_prekeys.c.account_id == account_id,
            kyber_prekeys.c.device_id == r.device_id,
            kyber_prekeys.c.last_resort.is_(False))).scalar_one()
        out.append(DeviceSummary(int(r.device_id), r.name, int(r.created_at),
                                 int(r.last_seen), int(queued), int(queued_bytes),
                                 int(ec), int(kyber)))
    return out


def set_suspended(conn: Connection, account_id: str, suspended: bool, now: int,
                  actor: str, reason: str | None = None) -> bool:
    """Suspend or unsuspend an account; False if it already was in that state.

    A relay notices within ``SUSPENSION_POLL`` seconds (server/app.py): it closes the
    account's WebSockets and refuses sends to it; its devices are refused at once (their
    credentials are checked against this row on every request)."""
    row = conn.execute(select(accounts.c.suspended_at).where(
        accounts.c.id == account_id).with_for_update()).first()
    if row is None:
        raise AdminError(f"no account {account_id!r}")
    if (row.suspended_at is not None) == suspended:
        return False
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(
        suspended_at=now if suspended else None))
    audit.append(conn, now, account_id, None,
                 "account_suspended" if suspended else "account_unsuspended", actor=actor,
                 details={"reason": reason} if reason else None)
    return True


def release_username(conn: Connection, account_id: str, now: int, actor: str,
                     reason: str | None = None) -> str | None:
    """Delete an account that has no device, freeing its username; the username.

    Such an account is what a restore keeps to hold a live username under its
    registration lock (review O5), or what is left when every device went idle: only its
    owner's recovery secret re-registers it, and one without a recovery secret would
    hold the name forever. Releasing deletes every row of it (its audit salt too), after
    a ``username_released`` entry with the operator as actor; its entries are then
    redacted, as for an account deleted by its owner.

    Raises:
        AdminError: no such account, or it has a device (then it is no reservation:
            suspend it, or its owner deletes it).
    """
    row = conn.execute(select(accounts.c.username).where(
        accounts.c.id == account_id).with_for_update()).first()
    if row is None:
        raise AdminError(f"no account {account_id!r}")
    held = conn.execute(select(func.count()).select_from(devices).where(
        devices.c.account_id == account_id)).scalar_one()
    if held:
        raise AdminError(f"account {account_id} has {held} device(s): it is in use, not "
                         "reserved (suspend it instead, or its owner deletes it)")
    audit.append(conn, now, account_id, None, "username_released", actor=actor,
                 details={"reason": reason} if reason else None)
    delete_account_rows(conn, account_id)
    return None if row.username is None else str(row.username)


def delete_account_rows(conn: Connection, account_id: str) -> None:
    """Every row of an account (in any table keyed by ``account_id``); its audit entries
    are redacted, not deleted (the chain stays whole). Used by release-username and by a
    restore dropping an account left without a device."""
    for table in metadata.sorted_tables:
        if table is audit_log or table is audit_salts:  # redact_account needs the salt
            continue
        column = table.c.get("account_id")
        if column is not None:
            conn.execute(delete(table).where(column == account_id))
    conn.execute(delete(accounts).where(accounts.c.id == account_id))
    audit.redact_account(conn, account_id)


def suspended_accounts(conn: Connection) -> set[str]:
    return {r[0] for r in conn.execute(select(accounts.c.id).where(
        accounts.c.suspended_at.is_not(None)))}


# -- invites -----------------------------------------------------------------------------


def create_invites(conn: Connection, code_hashes: list[bytes], expires_at: int, now: int,
                   actor: str) -> None:
    for code_hash in code_hashes:
        conn.execute(insert(invites).values(code_hash=code_hash, created_at=now,
                                            expires_at=expires_at, created_by=actor))
    audit.append(conn, now, audit.SERVER, None, "invites_created", actor=actor,
                 details={"count": len(code_hashes), "expires_at": expires_at})


def consume_invite(conn: Connection, code_hash: bytes, now: int) -> bool:
    """Spend an unused, unexpired invite; False if there is none (nothing changes)."""
    return bool(conn.execute(update(invites).where(
        invites.c.code_hash == code_hash, invites.c.used_at.is_(None),
        invites.c.expires_at >= now).values(used_at=now)).rowcount)


#: An account deleted by its own device within this long of its creation (15 minutes)
#: gives back the invite code it was registered with: such a deletion is a sign-up the
#: client withdrew because it could not store the new account (web/src/app/withdraw.ts),
#: and the person retries with the same code. Once per code (``invites.returned_at``):
#: the window starts again with each account, so without that a code would be a pass
#: for one throwaway account after another until it expired (review of a3d46cc).
INVITE_RETURN_WINDOW_MS = 15 * 60 * 1000


def return_invite(conn: Connection, code_hash: bytes | None, created_at: int,
                  now: int) -> bool:
    """Make the code an account was registered with usable again, as its own device
    deletes it (in the deletion's transaction); True if it was returned.

    Only within :data:`INVITE_RETURN_WINDOW_MS` of the account's creation, only the use
    that registration made (``used_at`` is the account's ``created_at``: both are that
    transaction's time), so one code never has two live accounts; only once per code;
    and not a code that expired meanwhile (it keeps its expiry, and stays spent). An
    account an operator removes (:func:`delete_account_rows`) or suspended gives nothing
    back (the caller checks the suspension)."""
    if code_hash is None or now - created_at > INVITE_RETURN_WINDOW_MS:
        return False
    return bool(conn.execute(update(invites).where(
        invites.c.code_hash == code_hash, invites.c.used_at == created_at,
        invites.c.returned_at.is_(None), invites.c.expires_at >= now).values(
            used_at=None, returned_at=now)).rowcount)


@dataclass(frozen=True)
class InviteCounts:
    unused: int
    used: int
    expired: int


def invite_counts(conn: Connection, now: int) -> InviteCounts:
    used = conn.execute(select(func.count()).select_from(invites).where(
        invites.c.used_at.is_not(None))).scalar_one()
    expired = conn.execute(select(func.count()).select_from(invites).where(
        invites.c.used_at.is_(None), invites.c.expires_at < now)).scalar_one()
    unused = conn.execute(select(func.count()).select_from(invites).where(
        invites.c.used_at.is_(None), invites.c.expires_at >= now)).scalar_one()
    return InviteCounts(int(unused), int(used), int(expired))


# -- what the server holds ----------------------------------------------------------------


@dataclass(frozen=True)
class Holdings:
    accounts: int
    suspended_accounts: int
    devices: int
    queued_messages: int
    queued_bytes: int
    history_entries: int
    history_bytes: int
    attachments: int
    attachment_bytes: int
    one_time_prekeys: int


def holdings(conn: Connection) -> Holdings:
    """Counts and sizes of what the database holds (no content is read)."""
    def scalar(query: object) -> int:
        return int(conn.execute(query).scalar_one() or 0)  # type: ignore[call-overload]

    rows = queued_rows()
    queued_messages, queued_bytes = conn.execute(select(
        func.count(), func.coalesce(func.sum(func.length(rows.c.content)), 0))).one()
    history_entries, history_bytes = conn.execute(select(
        func.count(), func.coalesce(func.sum(func.length(history.c.blob)), 0)).where(
            history.c.blob.is_not(None))).one()
    attachment_count, attachment_bytes = conn.execute(select(
        func.count(), func.coalesce(func.sum(attachments.c.size), 0))).one()
    return Holdings(
        accounts=scalar(select(func.count()).select_from(accounts)),
        suspended_accounts=scalar(select(func.count()).select_from(accounts).where(
            accounts.c.suspended_at.is_not(None))),
        devices=scalar(select(func.count()).select_from(devices)),
        queued_messages=int(queued_messages), queued_bytes=int(queued_bytes),
        history_entries=int(history_entries), history_bytes=int(history_bytes),
        attachments=int(attachment_count), attachment_bytes=int(attachment_bytes),
        one_time_prekeys=scalar(select(func.count()).select_from(one_time_prekeys)),
    )
