"""The privacy dashboard: what the relay holds about the calling account, its export as a
file, and deleting the account with all of it (docs/server.md, "Privacy dashboard").

Deleting history and removing devices are the existing ``DELETE /v1/history`` and
``DELETE /v1/devices/{id}``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from ..archives import Archives
from ..errors import not_found
from ..relay import Relay
from ..storage import account_data
from .deps import DeviceDep, RelayDep
from .two_factor import require_second_factor

router = APIRouter(prefix="/v1/accounts/me", tags=["privacy"])

#: Token buckets keyed by the account alone (others are per address or per pair).
_ACCOUNT_LIMITS = ("prekeys", "provisioning_put", "provisioning_claim", "history_put")
DAY_S = 86_400


class DeviceHeldOut(BaseModel):
    device_id: int
    name: str | None
    created_day: int = Field(description="days since 1970-01-01 (UTC)")
    last_seen_day: int
    queued_messages: int
    queued_bytes: int
    one_time_prekeys: int
    kyber_prekeys: int
    opens_sealed: bool = Field(description="registered as opening sealed envelopes")


class AuditEventOut(BaseModel):
    at: int
    device_id: int | None
    event: str


class RateLimitOut(BaseModel):
    limit: str
    remaining: int
    capacity: int


class RetentionOut(BaseModel):
    queued_message_days: int = Field(description="unacknowledged messages expire after")
    attachment_days: int
    idle_device_days: int = Field(description="0: never removed")
    history_days: int | None = Field(description="the account's history retention "
                                                 "(null: until deleted)")
    archive_hours: int


class PrivacyOut(BaseModel):
    account_id: str
    username: str | None
    created_day: int
    devices: list[DeviceHeldOut]
    history_entries: int
    history_tombstones: int
    history_bytes: int
    server_history: bool = Field(description="the relay holds history entries for it")
    recovery_key_day: int | None
    recovery_passphrase_day: int | None
    two_factor_enabled: bool
    two_factor_recovery_codes: int
    link_codes: int
    access_key_day: int | None = Field(description="the day the SHA-256 of the account's "
                                                   "unidentified-access key was stored "
                                                   "(null: none)")
    audit_salt: bool = Field(description="the relay holds the random salt keying the "
                                         "digests of the account's audit entries; it is "
                                         "deleted with the account")
    invite_code: bool = Field(description="the relay holds the SHA-256 of the invite code "
                                          "the account was registered with (given back "
                                          "if the account is deleted within 15 minutes)")
    archive_parts: int
    archive_bytes: int
    attachments: str
    rate_limits: list[RateLimitOut]
    waits_until: dict[str, int] = Field(description="wrong secrets or codes make these "
                                                    "wait until (ms)")
    retention: RetentionOut
    audit: list[AuditEventOut]


ATTACHMENTS_NOTE = ("not tied to accounts: the relay stores attachment blobs by an "
                    "unguessable id without recording who uploaded them; they expire on "
                    "their own")


async def _dashboard(relay: Relay, account_id: str, audit_limit: int) -> PrivacyOut:
    held = await account_data.held(relay.storage, account_id, audit_limit)
    if held is None:
        raise not_found("account")
    parts, part_bytes = _archives(relay).held(account_id)
    s = relay.settings
    limits = [RateLimitOut(limit=name, remaining=int(relay.limits[name].remaining(account_id)),
                           capacity=int(relay.limits[name].capacity))
              for name in _ACCOUNT_LIMITS]
    data: dict[str, Any] = asdict(held)
    data.pop("recovery_waits")
    data.pop("history_retention_days")
    return PrivacyOut(
        **data, server_history=held.history_entries + held.history_tombstones > 0,
        archive_parts=parts, archive_bytes=part_bytes, attachments=ATTACHMENTS_NOTE,
        rate_limits=limits, waits_until=held.recovery_waits,
        retention=RetentionOut(queued_message_days=s.message_ttl // DAY_S,
                               attachment_days=s.attachment_ttl // DAY_S,
                               idle_device_days=s.device_idle_days,
                               history_days=held.history_retention_days,
                               archive_hours=24))


def _archives(relay: Relay) -> Archives:
    return Archives(Path(relay.settings.attachment_dir) / "archives")


@router.get("/privacy", summary="What the relay holds about this account")
async def dashboard(relay: RelayDep, device: DeviceDep) -> PrivacyOut:
    return await _dashboard(relay, device.account_id, 50)


@router.get("/export", summary="This account's server-side data as a JSON file",
            responses={200: {"content": {"application/json": {}}}})
async def export(relay: RelayDep, device: DeviceDep) -> Response:
    out = await _dashboard(relay, device.account_id, 100_000)
    body = {"format": "cipherpost-server-data", "version": 1, "exported_at": relay.now_ms(),
            **out.model_dump()}
    # Counted in the operators' transparency report (docs/operations.md).
    await relay.storage.record_event(device.account_id, device.device_id, "account_exported",
                                     relay.now_ms())
    return Response(json.dumps(body, indent=2, sort_keys=True).encode(),
                    media_type="application/json",
                    headers={"Content-Disposition":
                             'attachment; filename="cipherpost-server-data.json"'})


@router.delete("", status_code=204,
               summary="Delete the account and everything the relay holds of it")
async def delete_account(request: Request, relay: RelayDep, device: DeviceDep) -> None:
    await require_second_factor(relay, request, device.account_id)
    device_ids = await account_data.delete_account(relay.storage, device.account_id,
                                                  relay.now_ms())
    _archives(relay).delete_account(device.account_id)
    for device_id in device_ids:
        relay.hub.disconnect(device.account_id, device_id, 4401)
