"""Telling every device of an account what happened to it (docs/server.md, "Login
notices"): a new device, a recovery, an identity reset, second-factor changes.

The details are coarse on purpose: what happened, when (to the minute), which device id
and the name it gave itself. Never an address, a user agent or a location.
"""

from __future__ import annotations

import json
import logging

from .relay import Relay
from .storage.notices import queue_notice

log = logging.getLogger("cipherpost.server")

DEVICE_ADDED = "device_added"
RECOVERY = "recovery"
IDENTITY_RESET = "identity_reset"
RECOVERY_CHANGED = "recovery_changed"
TWO_FACTOR_ENABLED = "two_factor_enabled"
TWO_FACTOR_DISABLED = "two_factor_disabled"
MINUTE_MS = 60_000


async def notify(relay: Relay, account_id: str, kind: str, *,
                 exclude_device: int | None = None,
                 **details: str | int | None) -> None:
    """Queue a notice of ``kind`` for the account's devices (but ``exclude_device``, the
    one that acted). Runs after the action committed; a failure here is logged, and the
    action stands (its audit entry records it either way)."""
    now = relay.now_ms()
    body = {"v": 1, "kind": kind, "at": now - now % MINUTE_MS,
            **{k: v for k, v in details.items() if v is not None}}
    content = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    try:
        queued = await queue_notice(relay.storage, account_id, content, now,
                                    relay.settings.message_ttl, exclude_device)
    except Exception:
        log.exception("a notice could not be queued")
        return
    for device_id, envelope in queued:
        relay.hub.deliver(account_id, device_id, envelope)
