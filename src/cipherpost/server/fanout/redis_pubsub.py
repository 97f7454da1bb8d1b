"""The fan-out of several relay processes through Redis publish/subscribe.

Theory of operation. Each device has a channel, ``cipherpost:d:<account>:<device>``. A
process holding a device's WebSocket is subscribed to its channel (one SUBSCRIBE on one
shared connection per process, confirmed before the connection reads its queue). After a
message commits, the process that committed it offers it to its own connection of the
device, if it has one, and publishes it on the channel (the publishes of an event-loop
turn go out in one pipeline); other processes offer what they receive to their
connection. Publishing whether or not the device is connected here is what lets a
WebSocket move between processes: a process never has to know where a device is.

Redis keeps nothing: a message is in the database before it is published, and Redis
only shortens the way to a connection. What pub/sub may lose (publishes during a lost
connection) is made up by the connections themselves: an offer that is not the next one
reads the queue, and after a reconnection every connection of this process reads its
queue once (``Subscriber.resync``).

A connection registering publishes a "connected" note on its channel: another process
with an older connection of that device closes it with 4409, as one process does. A
device's credentials dying (``disconnect``) is published likewise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from ..storage.models import Envelope
from . import Subscriber
from .local import LocalFanout

log = logging.getLogger("cipherpost.server")

PREFIX = b"cipherpost:d:"
#: Seconds a registration waits for Redis before the connection is refused.
TIMEOUT = 5.0

_MESSAGE, _CONNECTED, _DISCONNECT = b"m", b"c", b"k"
_ORIGIN = 8
# seq, client timestamp, server timestamp, type, sender device (-1: none), and the
# lengths of guid and sender account (0xFF: none).
_HEAD = struct.Struct(">qqqhhBB")


class RedisFanout:
    """Live connections of every relay process sharing one Redis server."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.local = LocalFanout()
        self._origin = os.urandom(_ORIGIN)
        self._control = b"cipherpost:p:" + self._origin.hex().encode()
        self._redis: Redis | None = None
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        #: device channels subscribed here, with the SUBSCRIBE's confirmation
        self._subscribed: dict[bytes, asyncio.Future[None]] = {}
        self._control_confirmed = False
        self._outbox: list[tuple[bytes, bytes]] = []
        self._flushing: asyncio.Task[None] | None = None
        #: publishes that failed (metrics and tests)
        self.lost_publishes = 0

    async def start(self) -> None:
        self._redis = Redis.from_url(self._url, socket_connect_timeout=TIMEOUT,
                                     health_check_interval=30)
        self._pubsub = self._redis.pubsub()
        # Always subscribed to a channel of its own: the reader then always has a
        # connection to read, and its re-confirmation tells of a reconnection.
        await asyncio.wait_for(self._pubsub.subscribe(self._control), TIMEOUT)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def close(self) -> None:
        for task in (self._reader, self._flushing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()

    # -- connections of this process ------------------------------------------------------

    async def register(self, account_id: str, device_id: int, subscriber: Subscriber) -> None:
        assert self._pubsub is not None and self._redis is not None
        self.local.add(account_id, device_id, subscriber)
        channel = _channel(account_id, device_id)
        confirmed = self._subscribed.get(channel)
        if confirmed is None:
            confirmed = asyncio.get_running_loop().create_future()
            self._subscribed[channel] = confirmed
            await self._pubsub.subscribe(channel)
        await asyncio.wait_for(asyncio.shield(confirmed), TIMEOUT)
        await self._redis.publish(channel, _CONNECTED + self._origin)

    def unregister(self, account_id: str, device_id: int, subscriber: Subscriber) -> None:
        self.local.unregister(account_id, device_id, subscriber)
        if self.local.get(account_id, device_id) is None:
            channel = _channel(account_id, device_id)
            if self._subscribed.pop(channel, None) is not None and self._pubsub is not None:
                task = asyncio.ensure_future(self._pubsub.unsubscribe(channel))
                task.add_done_callback(_log_failure)

    # -- what happens to devices ----------------------------------------------------------

    def deliver(self, account_id: str, device_id: int, envelope: Envelope) -> None:
        self.local.deliver(account_id, device_id, envelope)
        self._publish(_channel(account_id, device_id),
                      _MESSAGE + self._origin + encode_envelope(envelope))

    def disconnect(self, account_id: str, device_id: int, code: int) -> None:
        self.local.disconnect(account_id, device_id, code)
        self._publish(_channel(account_id, device_id),
                      _DISCONNECT + self._origin + code.to_bytes(2, "big"))

    def _publish(self, channel: bytes, payload: bytes) -> None:
        self._outbox.append((channel, payload))
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        """Publish what is waiting, a pipeline (one write, one read) at a time."""
        assert self._redis is not None
        try:
            await asyncio.sleep(0)  # let the rest of this loop turn's commits join
            while self._outbox:
                batch, self._outbox = self._outbox, []
                try:
                    pipe = self._redis.pipeline(transaction=False)
                    for channel, payload in batch:
                        pipe.publish(channel, payload)
                    await pipe.execute()
                except Exception:
                    # Nothing is lost: the messages are committed, and connections
                    # elsewhere catch up on their next message or on reconnection.
                    self.lost_publishes += len(batch)
                    log.warning("publishing to Redis failed", exc_info=True)
        finally:
            self._flushing = None

    # -- what other processes publish -----------------------------------------------------

    async def _read(self) -> None:
        assert self._pubsub is not None
        pause = 0.05
        while True:
            try:
                message = await self._pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("the Redis subscription was lost; reconnecting", exc_info=True)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            pause = 0.05
            if message is not None:
                try:
                    self._handle(message)
                except Exception:
                    log.exception("a fan-out message could not be handled")

    def _handle(self, message: dict[str, Any]) -> None:
        kind, channel = message["type"], bytes(message["channel"])
        if kind == "subscribe":
            if channel == self._control:
                if self._control_confirmed:  # subscribed again: the connection was lost
                    self.local.resync_all()
                self._control_confirmed = True
                return
            confirmed = self._subscribed.get(channel)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
            return
        if kind != "message" or not channel.startswith(PREFIX):
            return
        data = bytes(message["data"])
        what, origin, body = data[:1], data[1:1 + _ORIGIN], data[1 + _ORIGIN:]
        if origin == self._origin:
            return  # offered here already
        account_id, _, device = channel[len(PREFIX):].decode().rpartition(":")
        device_id = int(device)
        if what == _MESSAGE:
            self.local.deliver(account_id, device_id, decode_envelope(body))
        elif what == _CONNECTED:
            self.local.disconnect(account_id, device_id, 4409)  # replaced elsewhere
        elif what == _DISCONNECT:
            self.local.disconnect(account_id, device_id, int.from_bytes(body, "big"))


def _channel(account_id: str, device_id: int) -> bytes:
    return PREFIX + f"{account_id}:{device_id}".encode()


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("unsubscribing from Redis failed", exc_info=task.exception())


def encode_envelope(e: Envelope) -> bytes:
    """An envelope as bytes for a publish (every field, the ciphertext as is)."""
    guid = e.guid.encode()
    sender = e.sender_account_id.encode() if e.sender_account_id is not None else b""
    return b"".join((
        _HEAD.pack(e.seq, e.client_timestamp, e.server_timestamp, e.type,
                   -1 if e.sender_device_id is None else e.sender_device_id, len(guid),
                   len(sender) if e.sender_account_id is not None else 0xFF),
        guid, sender, e.content))


def decode_envelope(data: bytes) -> Envelope:
    """The inverse of :func:`encode_envelope`."""
    seq, client_ts, server_ts, kind, sender_device, guid_len, sender_len = \
        _HEAD.unpack_from(data)
    at = _HEAD.size
    guid = data[at:at + guid_len].decode()
    at += guid_len
    sender: str | None = None
    if sender_len != 0xFF:
        sender = data[at:at + sender_len].decode()
        at += sender_len
    return Envelope(seq, guid, sender, None if sender_device < 0 else sender_device, kind,
                    data[at:], client_ts, server_ts)
