"""Sealed sender's state (docs/server.md, "Sealed sender"): per account, a hash of the
unidentified-access key (UAK) that authorises sealed sends to it; per device, whether it
opens sealed envelopes (a device that cannot, such as the browser client for now, must
get identified ones). Functions here run on the storage's threads like
:class:`.sql.Storage`'s methods and take the storage as their first argument.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update

from .schema import devices, unidentified_access
from .sql import Storage, reads, writes


@dataclass(frozen=True)
class SealedRecipient:
    """What a sealed send to an account is checked against."""

    key_hash: bytes | None
    #: The account's devices that open sealed envelopes.
    capable_devices: frozenset[int]
    #: All of its devices.
    devices: frozenset[int]


@writes
def set_access_key(storage: Storage, account_id: str, device_id: int,
                   key_hash: bytes | None, now: int) -> None:
    """Store (or with None, remove) the hash of the account's UAK, and mark the calling
    device as one that opens sealed envelopes."""
    with storage._tx(storage.db.writer) as conn:
        conn.execute(delete(unidentified_access).where(
            unidentified_access.c.account_id == account_id))
        if key_hash is not None:
            conn.execute(insert(unidentified_access).values(
                account_id=account_id, key_hash=key_hash, updated_at=now))
        conn.execute(update(devices).where(
            devices.c.account_id == account_id, devices.c.device_id == device_id
        ).values(sealed_sender=True))


@reads
def recipient(storage: Storage, account_id: str) -> SealedRecipient:
    """The UAK hash and devices of an account (nothing for an unknown one)."""
    with storage._tx(storage.db.reader) as conn:
        key_hash = conn.execute(select(unidentified_access.c.key_hash).where(
            unidentified_access.c.account_id == account_id)).scalar_one_or_none()
        rows = conn.execute(select(devices.c.device_id, devices.c.sealed_sender).where(
            devices.c.account_id == account_id)).all()
    return SealedRecipient(None if key_hash is None else bytes(key_hash),
                           frozenset(r.device_id for r in rows if r.sealed_sender),
                           frozenset(r.device_id for r in rows))



@reads
def registration(storage: Storage, account_id: str,
                 device_id: int) -> tuple[bytes | None, bool]:
    """The account's UAK hash (None without one) and whether ``device_id`` is marked as
    opening sealed envelopes: what a device checks to find out that the relay lost its
    registration, e.g. in a restore (review 2026-11-29-sealed-ops, R5)."""
    with storage._tx(storage.db.reader) as conn:
        key_hash = conn.execute(select(unidentified_access.c.key_hash).where(
            unidentified_access.c.account_id == account_id)).scalar_one_or_none()
        opens = conn.execute(select(devices.c.sealed_sender).where(
            devices.c.account_id == account_id,
            devices.c.device_id == device_id)).scalar_one_or_none()
    return None if key_hash is None else bytes(key_hash), bool(opens)
