"""uvicorn's sans-I/O WebSocket protocol with three costs per frame taken out.

The relay reads two frames (``send``, ``ack``) and writes two (``sent``, ``messages``) per
message it delivers, each on its own at a moderate rate, so the work done per frame
outside the relay's own code counts:

* ASGI hands a received frame to the application through a queue: a dict per frame, a
  future woken, and the application's task resumed through every ``await`` between
  uvicorn and the relay's read loop; before that, websockets parses the frame with a
  generator per read. With :meth:`RelayWebSocketProtocol.take_frames` the relay is
  handed each complete text frame as soon as its bytes are in, by a plain call, and the
  frame is parsed here (:meth:`~RelayWebSocketProtocol._parse`: a header, a mask). Only
  the common frame takes this path: an unfragmented, masked text frame within the size
  limit. Control frames (ping, pong, close) still go to websockets whole, and anything
  else (a binary or fragmented frame, reserved bits, an oversized one) ends the fast
  path for the connection: from that frame on websockets parses everything, and frames
  reach the relay through ASGI ``receive`` as before, in order.
* uvicorn stops reading the socket after every frame it hands to the application and
  starts again when the application takes it (a pause and a resume of the transport,
  and with them the event loop's registration of the socket, per frame). Here reading
  pauses only once :data:`READ_AHEAD` frames wait unread; the application's own limit
  (``websocket.PIPELINE``) still stops it from taking more work than it allows (a
  taker of frames answers False, and reading pauses until :meth:`resume_taking`).
* An ASGI ``send`` is a coroutine per frame, and the relay ran a task per connection to
  await them. :meth:`RelayWebSocketProtocol.write_frames` writes frames at once, without
  a coroutine, in one ``transport.write`` for several frames to the same connection,
  whenever the transport takes them (not paused by a full buffer), and frames them
  itself (a two- to ten-byte header) instead of through websockets' Frame objects.

``cipherpost-server`` runs uvicorn with this class; under any other ASGI server (the
tests' in-process client) the relay falls back to plain ASGI ``send``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.frames import apply_mask  # type: ignore[attr-defined]  # its C one, if built
from websockets.protocol import State

#: Frames received and not yet taken by the application before the socket is no longer
#: read (uvicorn: 1). Bounded memory: each frame is at most ``ws_max_size``.
READ_AHEAD = 16
#: The ASGI event queued when a taken frame broke the relay's protocol (the application's
#: ``receive`` then returns it, and the application closes the connection).
BROKEN = "cipherpost.broken"

#: Takes a text frame's payload (UTF-8, unchecked); False: take no more until resumed.
Taker = Callable[[bytes], bool]


class RelayWebSocketProtocol(WebSocketsSansIOProtocol):
    """See the module's description."""

    #: who takes text frames as they are parsed (None: ASGI ``receive`` gets them)
    _taker: Taker | None = None
    #: received bytes not yet parsed (whole frames only are handed on)
    _unparsed: bytearray
    #: the taker asked for no more frames for now: reading is paused
    _held = False
    #: the transport's buffer is full (uvicorn's ``writable`` event is clear): a flag, as
    #: ``Event.is_set`` is a Python call per write
    _write_paused = False

    @property
    def taking(self) -> bool:
        """Frames go to a taker (see :meth:`take_frames`)."""
        return self._taker is not None

    def take_frames(self, taker: Taker) -> bool:
        """Hand complete text frames to ``taker`` from now on (see the module); False,
        changing nothing, when this connection cannot now: it is not open, an extension
        is in use, or frames came before (websockets is inside one, or ASGI ``receive``
        has some the application has not read: they go first)."""
        conn = self.conn
        if conn.state is not State.OPEN or conn.extensions or self.close_sent \
                or not self.queue.empty() or not _between_frames(conn):
            return False
        self._taker = taker
        self._unparsed = bytearray()
        return True

    def stop_taking(self, *, broken: bool = False) -> None:
        """Hand no more frames to the taker; what was received and not handed on is
        dropped. ``broken``: a taken frame broke the protocol: ASGI ``receive`` says so
        (:data:`BROKEN`) to the application, which closes the connection, and text
        frames still to come are dropped (control frames, the close among them, are
        still answered)."""
        if self._taker is None:
            return
        self._taker = _drop if broken else None
        self._unparsed = bytearray()
        if self._held:  # reading goes on: the close handshake is still to be read
            self._held = False
            self._read_on()
        if broken:
            event: Any = {"type": BROKEN}
            self.queue.put_nowait(event)

    def resume_taking(self) -> None:
        """The taker wants frames again: hand it those already received, then read on."""
        if not self._held:
            return
        self._held = False
        if self._taker is not None:
            self._parse()
        if not self._held:
            self._read_on()

    def pause_writing(self) -> None:
        self._write_paused = True
        super().pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
        super().resume_writing()

    def data_received(self, data: bytes) -> None:
        if self._taker is None:
            super().data_received(data)
            return
        self._unparsed += data
        if not self._held:
            self._parse()

    def _hold(self) -> None:
        if not self._held:
            self._held = True
            self.transport.pause_reading()

    def _read_on(self) -> None:
        """Resume reading paused by :meth:`_hold` (unless uvicorn holds it paused too)."""
        if not self.read_paused and not self.transport.is_closing():
            self.transport.resume_reading()

    def _parse(self) -> None:
        """Hand on the complete frames received (RFC 6455, 5.2), while the taker takes."""
        buffer = self._unparsed
        conn = self.conn
        at = 0
        end = len(buffer)
        while end - at >= 2 and self._taker is not None:
            head, size = buffer[at], buffer[at + 1]
            if not size & 0x80 or head & 0x70 or conn.state is not State.OPEN:
                break  # unmasked (refused), reserved bits, or closing: websockets decides
            size &= 0x7F
            start = at + 6
            if size >= 126:
                start = at + (8 if size == 126 else 14)
                if end < start:
                    return self._keep(at)
                size = int.from_bytes(buffer[at + 2:start - 4], "big")
                max_size = conn.max_message_size
                if max_size is not None and size > max_size:
                    break
            stop = start + size
            if end < stop:
                return self._keep(at)
            opcode = head & 0x0F
            if opcode == 0x1 and head & 0x80:  # an unfragmented text frame
                payload = apply_mask(buffer[start:stop], buffer[start - 4:start])
                at = stop
                if not self.close_sent and not self._taker(payload):
                    self._hold()
                    return self._keep(at)
            elif opcode >= 0x8:  # ping, pong, close: websockets answers and tracks them
                frame = bytes(buffer[at:stop])
                at = stop
                super().data_received(frame)
            else:
                break
        else:
            return self._keep(at)
        # A frame this does not take: websockets parses it and all that follows.
        rest = bytes(buffer[at:])
        self._taker = None
        self._unparsed = bytearray()
        if rest:
            super().data_received(rest)

    def _keep(self, at: int) -> None:
        if self._taker is not None:
            del self._unparsed[:at]

    def send_receive_event_to_app(self) -> None:
        # uvicorn pauses reading after every frame unless reading is paused already: it
        # is told so, and reading is paused here only when the queue is long. uvicorn's
        # ``receive`` resumes reading once the queue is empty, as before.
        paused = self.read_paused
        self.read_paused = True
        try:
            super().send_receive_event_to_app()
        finally:
            self.read_paused = paused
        if not paused and self.queue.qsize() >= READ_AHEAD:
            self.read_paused = True
            self.transport.pause_reading()

    def write_frames(self, frames: list[bytes]) -> bool:
        """Write ``frames`` (UTF-8 JSON text) now, in one ``transport.write``.

        Returns False, having written nothing, when they cannot be written this way: the
        transport's buffer is full (then ASGI ``send`` waits for room), or the connection
        is not open (then ``send`` raises as it does)."""
        if self._write_paused or self.disconnected or self.close_sent \
                or not self.handshake_complete or self.initial_response is not None \
                or self.transport.is_closing():
            return False
        conn = self.conn
        if conn.state is State.OPEN and not conn.extensions \
                and not conn.expect_continuation_frame and not conn.debug:
            # What ``send_text`` would write, without a Frame object and its checks per
            # frame (a server's frames are not masked, and no extension is in use):
            # about four fifths of the Python work of writing a frame.
            # Whatever the protocol had queued goes first (rarely anything: uvicorn
            # writes a pong as soon as the ping is parsed).
            data = conn.data_to_send() if conn.writes else []
            for frame in frames:
                data.append(_text_header(len(frame)))
                data.append(frame)
        else:
            try:
                for frame in frames:
                    conn.send_text(frame)
            except InvalidState:  # closing: what was encoded goes nowhere, as with send()
                return False
            data = conn.data_to_send()
        self.transport.write(b"".join(data))
        return True


def _drop(_payload: bytes) -> bool:
    return True


def _between_frames(conn: object) -> bool:
    """Whether websockets' parser holds no part of a frame: nothing buffered, no message
    half received, and its generator waits for the next frame's first byte (a frame's
    header may have been read with its payload still to come, the buffer then empty)."""
    if getattr(conn, "current_size", 0) is not None \
            or getattr(getattr(conn, "reader", None), "buffer", True):
        return False
    waiting = getattr(conn, "parser", None)
    while getattr(waiting, "gi_yieldfrom", None) is not None:
        waiting = waiting.gi_yieldfrom  # type: ignore[union-attr]
    return getattr(waiting, "__name__", "") == "at_eof"


_LENGTH_16 = struct.Struct("!BBH")
_LENGTH_64 = struct.Struct("!BBQ")


def _text_header(length: int) -> bytes:
    """The header of an unmasked, final text frame of ``length`` bytes (RFC 6455, 5.2)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 1 << 16:
        return _LENGTH_16.pack(0x81, 126, length)
    return _LENGTH_64.pack(0x81, 127, length)
