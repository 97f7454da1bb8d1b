"""The relay's uvicorn WebSocket protocol (server/ws_protocol.py): reading pauses only
after READ_AHEAD unread frames, frames written together leave in one write, and text
frames are handed straight to a taker (parsed here) where websockets would have
queued them for ASGI ``receive``."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from uvicorn.server import ServerState
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from cipherpost.server.ws_protocol import BROKEN, READ_AHEAD, RelayWebSocketProtocol


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

    # What websockets had queued (a ping here) leaves first, in the same write.
    protocol.conn.send_ping(b"p")
    assert protocol.write_frames([b'{"type":"sent"}'])
    assert len(transport.writes) == 2
    client.receive_data(transport.writes[1])
    assert [(e.opcode, e.data) for e in client.events_received() if isinstance(e, Frame)] \
        == [(Opcode.PING, b"p"), (Opcode.TEXT, b'{"type":"sent"}')]

    protocol.pause_writing()  # the transport's buffer is full: nothing is written
    assert not protocol.write_frames([b'{"type":"sent"}'])
    assert len(transport.writes) == 2
    protocol.resume_writing()
    assert protocol.write_frames([b'{"type":"sent"}'])  # room again: written at once
    assert len(transport.writes) == 3
    transport.closing = True  # closing: refused, so that ASGI send raises as it does
    assert not protocol.write_frames([b'{"type":"sent"}'])
    assert len(transport.writes) == 3


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


# -- frames handed straight to a taker (take_frames) ------------------------------------------


def _frame(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=True, extensions=[])


async def _taking(protocol: RelayWebSocketProtocol) -> list[bytes]:
    taken: list[bytes] = []
    assert protocol.take_frames(lambda payload: taken.append(payload) or True)
    assert protocol.taking
    return taken


async def _idle_app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    await asyncio.Event().wait()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["text", "ping", "pong"]),
                          st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 70000])),
                min_size=1, max_size=6),
       st.lists(st.integers(min_value=1, max_value=80_000), max_size=8))
def test_taken_frames_arrive_whole_and_in_order_however_the_bytes_are_cut(
        frames: list[tuple[str, int]], cuts: list[int]) -> None:
    """Each frame length form (7, 16, 64 bits), pings and pongs between the texts, the
    bytes cut anywhere: the taker gets exactly the texts, in order, and every ping is
    answered with a pong (websockets still handles control frames)."""
    asyncio.run(_cut_anywhere(frames, cuts))


async def _cut_anywhere(frames: list[tuple[str, int]], cuts: list[int]) -> None:
    protocol, transport, client = await _open(_idle_app)
    taken = await _taking(protocol)
    texts = [f"{i}:".encode() + b"\xc3\xa9" * (n // 2) for i, (_, n) in enumerate(frames)]
    wire = b"".join(_frame(Opcode.TEXT, t) if kind == "text" else
                    _frame(Opcode.PING if kind == "ping" else Opcode.PONG, b"p")
                    for (kind, _), t in zip(frames, texts, strict=True))
    at = 0
    for cut in [*sorted({min(c, len(wire)) for c in cuts}), len(wire)]:
        protocol.data_received(wire[at:cut])
        at = cut
    assert taken == [t for (kind, _), t in zip(frames, texts, strict=True) if kind == "text"]
    assert protocol.taking and protocol.queue.empty()
    client.receive_data(b"".join(transport.writes))
    pongs = [e for e in client.events_received() if isinstance(e, Frame)]
    assert [e.opcode for e in pongs] == [Opcode.PONG] * sum(k == "ping" for k, _ in frames)


def test_a_taker_that_is_full_pauses_reading_until_it_resumes() -> None:
    asyncio.run(_held())


async def _held() -> None:
    protocol, transport, _client = await _open(_idle_app)
    taken: list[bytes] = []
    room = [2]

    def taker(payload: bytes) -> bool:
        taken.append(payload)
        room[0] -= 1
        return room[0] > 0

    assert protocol.take_frames(taker)
    protocol.data_received(b"".join(_frame(Opcode.TEXT, b"f%d" % i) for i in range(4)))
    assert taken == [b"f0", b"f1"] and transport.pauses == 1
    protocol.data_received(_frame(Opcode.TEXT, b"late"))  # read before the pause took hold
    assert taken == [b"f0", b"f1"]
    room[0] = 10
    protocol.resume_taking()
    assert taken == [b"f0", b"f1", b"f2", b"f3", b"late"] and transport.resumes == 1
    protocol.resume_taking()  # not held: nothing to do
    assert transport.resumes == 1


def test_a_frame_the_fast_path_does_not_take_hands_everything_after_it_to_asgi() -> None:
    asyncio.run(_gives_way())


async def _gives_way() -> None:
    received: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            received.append(await receive())

    protocol, _transport, _client = await _open(app)
    taken = await _taking(protocol)
    protocol.data_received(_frame(Opcode.TEXT, b"a") + _frame(Opcode.BINARY, b"b")
                           + _frame(Opcode.TEXT, b"c"))
    assert taken == [b"a"] and not protocol.taking
    for _ in range(5):
        await asyncio.sleep(0)
    assert received == [{"type": "websocket.receive", "bytes": b"b"},
                        {"type": "websocket.receive", "text": "c"}]
    # A fragmented text: websockets assembles it, and the fast path waits until it has.
    protocol.data_received(_frame(Opcode.TEXT, b"d1", fin=False))
    assert not protocol.take_frames(taken.append)  # type: ignore[arg-type]
    protocol.data_received(_frame(Opcode.CONT, b"d2"))
    assert not protocol.take_frames(taken.append)  # type: ignore[arg-type]  # unread yet
    for _ in range(5):
        await asyncio.sleep(0)
    assert received[-1] == {"type": "websocket.receive", "text": "d1d2"}
    assert protocol.take_frames(lambda p: taken.append(p) or True)
    protocol.data_received(_frame(Opcode.TEXT, b"e"))
    assert taken == [b"a", b"e"]


def test_frames_are_not_taken_while_websockets_is_inside_one_or_asgi_holds_some() -> None:
    asyncio.run(_refused())


async def _refused() -> None:
    protocol, _transport, _client = await _open(_idle_app)
    whole = _frame(Opcode.TEXT, b"x" * 300)
    protocol.data_received(whole[:8])  # the header and mask: its payload is still to come
    assert protocol.conn.reader.buffer == bytearray()
    assert not protocol.take_frames(lambda p: True)
    protocol.data_received(whole[8:])  # the frame is whole: queued for ASGI receive
    assert not protocol.take_frames(lambda p: True)
    assert (await protocol.queue.get())["text"] == "x" * 300
    assert protocol.take_frames(lambda p: True)


def test_a_broken_taker_is_told_through_asgi_and_later_texts_are_dropped() -> None:
    asyncio.run(_broken())


async def _broken() -> None:
    protocol, _transport, client = await _open(_idle_app)
    await _taking(protocol)
    protocol.stop_taking(broken=True)
    assert protocol.queue.get_nowait() == {"type": BROKEN}
    protocol.data_received(_frame(Opcode.TEXT, b"ignored"))
    assert protocol.queue.empty()
    client.send_close(1000)
    protocol.data_received(b"".join(client.data_to_send()))  # the close is still handled
    assert protocol.queue.get_nowait()["type"] == "websocket.disconnect"


def test_an_oversized_frame_is_left_to_websockets_which_closes_with_1009() -> None:
    asyncio.run(_oversized())


async def _oversized() -> None:
    protocol, transport, client = await _open(_idle_app)
    taken = await _taking(protocol)
    big = _frame(Opcode.TEXT, b"y" * (1024 * 1024 + 1))
    protocol.conn.max_message_size = 1024 * 1024
    protocol.data_received(big[:20])
    assert not taken and not protocol.taking
    client.receive_data(b"".join(transport.writes))
    closes = [e for e in client.events_received() if isinstance(e, Frame)]
    assert closes and closes[-1].opcode == Opcode.CLOSE
    assert int.from_bytes(closes[-1].data[:2], "big") == 1009


def test_stopping_a_held_taker_reads_on() -> None:
    asyncio.run(_stop_held())


async def _stop_held() -> None:
    protocol, transport, _client = await _open(_idle_app)
    assert protocol.take_frames(lambda payload: False)
    protocol.data_received(_frame(Opcode.TEXT, b"a") + _frame(Opcode.TEXT, b"b"))
    assert transport.pauses == 1
    protocol.stop_taking()  # the session ended: what it left unread goes unhandled
    assert transport.resumes == 1 and not protocol.taking
    protocol.data_received(_frame(Opcode.TEXT, b"c"))  # now through ASGI
    assert (await protocol.queue.get())["text"] == "c"
