"""WebSocket delivery (protocol documented in docs/websocket.md), as a raw ASGI endpoint.

The server pushes envelopes in queue order; the device answers ``{"type": "ack", "ids":
[...]}``, and the server confirms with ``{"type": "acked", "ids": [...]}`` once the deletion
is durable (under the batch subprotocol only when the ack asks, ``"confirm": true``: a
frame per acknowledgement that no client reads was a fifth of the frames per message).
Only acknowledged messages are deleted, so whatever was pushed but not acknowledged is
pushed again on the next connection. At most ``WINDOW`` messages are in
flight unacknowledged, which bounds memory per connection.

A message committed while its device is connected and caught up is handed to the
connection in memory (no database read); a connection that is behind (just connected,
or its window was full) reads its queue from the database until it has caught up.
Nothing runs for an idle connection but the ASGI call waiting for its next frame: tasks
that write frames or read the queue exist only while they have work.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Iterable
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from ..auth import DeviceIdentity, authenticate
from ..codec import b64
from ..errors import ApiError
from ..relay import Relay
from ..sending import refusal, storable_ids, submit_send
from ..storage.models import Envelope
from ..ws_protocol import BROKEN, RelayWebSocketProtocol
from .schemas import SendIn

log = logging.getLogger("cipherpost.server")

PATH = "/v1/websocket"
#: Close code for a suspended account's connections (at the handshake, and when an
#: operator suspends it while connected).
SUSPENDED = 4403
#: Offered by a client (Sec-WebSocket-Protocol) to get several envelopes per frame.
BATCH_SUBPROTOCOL = "cipherpost.batch"
#: ``cipherpost.batch``, and the relay takes acks carried in ``send`` frames (``"ack":
#: [ids]``). It takes them under any subprotocol; echoing this one tells a client so
#: (an older relay ignores the field, and the acks would be lost until a reconnect).
ACKS_ON_SEND_SUBPROTOCOL = "cipherpost.batch.2"
#: The subprotocols echoed, the first one offered in this order.
SUBPROTOCOLS = (ACKS_ON_SEND_SUBPROTOCOL, BATCH_SUBPROTOCOL)
WINDOW = 256
MAX_FRAME = 64 * 1024
#: A ``messages`` frame holds at most this many envelopes, and at most this many bytes of
#: ciphertext unless it holds a single envelope.
BATCH_ENVELOPES = 64
BATCH_BYTES = 192 * 1024
#: Sends and acks of one connection waiting for their commit at once, at most.
PIPELINE = 64
FETCH = 100

_MESSAGE_KEYS = frozenset(("device_id", "registration_id", "type", "content"))


async def serve(relay: Relay, scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI WebSocket call of ``/v1/websocket``."""
    if (await receive())["type"] != "websocket.connect":
        return
    header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
    try:
        device = await authenticate(relay.storage, header.decode("latin-1") or None)
    except ApiError as exc:
        await send({"type": "websocket.close",
                    "code": SUSPENDED if exc.code == "account_suspended" else 4401})
        return
    await relay.seen(device.account_id, device.device_id)
    offered = scope.get("subprotocols", ())
    chosen = next((p for p in SUBPROTOCOLS if p in offered), None)
    batch = chosen is not None
    await send({"type": "websocket.accept", "subprotocol": chosen} if batch
               else {"type": "websocket.accept"})
    session = Session(relay, device, send, batch)
    relay.metrics.websockets.inc()
    try:
        # Registered first, then the queue is read: nothing committed in between is missed.
        try:
            await relay.hub.register(device.account_id, device.device_id, session)
        except Exception:  # the fan-out's Redis is unreachable
            log.warning("a connection could not be registered", exc_info=True)
            session.close_code, gone = 1011, False
        else:
            session.catch_up()
            gone = await session.read(receive)
    finally:
        relay.hub.unregister(device.account_id, device.device_id, session)
        relay.metrics.websockets.dec()
    await session.close(send_close=not gone)


class Session:
    """One device's live connection: what it has been pushed, what it still needs."""

    __slots__ = ("_catching_up", "_draining", "_flushing", "_frames", "_held", "_outstanding",
                 "_protocol", "_room", "_send", "_taking_held", "account_id", "batch", "behind",
                 "close_code", "closed", "cursor", "device", "device_id", "envelopes",
                 "in_flight", "relay")

    def __init__(self, relay: Relay, device: DeviceIdentity, send: Send, batch: bool) -> None:
        self.relay = relay
        self.device = device
        self.account_id = device.account_id
        self.device_id = device.device_id
        self.batch = batch
        self._send = send
        #: uvicorn's protocol object when it can take frames without a coroutine
        #: (``cipherpost-server``; see :mod:`..ws_protocol`), else None: ASGI ``send``.
        owner = getattr(send, "__self__", None)
        self._protocol = owner if isinstance(owner, RelayWebSocketProtocol) else None
        #: seq of the last envelope pushed; everything after it is still to push.
        self.cursor = 0
        #: guids pushed and not yet acknowledged, with their content's length (an
        #: acknowledgement's deletion then frees the bytes without reading the row).
        self.in_flight: dict[str, int] = {}
        #: the queue in the database may hold envelopes not pushed nor held in memory.
        self.behind = True
        self.envelopes: list[Envelope] = []  # to push
        self._frames: list[bytes] = []  # other frames to send (UTF-8 JSON)
        self._held: list[Envelope] | None = None  # offered while the queue is being read
        self._draining: asyncio.Task[None] | None = None
        self._flushing: asyncio.Handle | None = None  # a write at the end of this turn
        self._catching_up: asyncio.Task[None] | None = None
        self._outstanding = 0  # sends and acks waiting for their commit
        self._room: asyncio.Future[None] | None = None
        #: the socket's protocol hands on no frames until the pipeline has room
        self._taking_held = False
        self.close_code = 1000
        self.closed = False

    # -- pushing ---------------------------------------------------------------------------

    def offer(self, envelope: Envelope) -> None:
        """A message for this device was committed.

        A device's messages are numbered 1, 2, 3, ... in the order they commit, but may
        be offered in another order (by several relay processes, through the fan-out).
        One that is not the next after the cursor means that those before it are
        committed and not yet offered: they are read from the database, not skipped."""
        if self.closed or envelope.seq <= self.cursor:
            return
        if self._held is not None:  # a read of the queue is under way
            if len(self._held) < WINDOW:  # when full, the read is repeated
                self._held.append(envelope)
            return
        if self.behind or len(self.in_flight) >= WINDOW or envelope.seq != self.cursor + 1:
            self.behind = True  # it stays in the database until the window has room
            self.catch_up()
            return
        self._push((envelope,))

    def resync(self) -> None:
        """Offers may have been lost (the fan-out lost its connection): read the queue."""
        self.behind = True
        self.catch_up()

    def kick(self, code: int) -> None:
        """Close with ``code`` (device removed, or replaced by a newer connection)."""
        if not self.closed:
            self.close_code = code
            self.closed = True
            self.envelopes.clear()
            self._frames.clear()
            self._wake()

    def catch_up(self) -> None:
        """Read the queue from the database if this connection is behind and has room."""
        if self.behind and self._catching_up is None and not self.closed \
                and len(self.in_flight) < WINDOW:
            self._catching_up = asyncio.get_running_loop().create_task(self._read_queue())

    async def _read_queue(self) -> None:
        try:
            while self.behind and not self.closed:
                room = WINDOW - len(self.in_flight)
                if room <= 0:
                    break
                limit = min(room, FETCH)
                self._held = []
                try:
                    rows = await self.relay.storage.fetch(self.account_id, self.device_id,
                                                          self.cursor, limit)
                finally:
                    held, self._held = self._held, None
                self._push(rows)
                if len(rows) < limit and len(held) < WINDOW:
                    # Caught up as of the read; what was committed since is in ``held``
                    # (unless it overflowed: then read again). One that leaves a gap
                    # sets ``behind`` again, and the loop reads once more.
                    self.behind = False
                    for envelope in sorted(held, key=_seq):
                        self.offer(envelope)
        except Exception:
            log.exception("reading a queue failed")
            self.kick(1011)
        finally:
            self._catching_up = None

    def _push(self, envelopes: Iterable[Envelope]) -> None:
        for envelope in envelopes:
            if envelope.seq > self.cursor:
                self.in_flight[envelope.guid] = len(envelope.content)
                self.cursor = envelope.seq
                self.envelopes.append(envelope)
        self._wake()

    def _emit(self, frame: dict[str, Any]) -> None:
        if not self.closed:
            self._frames.append(orjson.dumps(frame))
            self._wake()

    def _wake(self) -> None:
        if self._draining is not None or self._flushing is not None \
                or not (self.envelopes or self._frames or self.closed):
            return
        loop = asyncio.get_running_loop()
        if self._protocol is not None and not self.closed:
            # Written once the current callback is done: whatever else it has for this
            # connection (the envelopes of one commit, a ``sent`` beside them) goes in
            # the same write.
            self._flushing = loop.call_soon(self._flush)
        else:
            self._draining = loop.create_task(self._drain())

    def _pending_frames(self) -> list[bytes]:
        frames, self._frames = self._frames, []
        if self.envelopes:
            frames += self._encode(self.envelopes)
            self.envelopes = []
        return frames

    def _flush(self) -> None:
        """Write what is pending without a task, if the transport takes it now."""
        self._flushing = None
        if self._draining is not None or self.closed:
            self._wake()
            return
        frames = self._pending_frames()
        if frames and not (self._protocol is not None and self._protocol.write_frames(frames)):
            self._frames[:0] = frames  # the buffer is full: a task waits for room
            self._draining = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Write what is pending, in order, then end (a task only while there is work)."""
        try:
            while not self.closed and (self.envelopes or self._frames):
                for frame in self._pending_frames():
                    await self._send({"type": "websocket.send", "text": frame.decode()})
            if self.closed:
                await self._send({"type": "websocket.close", "code": self.close_code})
        except Exception:  # the peer is gone; the read side sees it too
            self.closed = True
        finally:
            self._draining = None

    def _encode(self, envelopes: list[Envelope]) -> list[bytes]:
        if not self.batch:
            return [orjson.dumps({"type": "message", "envelope": envelope_json(e)})
                    for e in envelopes]
        frames = []
        group: list[dict[str, object]] = []
        size = 0
        for e in envelopes:
            if group and (len(group) >= BATCH_ENVELOPES or size + len(e.content) > BATCH_BYTES):
                frames.append(orjson.dumps({"type": "messages", "envelopes": group}))
                group, size = [], 0
            group.append(envelope_json(e))
            size += len(e.content)
        frames.append(orjson.dumps({"type": "messages", "envelopes": group}))
        return frames

    # -- reading ---------------------------------------------------------------------------

    async def read(self, receive: Receive) -> bool:
        """Handle the device's frames until it breaks the protocol, is closed, or
        disconnects (then return True). Under ``cipherpost-server`` the frames come by
        :meth:`_take` instead, straight from the socket's protocol (:mod:`..ws_protocol`),
        and ``receive`` only says when the connection ends."""
        protocol = self._protocol
        while not self.closed:
            if protocol is not None and not protocol.taking:
                protocol.take_frames(self._take)
            message = await receive()
            kind: str = message["type"]
            if kind != "websocket.receive":
                return kind != BROKEN
            text = message.get("text")
            if text is None:
                self.close_code = 1003
                return False
            if not self._frame(text):
                return False
            if self._outstanding >= PIPELINE:
                self._room = asyncio.get_running_loop().create_future()
                await self._room
        return False

    def _take(self, payload: bytes) -> bool:
        """A text frame handed on by the socket's protocol; False: hand on no more until
        commits free the pipeline (reading pauses meanwhile)."""
        if self.closed:  # being closed: what the device still sends is dropped
            return True
        if not self._frame(payload):
            assert self._protocol is not None
            self._protocol.stop_taking(broken=True)
            return True
        if self._outstanding >= PIPELINE:
            self._taking_held = True
            return False
        return True

    def _frame(self, text: str | bytes) -> bool:
        """Handle one text frame; False (with ``close_code`` set) if it breaks the
        protocol."""
        if len(text) > MAX_FRAME and (isinstance(text, str) or _chars(text) > MAX_FRAME):
            self.close_code = 1009
            return False
        try:
            frame = orjson.loads(text)
            kind = frame.get("type")
            if kind == "send":
                # Acks may ride on a send (``ack``: ids, never confirmed), which spares a
                # frame each way's parsing when a device both receives and sends; they
                # are taken as if in an ``ack`` frame before it.
                carried = frame.get("ack")
                if carried is not None:
                    self._handle_ack(_ids(carried), False)
                self._handle_send(frame)
            elif kind == "ack":
                ids = _ids(frame["ids"])
                confirm = frame.get("confirm", False)
                if not isinstance(confirm, bool):
                    raise ValueError
                self._handle_ack(ids, confirm or not self.batch)
            else:
                raise ValueError
        except (ValueError, TypeError, AttributeError, KeyError):
            self.close_code = 1007 if _chars(text) < 0 else 1003
            return False
        return True

    def _handle_send(self, frame: dict[str, Any]) -> None:
        """A ``send`` frame: the same request and answers as ``PUT /v1/messages/{account}``,
        answered by a ``sent`` frame carrying the request's ``id`` once it is durable."""
        request_id = frame.get("id")
        if not isinstance(request_id, (str, int)) or isinstance(request_id, bool):
            raise ValueError("a send frame needs an id")
        try:
            account_id = frame.get("account_id")
            if not isinstance(account_id, str):
                raise ApiError(400, "invalid_request", "account_id must be a string")
            timestamp, messages = _send_fields(frame)
            submit_send(self.relay, self.device, account_id, timestamp, messages,
                        functools.partial(self._sent, request_id))
        except ApiError as exc:
            self._emit({"type": "sent", "id": request_id, "status": exc.status, **exc.body()})
            return
        self._outstanding += 1

    def _sent(self, request_id: str | int, ok: bool, value: Any) -> None:
        self._settle()
        if ok:
            self._emit({"type": "sent", "id": request_id, "status": 200,
                        "queued": len(value)})
            return
        error = refusal(value)
        if error is None:
            log.error("a send failed", exc_info=value)
            error = ApiError(500, "internal_error", "internal error")
        self._emit({"type": "sent", "id": request_id, "status": error.status, **error.body()})

    def _handle_ack(self, ids: list[str], confirm: bool) -> None:
        """Delete what ``ids`` name in the next commit; answer ``acked`` if ``confirm``."""
        # Applied even if the socket closes before the commit. One the device does not
        # wait for is deleted a moment later (a crash before it only delivers it again).
        guids = storable_ids(ids)
        in_flight = self.in_flight
        if not confirm:
            # Taken at once where the storage can (SQLite's queue log: the rows go in a
            # later transaction), which frees the window at once too.
            rest = self.relay.storage.acknowledge_later(self.account_id, self.device_id,
                                                        guids)
            if len(rest) != len(guids):
                self.relay.metrics.messages_delivered.inc(len(guids) - len(rest))
                kept = set(rest)
                for guid in guids:
                    if guid not in kept:
                        in_flight.pop(guid, None)
                self.catch_up()
            if not rest:
                return
            guids = rest
        # A copy taken here: the live dict changes on this loop (pushes, earlier acks'
        # callbacks) while the writer thread reads the copy.
        sizes = {g: in_flight[g] for g in guids if g in in_flight}
        self.relay.storage.acknowledge_then(
            functools.partial(self._acked, ids, confirm), self.account_id, self.device_id,
            guids, lazy=not confirm, sizes=sizes)
        self._outstanding += 1

    def _acked(self, ids: list[str], confirm: bool, ok: bool, value: Any) -> None:
        self._settle()
        if not ok:
            log.error("an acknowledgement failed", exc_info=value)
            self.kick(1011)
            return
        self.relay.metrics.messages_delivered.inc(value)
        in_flight = self.in_flight
        for guid in ids:
            in_flight.pop(guid, None)
        if confirm:
            self._emit({"type": "acked", "ids": ids})
        self.catch_up()

    def _settle(self) -> None:
        self._outstanding -= 1
        if self._outstanding < PIPELINE:
            if self._room is not None:
                if not self._room.done():
                    self._room.set_result(None)
                self._room = None
            if self._taking_held:
                self._taking_held = False
                assert self._protocol is not None
                # After the commit's callbacks: frames handed on now would join the
                # batch being reported.
                asyncio.get_running_loop().call_soon(self._protocol.resume_taking)

    async def close(self, *, send_close: bool) -> None:
        """End the connection: stop its tasks, send the close frame if still due."""
        kicked = self.closed
        self.closed = True
        draining = self._draining
        for task in (self._catching_up, draining):
            if task is not None:
                task.cancel()
        if self._flushing is not None:  # a kicked connection's drain task was still due
            self._flushing.cancel()
            self._flushing = None
            kicked = False
        if self._room is not None and not self._room.done():
            self._room.cancel()
        if self._protocol is not None:
            self._protocol.stop_taking()
        # A kicked connection's close frame is sent by its drain task, unless cut short.
        if send_close and (not kicked or draining is not None):
            with contextlib.suppress(Exception):
                await self._send({"type": "websocket.close", "code": self.close_code})


def _chars(text: str | bytes) -> int:
    """The characters of a text frame's payload; -1 if it is not UTF-8 (close code 1007,
    as websockets answers such a frame)."""
    if isinstance(text, str):
        return len(text)
    try:
        return len(text.decode())
    except UnicodeDecodeError:
        return -1


def _seq(envelope: Envelope) -> int:
    return envelope.seq


def _ids(ids: object) -> list[str]:
    """The envelope ids of an acknowledgement; ValueError if it is not a list of strings."""
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError
    return ids


def _send_fields(frame: dict[str, Any]) -> tuple[int, list[tuple[int, int, int, str]]]:
    """The timestamp and messages of a send frame, checked as :class:`SendIn` checks them
    (exact types take a fast path; anything else goes through the model itself)."""
    timestamp = frame.get("timestamp")
    messages = frame.get("messages")
    if type(timestamp) is int and 0 <= timestamp < 2**63 and type(messages) is list \
            and 1 <= len(messages) <= 127:
        out = []
        for m in messages:
            if type(m) is not dict or m.keys() != _MESSAGE_KEYS:
                break
            d, r, t, c = m["device_id"], m["registration_id"], m["type"], m["content"]
            if not (type(d) is int and 1 <= d <= 127 and type(r) is int and 0 <= r <= 16380
                    and type(t) is int and 1 <= t <= 255 and type(c) is str):
                break
            out.append((d, r, t, c))
        else:
            return timestamp, out
    try:
        body = SendIn.model_validate({"timestamp": timestamp, "messages": messages})
    except ValidationError:
        raise ApiError(400, "invalid_request", "the send frame is malformed") from None
    return body.timestamp, [(m.device_id, m.registration_id, m.type, m.content)
                            for m in body.messages]


def envelope_json(e: Envelope) -> dict[str, object]:
    """An envelope as JSON fields (the fields of ``EnvelopeOut``, built directly)."""
    return {"id": e.guid, "sender_account_id": e.sender_account_id,
            "sender_device_id": e.sender_device_id, "type": e.type,
            "content": b64(e.content), "client_timestamp": e.client_timestamp,
            "server_timestamp": e.server_timestamp}
