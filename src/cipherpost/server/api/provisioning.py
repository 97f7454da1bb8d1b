"""Provisioning mailboxes for linking a device (docs/spec/linking.md)."""

from __future__ import annotations

import ipaddress
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from ..archives import MAX_PART, ArchiveFull, Archives, EmptyPart
from ..errors import ApiError, not_found
from ..provisioning import (
    CODE_ALPHABET,
    CODE_LENGTH,
    MAX_MESSAGE,
    MAX_NEW_MESSAGE,
    MailboxesFull,
    OutOfOrder,
    Side,
)
from .deps import DeviceDep, RelayDep, client_ip

router = APIRouter(prefix="/v1/provisioning", tags=["devices"])

TTL_MS = 10 * 60 * 1000


class MailboxOut(BaseModel):
    address: str
    expires_at: int


class CodeMailboxOut(MailboxOut):
    #: 8 Crockford base32 characters naming the mailbox until claimed.
    code: str


class ClaimIn(BaseModel):
    code: str = Field(max_length=64)


Index = Annotated[int, Path(ge=0, le=15)]


def _busy() -> ApiError:
    return ApiError(503, "busy", "too many devices are joining; try again soon")


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
    await relay.limit("provisioning", _address_key(client_ip(request, relay)))
    now = relay.now_ms()
    try:
        address = relay.mailboxes.open(now, TTL_MS)
    except MailboxesFull:
        raise _busy() from None
    return MailboxOut(address=address, expires_at=now + TTL_MS)


@router.put("/{address}", status_code=204,
            summary="Leave the encrypted provisioning message (a device of the account)")
async def put_message(address: str, request: Request, relay: RelayDep,
                      device: DeviceDep) -> None:
    _check(address)
    await relay.limit("provisioning_put", device.account_id)
    body = await request.body()
    if not body:
        raise ApiError(400, "invalid_request", "the provisioning message is empty")
    if len(body) > MAX_MESSAGE:
        raise ApiError(413, "too_large", f"provisioning messages are limited to {MAX_MESSAGE} "
                       "bytes")
    try:
        stored = relay.mailboxes.put(address, body, relay.now_ms())
    except MailboxesFull:
        raise _busy() from None
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


# -- typed-code linking: code mailboxes (docs/spec/linking.md, "Typed code") ----------------


@router.post("/codes", status_code=201,
             summary="Open a mailbox found by a short code (typed-code linking)")
async def open_code_mailbox(request: Request, relay: RelayDep) -> CodeMailboxOut:
    await relay.limit("provisioning", _address_key(client_ip(request, relay)))
    now = relay.now_ms()
    try:
        address, code = relay.mailboxes.open_with_code(now, TTL_MS)
    except MailboxesFull:
        raise _busy() from None
    return CodeMailboxOut(address=address, expires_at=now + TTL_MS, code=code)


@router.post("/codes/claim", summary="Claim a short code (a device of the account)")
async def claim_code(body: ClaimIn, request: Request, relay: RelayDep,
                     device: DeviceDep) -> MailboxOut:
    # Every attempt costs, a wrong code as much as a right one: guessing stays hopeless.
    await relay.limit("provisioning_claim", device.account_id)
    await relay.limit("provisioning_claim_ip", _address_key(client_ip(request, relay)))
    code = body.code
    if len(code) != CODE_LENGTH or not all(c in CODE_ALPHABET for c in code):
        code = ""
    try:
        address, expires_at = relay.mailboxes.claim(
            code, (device.account_id, device.device_id), relay.now_ms())
    except KeyError:
        raise ApiError(404, "unknown_code", "no device is waiting with that code (wrong, "
                       "already used or expired)") from None
    return MailboxOut(address=address, expires_at=expires_at)


async def _send(relay: RelayDep, address: str, side: Side, index: int, request: Request,
                claimer: tuple[str, int] | None, limit: int) -> None:
    _check(address)
    body = await request.body()
    if not body:
        raise ApiError(400, "invalid_request", "the message is empty")
    if len(body) > limit:
        raise ApiError(413, "too_large", f"these messages are limited to {limit} bytes")
    try:
        relay.mailboxes.send(address, side, index, body, relay.now_ms(), claimer)
    except KeyError:
        raise not_found("mailbox") from None
    except OutOfOrder:
        raise ApiError(409, "conflict", "another message was sent under that number, or "
                       "this one is out of order") from None
    except MailboxesFull:
        raise _busy() from None


async def _read(relay: RelayDep, address: str, side: Side, index: int, wait: float,
                claimer: tuple[str, int] | None) -> Response:
    _check(address)
    try:
        message = await relay.mailboxes.read(address, side, index, relay.now_ms(), wait,
                                             claimer)
    except KeyError:
        raise not_found("mailbox") from None
    if message is None:
        return Response(status_code=204)
    return Response(content=message, media_type="application/octet-stream")


_MESSAGE: dict[int | str, dict[str, Any]] = {200: {"content": {"application/octet-stream": {}}},
            204: {"description": "nothing yet"}}


@router.put("/{address}/new/{index}", status_code=204,
            summary="The new device's message `index` in a code mailbox")
async def send_from_new(address: str, index: Index, request: Request,
                        relay: RelayDep) -> None:
    await _send(relay, address, "new", index, request, None, MAX_NEW_MESSAGE)


@router.get("/{address}/new/{index}", responses=_MESSAGE,
            summary="Read the new device's message `index` (the claiming device)")
async def read_from_new(address: str, index: Index, relay: RelayDep, device: DeviceDep,
                        wait: float = Query(0, ge=0, le=30)) -> Response:
    return await _read(relay, address, "new", index, wait,
                       (device.account_id, device.device_id))


@router.put("/{address}/existing/{index}", status_code=204,
            summary="The claiming device's message `index` in a code mailbox")
async def send_from_existing(address: str, index: Index, request: Request, relay: RelayDep,
                             device: DeviceDep) -> None:
    await _send(relay, address, "existing", index, request,
                (device.account_id, device.device_id), MAX_MESSAGE)


@router.get("/{address}/existing/{index}", responses=_MESSAGE,
            summary="Read the claiming device's message `index` (the new device)")
async def read_from_existing(address: str, index: Index, relay: RelayDep,
                             wait: float = Query(0, ge=0, le=30)) -> Response:
    return await _read(relay, address, "existing", index, wait, None)


@router.delete("/{address}", status_code=204,
               summary="Close a mailbox now (the new device cancelled or finished)")
async def close_mailbox(address: str, relay: RelayDep) -> None:
    _check(address)
    if not relay.mailboxes.close(address):
        raise not_found("mailbox")


# -- one-time history archives (docs/spec/history.md, "Archive") ----------------------------


class ArchivePartOut(BaseModel):
    id: str
    expires_at: int


def _archives(relay: RelayDep) -> Archives:
    return Archives(FilePath(relay.settings.attachment_dir) / "archives")


@router.post("/archives", status_code=201,
             summary="Upload one sealed part of a history archive for a device being linked")
async def upload_archive_part(request: Request, relay: RelayDep,
                              device: DeviceDep) -> ArchivePartOut:
    # Many parts for one link, like history uploads: the same bucket, and a byte cap.
    await relay.limit("history_put", device.account_id)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_PART:
        raise ApiError(413, "too_large", f"archive parts are limited to {MAX_PART} bytes")
    try:
        part_id, expires_at = await _archives(relay).put(device.account_id, request.stream(),
                                                         relay.now_ms())
    except ArchiveFull:
        raise ApiError(507, "archive_full", "this account already holds its maximum of "
                       "archives; link the waiting device first") from None
    except EmptyPart:
        raise ApiError(400, "invalid_request", "the archive part is empty") from None
    except ValueError:
        raise ApiError(413, "too_large", f"archive parts are limited to {MAX_PART} bytes") \
            from None
    return ArchivePartOut(id=part_id, expires_at=expires_at)


@router.get("/archives/{part_id}", response_class=FileResponse,
            summary="Download a part of a history archive (a device of the same account)")
async def download_archive_part(part_id: str, relay: RelayDep,
                                device: DeviceDep) -> FileResponse:
    path = _archives(relay).get(device.account_id, part_id, relay.now_ms())
    if path is None:
        raise not_found("archive part")
    return FileResponse(path, media_type="application/octet-stream")


@router.delete("/archives/{part_id}", status_code=204,
               summary="Delete a part of a history archive once it was taken")
async def delete_archive_part(part_id: str, relay: RelayDep, device: DeviceDep) -> None:
    if not _archives(relay).take_down(device.account_id, part_id, relay.now_ms()):
        raise not_found("archive part")
