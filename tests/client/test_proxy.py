"""Through a SOCKS5 proxy (as with Tor): HTTP requests and the WebSocket both go through
it. The proxy here is a minimal no-auth SOCKS5 CONNECT relay that counts connections."""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import Callable
from pathlib import Path

from cipherpost.client import Client
from cipherpost.client import events as ev

from .conftest import Devices, ThreadedRelay


class Socks5:
    def __init__(self) -> None:
        self.connections = 0
        self.first_requests: list[bytes] = []
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            _version, n = await reader.readexactly(2)
            await reader.readexactly(n)
            writer.write(b"\x05\x00")
            _v, _cmd, _rsv, kind = await reader.readexactly(4)
            if kind == 1:
                host = ".".join(str(b) for b in await reader.readexactly(4))
            else:
                host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
            (port,) = struct.unpack(">H", await reader.readexactly(2))
            up_reader, up_writer = await asyncio.open_connection(host, port)
            self.connections += 1
            writer.write(b"\x05\x00\x00\x01" + bytes(4) + b"\x00\x00")
            first = await reader.read(65536)
            self.first_requests.append(first.split(b"\r\n")[0])
            self._note_requests(first)
            up_writer.write(first)
            await asyncio.gather(_pipe(reader, up_writer, self._note_requests),
                                 _pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


    def _note_requests(self, data: bytes) -> None:
        """Every HTTP request line the client sent through the proxy, on any connection
        (a kept-alive connection's first request need not be the one a test looks for)."""
        self.requests.extend(line for line in data.split(b"\r\n") if _REQUEST_LINE.match(line))


_REQUEST_LINE = re.compile(rb"(GET|POST|PUT|PATCH|DELETE) /\S* HTTP/1\.1$")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                tap: Callable[[bytes], None] | None = None) -> None:
    try:
        while data := await reader.read(65536):
            if tap is not None:
                tap(data)
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def test_http_and_websocket_through_socks5(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        proxy = Socks5()
        await proxy.start()
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            path = bob.store._db.execute("PRAGMA database_list").fetchone()[2]
            await bob.close()
            devices.clients.remove(bob)
            bob = await Client.open(Path(path), passphrase="correct horse",
                                    proxy=f"socks5://127.0.0.1:{proxy.port}")
            devices.clients.append(bob)
            await alice.send_text("bob", "via the proxy")
            await bob.receive()                       # HTTP through the proxy
            assert any(r.startswith(b"GET /v1/messages") for r in proxy.requests)
            await alice.send_text("bob", "over the socket")
            before = proxy.connections

            async def first_message() -> str:
                async for event in bob.listen():
                    if isinstance(event, ev.Message):
                        return event.text
                return ""

            assert await asyncio.wait_for(first_message(), 30) == "over the socket"
            assert b"GET /v1/websocket HTTP/1.1" in proxy.first_requests[before:]
        finally:
            await devices.close()

    asyncio.run(scenario())
