"""uvicorn's sans-I/O WebSocket protocol with two costs per frame taken out.

The relay reads two frames (``send``, ``ack``) and writes two (``sent``, ``messages``) per
message it delivers, each on its own at a moderate rate, so the work done per frame
outside the relay's own code counts:

* uvicorn stops reading the socket after every frame it hands to the application and
  starts again when the application takes it (a pause and a resume of the transport,
  and with them the event loop's registration of the socket, per frame). Here reading
  pauses only once :data:`READ_AHEAD` frames wait unread; the application's own limit
  (``websocket.PIPELINE``) still stops it from taking more work than it allows.
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

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.protocol import State

#: Frames received and not yet taken by the application before the socket is no longer
#: read (uvicorn: 1). Bounded memory: each frame is at most ``ws_max_size``.
READ_AHEAD = 16


class RelayWebSocketProtocol(WebSocketsSansIOProtocol):
    """See the module's description."""

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
        if not self.writable.is_set() or self.disconnected or self.close_sent \
                or not self.handshake_complete or self.initial_response is not None \
                or self.transport.is_closing():
            return False
        conn = self.conn
        if conn.state is State.OPEN and not conn.extensions \
                and not conn.expect_continuation_frame and not conn.debug:
            # What ``send_text`` would write, without a Frame object and its checks per
            # frame (a server's frames are not masked, and no extension is in use):
            # about four fifths of the Python work of writing a frame.
            data = conn.data_to_send()  # whatever the protocol had queued goes first
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


_LENGTH_16 = struct.Struct("!BBH")
_LENGTH_64 = struct.Struct("!BBQ")


def _text_header(length: int) -> bytes:
    """The header of an unmasked, final text frame of ``length`` bytes (RFC 6455, 5.2)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 1 << 16:
        return _LENGTH_16.pack(0x81, 126, length)
    return _LENGTH_64.pack(0x81, 127, length)
