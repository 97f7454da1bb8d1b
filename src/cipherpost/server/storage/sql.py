"""The relay's storage on SQLAlchemy Core, for SQLite and PostgreSQL.

Every public method is one transaction, written as plain synchronous SQLAlchemy and
exposed as a coroutine by ``@writes``/``@reads``: writes run one at a time on a single
writer thread (SQLite has one writer anyway, and order is kept), reads on a small pool.
One thread hop per operation costs far less than an async driver's hop per statement.
Nothing here knows HTTP.

Both databases run the same code. What differs is kept to a few places: SQLite's
``BEGIN IMMEDIATE`` and the event loop's own connection (:mod:`.engine`, :mod:`.group`);
the per-message SQL, written in qmark style for SQLite's driver, is rewritten once per
statement for psycopg (``_PostgresCursor``); and row locks (``FOR UPDATE``, which SQLite's
compiler leaves out: its writers hold the whole database) keep PostgreSQL's concurrent
writers (several relay processes) from handing out a one-time prekey twice or giving two
devices the same id.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import itertools
import os
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from . import admin, audit, pg_batch
from .engine import Database
from .envelope_ids import envelope_id, seq_of
from .group import Done, GroupCommit, Resolve
from .models import (
    Account,
    Bundle,
    Device,
    DeviceMismatch,
    Envelope,
    InvalidInvite,
    KeyUpload,
    NewDevice,
    OneTimeKey,
    OutgoingMessage,
    RecipientSuspended,
    SignedKey,
    TooManyDevices,
    UnknownAccount,
    UsernameTaken,
    envelope_of,
)
from .queue_log import (
    DELETE_HOLD,
    DEVICES,
    QueueLog,
    Sends,
    Suspensions,
    check_send,
    nothing_logged,
)
from .queue_log import Queued as Queued  # re-exported: the api modules import it from here
from .schema import (
    accounts,
    attachments,
    device_removals,
    devices,
    kyber_prekeys,
    link_codes,
    messages,
    one_time_prekeys,
    queue_log,
    signed_prekeys,
)

P = ParamSpec("P")
R = TypeVar("R")


def writes(fn: Callable[Concatenate[Storage, P], R]
           ) -> Callable[Concatenate[Storage, P], Coroutine[Any, Any, R]]:
    """Run the method on the writer thread (see ``_once_more_if_lost``)."""
    @functools.wraps(fn)
    async def run(self: Storage, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.get_running_loop().run_in_executor(
            self._writer, functools.partial(_once_more_if_lost, fn, self, *args, **kwargs))
    return run


def reads(fn: Callable[Concatenate[Storage, P], R]
          ) -> Callable[Concatenate[Storage, P], Coroutine[Any, Any, R]]:
    """Run the method on a reader thread (see ``_once_more_if_lost``)."""
    @functools.wraps(fn)
    async def run(self: Storage, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.get_running_loop().run_in_executor(
            self._readers, functools.partial(_once_more_if_lost, fn, self, *args, **kwargs))
    return run


def _once_more_if_lost(fn: Callable[Concatenate[Storage, P], R], self: Storage, /,
                       *args: P.args, **kwargs: P.kwargs) -> R:
    """``fn``, run a second time on a new connection if its first one was lost before
    COMMIT (the database server restarted: nothing of it was written). A connection lost
    during COMMIT is not tried again: that COMMIT may have been durable after all."""
    self._local.lost_before_commit = False
    try:
        return fn(self, *args, **kwargs)
    except Exception:
        if not self._local.lost_before_commit:
            raise
    return fn(self, *args, **kwargs)


class Storage:
    """All persistent state of the relay."""

    def __init__(self, db: Database, *, relay: bool = True) -> None:
        """``relay``: this is the relay process's storage. On SQLite it then queues
        through the queue log (:mod:`.queue_log`), whose rows only that process knows,
        and holds a lock that keeps a second relay process off the database file
        (:class:`RelayRunning`). Any other program (``cipherpost-admin``) passes False:
        it must neither move nor number the running relay's messages."""
        self.db = db
        self._relay_lock: int | None = None
        if relay and db.is_sqlite:
            self._relay_lock = _lock_relay(db)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="cipherpost-db-writer")
        self._readers = ThreadPoolExecutor(db.reader_threads,
                                           thread_name_prefix="cipherpost-db-reader")

        self._loop_db: Any = None
        #: SQLite's queue log (messages before they reach ``messages``, :mod:`.queue_log`)
        self.queue_log = QueueLog(_acknowledge) if relay and db.is_sqlite else None
        #: runs a transaction for acknowledged rows waiting to be deleted (see
        #: ``acknowledge_later``) when no send brings one
        self._delete_timer: asyncio.TimerHandle | None = None
        self._group = GroupCommit(self._writer,
                                  lambda: self._raw(self.db.writer, write=True),
                                  self._loop_connection if db.is_sqlite else None,
                                  None if db.is_sqlite else _apply_plans,
                                  journal=self.queue_log)
        self._local = threading.local()
        self._connections: list[Connection] = []
        self._raw_connections: list[Any] = []
        #: Accounts an operator suspended, as last read (``refresh_suspended``): sends to
        #: them are refused without a query per send.
        self.suspended: frozenset[str] = frozenset()
        #: Where sends go (``enqueue_then``; the send path calls it directly,
        #: :mod:`..sending`): SQLite's queue log, or else the queues' table.
        self.sends: Sends | _TableSends = Sends(self._group, self.queue_log, self) \
            if self.queue_log is not None else _TableSends(self._group, self)

    def _loop_connection(self) -> Any:
        """The event loop's own SQLite connection (see ``Database.loop_connection``)."""
        if self._loop_db is None:
            self._loop_db = self.db.loop_connection()  # closed by ``Database.dispose``
        return self._loop_db

    def close(self) -> None:
        """Finish queued operations, stop the threads, close their connections."""
        if self._delete_timer is not None:
            self._delete_timer.cancel()
            self._delete_timer = None
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        for conn in self._connections:
            conn.close()
        for raw in self._raw_connections:
            raw.close()
        if self._relay_lock is not None:
            os.close(self._relay_lock)  # releases the lock
            self._relay_lock = None

    def _thread_raw(self, engine: Engine) -> Any:
        """This thread's own DB-API connection to ``engine``."""
        raws: dict[int, Any] = self._local.__dict__.setdefault("r", {})
        dbapi = raws.get(id(engine))
        if dbapi is None:
            dbapi = raws[id(engine)] = engine.raw_connection()
            self._raw_connections.append(dbapi)
        return dbapi

    @contextlib.contextmanager
    def _raw(self, engine: Engine, *, write: bool) -> Iterator[Any]:
        """A transaction on this thread's own DB-API connection, for the per-message
        queries (SQLAlchemy's execution machinery costs ten times the query here).
        SQL in these is written in qmark style, which SQLite's driver takes; psycopg
        gets it rewritten (``_PostgresCursor``) and opens the transaction by itself."""
        dbapi = self._thread_raw(engine)
        committing = False
        try:
            cursor = dbapi.cursor()
            try:
                if self.db.is_sqlite:
                    cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                else:
                    cursor = _PostgresCursor(cursor)
                try:
                    yield cursor
                except BaseException:
                    if not _lost(dbapi):
                        dbapi.rollback()
                    raise
                committing = True
                dbapi.commit()
            finally:
                with contextlib.suppress(Exception):
                    cursor.close()
        except BaseException:
            # A connection lost (the database server restarted) is dropped: this
            # operation fails with its own error, the next one connects again.
            if _lost(dbapi):
                self._local.lost_before_commit = not committing
                self._forget_raw(engine, dbapi)
            raise

    def _forget_raw(self, engine: Engine, dbapi: Any) -> None:
        self._local.__dict__.get("r", {}).pop(id(engine), None)
        with contextlib.suppress(ValueError):
            self._raw_connections.remove(dbapi)
        with contextlib.suppress(Exception):
            dbapi.invalidate()

    @contextlib.contextmanager
    def _tx(self, engine: Engine) -> Iterator[Connection]:
        """A transaction on this thread's own long-lived connection to ``engine``
        (checking a connection out of a pool per operation costs more than the query)."""
        connections: dict[int, Connection] = self._local.__dict__.setdefault("c", {})
        conn = connections.get(id(engine))
        if conn is None or conn.closed or conn.invalidated:
            conn = connections[id(engine)] = engine.connect()
            self._connections.append(conn)
        with conn.begin():
            try:
                yield conn
            except BaseException:
                if conn.invalidated:  # SQLAlchemy saw the connection lost, before COMMIT
                    self._local.lost_before_commit = True
                raise

    # -- accounts and devices --------------------------------------------------------------

    @writes
    def create_account(self, account_id: str, username: str | None, identity_key: bytes,
                             device: NewDevice, now: int, *,
                             invite_hash: bytes | None = None) -> None:
        """Create an account with its first device (id 1), spending the invite code of
        ``invite_hash`` if given (in the same transaction: a refused registration leaves
        the code unused). The account keeps the hash: deleted by its own device soon
        after, it gives the code back (:func:`.admin.return_invite`).

        Raises:
            UsernameTaken: the username is in use.
            InvalidInvite: the invite is unknown, used or expired.
        """
        try:
            with self._tx(self.db.writer) as conn:
                if invite_hash is not None and not admin.consume_invite(conn, invite_hash,
                                                                        now):
                    raise InvalidInvite()
                conn.execute(insert(accounts).values(
                    id=account_id, username=username, identity_key=identity_key,
                    next_device_id=2, created_at=now, invite_hash=invite_hash))
                self._insert_device(conn, account_id, 1, device, now)
                _audit(conn, now, account_id, 1, "account_created")
        except IntegrityError:
            raise UsernameTaken() from None

    def _insert_device(self, conn: Connection, account_id: str, device_id: int,
                             device: NewDevice, now: int) -> None:
        conn.execute(insert(devices).values(
            account_id=account_id, device_id=device_id,
            registration_id=device.registration_id, token_hash=device.token_hash,
            name=device.name, queued_bytes=0, created_at=now, last_seen=now))
        self._store_keys(conn, account_id, device_id, device.keys)

    @writes
    def add_device(self, account_id: str, device: NewDevice, max_devices: int,
                         now: int) -> int:
        """Add a device; return its id.

        Raises:
            TooManyDevices: the account has ``max_devices`` already.
            LookupError: the account does not exist.
        """
        with self._tx(self.db.writer) as conn:
            # The account's row lock serializes device changes of several relay processes.
            row = (conn.execute(select(accounts.c.next_device_id).where(
                accounts.c.id == account_id).with_for_update())).first()
            if row is None:
                raise LookupError(account_id)
            count = (conn.execute(select(func.count()).select_from(devices).where(
                devices.c.account_id == account_id))).scalar_one()
            if count >= max_devices:
                raise TooManyDevices()
            device_id = _free_device_id(row.next_device_id, self._device_ids(conn,
                                                                                   account_id))
            self._insert_device(conn, account_id, device_id, device, now)
            conn.execute(update(accounts).where(accounts.c.id == account_id).values(
                next_device_id=device_id % 127 + 1))
            _audit(conn, now, account_id, device_id, "device_added")
        return device_id

    def _device_ids(self, conn: Connection, account_id: str) -> set[int]:
        rows = conn.execute(select(devices.c.device_id).where(
            devices.c.account_id == account_id))
        return {r.device_id for r in rows}

    @writes
    def remove_device(self, account_id: str, device_id: int, now: int) -> bool:
        """Delete a device with its keys and queue. Device 1 cannot be removed."""
        with self._tx(self.db.writer) as conn:
            if not _delete_device(conn, account_id, device_id, now):
                return False
            _audit(conn, now, account_id, device_id, "device_removed")
        return True

    @writes
    def record_event(self, account_id: str, device_id: int | None, event: str,
                     now: int) -> None:
        """Add an entry to the audit log (a request that changes nothing stored, such as
        a data export, which the transparency report counts)."""
        with self._tx(self.db.writer) as conn:
            _audit(conn, now, account_id, device_id, event)

    @writes
    def touch_device(self, account_id: str, device_id: int, now: int) -> None:
        """Record that the device was used (see ``Relay.seen``)."""
        with self._tx(self.db.writer) as conn:
            conn.execute(update(devices).where(
                devices.c.account_id == account_id, devices.c.device_id == device_id
            ).values(last_seen=now))

    @writes
    def remove_idle_devices(self, cutoff: int, now: int) -> list[tuple[str, int]]:
        """Remove every device not seen since ``cutoff``, with its keys and queue, except
        an account's last device (as by hand: the most recently seen one stays); the
        (account, device) pairs removed."""
        with self._tx(self.db.writer) as conn:
            rows = conn.execute(
                select(devices.c.account_id, devices.c.device_id, devices.c.last_seen).where(
                    devices.c.account_id.in_(select(devices.c.account_id).where(
                        devices.c.last_seen < cutoff))).order_by(
                    devices.c.account_id, devices.c.last_seen.desc())).all()
            idle: list[tuple[str, int]] = []
            for account_id, group in itertools.groupby(rows, key=lambda r: r.account_id):
                members = list(group)
                # When all are idle the newest stays (the account keeps one device).
                candidates = members[1:] if members[0].last_seen < cutoff else members
                idle += [(account_id, r.device_id) for r in candidates
                         if r.last_seen < cutoff]
            idle.sort()  # device rows are locked in (account, device) order, as by sends
            for account_id, device_id in idle:
                _delete_device(conn, account_id, device_id, now)
            for account_id, device_id in idle:  # the audit head is locked last
                _audit(conn, now, account_id, device_id, "device_idle_removed")
        return idle

    @writes
    def reset_identity(self, account_id: str, device_id: int, identity_key: bytes,
                       registration_ids: dict[int, int], keys: KeyUpload, now: int) -> None:
        """Replace the account's identity key: every device gets its new registration id
        and loses its keys (they were signed with the old identity); the calling device's
        new keys are stored. Other devices upload theirs once they hold the new key.

        Raises:
            DeviceMismatch: ``registration_ids`` does not name exactly the account's devices.
        """
        with self._tx(self.db.writer) as conn:
            current = self._device_ids(conn, account_id)
            if set(registration_ids) != current:
                raise DeviceMismatch(sorted(current - set(registration_ids)),
                                     sorted(set(registration_ids) - current))
            conn.execute(update(accounts).where(accounts.c.id == account_id).values(
                identity_key=identity_key))
            for device, registration_id in sorted(registration_ids.items()):
                conn.execute(update(devices).where(
                    devices.c.account_id == account_id, devices.c.device_id == device
                ).values(registration_id=registration_id))
            for table in (signed_prekeys, kyber_prekeys, one_time_prekeys):
                conn.execute(delete(table).where(table.c.account_id == account_id))
            self._store_keys(conn, account_id, device_id, keys)
            _audit(conn, now, account_id, device_id, "identity_reset")

    @reads
    def get_account(self, account_id: str) -> Account | None:
        """The account, if it exists."""
        with self._tx(self.db.reader) as conn:
            row = (conn.execute(select(accounts).where(
                accounts.c.id == account_id))).first()
        return Account(row.id, row.username, row.identity_key) if row else None

    @reads
    def find_username(self, username: str) -> str | None:
        """The account id owning ``username``."""
        with self._tx(self.db.reader) as conn:
            return (conn.execute(select(accounts.c.id).where(
                accounts.c.username == username))).scalar_one_or_none()

    @writes
    def set_username(self, account_id: str, username: str | None, now: int) -> None:
        """Change (or clear) the username.

        Raises:
            UsernameTaken: another account has it.
        """
        try:
            with self._tx(self.db.writer) as conn:
                conn.execute(update(accounts).where(accounts.c.id == account_id).values(
                    username=username))
                _audit(conn, now, account_id, None, "username_changed")
        except IntegrityError:
            raise UsernameTaken() from None

    @reads
    def device_token_hash(self, account_id: str, device_id: int) -> bytes | None:
        """The stored token hash of a device, or None if it does not exist."""
        with self._raw(self.db.reader, write=False) as cur:
            row = cur.execute("SELECT token_hash FROM devices WHERE account_id = ? "
                              "AND device_id = ?", (account_id, device_id)).fetchone()
        return bytes(row[0]) if row else None

    @reads
    def device_credentials(self, account_id: str,
                           device_id: int) -> tuple[bytes, bool] | None:
        """The stored token hash of a device and whether its account is suspended, or
        None if the device does not exist."""
        with self._raw(self.db.reader, write=False) as cur:
            row = cur.execute("SELECT d.token_hash, a.suspended_at FROM devices d "
                              "JOIN accounts a ON a.id = d.account_id "
                              "WHERE d.account_id = ? AND d.device_id = ?",
                              (account_id, device_id)).fetchone()
        return (bytes(row[0]), row[1] is not None) if row else None

    @reads
    def refresh_suspended(self) -> dict[str, list[int]]:
        """Read which accounts are suspended; those newly suspended since the last call,
        with their device ids (whose connections are to be closed)."""
        with self._tx(self.db.reader) as conn:
            now_suspended = admin.suspended_accounts(conn)
            new = sorted(now_suspended - self.suspended)
            devices_of = {a: [int(r[0]) for r in conn.execute(select(devices.c.device_id).where(
                devices.c.account_id == a))] for a in new}
        self.suspended = frozenset(now_suspended)
        return devices_of

    @reads
    def list_devices(self, account_id: str) -> list[Device]:
        """The account's devices in id order."""
        with self._tx(self.db.reader) as conn:
            rows = conn.execute(select(devices).where(
                devices.c.account_id == account_id).order_by(devices.c.device_id))
            return [Device(r.device_id, r.registration_id, r.name, r.created_at, r.last_seen)
                    for r in rows]

    @writes
    def create_link_code(self, code_hash: bytes, account_id: str, expires_at: int,
                               now: int) -> None:
        """Remember a one-time device-link code (stored only as a hash)."""
        with self._tx(self.db.writer) as conn:
            conn.execute(delete(link_codes).where(link_codes.c.expires_at < now))
            conn.execute(insert(link_codes).values(
                code_hash=code_hash, account_id=account_id, expires_at=expires_at))

    @writes
    def consume_link_code(self, code_hash: bytes, now: int) -> str | None:
        """The account a valid code links to; the code is spent either way."""
        with self._tx(self.db.writer) as conn:
            row = (conn.execute(delete(link_codes).where(
                link_codes.c.code_hash == code_hash).returning(
                    link_codes.c.account_id, link_codes.c.expires_at))).first()
        if row is None or row.expires_at < now:
            return None
        account_id: str = row.account_id
        return account_id

    # -- prekeys ---------------------------------------------------------------------------

    @writes
    def store_keys(self, account_id: str, device_id: int, keys: KeyUpload) -> None:
        """Replace the signed and last-resort keys given; add one-time keys."""
        with self._tx(self.db.writer) as conn:
            self._store_keys(conn, account_id, device_id, keys)

    def _store_keys(self, conn: Connection, account_id: str, device_id: int,
                          keys: KeyUpload) -> None:
        where = (account_id, device_id)
        if keys.signed_prekey is not None:
            k = keys.signed_prekey
            conn.execute(delete(signed_prekeys).where(*_device(signed_prekeys, *where)))
            conn.execute(insert(signed_prekeys).values(
                account_id=account_id, device_id=device_id, key_id=k.key_id,
                public_key=k.public_key, signature=k.signature))
        if keys.last_resort_kyber is not None:
            k = keys.last_resort_kyber
            conn.execute(delete(kyber_prekeys).where(
                *_device(kyber_prekeys, *where), kyber_prekeys.c.last_resort.is_(True)))
            conn.execute(insert(kyber_prekeys).values(
                account_id=account_id, device_id=device_id, key_id=k.key_id, last_resort=True,
                public_key=k.public_key, signature=k.signature))
        if keys.replace_one_time:
            conn.execute(delete(one_time_prekeys).where(*_device(one_time_prekeys, *where)))
            conn.execute(delete(kyber_prekeys).where(*_device(kyber_prekeys, *where),
                                                     kyber_prekeys.c.last_resort.is_(False)))
        if keys.one_time_prekeys:
            _upsert_many(conn, one_time_prekeys, account_id, device_id, [
                {"key_id": k.key_id, "public_key": k.public_key} for k in keys.one_time_prekeys])
        if keys.kyber_prekeys:
            _upsert_many(conn, kyber_prekeys, account_id, device_id, [
                {"key_id": k.key_id, "public_key": k.public_key, "signature": k.signature,
                 "last_resort": False} for k in keys.kyber_prekeys])

    @reads
    def key_counts(self, account_id: str, device_id: int) -> tuple[int, int]:
        """(one-time EC prekeys, one-time Kyber prekeys) left for the device."""
        with self._tx(self.db.reader) as conn:
            ec = (conn.execute(select(func.count()).select_from(one_time_prekeys).where(
                *_device(one_time_prekeys, account_id, device_id)))).scalar_one()
            kyber = (conn.execute(select(func.count()).select_from(kyber_prekeys).where(
                *_device(kyber_prekeys, account_id, device_id),
                kyber_prekeys.c.last_resort.is_(False)))).scalar_one()
        return int(ec), int(kyber)

    @writes
    def take_bundles(self, account_id: str, device_ids: Sequence[int] | None) -> list[Bundle]:
        """Bundles for the given devices (all if None), each one-time key handed out once."""
        with self._tx(self.db.writer) as conn:
            query = select(devices.c.device_id, devices.c.registration_id).where(
                devices.c.account_id == account_id).order_by(devices.c.device_id)
            if device_ids is not None:
                query = query.where(devices.c.device_id.in_(list(device_ids)))
            out = []
            for dev in (conn.execute(query)).all():
                bundle = self._take_bundle(conn, account_id, dev.device_id,
                                                 dev.registration_id)
                if bundle is not None:
                    out.append(bundle)
        return out

    def _take_bundle(self, conn: Connection, account_id: str, device_id: int,
                           registration_id: int) -> Bundle | None:
        # Each one-time key is deleted as it is handed out. On PostgreSQL, concurrent
        # takers (other relay processes) lock the key they pick and skip keys others have
        # locked, so none waits for another, and none gets nothing while keys are left
        # (without the lock, a taker that raced another to a key would delete nothing).
        signed = (conn.execute(select(signed_prekeys).where(
            *_device(signed_prekeys, account_id, device_id)))).first()
        if signed is None:
            return None
        kyber_row = (conn.execute(
            delete(kyber_prekeys).where(
                *_device(kyber_prekeys, account_id, device_id),
                kyber_prekeys.c.last_resort.is_(False),
                kyber_prekeys.c.key_id == select(kyber_prekeys.c.key_id).where(
                    *_device(kyber_prekeys, account_id, device_id),
                    kyber_prekeys.c.last_resort.is_(False)).order_by(
                        kyber_prekeys.c.key_id).limit(1).with_for_update(
                            skip_locked=True).scalar_subquery(),
            ).returning(kyber_prekeys.c.key_id, kyber_prekeys.c.public_key,
                        kyber_prekeys.c.signature))).first()
        if kyber_row is None:
            kyber_row = (conn.execute(select(kyber_prekeys).where(
                *_device(kyber_prekeys, account_id, device_id),
                kyber_prekeys.c.last_resort.is_(True)))).first()
        if kyber_row is None:
            return None
        ec_row = (conn.execute(
            delete(one_time_prekeys).where(
                *_device(one_time_prekeys, account_id, device_id),
                one_time_prekeys.c.key_id == select(one_time_prekeys.c.key_id).where(
                    *_device(one_time_prekeys, account_id, device_id)).order_by(
                        one_time_prekeys.c.key_id).limit(1).with_for_update(
                            skip_locked=True).scalar_subquery(),
            ).returning(one_time_prekeys.c.key_id, one_time_prekeys.c.public_key))).first()
        return Bundle(
            device_id=device_id,
            registration_id=registration_id,
            signed_prekey=SignedKey(signed.key_id, signed.public_key, signed.signature),
            kyber_prekey=SignedKey(kyber_row.key_id, kyber_row.public_key, kyber_row.signature),
            one_time_prekey=OneTimeKey(ec_row.key_id, ec_row.public_key) if ec_row else None,
        )

    # -- messages --------------------------------------------------------------------------

    def enqueue(self, account_id: str, outgoing: Sequence[OutgoingMessage], *,
                sender: tuple[str, int] | None, exclude_device: int | None,
                client_timestamp: int, now: int, ttl: int, byte_budget: int,
                on_commit: Callable[[list[Queued]], None] | None = None,
                ) -> asyncio.Future[list[Queued]]:
        """Queue one ciphertext per destination device, atomically, in the next group
        commit. The future gives ``(device_id, envelope)`` pairs of what was queued;
        ``on_commit`` gets them on the event loop right after the commit, in commit order.

        ``exclude_device`` is the sender's own device when it writes to its own account.

        Raises (through the future):
            UnknownAccount: the account does not exist.
            DeviceMismatch: the set of devices differs from the account's.
            StaleDevices: a registration id differs (the device was re-installed).
            QueueFull: a destination queue is over its byte budget.
            RecipientSuspended: the account is suspended (as of ``refresh_suspended``).
        """
        future: asyncio.Future[list[Queued]] = asyncio.get_running_loop().create_future()
        self.enqueue_then(Resolve(future), account_id, outgoing, sender=sender,
                          exclude_device=exclude_device, client_timestamp=client_timestamp,
                          now=now, ttl=ttl, byte_budget=byte_budget, on_commit=on_commit)
        return future

    def enqueue_then(self, done: Done, account_id: str, outgoing: Sequence[OutgoingMessage],
                     *, sender: tuple[str, int] | None, exclude_device: int | None,
                     client_timestamp: int, now: int, ttl: int, byte_budget: int,
                     on_commit: Callable[[list[Queued]], None] | None = None) -> None:
        """:meth:`enqueue` with its outcome told to ``done`` (``group.Done``), on a later
        turn of the event loop than this call's."""
        self.sends.submit(done, account_id, outgoing, sender, exclude_device,
                          client_timestamp, now, ttl, byte_budget, on_commit)

    async def fetch(self, account_id: str, device_id: int, after_seq: int,
                    limit: int) -> list[Envelope]:
        """Queued messages of a device after ``after_seq``, oldest first.

        With SQLite this runs on the event loop (one indexed range read, cheaper than a
        thread hop; WAL readers never wait for the writer), between group commits: the
        queue is ``messages`` and then the device's rows in the queue log."""
        if self.queue_log is None:
            return await self._fetch_on_reader(account_id, device_id, after_seq, limit)
        if not self.queue_log.ready:  # what an earlier process left in the log moves first
            await self._group.flush()
        conn = self._loop_connection()
        rows = _fetch(conn, account_id, device_id, after_seq, limit)
        if len(rows) < limit:
            rows += self.queue_log.read(conn, account_id, device_id,
                                        rows[-1].seq if rows else after_seq,
                                        limit - len(rows))
        return rows

    @reads
    def _fetch_on_reader(self, account_id: str, device_id: int, after_seq: int,
                         limit: int) -> list[Envelope]:
        with self._raw(self.db.reader, write=False) as cur:
            return _fetch(cur, account_id, device_id, after_seq, limit)

    @writes
    def checkpoint(self) -> None:
        """Copy the SQLite WAL back into the database file, as far as readers allow (the
        event loop's connection leaves this to here, off the loop)."""
        if self.db.is_sqlite:
            cursor = self._thread_raw(self.db.writer).cursor()
            try:
                cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                cursor.close()

    def acknowledge(self, account_id: str, device_id: int, guids: Iterable[str], *,
                    lazy: bool = False,
                    sizes: Mapping[str, int] | None = None) -> asyncio.Future[int]:
        """Delete acknowledged messages in the next group commit; the future gives how
        many existed. ``lazy``: nobody waits for the deletion to be durable, so it may
        wait a little for a commit to share (``group.LAZY_WINDOW``). ``sizes``: the
        content length of messages the caller pushed, by id (a connection knows them),
        so that SQLite need not read them back (see ``_delete_known``)."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.acknowledge_then(Resolve(future), account_id, device_id, guids, lazy=lazy,
                              sizes=sizes)
        return future

    def acknowledge_then(self, done: Done, account_id: str, device_id: int,
                         guids: Iterable[str], *, lazy: bool = False,
                         sizes: Mapping[str, int] | None = None) -> None:
        """:meth:`acknowledge` with its outcome told to ``done`` (``group.Done``)."""
        plan = pg_batch.Acknowledge(account_id, device_id, list(guids))
        op = _acknowledge if self.queue_log is None else self.queue_log.acknowledge
        self._group.submit_then(done, functools.partial(op, *plan, sizes=sizes),
                                lock_order=(account_id, device_id), plan=plan, lazy=lazy)

    def acknowledge_later(self, account_id: str, device_id: int,
                          guids: list[str]) -> list[str]:
        """An acknowledgement nobody waits for, taken at once where it can be: on SQLite
        the messages still in the queue log leave it within ``queue_log.DELETE_HOLD``
        seconds, in one statement with the others of that time (``QueueLog.forget``).
        Returns the ids it did not take (all of them on PostgreSQL), for
        :meth:`acknowledge_then`."""
        if self.queue_log is None:
            return guids
        rest = self.queue_log.forget(account_id, device_id, guids)
        if self.queue_log.deletes_waiting and self._delete_timer is None:
            # A transaction within the hold deletes them, if no send brings one sooner.
            self._delete_timer = asyncio.get_running_loop().call_later(
                DELETE_HOLD, self._delete_waiting)
        return rest

    def _delete_waiting(self) -> None:
        self._delete_timer = None
        if self.queue_log is not None and self.queue_log.deletes_waiting:
            self._group.nudge()

    def queue_notice(self, account_id: str, kind: int, content: bytes, now: int, ttl: int,
                     exclude_device: int | None) -> asyncio.Future[list[Queued]]:
        """SQLite: a relay notice appended to the queue log in the next group commit
        (sequence numbers are handed out there; :mod:`.notices` on PostgreSQL)."""
        assert self.queue_log is not None
        return self._group.submit(functools.partial(
            self.queue_log.notice, account_id, kind, content, now, ttl, exclude_device),
            lock_order=(account_id, 0))

    async def flush(self) -> None:
        """Wait until every write submitted so far is committed (lazy ones and waiting
        deletions too)."""
        if self.queue_log is not None:
            self.queue_log.hurry()
        await self._group.flush()

    async def move_queue_log(self, *, everything: bool = False) -> int:
        """Move the queue log's rows that are due to ``messages`` if no group commit will
        soon (an idle relay; called every second by ``app._checkpoints``), or with
        ``everything`` all of its rows at once (when the relay stops, and in tests); how
        many moved."""
        if self.queue_log is None:
            return 0
        if everything:
            return await self._group.submit(self.queue_log.move_all)
        before = self.queue_log.moved
        if self.queue_log.due():
            await self._group.flush()
        return self.queue_log.moved - before

    async def expire(self, now: int) -> int:
        """Delete expired messages; return how many.

        ``expires_at`` has no index (each would cost every send and acknowledgement a
        b-tree more): a device's messages expire in queue order, each getting ``now +
        message_ttl`` when queued, so the devices whose oldest message has expired are
        found with one primary-key read each, on a reader (the writer is not held
        meanwhile), and only their queues are searched, on the writer. After
        ``message_ttl`` is lowered, a message queued with the shorter time goes when the
        older ones before it have gone (expired or acknowledged)."""
        removed = 0
        if self.queue_log is not None:  # a relay idle since, or a clock moved by tests
            removed = await self._group.submit(functools.partial(self.queue_log.expire, now))
        due = await self._devices_with_expired(now)
        if not due:
            return removed
        return removed + await self._expire_devices(due, now)

    @reads
    def _devices_with_expired(self, now: int) -> list[tuple[str, int]]:
        with self._raw(self.db.reader, write=False) as cur:
            rows = cur.execute(
                "SELECT account_id, device_id FROM devices d WHERE (SELECT m.expires_at "
                "FROM messages m WHERE m.account_id = d.account_id "
                "AND m.device_id = d.device_id ORDER BY m.seq LIMIT 1) < ? "
                "ORDER BY account_id, device_id", (now,)).fetchall()
        return [(r[0], int(r[1])) for r in rows]

    @writes
    def _expire_devices(self, due: list[tuple[str, int]], now: int) -> int:
        removed = 0
        with self._tx(self.db.writer) as conn:
            # Device by device in (account, device) order, each device's messages before
            # its row: the locking order of every writer (see ``_delete_device``).
            for account_id, device_id in due:
                sizes = conn.execute(delete(messages).where(
                    *_device(messages, account_id, device_id),
                    messages.c.expires_at < now).returning(
                        func.length(messages.c.content))).scalars().all()
                if sizes:
                    removed += len(sizes)
                    conn.execute(update(devices).where(
                        *_device(devices, account_id, device_id)).values(
                            queued_bytes=devices.c.queued_bytes - sum(sizes)))
        return removed

    # -- attachments -----------------------------------------------------------------------

    @writes
    def add_attachment(self, attachment_id: str, size: int, now: int,
                             expires_at: int) -> None:
        """Record an uploaded blob."""
        with self._tx(self.db.writer) as conn:
            conn.execute(insert(attachments).values(
                id=attachment_id, size=size, created_at=now, expires_at=expires_at))

    @reads
    def attachment_live(self, attachment_id: str, now: int) -> bool:
        """True if the blob exists and has not expired."""
        with self._tx(self.db.reader) as conn:
            expires = (conn.execute(select(attachments.c.expires_at).where(
                attachments.c.id == attachment_id))).scalar_one_or_none()
        return expires is not None and expires >= now

    @writes
    def expire_attachments(self, now: int) -> list[str]:
        """Forget expired blobs; return their ids so the files can be deleted."""
        with self._tx(self.db.writer) as conn:
            rows = (conn.execute(delete(attachments).where(
                attachments.c.expires_at < now).returning(attachments.c.id))).all()
        return [r[0] for r in rows]


class RelayRunning(RuntimeError):
    """Another relay process uses this SQLite database."""


def _lock_relay(db: Database) -> int | None:
    """Hold ``<database>.relay-lock`` (flock, released when the process ends, also by
    SIGKILL): SQLite serves one relay process, whose memory numbers and tracks the
    queue log (:mod:`.queue_log`); a second one would hand out the same numbers."""
    path = db.url.database
    if not path or path == ":memory:":
        return None
    fd = os.open(f"{path}.relay-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RelayRunning(
            f"another relay process uses {path}: SQLite serves one relay process "
            "(for several, use PostgreSQL: docs/deploy.md)") from None
    return fd


def _lost(dbapi: Any) -> bool:
    """True if the pooled DB-API connection ``dbapi`` was closed under us (psycopg closes
    a connection whose server went away; SQLite's never are)."""
    return bool(getattr(dbapi.driver_connection, "closed", False))


def _device(table: Table, account_id: str,
            device_id: int) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return (table.c.account_id == account_id, table.c.device_id == device_id)


def _delete_device(conn: Connection, account_id: str, device_id: int, now: int) -> bool:
    """Delete a device with its keys and queue; False if there was none. Its token's hash
    is kept in ``device_removals``, so that a restore of an older backup cannot bring
    the device back (server/backup.py).

    The locking order of every writer: a device's messages before the device's row (as
    an acknowledgement and ``expire`` do), and device rows in (account, device) order (as
    a send locks them). The queue is deleted once more after the row: a send of another
    relay process that held the row lock has committed its messages by then."""
    where = (account_id, device_id)
    for table in (signed_prekeys, kyber_prekeys, one_time_prekeys, messages, queue_log):
        conn.execute(delete(table).where(*_device(table, *where)))
    removed = conn.execute(delete(devices).where(*_device(devices, *where)).returning(
        devices.c.token_hash)).first()
    if removed is None:
        return False
    conn.execute(delete(messages).where(*_device(messages, *where)))
    tombstone(conn, [bytes(removed.token_hash)], now)
    return True


def tombstone(conn: Connection, token_hashes: Sequence[bytes], now: int) -> None:
    """Remember removed devices' token hashes (once each; the day is enough)."""
    day = now - now % 86_400_000
    for token_hash in token_hashes:
        conn.execute(delete(device_removals).where(device_removals.c.token_hash == token_hash))
        conn.execute(insert(device_removals).values(token_hash=token_hash, removed_at=day))


def _free_device_id(start: int, used: set[int]) -> int:
    for offset in range(127):
        candidate = (start - 1 + offset) % 127 + 1
        if candidate not in used and candidate != 1:
            return candidate
    raise TooManyDevices()


def _upsert_many(conn: Connection, table: Table, account_id: str, device_id: int,
                       rows: list[dict[str, object]]) -> None:
    ids = [r["key_id"] for r in rows]
    conn.execute(delete(table).where(*_device(table, account_id, device_id),
                                           table.c.key_id.in_(ids)))
    conn.execute(insert(table), [
        {"account_id": account_id, "device_id": device_id, **r} for r in rows])


def _audit(conn: Connection, now: int, account_id: str, device_id: int | None,
                 event: str) -> None:
    audit.append(conn, now, account_id, device_id, event)


class _TableSends:
    """Sends straight into ``messages`` (PostgreSQL, or a program other than the relay
    on SQLite), each with its batch plan (:mod:`.pg_batch`); the counterpart of
    :class:`.queue_log.Sends`."""

    def __init__(self, group: GroupCommit, accounts: Suspensions) -> None:
        self._group = group
        self._accounts = accounts

    def submit(self, done: Done, account_id: str, outgoing: Sequence[OutgoingMessage],
               sender: tuple[str, int] | None, exclude_device: int | None,
               client_timestamp: int, now: int, ttl: int, byte_budget: int,
               on_commit: Callable[[list[Queued]], None] | None) -> None:
        """See ``Storage.enqueue_then``."""
        if account_id in self._accounts.suspended:
            asyncio.get_running_loop().call_soon(done, False, RecipientSuspended(account_id))
            return
        plan = pg_batch.Enqueue(account_id, outgoing, sender, exclude_device,
                                client_timestamp, now, ttl, byte_budget)
        self._group.submit_then(done, functools.partial(_enqueue, *plan), on_commit,
                                lock_order=(account_id, 0), plan=plan)


def _enqueue(account_id: str, outgoing: Sequence[OutgoingMessage],
             sender: tuple[str, int] | None, exclude_device: int | None,
             client_timestamp: int, now: int, ttl: int, byte_budget: int,
             cur: Any) -> list[Queued]:
    # The account's device rows are locked (PostgreSQL; SQLite's writer holds the whole
    # database) before they are checked, in device order, until COMMIT: another relay
    # process's send to them waits, so the queue budget counts its bytes, a device
    # removed meanwhile is seen as gone (nothing is queued for it), and each device's
    # sequence numbers commit in order.
    locking = isinstance(cur, _PostgresCursor)
    rows = cur.execute(_DEVICES_LOCKED if locking else _DEVICES, (account_id,)).fetchall()
    if not rows:
        raise UnknownAccount(account_id)
    current = {int(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in rows
               if r[0] != exclude_device}
    check_send(cur, account_id, current, {m.device_id: m for m in outgoing}, byte_budget,
               nothing_logged)
    queued = []
    sender_account, sender_device = sender if sender else (None, None)
    expires_at = now + ttl * 1000
    for m in outgoing:
        # The row read above is the current one (this transaction holds it, see above):
        # its next number is known without UPDATE ... RETURNING, which costs SQLite
        # twice a plain UPDATE.
        seq = current[m.device_id][2] + 1
        guid = envelope_id(seq)
        cur.execute(
            "UPDATE devices SET queued_bytes = queued_bytes + ?, last_seq = ? "
            "WHERE account_id = ? AND device_id = ?",
            (len(m.content), seq, account_id, m.device_id))
        cur.execute(
            "INSERT INTO messages (guid, account_id, device_id, seq, sender_account_id, "
            "sender_device_id, type, content, client_timestamp, server_timestamp, "
            "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (guid, account_id, m.device_id, seq, sender_account, sender_device, m.type,
             m.content, client_timestamp, now, expires_at))
        queued.append((m.device_id, Envelope(int(seq), guid, sender_account,
                                             sender_device, m.type, m.content,
                                             client_timestamp, now)))
    return queued


_DEVICES = DEVICES
#: PostgreSQL's form; SQLite has no FOR UPDATE (its writer holds the whole database).
_DEVICES_LOCKED = _DEVICES + " FOR UPDATE"


def _acknowledge(account_id: str, device_id: int, guids: list[str], cur: Any, *,
                 sizes: Mapping[str, int] | None = None) -> int:
    # Messages before their device's row, like ``expire`` and ``remove_device``.
    if not guids:
        return 0
    seqs: list[int] = []
    ours: list[str] = []
    older: list[str] = []
    known: dict[str, tuple[int, int]] = {}
    for guid in guids:
        seq = seq_of(guid)
        if seq is None:
            older.append(guid)
        elif sizes is not None and guid in sizes:
            known[guid] = (seq, sizes[guid])
        else:
            seqs.append(seq)
            ours.append(guid)
    freed = found = 0
    if known:
        if isinstance(cur, _PostgresCursor):  # one statement returns the sizes there
            for guid, (seq, _size) in known.items():
                seqs.append(seq)
                ours.append(guid)
        else:
            size, n = _delete_known(cur, account_id, device_id, known)
            freed, found = freed + size, found + n
    if ours:
        # Found by primary key; deleted only if the whole id matches (an id carries its
        # seq, so no row has another message's id: see :mod:`.envelope_ids`).
        marks = ",".join("?" * len(ours))
        size, n = _delete_queued(
            cur, f"seq IN ({marks}) AND guid IN ({marks})",
            (account_id, device_id, *seqs, *ours))
        freed, found = freed + size, found + n
    if older:
        # Ids of rows queued before migration 0008: a scan of the device's queue.
        marks = ",".join("?" * len(older))
        size, n = _delete_queued(cur, f"guid IN ({marks})", (account_id, device_id, *older))
        freed, found = freed + size, found + n
    if freed:
        cur.execute("UPDATE devices SET queued_bytes = queued_bytes - ? "
                    "WHERE account_id = ? AND device_id = ?", (freed, account_id, device_id))
    return found


_DELETE_ONE = ("DELETE FROM messages WHERE account_id = ? AND device_id = ? AND seq = ? "
               "AND guid = ?")


def _delete_known(cur: Any, account_id: str, device_id: int,
                  known: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """Delete messages whose (seq, content length) the caller knew, one ``DELETE`` each:
    a statement's row count (0 or 1: the primary key and the whole id) says whether that
    very message was still queued, so its bytes are freed without reading it first (the
    ``SELECT length(content)`` of ``_delete_queued`` cost an ack more than its DELETE)."""
    freed = found = 0
    for guid, (seq, size) in known.items():
        if cur.execute(_DELETE_ONE, (account_id, device_id, seq, guid)).rowcount == 1:
            freed += size
            found += 1
    return freed, found


def _delete_queued(cur: Any, condition: str, params: tuple[Any, ...]) -> tuple[int, int]:
    """Delete a device's queued messages matching ``condition``; their bytes and count."""
    where = f"FROM messages WHERE account_id = ? AND device_id = ? AND {condition}"
    if isinstance(cur, _PostgresCursor):
        rows = cur.execute(f"DELETE {where} RETURNING length(content)", params).fetchall()
    else:
        # SQLite runs DELETE ... RETURNING in two passes through a temporary table, at
        # about six times a plain DELETE's cost here. Its writer holds the whole database
        # until COMMIT, so the rows read are the rows deleted.
        rows = cur.execute(f"SELECT length(content) {where}", params).fetchall()
        if rows:
            cur.execute(f"DELETE {where}", params)
    return sum(int(r[0]) for r in rows), len(rows)


class _PostgresCursor:
    """A psycopg cursor that takes the qmark-style SQL written for SQLite's driver."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self._cursor.execute(_format_style(sql), params)
        return self._cursor

    @property
    def raw(self) -> Any:
        """The psycopg cursor itself (for SQL written in its own ``%s`` style)."""
        return self._cursor

    def close(self) -> None:
        self._cursor.close()


def _apply_plans(cursor: _PostgresCursor, plans: list[pg_batch.Plan]) -> pg_batch.Results:
    """A PostgreSQL group commit's sends and acknowledgements in a few statements."""
    return pg_batch.apply(cursor.raw, plans, envelope_id)


@functools.lru_cache(maxsize=256)
def _format_style(sql: str) -> str:
    """qmark placeholders as psycopg's ``%s`` (no string literal in our SQL holds a ``?``)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _fetch(db: Any, account_id: str, device_id: int, after_seq: int,
           limit: int) -> list[Envelope]:
    rows = db.execute(
        "SELECT seq, guid, sender_account_id, sender_device_id, type, content, "
        "client_timestamp, server_timestamp FROM messages WHERE account_id = ? "
        "AND device_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (account_id, device_id, after_seq, limit)).fetchall()
    return [envelope_of(r) for r in rows]
