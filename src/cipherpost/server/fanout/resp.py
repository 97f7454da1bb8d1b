"""A lean Redis connection for the fan-out's hot path: PUBLISH and SUBSCRIBE only.

redis-py's asyncio client spent about 20 µs of CPU per pipelined PUBLISH and 30 µs per
message read from a subscription on this machine (its per-command and per-reply
machinery, not the parsing, which hiredis does in C): more than the rest of the relay
spends on a message. Here commands are written as RESP arrays onto an asyncio stream
and every reply that has arrived is parsed at once by hiredis's ``Reader`` (the parser
redis-py itself uses), about 1.4 µs per PUBLISH and 1 µs per message read
(``benchmarks/results/scale-out-2026-11-29.md``). Everything else that talks to Redis
(the rate limits' script calls, one per event-loop turn) keeps redis-py.

URLs are read by redis-py's own parser: ``redis://``, ``rediss://`` (TLS, verified with
the system's CAs or ``ssl_ca_certs``) and ``unix://``, with a username and password
(``AUTH``). The database number does not matter: pub/sub channels are server-wide.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable, Sequence
from typing import Any

import hiredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url

#: Bytes read from the socket at a time.
READ_SIZE = 1 << 16


class RespError(ConnectionError):
    """Redis answered with an error, or the connection failed or closed."""


def encode(command: Sequence[bytes]) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(command)]
    for part in command:
        out.append(b"$%d\r\n" % len(part))
        out.append(part)
        out.append(b"\r\n")
    return b"".join(out)


class RespConnection:
    """One connection; replies come back in order, as hiredis parses them (bytes, ints,
    lists; an error reply as ``hiredis.ReplyError``)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = hiredis.Reader()

    @classmethod
    async def open(cls, url: str, timeout: float) -> RespConnection:
        """Connect (and authenticate) within ``timeout`` seconds.

        Raises:
            RespError: the connection or ``AUTH`` failed.
            TimeoutError: no answer in time.
        """
        options: dict[str, Any] = dict(parse_url(url))
        kind = options.get("connection_class")
        try:
            if kind is UnixDomainSocketConnection:
                streams = asyncio.open_unix_connection(options["path"])
            else:
                context = None
                if kind is SSLConnection:
                    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
                streams = asyncio.open_connection(options.get("host", "localhost"),
                                                  int(options.get("port", 6379)),
                                                  ssl=context)
            reader, writer = await asyncio.wait_for(streams, timeout)
        except OSError as exc:
            raise RespError(f"cannot connect to Redis: {exc}") from exc
        connection = cls(reader, writer)
        password = options.get("password")
        if password is not None:
            username = options.get("username")
            command = [b"AUTH", *([username.encode()] if username else []), password.encode()]
            try:
                connection.send([command])
                (answer,) = await asyncio.wait_for(connection.replies(1), timeout)
            except BaseException:
                connection.close()
                raise
            if isinstance(answer, hiredis.ReplyError):
                connection.close()
                raise RespError(f"Redis refused AUTH: {answer}")
        return connection

    def send(self, commands: Iterable[Sequence[bytes]]) -> None:
        """Write commands (one write for all of them; the replies follow in order)."""
        self._writer.write(b"".join(encode(c) for c in commands))

    async def drain(self) -> None:
        await self._writer.drain()

    async def read(self) -> list[Any]:
        """Every reply that is complete after the next read from the socket (at least
        one).

        Raises:
            RespError: the connection closed, or the bytes are not RESP.
        """
        out: list[Any] = []
        while not out:
            data = await self._reader.read(READ_SIZE)
            if not data:
                raise RespError("Redis closed the connection")
            self._parser.feed(data)
            try:
                while (reply := self._parser.gets()) is not False:
                    out.append(reply)
            except hiredis.ProtocolError as exc:
                raise RespError(f"not RESP from Redis: {exc}") from exc
        return out

    async def replies(self, n: int) -> list[Any]:
        """The next ``n`` replies."""
        out: list[Any] = []
        while len(out) < n:
            out += await self.read()
        if len(out) > n:
            raise RespError("more replies from Redis than commands")
        return out

    def close(self) -> None:
        self._writer.close()
