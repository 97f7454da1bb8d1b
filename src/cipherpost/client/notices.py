"""Server notices about our own account (docs/server.md, "Login notices"): envelopes of
type 0 with no sender, holding a small JSON object the relay wrote. Clients cannot send
type 0, so no contact can forge one; the relay itself can (and can stay silent)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from . import events as ev

NOTICE_TYPE = 0
_MAX = 4096

_SENTENCES = {
    "device_added": "a new device joined",
    "recovery": "its recovery blob was opened (someone restored the account)",
    "identity_reset": "its identity key was reset",
    "recovery_changed": "its recovery secrets changed",
    "two_factor_enabled": "a second factor was turned on",
    "two_factor_disabled": "the second factor was turned off",
}


def parse(content: bytes) -> ev.AccountNotice | ev.Unsupported:
    """The notice in an envelope's content, or Unsupported when it is not one."""
    try:
        data = json.loads(content[:_MAX]) if len(content) <= _MAX else None
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str) \
            or not isinstance(data.get("at"), int) or isinstance(data.get("at"), bool):
        return ev.Unsupported("", 0, "a malformed server notice")
    device = data.get("device_id")
    name = data.get("name")
    via = data.get("via") or data.get("what")
    return ev.AccountNotice(
        kind=data["kind"][:64], at=data["at"],
        device_id=device if isinstance(device, int) and not isinstance(device, bool) else None,
        name=name[:64] if isinstance(name, str) else "",
        via=via[:64] if isinstance(via, str) else "")


def describe(notice: ev.AccountNotice) -> str:
    """One sentence for a person (the time in UTC, to the minute)."""
    when = datetime.fromtimestamp(notice.at / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    what = _SENTENCES.get(notice.kind, notice.kind.replace("_", " "))
    parts = [f"{when}: {what}"]
    if notice.device_id is not None:
        parts.append(f"device {notice.device_id}" + (f" \"{notice.name}\"" if notice.name
                                                      else ""))
    if notice.via:
        parts.append(f"via {notice.via.replace('_', ' ')}")
    return ", ".join(parts)
