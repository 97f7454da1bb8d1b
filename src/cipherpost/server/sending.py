"""The send path, shared by ``PUT /v1/messages`` and the WebSocket's ``send`` frame: checks,
the rate limit, the group commit, and the hand-off of committed envelopes to live
connections. Compiled by mypyc with the other per-message modules (tools/compile_relay.py),
so it holds no FastAPI route (FastAPI reads its endpoints' signatures)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Sequence

from .auth import DeviceIdentity
from .codec import unb64
from .errors import ApiError, not_found
from .relay import Relay
from .storage.group import Done, Resolve
from .storage.models import (
    DeviceMismatch,
    OutgoingMessage,
    QueueFull,
    RecipientSuspended,
    StaleDevices,
    UnknownAccount,
    new_tuple,
)
from .storage.sql import Queued


def storable(text: str) -> bool:
    """Whether ``text`` can name a row at all: the relay's ids hold no NUL, and PostgreSQL
    refuses NUL in any text parameter (a send to such an account id answered 500, an
    acknowledgement of such an id closed the connection with 1011)."""
    return "\x00" not in text


def storable_ids(ids: Iterable[str]) -> list[str]:
    """The ids of an acknowledgement that can name a queued message (the others name none)."""
    return [i for i in ids if len(i) <= 36 and storable(i)]


def submit_send(relay: Relay, device: DeviceIdentity, account_id: str, timestamp: int,
                messages: Sequence[tuple[int, int, int, str]], done: Done) -> None:
    """Check a send request and hand it to the next group commit; its outcome goes to
    ``done`` (``(True, queued)`` once durable, or ``(False, exception)``: see
    :func:`refusal`), never before this returns. ``messages`` are ``(device_id,
    registration_id, type, base64 content)``, already checked for range. On commit the
    envelopes go straight to their devices' live connections.

    Raises:
        ApiError: malformed, an account id no account can have (404, as for an unknown
            one), or rate limited (told to ``done`` instead when the limit is shared
            through Redis: one device's sends still queue in order).
    """
    if not storable(account_id):
        raise not_found("account")
    settings = relay.settings
    limit = settings.max_message_bytes
    outgoing = [new_tuple(OutgoingMessage, (d, r, t, unb64(c, "content", max_bytes=limit)))
                for d, r, t, c in messages]
    if len(outgoing) > 1 and len({m.device_id for m in outgoing}) != len(outgoing):
        raise ApiError(400, "invalid_request", "one message per destination device")
    now = relay.now_ms()
    allowed = relay.limit_nowait("messages", f"{device.account_id}>{account_id}")
    if allowed is None:  # the usual case: a plain call (a partial with keywords cost more)
        _enqueue(relay, done, device, account_id, outgoing, timestamp, now)
    else:
        _after(allowed, functools.partial(_enqueue, relay, done, device, account_id,
                                          outgoing, timestamp, now), done)


def _enqueue(relay: Relay, done: Done, device: DeviceIdentity, account_id: str,
             outgoing: list[OutgoingMessage], timestamp: int, now: int) -> None:
    # ``Storage.sends`` rather than ``enqueue_then``: on SQLite a compiled call all the way.
    settings = relay.settings
    relay.storage.sends.submit(
        done, account_id, outgoing, (device.account_id, device.device_id),
        device.device_id if account_id == device.account_id else None, timestamp, now,
        settings.message_ttl, settings.queue_byte_budget,
        functools.partial(deliver, relay, account_id))


def _after(allowed: asyncio.Future[None], enqueue: Callable[[], None], done: Done) -> None:
    """``enqueue()`` once ``allowed`` resolves (in the order of the decisions); nothing
    is queued if ``allowed`` raises, or if the caller gave up meanwhile (the future
    ``done`` settles was cancelled)."""

    def decided(check: asyncio.Future[None]) -> None:
        if isinstance(done, Resolve) and done.future.cancelled():
            return
        exc = check.exception() if not check.cancelled() else asyncio.CancelledError()
        if exc is not None:
            done(False, exc)
            return
        try:
            enqueue()
        except Exception as error:
            done(False, error)

    allowed.add_done_callback(decided)


def deliver(relay: Relay, account_id: str, queued: list[Queued]) -> None:
    """Hand just-committed envelopes to their devices' live connections."""
    relay.metrics.messages_queued.inc(len(queued))
    for device_id, envelope in queued:
        relay.hub.deliver(account_id, device_id, envelope)


def refusal(exc: BaseException) -> ApiError | None:
    """The answer to a send refused by its rate limit or the storage (None: not a
    refusal, an error)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, UnknownAccount):
        return not_found("account")
    if isinstance(exc, DeviceMismatch):
        return ApiError(409, "device_mismatch", "the device list is out of date",
                        missing_devices=exc.missing, extra_devices=exc.extra)
    if isinstance(exc, StaleDevices):
        return ApiError(410, "stale_devices", "devices were re-installed",
                        stale_devices=exc.stale)
    if isinstance(exc, RecipientSuspended):
        return ApiError(403, "recipient_suspended",
                        "the recipient's account is suspended by the server's operators")
    if isinstance(exc, QueueFull):
        return ApiError(507, "queue_full", "a destination device's queue is full",
                        full_devices=exc.devices)
    return None
