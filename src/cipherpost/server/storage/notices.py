"""Server notices: short statements from the relay queued for an account's devices like
messages (docs/server.md, "Login notices").

A notice is an envelope of type :data:`NOTICE_TYPE` with no sender, whose content is a
small JSON object the relay wrote (never anything a client sent: clients can only send
types 1 to 255). It travels, waits and is acknowledged like any envelope, so a device
that is offline is told when it comes back.
"""

from __future__ import annotations

from sqlalchemy import insert, select, update

from .envelope_ids import envelope_id
from .models import Envelope
from .schema import devices, messages
from .sql import Queued, Storage, writes

#: The envelope type of a server notice (0: below every type a client may send).
NOTICE_TYPE = 0


async def queue_notice(storage: Storage, account_id: str, content: bytes, now: int,
                       ttl: int, exclude_device: int | None) -> list[Queued]:
    """Queue ``content`` for every device of the account but ``exclude_device``; the
    queued envelopes, to hand to live connections after the commit. On SQLite through
    the queue log, which hands out sequence numbers there (:mod:`.queue_log`)."""
    if storage.queue_log is not None:
        return await storage.queue_notice(account_id, NOTICE_TYPE, content, now, ttl,
                                          exclude_device)
    return await _queue_notice(storage, account_id, content, now, ttl, exclude_device)


@writes
def _queue_notice(storage: Storage, account_id: str, content: bytes, now: int, ttl: int,
                  exclude_device: int | None) -> list[Queued]:
    queued: list[Queued] = []
    with storage._tx(storage.db.writer) as conn:
        # Device rows are locked in device order, as a send locks them.
        targets = [r.device_id for r in conn.execute(
            select(devices.c.device_id).where(devices.c.account_id == account_id)
            .order_by(devices.c.device_id).with_for_update())
            if r.device_id != exclude_device]
        for device_id in targets:
            seq = int(conn.execute(update(devices).where(
                devices.c.account_id == account_id, devices.c.device_id == device_id
            ).values(last_seq=devices.c.last_seq + 1,
                     queued_bytes=devices.c.queued_bytes + len(content)).returning(
                devices.c.last_seq)).scalar_one())
            guid = envelope_id(seq)
            conn.execute(insert(messages).values(
                guid=guid, account_id=account_id, device_id=device_id, seq=seq,
                sender_account_id=None, sender_device_id=None, type=NOTICE_TYPE,
                content=content, client_timestamp=now, server_timestamp=now,
                expires_at=now + ttl * 1000))
            queued.append((device_id, Envelope(seq, guid, None, None, NOTICE_TYPE, content,
                                               now, now)))
    return queued
