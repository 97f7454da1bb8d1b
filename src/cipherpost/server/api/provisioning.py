"""Provisioning mailboxes for linking a device (docs/spec/linking.md)."""

from __future__ import annotations

import ipaddress

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from ..errors import ApiError, not_found
from ..provisioning import MAX_MESSAGE, MailboxesFull
from .deps import DeviceDep, RelayDep, client_ip

router = APIRouter(prefix="/v1/provisioning", tags=["devices"])

TTL_MS = 10 * 60 * 1000


class MailboxOut(BaseModel):
    address: str
    expires_at: int


def _check(address: str) -> None:
    if not (40 <= len(address) <= 64) or not all(c.isalnum() or c in "-_" for c in address):
        raise not_found("mailbox")


def _address_key(ip: str) -> str:
    """The rate-limit key of a client address: an IPv6 address by its /64 (one host usually
    holds a whole /64, so counting single addresses would limit nothing)."""
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


@router.post("", status_code=201, summary="Open a mailbox for a device that wants to join")
async def open_mailbox(request: Request, relay: RelayDep) -> MailboxOut:
    relay.limit("provisioning", _address_key(client_ip(request, relay)))
    now = relay.now_ms()
    try:
        address = relay.mailboxes.open(now, TTL_MS)
    except MailboxesFull:
        raise ApiError(503, "busy", "too many devices are joining; try again soon") from None
    return MailboxOut(address=address, expires_at=now + TTL_MS)


@router.put("/{address}", status_code=204,
            summary="Leave the encrypted provisioning message (a device of the account)")
async def put_message(address: str, request: Request, relay: RelayDep,
                      device: DeviceDep) -> None:
    _check(address)
    relay.limit("provisioning_put", device.account_id)
    body = await request.body()
    if not body:
        raise ApiError(400, "invalid_request", "the provisioning message is empty")
    if len(body) > MAX_MESSAGE:
        raise ApiError(413, "too_large", f"provisioning messages are limited to {MAX_MESSAGE} "
                       "bytes")
    try:
        stored = relay.mailboxes.put(address, body, relay.now_ms())
    except MailboxesFull:
        raise ApiError(503, "busy", "too many devices are joining; try again soon") from None
    if not stored:
        raise not_found("mailbox")


@router.get("/{address}", summary="Take the provisioning message (waits up to `wait` s)",
            responses={200: {"content": {"application/octet-stream": {}}},
                       204: {"description": "nothing yet"}})
async def take_message(address: str, relay: RelayDep,
                       wait: float = Query(0, ge=0, le=30)) -> Response:
    _check(address)
    try:
        message = await relay.mailboxes.take(address, relay.now_ms(), wait)
    except KeyError:
        raise not_found("mailbox") from None
    if message is None:
        return Response(status_code=204)
    return Response(content=message, media_type="application/octet-stream")
