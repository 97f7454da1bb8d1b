"""One open WebSocket to the relay (docs/websocket.md): a reader task sorts incoming frames
into queued envelopes and answers to our ``send`` frames, so the app can send from inside
its ``listen`` loop while messages keep arriving."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from typing import Any

import websockets

from cipherpost import logfilter

from .api import Envelope, MalformedEnvelope, RelayError

SEND_TIMEOUT = 30.0
#: Offered at the handshake, in this order (docs/websocket.md): several envelopes per
#: frame, and with ``.2`` the relay takes acks carried in our ``send`` frames.
BATCH_SUBPROTOCOL = "cipherpost.batch"
ACKS_ON_SEND_SUBPROTOCOL = "cipherpost.batch.2"
SUBPROTOCOLS = (ACKS_ON_SEND_SUBPROTOCOL, BATCH_SUBPROTOCOL)
#: Under ``cipherpost.batch.2`` an ack waits for our next send at most this many seconds
#: (then goes in an ``ack`` frame), and at most ACK_HOLD ids are held (the relay pushes
#: no more than 256 unacknowledged). Holding only delays the deletion: until then the
#: relay keeps the message queued, and pushes it again on a new connection.
ACK_DELAY = 1.0
ACK_HOLD = 32

#: The websockets library logs the handshake's headers at DEBUG through this logger (the
#: SDK connects without a logger of its own), our device token with them: redact them
#: before any handler an app configured sees the record.
logfilter.install("websockets.client")


class SocketLost(Exception):
    """The connection ended before the relay answered a send (it may or may not have
    queued it: resending the same ciphertexts is safe, a repeat is dropped as a
    duplicate)."""


def sent_answer(answer: dict[str, Any]) -> int:
    """The number queued that a ``sent`` frame reports.

    Raises:
        RelayError: the relay refused, with its status and error.
        SocketLost: the frame is malformed (whether the relay queued is unknown, as when
            no answer came: resending is safe).
    """
    status, queued, error = answer.get("status"), answer.get("queued", 0), answer.get("error")
    if type(status) is not int or type(queued) is not int:
        raise SocketLost("the relay's answer to a send is malformed")
    if status != 200:
        error = error if isinstance(error, dict) else {}
        raise RelayError(status, str(error.get("code")), str(error.get("message")), answer)
    return queued


class RelaySocket:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.error: BaseException | None = None
        self._envelopes: asyncio.Queue[Envelope | None] = asyncio.Queue()
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        #: acks held for our next send, and the task that sends them on their own
        self.acks_on_send = getattr(ws, "subprotocol", None) == ACKS_ON_SEND_SUBPROTOCOL
        self._held: list[str] = []
        self._ack_timer: asyncio.Task[None] | None = None
        self._reader = asyncio.create_task(self._read())

    @property
    def open(self) -> bool:
        return not self._reader.done()

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self._frame(json.loads(raw))
        except (websockets.ConnectionClosed, ValueError, RecursionError,
                MalformedEnvelope) as exc:
            # A malformed frame ends the connection (the listener reconnects; nothing
            # unacknowledged is lost): never an exception escaping this task.
            self.error = exc
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(SocketLost("the connection to the relay ended"))
            self._pending.clear()
            self._envelopes.put_nowait(None)

    def _frame(self, frame: object) -> None:
        """Sort one frame of the relay's.

        Raises:
            MalformedEnvelope: not an object, or a ``message`` frame whose envelope is
                malformed.
        """
        if not isinstance(frame, dict):
            raise MalformedEnvelope("the relay sent a frame that is not an object")
        kind = frame.get("type")
        if kind == "message":
            self._envelopes.put_nowait(Envelope.from_json(frame.get("envelope")))
        elif kind == "messages":
            envelopes = frame.get("envelopes")
            if not isinstance(envelopes, list):
                raise MalformedEnvelope("a messages frame without a list of envelopes")
            parsed = [Envelope.from_json(item) for item in envelopes]  # all or none
            for envelope in parsed:
                self._envelopes.put_nowait(envelope)
        elif kind == "sent":
            request_id = frame.get("id")
            future = self._pending.pop(request_id, None) \
                if type(request_id) is int else None
            if future is not None and not future.done():
                future.set_result(frame)

    async def next_envelope(self) -> Envelope:
        """The next queued envelope.

        Raises:
            websockets.ConnectionClosed: the connection ended (with the relay's code).
            SocketLost: it ended otherwise (a malformed frame).
        """
        item = await self._envelopes.get()
        if item is None:
            self._envelopes.put_nowait(None)  # every later call fails the same way
            if isinstance(self.error, websockets.ConnectionClosed):
                raise self.error
            raise SocketLost("the connection to the relay ended")
        return item

    async def ack(self, ids: list[str]) -> None:
        """Acknowledge ``ids`` (processed and committed): in an ``ack`` frame, or under
        ``cipherpost.batch.2`` with our next send (see :data:`ACK_DELAY`)."""
        if not self.acks_on_send:
            await self.ws.send(json.dumps({"type": "ack", "ids": ids}))
            return
        self._held += ids
        if len(self._held) >= ACK_HOLD:
            await self._send_held()
        elif self._held and self._ack_timer is None:
            self._ack_timer = asyncio.create_task(self._held_too_long())

    async def _held_too_long(self) -> None:
        await asyncio.sleep(ACK_DELAY)
        self._ack_timer = None
        # Nobody awaits this task: whatever ends the write (the connection closing, a
        # transport error) only means the relay delivers those envelopes again, and
        # they are dropped by envelope id. Never an unretrieved task exception.
        with contextlib.suppress(Exception):
            await self._send_held()

    def _take_held(self) -> list[str]:
        held, self._held = self._held, []
        timer, self._ack_timer = self._ack_timer, None
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
        return held

    async def _send_held(self) -> None:
        held = self._take_held()
        if held:
            await self.ws.send(json.dumps({"type": "ack", "ids": held}))

    async def send(self, account: str, timestamp: int, messages: list[dict[str, Any]]) -> int:
        """A ``send`` frame; the number queued.

        Raises:
            RelayError: the relay refused (409, 410, 429...), with the HTTP error's body.
            SocketLost: no answer (connection ended or timed out).
        """
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        frame: dict[str, Any] = {"type": "send", "id": request_id, "account_id": account,
                                 "timestamp": timestamp, "messages": messages}
        if self._held:
            frame["ack"] = self._take_held()
        try:
            await self.ws.send(json.dumps(frame, separators=(",", ":")))
            answer = await asyncio.wait_for(future, SEND_TIMEOUT)
        except (websockets.ConnectionClosed, TimeoutError):
            raise SocketLost("no answer from the relay") from None
        finally:
            self._pending.pop(request_id, None)
        return sent_answer(answer)

    async def close(self) -> None:
        # Held acks go now if they still can (else the messages come again, and are
        # dropped by envelope id).
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._send_held(), 1.0)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
