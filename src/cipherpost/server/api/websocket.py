"""WebSocket delivery (protocol documented in docs/websocket.md).

The server pushes ``{"type": "message", "envelope": {...}}`` frames in queue order; the
device answers ``{"type": "ack", "ids": [...]}``, and the server confirms with ``{"type": "acked",
"ids": [...]}`` once the deletion is durable. Only acknowledged messages are deleted, so
whatever was pushed but not acknowledged is pushed again on the next connection. At most
``WINDOW`` messages are in flight unacknowledged, which bounds memory per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from ..auth import DeviceIdentity, authenticate
from ..errors import ApiError
from ..hub import Connection
from ..relay import Relay
from .messages import ack, envelope_dict, queue_messages
from .schemas import SendIn

router = APIRouter()
Sender = Callable[[dict[str, object]], Awaitable[None]]

WINDOW = 256
MAX_FRAME = 64 * 1024


@router.websocket("/v1/websocket")
async def websocket(ws: WebSocket) -> None:
    relay: Relay = ws.app.state.relay
    try:
        device = await authenticate(relay.storage, ws.headers.get("authorization"))
    except ApiError:
        await ws.close(code=4401)
        return
    await ws.accept()
    connection = relay.hub.register(device.account_id, device.device_id)
    relay.metrics.websockets.inc()
    in_flight: set[str] = set()
    lock = asyncio.Lock()

    async def send(frame: dict[str, object]) -> None:
        async with lock:
            await ws.send_text(json.dumps(frame, separators=(",", ":")))

    # One task pushes; this coroutine itself reads. An idle device costs one task.
    pusher = asyncio.create_task(_push(ws, send, relay, device, connection, in_flight))
    try:
        await _receive(ws, send, relay, device, connection, in_flight)
    finally:
        pusher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pusher
        relay.hub.unregister(device.account_id, device.device_id, connection)
        relay.metrics.websockets.dec()
        with contextlib.suppress(Exception):
            await ws.close(code=connection.close_code)


async def _push(ws: WebSocket, send: Sender, relay: Relay, device: DeviceIdentity,
                connection: Connection, in_flight: set[str]) -> None:
    """Push queued messages in order, at most ``WINDOW`` unacknowledged; close the socket
    when the hub says so (device removed, or replaced by a newer connection)."""
    cursor = 0
    while not connection.closed.is_set():
        connection.wake.clear()
        budget = WINDOW - len(in_flight)
        envelopes = await relay.storage.fetch(device.account_id, device.device_id, cursor,
                                              min(budget, 100)) if budget > 0 else []
        for envelope in envelopes:
            in_flight.add(envelope.guid)
            await send({"type": "message", "envelope": envelope_dict(envelope)})
            cursor = envelope.seq
        if envelopes:
            continue
        # Woken by a new message, an acknowledgement that frees room, or the hub.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(connection.wake.wait(), timeout=30)
    with contextlib.suppress(Exception):
        await ws.close(code=connection.close_code)


async def _receive(ws: WebSocket, send: Sender, relay: Relay, device: DeviceIdentity,
                   connection: Connection, in_flight: set[str]) -> None:
    while True:
        try:
            text = await ws.receive_text()
        except (WebSocketDisconnect, RuntimeError, KeyError):
            return
        if len(text) > MAX_FRAME:
            connection.close_code = 1009
            return
        try:
            frame = json.loads(text)
            kind = frame.get("type")
            if kind == "send":
                await send(await _send(relay, device, frame))
                continue
            ids = frame["ids"] if kind == "ack" else None
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ValueError
        except (ValueError, TypeError, AttributeError, KeyError):
            connection.close_code = 1003
            return
        # Shielded: an acknowledgement that arrived is applied even if the socket closes.
        await asyncio.shield(ack(relay, device.account_id, device.device_id, ids))
        in_flight.difference_update(ids)
        connection.wake.set()
        await send({"type": "acked", "ids": ids})


async def _send(relay: Relay, device: DeviceIdentity, frame: dict[str, Any]) -> dict[str, object]:
    """A ``send`` frame: the same request and answers as ``PUT /v1/messages/{account}``,
    answered by a ``sent`` frame carrying the request's ``id``."""
    request_id = frame.get("id")
    if not isinstance(request_id, (str, int)) or isinstance(request_id, bool):
        raise ValueError("a send frame needs an id")
    try:
        account_id = frame.get("account_id")
        if not isinstance(account_id, str):
            raise ApiError(400, "invalid_request", "account_id must be a string")
        try:
            body = SendIn.model_validate({"timestamp": frame.get("timestamp"),
                                          "messages": frame.get("messages")})
        except ValidationError:
            raise ApiError(400, "invalid_request", "the send frame is malformed") from None
        queued = await queue_messages(relay, device, account_id, body)
    except ApiError as exc:
        return {"type": "sent", "id": request_id, "status": exc.status, **exc.body()}
    return {"type": "sent", "id": request_id, "status": 200, "queued": queued}
