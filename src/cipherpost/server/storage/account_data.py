"""Everything the relay holds about one account: read for the privacy dashboard and the
export, deleted with the account, replaced by a re-registration (docs/server.md,
"Privacy dashboard" and "Registration lock").

What is not here, because the relay does not tie it to an account: attachment blobs
(stored by unguessable id, no uploader recorded, expiring on their own) and messages this
account queued for others (they belong to their recipients' queues).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from sqlalchemy import Connection, delete, func, select, update

from . import admin, audit
from .history import DAY_MS
from .models import NewDevice
from .schema import (
    accounts,
    audit_log,
    audit_salts,
    devices,
    history,
    history_settings,
    kyber_prekeys,
    link_codes,
    messages,
    one_time_prekeys,
    recovery,
    recovery_passphrase,
    signed_prekeys,
    two_factor,
    two_factor_codes,
    unidentified_access,
)
from .schema import queued as queued_rows
from .sql import Storage, _audit, _delete_device, reads, writes

#: Tables whose rows belong to one account, by their ``account_id`` column (the
#: ``accounts`` row itself goes last).
ACCOUNT_TABLES = (signed_prekeys, kyber_prekeys, one_time_prekeys, messages, devices,
                  link_codes, history, history_settings, recovery, recovery_passphrase,
                  two_factor, two_factor_codes, unidentified_access)


@dataclass(frozen=True)
class DeviceHeld:
    device_id: int
    name: str | None
    created_day: int
    last_seen_day: int
    queued_messages: int
    queued_bytes: int
    one_time_prekeys: int
    kyber_prekeys: int
    #: Registered as a device that opens sealed envelopes.
    opens_sealed: bool


@dataclass(frozen=True)
class AuditEvent:
    at: int
    device_id: int | None
    event: str


@dataclass(frozen=True)
class Held:
    """What the relay holds about an account (times as days since 1970-01-01, UTC, where
    a day is all a person needs)."""

    account_id: str
    username: str | None
    created_day: int
    devices: list[DeviceHeld]
    history_entries: int
    history_tombstones: int
    history_bytes: int
    history_retention_days: int | None
    recovery_key_day: int | None
    recovery_passphrase_day: int | None
    two_factor_enabled: bool
    two_factor_recovery_codes: int
    link_codes: int
    #: The day the account's unidentified-access key (its SHA-256) was stored, if any.
    access_key_day: int | None
    #: The relay holds the random salt that keys the account's audit-entry digests
    #: (migration 0009; deleted with the account, so the kept digests name nobody).
    audit_salt: bool
    #: The relay holds the SHA-256 of the invite code the account was registered with
    #: (migration 0011: the code comes back if the account is deleted within minutes).
    invite_code: bool
    recovery_waits: dict[str, int] = field(default_factory=dict)
    audit: list[AuditEvent] = field(default_factory=list)


def _day(ms: int | None) -> int | None:
    return None if ms is None else int(ms) // DAY_MS


def _count(conn: Connection, table: object, *where: object) -> int:
    return int(conn.execute(select(func.count()).select_from(table)  # type: ignore[arg-type]
                            .where(*where)).scalar_one())  # type: ignore[arg-type]


@reads
def held(storage: Storage, account_id: str, audit_limit: int = 200) -> Held | None:
    """Everything above for ``account_id``, or None when there is no such account."""
    with storage._tx(storage.db.reader) as conn:
        account = conn.execute(select(accounts).where(accounts.c.id == account_id)).first()
        if account is None:
            return None
        rows = queued_rows()
        queues = {int(r.device_id): (int(r.n), int(r.size or 0)) for r in conn.execute(
            select(rows.c.device_id, func.count().label("n"),
                   func.sum(func.length(rows.c.content)).label("size"))
            .where(rows.c.account_id == account_id).group_by(rows.c.device_id))}
        one_time = {int(r[0]): int(r[1]) for r in conn.execute(
            select(one_time_prekeys.c.device_id, func.count()).where(
                one_time_prekeys.c.account_id == account_id).group_by(
                one_time_prekeys.c.device_id))}
        kyber = {int(r[0]): int(r[1]) for r in conn.execute(
            select(kyber_prekeys.c.device_id, func.count()).where(
                kyber_prekeys.c.account_id == account_id,
                kyber_prekeys.c.last_resort.is_(False)).group_by(kyber_prekeys.c.device_id))}
        device_list = [
            DeviceHeld(int(d.device_id), d.name, int(d.created_at) // DAY_MS,
                       int(d.last_seen) // DAY_MS, *queues.get(int(d.device_id), (0, 0)),
                       one_time.get(int(d.device_id), 0), kyber.get(int(d.device_id), 0),
                       bool(d.sealed_sender))
            for d in conn.execute(select(devices).where(
                devices.c.account_id == account_id).order_by(devices.c.device_id))]
        entries = conn.execute(
            select(func.count(), func.count(history.c.blob),
                   func.coalesce(func.sum(func.length(history.c.blob)), 0))
            .where(history.c.account_id == account_id)).one()
        settings = conn.execute(select(history_settings.c.retention_days).where(
            history_settings.c.account_id == account_id)).first()
        key = conn.execute(select(recovery.c.updated_at, recovery.c.next_attempt_at).where(
            recovery.c.account_id == account_id)).first()
        phrase = conn.execute(select(recovery_passphrase.c.updated_at,
                                     recovery_passphrase.c.next_attempt_at).where(
            recovery_passphrase.c.account_id == account_id)).first()
        second = conn.execute(select(two_factor.c.enabled, two_factor.c.next_attempt_at)
                              .where(two_factor.c.account_id == account_id)).first()
        access = conn.execute(select(unidentified_access.c.updated_at).where(
            unidentified_access.c.account_id == account_id)).scalar_one_or_none()
        salted = _count(conn, audit_salts, audit_salts.c.account_id == account_id)
        waits = {name: int(row.next_attempt_at) for name, row in
                 (("recovery_key", key), ("recovery_passphrase", phrase),
                  ("second_factor", second)) if row is not None and row.next_attempt_at}
        events = [AuditEvent(int(r.at), r.device_id, str(r.event)) for r in conn.execute(
            select(audit_log.c.at, audit_log.c.device_id, audit_log.c.event)
            .where(audit_log.c.account_id == account_id)
            .order_by(audit_log.c.id.desc()).limit(audit_limit))]
        return Held(
            account_id=account_id, username=account.username,
            created_day=int(account.created_at) // DAY_MS, devices=device_list,
            history_entries=int(entries[1]), history_tombstones=int(entries[0] - entries[1]),
            history_bytes=int(entries[2]),
            history_retention_days=None if settings is None else settings.retention_days,
            recovery_key_day=_day(key.updated_at) if key else None,
            recovery_passphrase_day=_day(phrase.updated_at) if phrase else None,
            two_factor_enabled=bool(second is not None and second.enabled),
            two_factor_recovery_codes=_count(conn, two_factor_codes,
                                             two_factor_codes.c.account_id == account_id),
            link_codes=_count(conn, link_codes, link_codes.c.account_id == account_id),
            access_key_day=_day(access), audit_salt=salted > 0,
            invite_code=account.invite_hash is not None,
            recovery_waits=waits, audit=events)


@writes
def delete_account(storage: Storage, account_id: str, now: int) -> list[int]:
    """Delete the account and every row of it; the device ids it had (to close their
    connections). Its audit entries, ending with ``account_deleted``, stay in the chain
    redacted (:func:`.audit.redact_account`: no account or device id left), and its
    devices' token hashes in ``device_removals`` (a restored backup cannot revive them).
    Deleted within minutes of its creation, it gives back its invite code
    (:func:`.admin.return_invite`, audited as ``invite_returned``)."""
    with storage._tx(storage.db.writer) as conn:
        found = conn.execute(select(accounts.c.id, accounts.c.created_at,
                                    accounts.c.invite_hash, accounts.c.suspended_at).where(
            accounts.c.id == account_id).with_for_update()).first()
        if found is None:
            return []
        device_ids = [int(r.device_id) for r in conn.execute(
            select(devices.c.device_id).where(devices.c.account_id == account_id)
            .order_by(devices.c.device_id).with_for_update())]
        for device_id in device_ids:
            _delete_device(conn, account_id, device_id, now)
        for table in ACCOUNT_TABLES:
            conn.execute(delete(table).where(table.c.account_id == account_id))
        conn.execute(delete(accounts).where(accounts.c.id == account_id))
        # A suspended account (suspended after its device's request was let in) keeps
        # its code spent, as an account an operator removes does.
        if found.suspended_at is None and admin.return_invite(
                conn, None if found.invite_hash is None else bytes(found.invite_hash),
                int(found.created_at), now):
            _audit(conn, now, account_id, None, "invite_returned")
        _audit(conn, now, account_id, None, "account_deleted")
        audit.redact_account(conn, account_id)
    return device_ids


@reads
def recovery_unchanged(storage: Storage, account_id: str, lookup_id: bytes,
                       auth_hash: bytes) -> bool:
    """True when the account's recovery blob is already under this lookup id and secret
    (an upload then only seals the blob again, and changes no secret)."""
    with storage._tx(storage.db.reader) as conn:
        row = conn.execute(select(recovery.c.lookup_id, recovery.c.auth_hash).where(
            recovery.c.account_id == account_id)).first()
    return row is not None and bytes(row.lookup_id) == lookup_id \
        and hmac.compare_digest(bytes(row.auth_hash), auth_hash)


@reads
def passphrase_unchanged(storage: Storage, account_id: str, salt: bytes, params: str,
                         verifier_hash: bytes) -> bool:
    """True when the passphrase blob is already under this salt, parameters and verifier."""
    with storage._tx(storage.db.reader) as conn:
        row = conn.execute(select(recovery_passphrase.c.salt, recovery_passphrase.c.params,
                                  recovery_passphrase.c.verifier_hash).where(
            recovery_passphrase.c.account_id == account_id)).first()
    return row is not None and bytes(row.salt) == salt and row.params == params \
        and hmac.compare_digest(bytes(row.verifier_hash), verifier_hash)


@writes
def reregister(storage: Storage, account_id: str, identity_key: bytes, device: NewDevice,
               now: int) -> list[int]:
    """Give the account a new identity with ``device`` as its only device (id 1): every
    old device goes with its keys and queue, and so do what sealed the old identity (the
    recovery blobs, the server-stored history and link codes). The account id, username
    and second factor stay. The old device ids, to close their connections."""
    with storage._tx(storage.db.writer) as conn:
        found = conn.execute(select(accounts.c.id).where(
            accounts.c.id == account_id).with_for_update()).first()
        if found is None:
            raise LookupError(account_id)
        old = [int(r.device_id) for r in conn.execute(
            select(devices.c.device_id).where(devices.c.account_id == account_id)
            .order_by(devices.c.device_id).with_for_update())]
        for device_id in old:
            _delete_device(conn, account_id, device_id, now)
        for table in (link_codes, history, history_settings, recovery, recovery_passphrase):
            conn.execute(delete(table).where(table.c.account_id == account_id))
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(
            identity_key=identity_key, next_device_id=2))
        storage._insert_device(conn, account_id, 1, device, now)
        _audit(conn, now, account_id, 1, "account_reregistered")
    return old
