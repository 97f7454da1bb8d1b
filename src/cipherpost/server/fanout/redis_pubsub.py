"""The fan-out of several relay processes through Redis publish/subscribe.

Theory of operation. Each device has a channel, ``cipherpost:d:<account>:<device>``. A
process holding a device's WebSocket is subscribed to its channel (one SUBSCRIBE on one
shared connection per process, confirmed before the connection reads its queue). After a
message commits, the process that committed it offers it to its own connection of the
device, if it has one, and publishes it on the channel (the publishes of an event-loop
turn go out in one pipeline); other processes offer what they receive to their
connection. Publishing whether or not the device is connected here is what lets a
WebSocket move between processes: a process never has to know where a device is.

Both connections speak RESP directly (:mod:`.resp`; redis-py's client cost more CPU per
message than the rest of the relay). Redis keeps nothing: a message is in the database
before it is published, and Redis only shortens the way to a connection. What pub/sub
may lose (publishes during a lost connection) is made up by the connections themselves:
an offer that is not the next one reads the queue, and after a reconnection every
connection of this process reads its queue once (``Subscriber.resync``). A subscription
quiet for :data:`HEALTH_CHECK` seconds is checked with a PING, so that a Redis gone
without a word is noticed too.

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

import hiredis

from ..storage.models import Envelope
from . import Subscriber
from .local import LocalFanout
from .resp import RespConnection, RespError

log = logging.getLogger("cipherpost.server")

PREFIX = b"cipherpost:d:"
#: Seconds a registration waits for Redis before the connection is refused (and the most
#: a connection, a publish or a PING may take).
TIMEOUT = 5.0
#: Seconds of quiet on the subscription after which a PING checks that Redis is there.
HEALTH_CHECK = 30.0

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
        #: the subscription's connection and the publishes' (None: not connected)
        self._sub: RespConnection | None = None
        self._pub: RespConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        #: device channels subscribed here, with the SUBSCRIBE's confirmation
        self._subscribed: dict[bytes, asyncio.Future[None]] = {}
        self._control_confirmed = False
        self._outbox: list[tuple[bytes, bytes]] = []
        self._flushing: asyncio.Task[None] | None = None
        #: publishes that failed (metrics and tests)
        self.lost_publishes = 0
        #: times the subscription's connection was made again (tests)
        self.reconnections = 0

    async def start(self) -> None:
        # Always subscribed to a channel of its own: the subscription's connection then
        # always has something to confirm, and its confirmation after a reconnection
        # tells the connections here to read their queues.
        sub = await self._subscribe_all()
        async with asyncio.timeout(TIMEOUT):
            while not self._control_confirmed:
                for reply in await sub.read():
                    self._handle(reply)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def close(self) -> None:
        for task in (self._reader, self._flushing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for connection in (self._sub, self._pub):
            if connection is not None:
                connection.close()
        self._sub = self._pub = None

    # -- connections of this process ------------------------------------------------------

    async def register(self, account_id: str, device_id: int, subscriber: Subscriber) -> None:
        self.local.add(account_id, device_id, subscriber)
        channel = _channel(account_id, device_id)
        confirmed = self._subscribed.get(channel)
        if confirmed is None:
            confirmed = asyncio.get_running_loop().create_future()
            self._subscribed[channel] = confirmed
            if self._sub is not None:  # else the reconnection subscribes it
                self._sub.send([(b"SUBSCRIBE", channel)])
        await asyncio.wait_for(asyncio.shield(confirmed), TIMEOUT)
        self._publish(channel, _CONNECTED + self._origin)

    def unregister(self, account_id: str, device_id: int, subscriber: Subscriber) -> None:
        self.local.unregister(account_id, device_id, subscriber)
        if self.local.get(account_id, device_id) is None:
            channel = _channel(account_id, device_id)
            if self._subscribed.pop(channel, None) is not None and self._sub is not None:
                self._sub.send([(b"UNSUBSCRIBE", channel)])

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
        """Publish what is waiting, one write and its replies at a time."""
        try:
            await asyncio.sleep(0)  # let the rest of this loop turn's commits join
            while self._outbox:
                batch, self._outbox = self._outbox, []
                try:
                    async with asyncio.timeout(TIMEOUT):
                        if self._pub is None:
                            self._pub = await RespConnection.open(self._url, TIMEOUT)
                        self._pub.send((b"PUBLISH", channel, payload)
                                       for channel, payload in batch)
                        await self._pub.drain()
                        answers = await self._pub.replies(len(batch))
                except (RespError, OSError, TimeoutError):
                    # Nothing is lost: the messages are committed, and connections
                    # elsewhere catch up on their next message or on reconnection.
                    if self._pub is not None:
                        self._pub.close()
                        self._pub = None
                    self.lost_publishes += len(batch)
                    log.warning("publishing to Redis failed", exc_info=True)
                    continue
                refused = [a for a in answers if isinstance(a, hiredis.ReplyError)]
                if refused:
                    self.lost_publishes += len(refused)
                    log.warning("Redis refused %d publishes: %s", len(refused), refused[0])
        finally:
            self._flushing = None

    # -- what other processes publish -----------------------------------------------------

    async def _subscribe_all(self) -> RespConnection:
        """A new subscription connection, subscribed to every channel of this process."""
        sub = await RespConnection.open(self._url, TIMEOUT)
        sub.send([(b"SUBSCRIBE", self._control, *self._subscribed)])
        self._sub = sub
        return sub

    async def _read(self) -> None:
        pause = 0.05
        while True:
            try:
                sub = self._sub
                if sub is None:
                    sub = await self._subscribe_all()
                    self.reconnections += 1
                try:
                    replies = await asyncio.wait_for(sub.read(), HEALTH_CHECK)
                except TimeoutError:  # quiet for a while: is Redis still there?
                    sub.send([(b"PING",)])
                    replies = await asyncio.wait_for(sub.read(), TIMEOUT)
            except asyncio.CancelledError:
                raise
            except (RespError, OSError, TimeoutError):
                log.warning("the Redis subscription was lost; reconnecting", exc_info=True)
                if self._sub is not None:
                    self._sub.close()
                    self._sub = None
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            pause = 0.05
            for reply in replies:
                try:
                    self._handle(reply)
                except Exception:
                    log.exception("a fan-out message could not be handled")

    def _handle(self, reply: Any) -> None:
        """One reply on the subscription: ``[kind, channel, data or count]``."""
        if not isinstance(reply, list) or len(reply) != 3:
            return  # a PING's ["pong", ""], or nothing of ours
        kind, channel, data = reply
        if kind == b"subscribe":
            if channel == self._control:
                if self._control_confirmed:  # subscribed again: the connection was lost
                    self.local.resync_all()
                self._control_confirmed = True
                return
            confirmed = self._subscribed.get(channel)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
            return
        if kind != b"message" or not channel.startswith(PREFIX):
            return
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
