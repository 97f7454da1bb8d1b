"""Retention: what the relay deletes on a schedule (once a minute, ``app._janitor``) and
``cipherpost-admin retention apply`` runs at once."""

from __future__ import annotations

from dataclasses import dataclass

from .api.attachments import blob_path
from .settings import Settings
from .storage import history as history_store
from .storage.sql import Storage


@dataclass(frozen=True)
class Applied:
    """What one pass deleted."""

    messages_expired: int
    attachments_expired: int
    history_entries_expired: int
    #: (account id, device id) of devices removed for being idle.
    idle_devices: list[tuple[str, int]]


async def apply(storage: Storage, settings: Settings, now: int) -> Applied:
    """Expire messages, attachments (rows and files) and history past their retention,
    and remove idle devices (``settings.device_idle_days``)."""
    messages = await storage.expire(now)
    expired = await storage.expire_attachments(now)
    for attachment_id in expired:
        blob_path(settings.attachment_dir, attachment_id).unlink(missing_ok=True)
    entries = await history_store.expire_history(storage, now)
    idle: list[tuple[str, int]] = []
    if settings.device_idle_days > 0:
        cutoff = now - settings.device_idle_days * 86_400_000
        idle = await storage.remove_idle_devices(cutoff, now)
    return Applied(messages, len(expired), entries, idle)
