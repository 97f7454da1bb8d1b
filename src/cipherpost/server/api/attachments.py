"""Encrypted attachment blobs by unguessable id, with a size limit and expiry."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from ..errors import ApiError, bad_request, not_found
from .deps import DeviceDep, RelayDep
from .schemas import AttachmentOut

router = APIRouter(prefix="/v1/attachments", tags=["attachments"])


def blob_path(directory: str, attachment_id: str) -> Path:
    return Path(directory) / attachment_id[:2] / attachment_id


@router.post("", status_code=201, summary="Upload an encrypted blob (the raw request body)")
async def upload(request: Request, relay: RelayDep, _device: DeviceDep) -> AttachmentOut:
    limit = relay.settings.max_attachment_bytes
    declared = request.headers.get("content-length")
    if declared is not None and (not (declared.isascii() and declared.isdigit())
                                 or int(declared) > limit):
        raise ApiError(413, "too_large", f"attachments are limited to {limit} bytes")
    attachment_id = secrets.token_urlsafe(32)
    path = blob_path(relay.settings.attachment_dir, attachment_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    size = 0
    try:
        with partial.open("wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, "too_large", f"attachments are limited to {limit} bytes")
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size == 0:
            raise bad_request("empty attachment")
        partial.rename(path)
    finally:
        partial.unlink(missing_ok=True)
    now = relay.now_ms()
    expires_at = now + relay.settings.attachment_ttl * 1000
    await relay.storage.add_attachment(attachment_id, size, now, expires_at)
    return AttachmentOut(id=attachment_id, expires_at=expires_at)


@router.get("/{attachment_id}", summary="Download an encrypted blob",
            response_class=FileResponse)
async def download(attachment_id: str, relay: RelayDep, _device: DeviceDep) -> FileResponse:
    if not (40 <= len(attachment_id) <= 64) or not all(
            c.isalnum() or c in "-_" for c in attachment_id):
        raise not_found("attachment")
    if not await relay.storage.attachment_live(attachment_id, relay.now_ms()):
        raise not_found("attachment")
    path = blob_path(relay.settings.attachment_dir, attachment_id)
    if not path.exists():
        raise not_found("attachment")
    return FileResponse(path, media_type="application/octet-stream")
