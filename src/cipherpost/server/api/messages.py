"""``PUT /v1/messages``, and the HTTP fallback for fetching and acknowledging messages
(the send path itself is :mod:`..sending`, shared with the WebSocket)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query

from ..auth import DeviceIdentity
from ..codec import b64
from ..relay import Relay
from ..sending import refusal, storable_ids, submit_send
from ..storage.group import Resolve
from ..storage.models import Envelope
from ..storage.sql import Queued
from .deps import DeviceDep, RelayDep
from .schemas import AckIn, AckOut, EnvelopeOut, MessagesOut, SendIn, SendOut

router = APIRouter(prefix="/v1/messages", tags=["messages"])


@router.put("/{account_id}", summary="Send one ciphertext to each device of an account",
            responses={409: {"description": "missing_devices / extra_devices"},
                       410: {"description": "stale_devices (re-installed)"},
                       507: {"description": "a destination queue is full"}})
async def send(account_id: str, body: SendIn, relay: RelayDep, device: DeviceDep) -> SendOut:
    return SendOut(queued=await queue_messages(relay, device, account_id, body))


async def queue_messages(relay: Relay, device: DeviceIdentity, account_id: str,
                         body: SendIn) -> int:
    """Queue a send request; return how many were queued once that is durable.

    Raises:
        ApiError: rate limited, malformed, unknown account, 409, 410 or 507.
    """
    future: asyncio.Future[list[Queued]] = asyncio.get_running_loop().create_future()
    submit_send(relay, device, account_id, body.timestamp, [
        (m.device_id, m.registration_id, m.type, m.content) for m in body.messages],
        Resolve(future))
    try:
        return len(await future)
    except Exception as exc:
        error = refusal(exc)
        if error is None:
            raise
        raise error from None


def envelope_dict(e: Envelope) -> dict[str, object]:
    """An envelope as JSON fields (the fields of :class:`EnvelopeOut`, built directly:
    this runs once per delivered message)."""
    return {"id": e.guid, "sender_account_id": e.sender_account_id,
            "sender_device_id": e.sender_device_id, "type": e.type,
            "content": b64(e.content), "client_timestamp": e.client_timestamp,
            "server_timestamp": e.server_timestamp}


def envelope_out(e: Envelope) -> EnvelopeOut:
    return EnvelopeOut.model_validate(envelope_dict(e))


@router.get("", summary="Fetch queued messages (fallback for clients without WebSocket)")
async def fetch(relay: RelayDep, device: DeviceDep,
                limit: int = Query(100, ge=1, le=1000)) -> MessagesOut:
    envelopes = await relay.storage.fetch(device.account_id, device.device_id, 0, limit + 1)
    return MessagesOut(messages=[envelope_out(e) for e in envelopes[:limit]],
                       more=len(envelopes) > limit)


@router.post("/ack", summary="Acknowledge (delete) delivered messages")
async def acknowledge(body: AckIn, relay: RelayDep, device: DeviceDep) -> AckOut:
    return AckOut(deleted=await ack(relay, device.account_id, device.device_id, body.ids))


async def ack(relay: Relay, account_id: str, device_id: int, ids: list[str]) -> int:
    """Delete acknowledged messages and count them."""
    deleted = await relay.storage.acknowledge(account_id, device_id, storable_ids(ids))
    relay.metrics.messages_delivered.inc(deleted)
    return deleted
