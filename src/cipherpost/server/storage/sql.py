"""The relay's storage on SQLAlchemy Core, for SQLite and (later) PostgreSQL.

Every method is one transaction. Writes go through the writer engine; reads through the
reader pool. Nothing here knows HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from sqlalchemy import ColumnElement, Table, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from .engine import Database
from .models import (
    Account,
    Bundle,
    Device,
    DeviceMismatch,
    Envelope,
    KeyUpload,
    NewDevice,
    OneTimeKey,
    OutgoingMessage,
    QueueFull,
    SignedKey,
    StaleDevices,
    TooManyDevices,
    UsernameTaken,
)
from .schema import (
    accounts,
    attachments,
    audit_log,
    devices,
    kyber_prekeys,
    link_codes,
    messages,
    one_time_prekeys,
    signed_prekeys,
)


class Storage:
    """All persistent state of the relay."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- accounts and devices --------------------------------------------------------------

    async def create_account(self, account_id: str, username: str | None, identity_key: bytes,
                             device: NewDevice, now: int) -> None:
        """Create an account with its first device (id 1).

        Raises:
            UsernameTaken: the username is in use.
        """
        try:
            async with self.db.writer.begin() as conn:
                await conn.execute(insert(accounts).values(
                    id=account_id, username=username, identity_key=identity_key,
                    next_device_id=2, created_at=now))
                await self._insert_device(conn, account_id, 1, device, now)
                await _audit(conn, now, account_id, 1, "account_created")
        except IntegrityError:
            raise UsernameTaken() from None

    async def _insert_device(self, conn: AsyncConnection, account_id: str, device_id: int,
                             device: NewDevice, now: int) -> None:
        await conn.execute(insert(devices).values(
            account_id=account_id, device_id=device_id,
            registration_id=device.registration_id, token_hash=device.token_hash,
            name=device.name, queued_bytes=0, created_at=now, last_seen=now))
        await self._store_keys(conn, account_id, device_id, device.keys)

    async def add_device(self, account_id: str, device: NewDevice, max_devices: int,
                         now: int) -> int:
        """Add a device; return its id.

        Raises:
            TooManyDevices: the account has ``max_devices`` already.
            LookupError: the account does not exist.
        """
        async with self.db.writer.begin() as conn:
            row = (await conn.execute(select(accounts.c.next_device_id).where(
                accounts.c.id == account_id))).first()
            if row is None:
                raise LookupError(account_id)
            count = (await conn.execute(select(func.count()).select_from(devices).where(
                devices.c.account_id == account_id))).scalar_one()
            if count >= max_devices:
                raise TooManyDevices()
            device_id = _free_device_id(row.next_device_id, await self._device_ids(conn,
                                                                                   account_id))
            await self._insert_device(conn, account_id, device_id, device, now)
            await conn.execute(update(accounts).where(accounts.c.id == account_id).values(
                next_device_id=device_id % 127 + 1))
            await _audit(conn, now, account_id, device_id, "device_added")
        return device_id

    async def _device_ids(self, conn: AsyncConnection, account_id: str) -> set[int]:
        rows = await conn.execute(select(devices.c.device_id).where(
            devices.c.account_id == account_id))
        return {r.device_id for r in rows}

    async def remove_device(self, account_id: str, device_id: int, now: int) -> bool:
        """Delete a device with its keys and queue. Device 1 cannot be removed."""
        async with self.db.writer.begin() as conn:
            result = await conn.execute(delete(devices).where(
                devices.c.account_id == account_id, devices.c.device_id == device_id))
            if not result.rowcount:
                return False
            for table in (signed_prekeys, kyber_prekeys, one_time_prekeys, messages):
                await conn.execute(delete(table).where(
                    table.c.account_id == account_id, table.c.device_id == device_id))
            await _audit(conn, now, account_id, device_id, "device_removed")
        return True

    async def get_account(self, account_id: str) -> Account | None:
        """The account, if it exists."""
        async with self.db.reader.connect() as conn:
            row = (await conn.execute(select(accounts).where(
                accounts.c.id == account_id))).first()
        return Account(row.id, row.username, row.identity_key) if row else None

    async def find_username(self, username: str) -> str | None:
        """The account id owning ``username``."""
        async with self.db.reader.connect() as conn:
            return (await conn.execute(select(accounts.c.id).where(
                accounts.c.username == username))).scalar_one_or_none()

    async def set_username(self, account_id: str, username: str | None, now: int) -> None:
        """Change (or clear) the username.

        Raises:
            UsernameTaken: another account has it.
        """
        try:
            async with self.db.writer.begin() as conn:
                await conn.execute(update(accounts).where(accounts.c.id == account_id).values(
                    username=username))
                await _audit(conn, now, account_id, None, "username_changed")
        except IntegrityError:
            raise UsernameTaken() from None

    async def device_token_hash(self, account_id: str, device_id: int) -> bytes | None:
        """The stored token hash of a device, or None if it does not exist."""
        async with self.db.reader.connect() as conn:
            return (await conn.execute(select(devices.c.token_hash).where(
                devices.c.account_id == account_id,
                devices.c.device_id == device_id))).scalar_one_or_none()

    async def list_devices(self, account_id: str) -> list[Device]:
        """The account's devices in id order."""
        async with self.db.reader.connect() as conn:
            rows = await conn.execute(select(devices).where(
                devices.c.account_id == account_id).order_by(devices.c.device_id))
            return [Device(r.device_id, r.registration_id, r.name, r.created_at, r.last_seen)
                    for r in rows]

    async def create_link_code(self, code_hash: bytes, account_id: str, expires_at: int,
                               now: int) -> None:
        """Remember a one-time device-link code (stored only as a hash)."""
        async with self.db.writer.begin() as conn:
            await conn.execute(delete(link_codes).where(link_codes.c.expires_at < now))
            await conn.execute(insert(link_codes).values(
                code_hash=code_hash, account_id=account_id, expires_at=expires_at))

    async def consume_link_code(self, code_hash: bytes, now: int) -> str | None:
        """The account a valid code links to; the code is spent either way."""
        async with self.db.writer.begin() as conn:
            row = (await conn.execute(delete(link_codes).where(
                link_codes.c.code_hash == code_hash).returning(
                    link_codes.c.account_id, link_codes.c.expires_at))).first()
        if row is None or row.expires_at < now:
            return None
        account_id: str = row.account_id
        return account_id

    # -- prekeys ---------------------------------------------------------------------------

    async def store_keys(self, account_id: str, device_id: int, keys: KeyUpload) -> None:
        """Replace the signed and last-resort keys given; add one-time keys."""
        async with self.db.writer.begin() as conn:
            await self._store_keys(conn, account_id, device_id, keys)

    async def _store_keys(self, conn: AsyncConnection, account_id: str, device_id: int,
                          keys: KeyUpload) -> None:
        where = (account_id, device_id)
        if keys.signed_prekey is not None:
            k = keys.signed_prekey
            await conn.execute(delete(signed_prekeys).where(*_device(signed_prekeys, *where)))
            await conn.execute(insert(signed_prekeys).values(
                account_id=account_id, device_id=device_id, key_id=k.key_id,
                public_key=k.public_key, signature=k.signature))
        if keys.last_resort_kyber is not None:
            k = keys.last_resort_kyber
            await conn.execute(delete(kyber_prekeys).where(
                *_device(kyber_prekeys, *where), kyber_prekeys.c.last_resort.is_(True)))
            await conn.execute(insert(kyber_prekeys).values(
                account_id=account_id, device_id=device_id, key_id=k.key_id, last_resort=True,
                public_key=k.public_key, signature=k.signature))
        if keys.one_time_prekeys:
            await _upsert_many(conn, one_time_prekeys, account_id, device_id, [
                {"key_id": k.key_id, "public_key": k.public_key} for k in keys.one_time_prekeys])
        if keys.kyber_prekeys:
            await _upsert_many(conn, kyber_prekeys, account_id, device_id, [
                {"key_id": k.key_id, "public_key": k.public_key, "signature": k.signature,
                 "last_resort": False} for k in keys.kyber_prekeys])

    async def key_counts(self, account_id: str, device_id: int) -> tuple[int, int]:
        """(one-time EC prekeys, one-time Kyber prekeys) left for the device."""
        async with self.db.reader.connect() as conn:
            ec = (await conn.execute(select(func.count()).select_from(one_time_prekeys).where(
                *_device(one_time_prekeys, account_id, device_id)))).scalar_one()
            kyber = (await conn.execute(select(func.count()).select_from(kyber_prekeys).where(
                *_device(kyber_prekeys, account_id, device_id),
                kyber_prekeys.c.last_resort.is_(False)))).scalar_one()
        return int(ec), int(kyber)

    async def take_bundles(self, account_id: str, device_ids: Sequence[int] | None) -> list[Bundle]:
        """Bundles for the given devices (all if None), each one-time key handed out once."""
        async with self.db.writer.begin() as conn:
            query = select(devices.c.device_id, devices.c.registration_id).where(
                devices.c.account_id == account_id).order_by(devices.c.device_id)
            if device_ids is not None:
                query = query.where(devices.c.device_id.in_(list(device_ids)))
            out = []
            for dev in (await conn.execute(query)).all():
                bundle = await self._take_bundle(conn, account_id, dev.device_id,
                                                 dev.registration_id)
                if bundle is not None:
                    out.append(bundle)
        return out

    async def _take_bundle(self, conn: AsyncConnection, account_id: str, device_id: int,
                           registration_id: int) -> Bundle | None:
        signed = (await conn.execute(select(signed_prekeys).where(
            *_device(signed_prekeys, account_id, device_id)))).first()
        if signed is None:
            return None
        kyber_row = (await conn.execute(
            delete(kyber_prekeys).where(
                *_device(kyber_prekeys, account_id, device_id),
                kyber_prekeys.c.last_resort.is_(False),
                kyber_prekeys.c.key_id == select(kyber_prekeys.c.key_id).where(
                    *_device(kyber_prekeys, account_id, device_id),
                    kyber_prekeys.c.last_resort.is_(False)).order_by(
                        kyber_prekeys.c.key_id).limit(1).scalar_subquery(),
            ).returning(kyber_prekeys.c.key_id, kyber_prekeys.c.public_key,
                        kyber_prekeys.c.signature))).first()
        if kyber_row is None:
            kyber_row = (await conn.execute(select(kyber_prekeys).where(
                *_device(kyber_prekeys, account_id, device_id),
                kyber_prekeys.c.last_resort.is_(True)))).first()
        if kyber_row is None:
            return None
        ec_row = (await conn.execute(
            delete(one_time_prekeys).where(
                *_device(one_time_prekeys, account_id, device_id),
                one_time_prekeys.c.key_id == select(one_time_prekeys.c.key_id).where(
                    *_device(one_time_prekeys, account_id, device_id)).order_by(
                        one_time_prekeys.c.key_id).limit(1).scalar_subquery(),
            ).returning(one_time_prekeys.c.key_id, one_time_prekeys.c.public_key))).first()
        return Bundle(
            device_id=device_id,
            registration_id=registration_id,
            signed_prekey=SignedKey(signed.key_id, signed.public_key, signed.signature),
            kyber_prekey=SignedKey(kyber_row.key_id, kyber_row.public_key, kyber_row.signature),
            one_time_prekey=OneTimeKey(ec_row.key_id, ec_row.public_key) if ec_row else None,
        )

    # -- messages --------------------------------------------------------------------------

    async def enqueue(self, account_id: str, outgoing: Sequence[OutgoingMessage], *,
                      sender: tuple[str, int] | None, exclude_device: int | None,
                      client_timestamp: int, now: int, ttl: int,
                      byte_budget: int) -> list[tuple[int, int]]:
        """Queue one ciphertext per destination device, atomically.

        ``exclude_device`` is the sender's own device when it writes to its own account.
        Returns ``(device_id, seq)`` pairs of what was queued.

        Raises:
            LookupError: the account does not exist.
            DeviceMismatch: the set of devices differs from the account's.
            StaleDevices: a registration id differs (the device was re-installed).
            QueueFull: a destination queue is over its byte budget.
        """
        async with self.db.writer.begin() as conn:
            rows = (await conn.execute(select(
                devices.c.device_id, devices.c.registration_id, devices.c.queued_bytes).where(
                    devices.c.account_id == account_id))).all()
            if not rows:
                raise LookupError(account_id)
            current = {r.device_id: r for r in rows if r.device_id != exclude_device}
            given = {m.device_id: m for m in outgoing}
            missing = sorted(set(current) - set(given))
            extra = sorted(set(given) - set(current))
            if missing or extra:
                raise DeviceMismatch(missing, extra)
            stale = sorted(d for d, m in given.items()
                           if current[d].registration_id != m.registration_id)
            if stale:
                raise StaleDevices(stale)
            full = sorted(d for d, m in given.items()
                          if current[d].queued_bytes + len(m.content) > byte_budget)
            if full:
                raise QueueFull(full)
            queued = []
            for m in outgoing:
                result = await conn.execute(insert(messages).values(
                    guid=str(uuid.uuid4()), account_id=account_id, device_id=m.device_id,
                    sender_account_id=sender[0] if sender else None,
                    sender_device_id=sender[1] if sender else None,
                    type=m.type, content=m.content, client_timestamp=client_timestamp,
                    server_timestamp=now, expires_at=now + ttl * 1000))
                pk = result.inserted_primary_key
                assert pk is not None
                queued.append((m.device_id, int(pk[0])))
                await conn.execute(update(devices).where(
                    devices.c.account_id == account_id, devices.c.device_id == m.device_id
                ).values(queued_bytes=devices.c.queued_bytes + len(m.content)))
        return queued

    async def fetch(self, account_id: str, device_id: int, after_seq: int,
                    limit: int) -> list[Envelope]:
        """Queued messages of a device after ``after_seq``, oldest first."""
        async with self.db.reader.connect() as conn:
            rows = await conn.execute(select(messages).where(
                messages.c.account_id == account_id, messages.c.device_id == device_id,
                messages.c.id > after_seq).order_by(messages.c.id).limit(limit))
            return [Envelope(r.id, r.guid, r.sender_account_id, r.sender_device_id, r.type,
                             r.content, r.client_timestamp, r.server_timestamp) for r in rows]

    async def acknowledge(self, account_id: str, device_id: int, guids: Iterable[str]) -> int:
        """Delete acknowledged messages; return how many existed."""
        guid_list = list(guids)
        if not guid_list:
            return 0
        async with self.db.writer.begin() as conn:
            rows = (await conn.execute(delete(messages).where(
                messages.c.account_id == account_id, messages.c.device_id == device_id,
                messages.c.guid.in_(guid_list)).returning(
                    func.length(messages.c.content)))).all()
            freed = sum(int(r[0]) for r in rows)
            if freed:
                await conn.execute(update(devices).where(
                    devices.c.account_id == account_id, devices.c.device_id == device_id
                ).values(queued_bytes=devices.c.queued_bytes - freed))
        return len(rows)

    async def expire(self, now: int) -> int:
        """Delete expired messages and attachment rows; return the messages removed."""
        async with self.db.writer.begin() as conn:
            rows = (await conn.execute(delete(messages).where(
                messages.c.expires_at < now).returning(
                    messages.c.account_id, messages.c.device_id,
                    func.length(messages.c.content)))).all()
            freed: dict[tuple[str, int], int] = {}
            for r in rows:
                freed[(r[0], r[1])] = freed.get((r[0], r[1]), 0) + int(r[2])
            for (account_id, device_id), size in freed.items():
                await conn.execute(update(devices).where(
                    devices.c.account_id == account_id, devices.c.device_id == device_id
                ).values(queued_bytes=devices.c.queued_bytes - size))
        return len(rows)

    # -- attachments -----------------------------------------------------------------------

    async def add_attachment(self, attachment_id: str, size: int, now: int,
                             expires_at: int) -> None:
        """Record an uploaded blob."""
        async with self.db.writer.begin() as conn:
            await conn.execute(insert(attachments).values(
                id=attachment_id, size=size, created_at=now, expires_at=expires_at))

    async def attachment_live(self, attachment_id: str, now: int) -> bool:
        """True if the blob exists and has not expired."""
        async with self.db.reader.connect() as conn:
            expires = (await conn.execute(select(attachments.c.expires_at).where(
                attachments.c.id == attachment_id))).scalar_one_or_none()
        return expires is not None and expires >= now

    async def expire_attachments(self, now: int) -> list[str]:
        """Forget expired blobs; return their ids so the files can be deleted."""
        async with self.db.writer.begin() as conn:
            rows = (await conn.execute(delete(attachments).where(
                attachments.c.expires_at < now).returning(attachments.c.id))).all()
        return [r[0] for r in rows]


def _device(table: Table, account_id: str,
            device_id: int) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return (table.c.account_id == account_id, table.c.device_id == device_id)


def _free_device_id(start: int, used: set[int]) -> int:
    for offset in range(127):
        candidate = (start - 1 + offset) % 127 + 1
        if candidate not in used and candidate != 1:
            return candidate
    raise TooManyDevices()


async def _upsert_many(conn: AsyncConnection, table: Table, account_id: str, device_id: int,
                       rows: list[dict[str, object]]) -> None:
    ids = [r["key_id"] for r in rows]
    await conn.execute(delete(table).where(*_device(table, account_id, device_id),
                                           table.c.key_id.in_(ids)))
    await conn.execute(insert(table), [
        {"account_id": account_id, "device_id": device_id, **r} for r in rows])


async def _audit(conn: AsyncConnection, now: int, account_id: str, device_id: int | None,
                 event: str) -> None:
    await conn.execute(insert(audit_log).values(at=now, account_id=account_id,
                                                device_id=device_id, event=event))
