"""The relay's uvicorn WebSocket protocol (server/ws_protocol.py): reading pauses only
after READ_AHEAD unread frames, and frames written together leave in one write."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from cipherpost.server.ws_protocol import READ_AHEAD, RelayWebSocketProtocol


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.pauses = self.resumes = 0
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def pause_reading(self) -> None:
        self.pauses += 1

    def resume_reading(self) -> None:
        self.resumes += 1

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def _open(app: Any) -> tuple[RelayWebSocketProtocol, FakeTransport, ClientProtocol]:
    config = uvicorn.Config(app=app, ws=RelayWebSocketProtocol, ws_per_message_deflate=False,
                            ws_ping_interval=None, log_level="warning")
    config.load()
    protocol = RelayWebSocketProtocol(config=config, server_state=ServerState(), app_state={},
                                      _loop=asyncio.get_running_loop())
    transport = FakeTransport()
    protocol.connection_made(transport)
    client = ClientProtocol(parse_uri("ws://127.0.0.1/v1/websocket"))
    client.send_request(client.connect())
    protocol.data_received(b"".join(client.data_to_send()))
    for _ in range(20):  # the app's task accepts the connection
        await asyncio.sleep(0)
    client.receive_data(b"".join(transport.writes))
    transport.writes.clear()
    assert protocol.handshake_complete
    return protocol, transport, client


def _text(text: str) -> bytes:
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=True, extensions=[])


def test_reading_pauses_only_after_read_ahead_frames_wait() -> None:
    asyncio.run(_reading_pauses())


async def _reading_pauses() -> None:
    release = asyncio.Event()
    taken: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await release.wait()
        for _ in range(READ_AHEAD + 2):
            taken.append((await receive())["text"])

    protocol, transport, _client = await _open(app)
    for i in range(READ_AHEAD - 1):
        protocol.data_received(_text(f"f{i}"))
    assert transport.pauses == 0  # uvicorn itself pauses after every frame
    protocol.data_received(_text(f"f{READ_AHEAD - 1}"))
    assert transport.pauses == 1
    protocol.data_received(_text("late") + _text("later"))  # already read: queued too
    assert transport.pauses == 1
    release.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert taken == [f"f{i}" for i in range(READ_AHEAD)] + ["late", "later"]
    assert transport.resumes == 1


def test_frames_written_together_leave_in_one_write() -> None:
    asyncio.run(_one_write())


async def _one_write() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await asyncio.Event().wait()

    protocol, transport, client = await _open(app)
    assert protocol.write_frames([b'{"type":"sent"}', b'{"type":"messages"}'])
    assert len(transport.writes) == 1
    client.receive_data(transport.writes[0])
    received = [e.data for e in client.events_received() if isinstance(e, Frame)]
    assert received == [b'{"type":"sent"}', b'{"type":"messages"}']

    protocol.pause_writing()  # the transport's buffer is full: nothing is written
    assert not protocol.write_frames([b'{"type":"sent"}'])
    assert len(transport.writes) == 1
    protocol.resume_writing()
    transport.closing = True  # closing: refused, so that ASGI send raises as it does
    assert not protocol.write_frames([b'{"type":"sent"}'])
    assert len(transport.writes) == 1


def test_frames_are_framed_as_websockets_frames_them() -> None:
    asyncio.run(_framed())


async def _framed() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await asyncio.Event().wait()

    protocol, transport, client = await _open(app)
    # Each length form of the header: 7 bits, 16 bits (126..65535), 64 bits.
    frames = [b"", b"x" * 125, b"y" * 126, b"z" * 65535, b"w" * 65536,
              '{"t":"\u00e9"}'.encode()]
    assert protocol.write_frames(frames)
    assert transport.writes == [b"".join(
        Frame(Opcode.TEXT, f).serialize(mask=False, extensions=[]) for f in frames)]
    client.receive_data(transport.writes[0])
    received = [e.data for e in client.events_received() if isinstance(e, Frame)]
    assert received == frames
