"""Backup and restore of the relay's database (docs/operations.md, "Backups").

A backup is one SQLite file with the relay's schema, whatever the database: SQLite's
``VACUUM INTO`` makes a consistent copy while the relay runs; from PostgreSQL every table
is copied inside one ``REPEATABLE READ`` read-only transaction (a consistent snapshot as
well). Attachment blobs are files, copied separately (they are immutable and expire).

A restore replaces every row of the live database with the backup's, in one
transaction, and starts a new **epoch**. What happened since the backup must not be
undone where that would be unsafe, so the restore carries forward from the live database
(while it is still readable) and then:

- deletes every restored device whose token hash is in ``device_removals`` (live and
  restored lists, merged): a device removed since the backup stays removed and its token
  dead; an account left without devices is deleted with its data;
- deletes every one-time prekey (EC and Kyber; the last-resort keys stay): keys handed
  out after the backup may still be in the restored directory, and a one-time key must
  never be handed out twice. Devices upload fresh ones when they next connect (the SDK
  replenishes below 20);
- keeps the live operators and invite codes (a revoked operator stays revoked, a spent
  invite stays spent) and the live accounts' suspension state;
- keeps, for accounts in both, the live account-security state (``SECURITY``: second
  factor and its spent codes, recovery secrets, unidentified-access key) and, after an
  identity reset, the live identity key with its devices' keys (devices not under the
  new identity are removed);
- keeps the audit log: the live entries after the backup's head are carried over when the
  live chain extends the backup's, then a ``server_restored`` entry is appended;
- drops queued messages already expired. Envelope ids are never reused (a device's
  sequence numbers are handed out again, but each id has 74 random bits too:
  ``storage/envelope_ids.py``); messages acknowledged after the backup come back with
  their old ids, and clients drop ids they processed in the last 31 days (longer than
  ``message_ttl``'s 30).

The relay must be stopped during a restore (its connections hold state from before):
a restore refuses while a relay process has noted itself in the database in the last
150 seconds (:mod:`.storage.presence`).
"""

from __future__ import annotations

import contextlib
import hmac
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    case,
    create_engine,
    delete,
    func,
    insert,
    select,
    text,
    update,
)

from .storage import audit, presence
from .storage.admin import delete_account_rows
from .storage.engine import Database
from .storage.schema import (
    accounts,
    audit_head,
    audit_log,
    audit_salts,
    device_removals,
    devices,
    invites,
    kyber_prekeys,
    messages,
    metadata,
    one_time_prekeys,
    operators,
    queue_log,
    recovery,
    recovery_passphrase,
    sealed_sender_root,
    server_state,
    signed_prekeys,
    two_factor,
    two_factor_codes,
    unidentified_access,
)
from .storage.sql import _delete_device

BATCH = 1000


class BackupError(Exception):
    """A backup or restore that cannot be done (the message says why)."""


def epoch(conn: Connection) -> int:
    """The server's epoch: 0 until the first restore, then one more per restore."""
    value = conn.execute(select(server_state.c.value).where(
        server_state.c.key == "epoch")).scalar_one_or_none()
    return int(value) if value is not None else 0


def _set_state(conn: Connection, key: str, value: str) -> None:
    conn.execute(delete(server_state).where(server_state.c.key == key))
    conn.execute(insert(server_state).values(key=key, value=value))


# -- backup -----------------------------------------------------------------------------


def backup(db: Database, path: Path, now: int, actor: str) -> int:
    """Write a backup of ``db`` to the new file ``path``; the audit position it holds.

    The file is a secret (TOTP secrets, recovery and passphrase verifiers, token
    hashes): it is created empty, readable by its owner only (0600), before any row is
    copied into it, and never over an existing file.

    Raises:
        BackupError: ``path`` exists.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    _create_private(path)
    try:
        with db.writer.begin() as conn:
            seq = audit.append(conn, now, audit.SERVER, None, "backup_taken",
                               actor=actor, details={"epoch": epoch(conn)})
        if db.is_sqlite:
            raw = db.reader.raw_connection()
            try:
                cursor = raw.cursor()
                cursor.execute("VACUUM INTO ?", (str(path),))  # accepts an empty file
                cursor.close()
            finally:
                raw.close()
        else:
            _copy_postgres(db.reader, path)
        with contextlib.closing(sqlite3.connect(path)) as out, out:
            out.execute("INSERT OR REPLACE INTO server_state VALUES "
                        "('backup_taken_at', ?)", (str(now),))
    except BaseException:
        path.unlink(missing_ok=True)  # no partial copy left behind
        raise
    return seq


def _create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600, atomically refusing an existing file (no
    window where another local user could open it, whatever the umask)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BackupError(f"{path} exists") from None
    try:
        os.fchmod(fd, 0o600)  # the umask can only remove bits; make it exact
    finally:
        os.close(fd)


def _copy_postgres(engine: Engine, path: Path) -> None:
    target = create_engine(f"sqlite:///{path}")
    try:
        metadata.create_all(target)
        with engine.connect() as source:
            source = source.execution_options(isolation_level="REPEATABLE READ")
            with source.begin():
                source.exec_driver_sql("SET TRANSACTION READ ONLY")
                revision = source.execute(text(
                    "SELECT version_num FROM alembic_version")).scalar_one()
                with target.begin() as out:
                    out.execute(text("CREATE TABLE alembic_version (version_num "
                                     "VARCHAR(32) NOT NULL PRIMARY KEY)"))
                    out.execute(text("INSERT INTO alembic_version VALUES (:v)"),
                                {"v": revision})
                    for table in metadata.sorted_tables:
                        for rows in _batches(source, table):
                            out.execute(insert(table), rows)
    finally:
        target.dispose()


def _batches(conn: Connection, table: Table) -> Iterator[list[dict[str, Any]]]:
    result = conn.execution_options(yield_per=BATCH).execute(select(table))
    for partition in result.partitions():
        yield [dict(row._mapping) for row in partition]


# -- restore ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Restored:
    """What a restore did."""

    epoch: int
    devices_removed: int
    accounts_removed: int
    one_time_prekeys_dropped: int
    audit_entries_carried: int
    messages_expired: int
    #: Live accounts the backup does not bring back with a device (registered or
    #: re-registered since), kept without devices to hold their usernames (review O5).
    accounts_reserved: int = 0


@dataclass
class _Carried:
    """What the live database holds that the restore keeps."""

    removals: list[dict[str, Any]]
    operators: list[dict[str, Any]]
    invites: list[dict[str, Any]]
    suspended: dict[str, int | None]
    #: The live chain's hash at the backup's head position (None: the live log is
    #: shorter), and the live entries after it.
    hash_at_backup_head: bytes | None
    audit_later: list[dict[str, Any]]
    epoch: int
    #: the live ``audit_salts`` rows (review O3)
    salts: list[dict[str, Any]]
    #: The live ``accounts`` rows, and the registration-lock rows (``LOCK``) of those
    #: the backup lacks (review O5).
    accounts: list[dict[str, Any]]
    locks: dict[str, list[dict[str, Any]]]
    #: The accounts both databases hold, and the live rows of their account-security
    #: tables (``SECURITY``).
    both: list[str]
    security: dict[str, list[dict[str, Any]]]
    #: Accounts whose identity key changed since the backup: their live identity key,
    #: and their live devices' registration ids and signed/last-resort keys.
    identities: dict[str, bytes]
    #: (account, device) -> (token hash, registration id) of the live devices.
    registration_ids: dict[tuple[str, int], tuple[bytes, int]]
    identity_keys: dict[str, list[dict[str, Any]]]
    #: The live ``sealed_sender_root`` row: the root the relays' key file holds now.
    roots: list[dict[str, Any]] = field(default_factory=list)
    #: The live relay processes' presence notes (``server_state``, storage/presence.py).
    presence: list[dict[str, Any]] = field(default_factory=list)


def restore(db: Database, path: Path, now: int, actor: str, *,
            force: bool = False) -> Restored:
    """Replace the live database's rows by the backup's at ``path`` and start a new epoch
    (see the module's description). One transaction: on any error nothing changes.

    Raises:
        BackupError: the file is not a backup of this relay, or of a newer schema; or a
            relay process used the database in the last minutes (unless ``force``).
    """
    if not path.is_file():
        raise BackupError(f"{path} is not a file")
    with tempfile.TemporaryDirectory(prefix="cipherpost-restore-") as scratch:
        copy = Path(scratch) / "backup.db"
        shutil.copyfile(path, copy)
        _check_backup(copy)
        source_db = Database(f"sqlite:///{copy}")
        try:
            source_db.migrate()  # an older backup is brought to this schema first
            with source_db.reader.connect() as source, db.writer.begin() as live:
                running = presence.live_relays(live, int(time.time() * 1000))
                if running and not force:
                    names = ", ".join(f"{key} ({ago // 1000} s ago)" for key, ago in running)
                    raise BackupError(f"relay processes use this database: {names}; stop "
                                      "them first (a process killed without stopping is "
                                      "forgotten after 150 s; --force skips this check)")
                return _restore(source, live, db, now, actor)
        finally:
            source_db.dispose()


def _check_backup(path: Path) -> None:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            names = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path.name} is not a SQLite file: {exc}") from None
    if not {"alembic_version", "accounts", "devices", "audit_log"} <= names:
        raise BackupError(f"{path.name} is not a backup of a Cipherpost relay")


#: Account-security state a restore must not roll back (review 2026-11-29-sealed-ops,
#: O2): a spent 2FA recovery code would be spendable again, a TOTP secret replaced or
#: turned off would come back, a leaked recovery secret or passphrase (which is also the
#: registration lock) would open again, an unidentified-access key would be the old one.
SECURITY: tuple[Table, ...] = (two_factor, two_factor_codes, recovery,
                               recovery_passphrase, unidentified_access)
#: What a live account the backup lacks keeps with its username (review O5): the
#: recovery secrets that are its registration lock (``/v1/accounts/reregister``) and its
#: second factor.
LOCK: tuple[Table, ...] = (two_factor, two_factor_codes, recovery, recovery_passphrase)
#: Keys signed by an account's identity key: they follow the live identity.
IDENTITY_SIGNED: tuple[Table, ...] = (signed_prekeys, kyber_prekeys)


def _carry(live: Connection, backup_head_seq: int, source: Connection) -> _Carried:
    at_head = live.execute(select(audit_log.c.chain_hash).where(
        audit_log.c.seq == backup_head_seq)).scalar_one_or_none()
    rows = [dict(r._mapping) for r in live.execute(
        select(audit_log).where(audit_log.c.seq > backup_head_seq).order_by(
            audit_log.c.seq))]
    both = sorted(set(live.execute(select(accounts.c.id)).scalars()) & set(
        source.execute(select(accounts.c.id)).scalars()))
    backup_identity = {r.id: bytes(r.identity_key) for r in source.execute(
        select(accounts.c.id, accounts.c.identity_key))}
    identities = {r.id: bytes(r.identity_key) for r in live.execute(
        select(accounts.c.id, accounts.c.identity_key))
        if r.id in backup_identity and backup_identity[r.id] != bytes(r.identity_key)}
    changed = sorted(identities)
    live_accounts = [dict(r._mapping) for r in live.execute(select(accounts))]
    live_only = sorted({a["id"] for a in live_accounts} - set(backup_identity))
    return _Carried(
        accounts=live_accounts,
        locks={table.name: _rows_of(live, table, live_only) for table in LOCK},
        both=both,
        security={table.name: _rows_of(live, table, both) for table in SECURITY},
        identities=identities,
        registration_ids={(r.account_id, r.device_id): (bytes(r.token_hash),
                                                         r.registration_id)
                          for r in live.execute(select(
                              devices.c.account_id, devices.c.device_id,
                              devices.c.token_hash, devices.c.registration_id).where(
                                  devices.c.account_id.in_(changed)))},
        identity_keys={table.name: _rows_of(live, table, changed)
                       for table in IDENTITY_SIGNED},
        removals=[dict(r._mapping) for r in live.execute(select(device_removals))],
        operators=[dict(r._mapping) for r in live.execute(select(operators))],
        invites=[dict(r._mapping) for r in live.execute(select(invites))],
        suspended={r.id: r.suspended_at for r in live.execute(
            select(accounts.c.id, accounts.c.suspended_at))},
        hash_at_backup_head=None if at_head is None else bytes(at_head),
        audit_later=rows,
        salts=[dict(r._mapping) for r in live.execute(select(audit_salts))],
        epoch=epoch(live),
        roots=[dict(r._mapping) for r in live.execute(select(sealed_sender_root))],
        presence=[dict(r._mapping) for r in live.execute(select(server_state).where(
            server_state.c.key.startswith(presence.PREFIX)))],
    )


def _rows_of(conn: Connection, table: Table, account_ids: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for start in range(0, len(account_ids), BATCH):
        rows += [dict(r._mapping) for r in conn.execute(select(table).where(
            table.c.account_id.in_(account_ids[start:start + BATCH])))]
    return rows


def _carry_security(live: Connection, carried: _Carried, now: int) -> int:
    """The live account-security state, over the backup's (see ``SECURITY``); for an
    account whose identity key was reset since the backup, the live identity with its
    devices' registration ids and keys: the backup's were made under the old (perhaps
    compromised) identity and must not be served again. The number of devices removed.

    Every account in both loses the backup's rows, not only those with live ones: a TOTP
    turned off or a recovery secret removed since stays so."""
    both = carried.both
    for table in SECURITY:
        for start in range(0, len(both), BATCH):
            live.execute(delete(table).where(
                table.c.account_id.in_(both[start:start + BATCH])))
    removed = 0
    for table in SECURITY:
        rows = carried.security[table.name]
        if rows:
            live.execute(insert(table), rows)
    for account_id, identity_key in sorted(carried.identities.items()):
        live.execute(update(accounts).where(accounts.c.id == account_id).values(
            identity_key=identity_key))
        for table in (*IDENTITY_SIGNED, one_time_prekeys):
            live.execute(delete(table).where(table.c.account_id == account_id))
        kept: set[int] = set()
        for device_id, token_hash in live.execute(select(
                devices.c.device_id, devices.c.token_hash).where(
                    devices.c.account_id == account_id).order_by(devices.c.device_id)
                ).all():
            now_live = carried.registration_ids.get((account_id, device_id))
            if now_live is None or not hmac.compare_digest(now_live[0], bytes(token_hash)):
                # Not a device under the new identity (removed since, which the removal
                # tombstones also catch): it must not come back with the old identity.
                removed += _delete_device(live, account_id, device_id, now)
                continue
            kept.add(device_id)
            live.execute(update(devices).where(
                devices.c.account_id == account_id, devices.c.device_id == device_id
            ).values(registration_id=now_live[1]))
        for table in IDENTITY_SIGNED:
            rows = [r for r in carried.identity_keys[table.name]
                    if r["account_id"] == account_id and r["device_id"] in kept]
            if rows:
                live.execute(insert(table), rows)
    return removed


def _restore(source: Connection, live: Connection, db: Database, now: int,
             actor: str) -> Restored:
    backup_head_seq, backup_head = audit.head(source)
    carried = _carry(live, backup_head_seq, source)
    for table in reversed(metadata.sorted_tables):
        live.execute(delete(table))
    for table in metadata.sorted_tables:
        for rows in _batches(source, table):
            live.execute(insert(table), rows)
    if db.is_postgresql:
        _reset_sequences(live)
    _move_queue_log(live)

    # The audit log goes on from the live one's entries after the backup, if the live
    # chain is the backup's continued (not after a restore of another branch).
    forked = backup_head_seq > 0 and carried.hash_at_backup_head != backup_head
    later = [] if forked else carried.audit_later
    for row in later:
        row.pop("id", None)
    if later:
        live.execute(insert(audit_log), later)
        live.execute(update(audit_head).where(audit_head.c.id == 1).values(
            seq=later[-1]["seq"], chain_hash=later[-1]["chain_hash"]))
    _carry_salts(live, carried)

    # Relay processes as they are now: the backup's notes are of the processes that ran
    # when it was taken, and a recent one would make the next restore refuse for minutes.
    live.execute(delete(server_state).where(server_state.c.key.startswith(presence.PREFIX)))
    if carried.presence:
        live.execute(insert(server_state), carried.presence)
    # Operators and invites as they are now.
    for table, rows in ((operators, carried.operators), (invites, carried.invites)):
        live.execute(delete(table))
        if rows:
            live.execute(insert(table), rows)
    # The trust root the relays serve now (their key file's), if they started since
    # 0010; else the backup's, which their key file must then hold (trust_root.py).
    if carried.roots:
        live.execute(delete(sealed_sender_root))
        live.execute(insert(sealed_sender_root), carried.roots)
    for account_id, suspended_at in carried.suspended.items():
        live.execute(update(accounts).where(accounts.c.id == account_id).values(
            suspended_at=suspended_at))
    reset_removed = _carry_security(live, carried, now)

    # Removed devices stay removed.
    known = {bytes(r.token_hash) for r in live.execute(select(device_removals.c.token_hash))}
    fresh = [r for r in carried.removals if bytes(r["token_hash"]) not in known]
    if fresh:
        live.execute(insert(device_removals), fresh)
    dead = live.execute(select(devices.c.account_id, devices.c.device_id).where(
        devices.c.token_hash.in_(select(device_removals.c.token_hash))).order_by(
            devices.c.account_id, devices.c.device_id)).all()
    for account_id, device_id in dead:
        _delete_device(live, account_id, device_id, now)
    orphans = [r[0] for r in live.execute(select(accounts.c.id).where(
        ~accounts.c.id.in_(select(devices.c.account_id))))]
    live_ids = {a["id"] for a in carried.accounts}
    orphans = [a for a in orphans if a not in live_ids]  # live ones are kept below
    for account_id in orphans:
        delete_account_rows(live, account_id)
    reserved = _keep_live_accounts(live, carried)

    # No one-time prekey is handed out twice.
    dropped = live.execute(delete(one_time_prekeys)).rowcount
    dropped += live.execute(delete(kyber_prekeys).where(
        kyber_prekeys.c.last_resort.is_(False))).rowcount
    expired = _expire_messages(live, now)

    new_epoch = max(carried.epoch, epoch(live)) + 1
    _set_state(live, "epoch", str(new_epoch))
    _set_state(live, "restored_at", str(now))
    audit.append(live, now, audit.SERVER, None, "server_restored", actor=actor, details={
        "epoch": new_epoch, "backup_head": backup_head.hex(), "backup_entries":
        backup_head_seq, "carried_entries": len(later), "log_forked": forked,
        "devices_removed": len(dead) + reset_removed, "accounts_removed": len(orphans),
        "identities_kept": len(carried.identities), "accounts_reserved": reserved})
    return Restored(new_epoch, len(dead) + reset_removed, len(orphans), int(dropped),
                    len(later), expired, reserved)


def _keep_live_accounts(live: Connection, carried: _Carried) -> int:
    """Keep every live account's username taken (review O5). A live account the backup
    lacks (registered since), or brings back with no device (re-registered since: its
    old devices' tokens are tombstoned), stays as an account without devices, with its
    live identity key and registration lock (``LOCK``): nobody can register its
    username, and its owner takes it back with ``/v1/accounts/reregister`` and the
    account's recovery secret. Accounts in both get their live username. The number of
    accounts kept without devices."""
    restored = {r.id: r.username for r in live.execute(
        select(accounts.c.id, accounts.c.username))}
    with_device = set(live.execute(select(devices.c.account_id).distinct()).scalars())
    kept = 0
    for row in carried.accounts:
        if row["id"] not in restored:
            live.execute(insert(accounts).values({**row, "username": None}))
            restored[row["id"]] = None
        if row["id"] not in with_device:
            kept += 1
    for table in LOCK:
        rows = carried.locks[table.name]
        if rows:
            live.execute(insert(table), rows)
    # Usernames as they are live: cleared first where they differ, so that a username
    # that moved between accounts since the backup does not collide on the way.
    moved = [r for r in carried.accounts if restored[r["id"]] != r["username"]]
    for row in moved:
        live.execute(update(accounts).where(accounts.c.id == row["id"]).values(
            username=None))
    for row in moved:
        if row["username"] is None:
            continue
        holder = live.execute(select(accounts.c.id).where(
            accounts.c.username == row["username"])).scalar_one_or_none()
        if holder is None:  # else a restored account that is not live holds it
            live.execute(update(accounts).where(accounts.c.id == row["id"]).values(
                username=row["username"]))
    return kept


def _carry_salts(live: Connection, carried: _Carried) -> None:
    """The live audit salts of the accounts the restored log names (review O3): an
    account's salt never changes once made, but one made after the backup is only in
    the live database, and entries carried over need it to verify. Salts of accounts
    deleted since are in neither the live database nor needed: the backup's come back
    with the account and go again when the restore deletes it (its devices' tombstones)."""
    named = set(live.execute(select(audit_log.c.account_id).where(
        audit_log.c.subject_salted.is_(True), audit_log.c.redacted.is_(False)
    ).distinct()).scalars())
    rows = [r for r in carried.salts if r["account_id"] in named]
    ids = sorted(r["account_id"] for r in rows)
    for start in range(0, len(ids), BATCH):
        live.execute(delete(audit_salts).where(
            audit_salts.c.account_id.in_(ids[start:start + BATCH])))
    if rows:
        live.execute(insert(audit_salts), rows)


def _move_queue_log(conn: Connection) -> None:
    """Move the restored queue log's rows (a backup of a running SQLite relay has some)
    to ``messages``, as a relay does when it starts (``storage/queue_log.py``): restored
    onto PostgreSQL they would otherwise never be read, and the steps below (removed
    devices, expiry) work on ``messages``."""
    groups = conn.execute(select(
        queue_log.c.account_id, queue_log.c.device_id,
        func.sum(func.length(queue_log.c.content)), func.max(queue_log.c.seq)).group_by(
            queue_log.c.account_id, queue_log.c.device_id)).all()
    if not groups:
        return
    columns = [c.name for c in messages.columns]
    owned = select(devices.c.device_id).where(devices.c.account_id == queue_log.c.account_id,
                                              devices.c.device_id == queue_log.c.device_id)
    conn.execute(insert(messages).from_select(columns, select(
        *[queue_log.c[name] for name in columns]).where(owned.exists())))
    for account_id, device_id, size, top in groups:
        conn.execute(update(devices).where(
            devices.c.account_id == account_id, devices.c.device_id == device_id).values(
                queued_bytes=devices.c.queued_bytes + int(size),
                last_seq=case((devices.c.last_seq < int(top), int(top)),
                              else_=devices.c.last_seq)))
    conn.execute(delete(queue_log))


def _expire_messages(conn: Connection, now: int) -> int:
    gone = conn.execute(delete(messages).where(messages.c.expires_at < now).returning(
        messages.c.account_id, messages.c.device_id,
        func.length(messages.c.content))).all()
    freed: dict[tuple[str, int], int] = {}
    for account_id, device_id, size in gone:
        freed[(account_id, device_id)] = freed.get((account_id, device_id), 0) + int(size)
    for (account_id, device_id), size in sorted(freed.items()):
        conn.execute(update(devices).where(
            devices.c.account_id == account_id, devices.c.device_id == device_id).values(
                queued_bytes=devices.c.queued_bytes - size))
    return len(gone)


def _reset_sequences(conn: Connection) -> None:
    """PostgreSQL's serial sequences past the restored rows' ids (an id is never reused:
    the sequence only moves forward)."""
    for table in metadata.sorted_tables:
        for column in table.primary_key.columns:
            if column.autoincrement is not True:
                continue
            sequence = conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                                    {"t": table.name, "c": column.name}).scalar_one_or_none()
            if sequence is None:
                continue
            top = conn.execute(select(func.max(column))).scalar_one_or_none() or 0
            current = conn.execute(text(f"SELECT last_value FROM {sequence}")  # noqa: S608
                                   ).scalar_one()
            conn.execute(text("SELECT setval(:s, :v)"),
                         {"s": sequence, "v": max(int(top), int(current), 1)})


def manifest(path: Path) -> dict[str, Any]:
    """What a backup file says about itself (for ``cipherpost-admin backup``)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        state = dict(conn.execute("SELECT key, value FROM server_state").fetchall()) \
            if "server_state" in tables else {}
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        head = conn.execute("SELECT seq, chain_hash FROM audit_head").fetchone() \
            if "audit_head" in tables else None  # before 0005
    return {"schema": revision[0] if revision else None,
            "taken_at": int(state.get("backup_taken_at", 0)),
            "epoch": int(state.get("epoch", 0)),
            "audit_entries": head[0] if head else 0,
            "audit_head": bytes(head[1]).hex() if head else audit.GENESIS.hex()}

