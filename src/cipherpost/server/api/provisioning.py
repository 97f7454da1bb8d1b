"""Provisioning mailboxes for linking a device (docs/spec/linking.md)."""

from __future__ import annotations

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


@router.post("", status_code=201, summary="Open a mailbox for a device that wants to join")
async def open_mailbox(request: Request, relay: RelayDep) -> MailboxOut:
    relay.limit("register", client_ip(request, relay))
    now = relay.now_ms()
    try:
        address = relay.mailboxes.open(now, TTL_MS)
    except MailboxesFull:
        raise ApiError(503, "busy", "too many devices are joining; try again soon") from None
    return MailboxOut(address=address, expires_at=now + TTL_MS)


@router.put("/{address}", status_code=204,
            summary="Leave the encrypted provisioning message (a device of the account)")
async def put_message(address: str, request: Request, relay: RelayDep,
                      _device: DeviceDep) -> None:
    _check(address)
    body = await request.body()
    if not body:
        raise ApiError(400, "invalid_request", "the provisioning message is empty")
    if len(body) > MAX_MESSAGE:
        raise ApiError(413, "too_large", f"provisioning messages are limited to {MAX_MESSAGE} "
                       "bytes")
    if not relay.mailboxes.put(address, body, relay.now_ms()):
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
