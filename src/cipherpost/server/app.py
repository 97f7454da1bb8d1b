"""The ASGI application: ``create_app(settings)``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import logfilter
from . import retention, trust_root
from .api import (
    accounts,
    attachments,
    history,
    keys,
    messages,
    ops,
    privacy,
    provisioning,
    registration_lock,
    sealed,
    two_factor,
    websocket,
)
from .errors import ApiError
from .fanout import create_fanout
from .key_chain import load_or_create
from .ratelimit import create_shared_limits
from .relay import Relay
from .settings import Settings, sealed_sender_key_file
from .storage import presence
from .storage.engine import Database
from .storage.sql import Storage

log = logging.getLogger("cipherpost.server")

_STATUS_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden",
                 404: "not_found", 405: "method_not_allowed", 413: "too_large",
                 415: "unsupported_media_type", 422: "invalid_request"}


def create_app(settings: Settings | None = None, *,
               clock: Callable[[], float] = time.time) -> RelayApp:
    """Build the relay app. The database is migrated when the app starts."""
    settings = settings or Settings.load()
    if settings.registration not in ("open", "invite"):
        raise ValueError("registration must be 'open' or 'invite'")
    for origin in settings.web_origins:
        if not _ORIGIN.fullmatch(origin):
            raise ValueError(f"web_origins: {origin!r} is not an origin "
                             "(like https://chat.example)")
    # uvicorn hands the websockets library its "uvicorn.error" logger, which then logs the
    # handshake's headers (the device token with them) at DEBUG.
    logfilter.install("uvicorn.error", "uvicorn.access", "websockets.server")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
        await asyncio.to_thread(db.migrate)
        Path(settings.attachment_dir).mkdir(parents=True, exist_ok=True)
        storage = Storage(db)
        try:
            fanout = create_fanout(settings)
            await fanout.start()
            relay = Relay(settings=settings, storage=storage, clock=clock, hub=fanout,
                          shared_limits=create_shared_limits(settings))
            key_file = sealed_sender_key_file(settings)
            relay.key_chain = await asyncio.to_thread(load_or_create, key_file)
            # The same trust root as every other relay of this database, or no start.
            await asyncio.to_thread(trust_root.check, db, relay.key_chain, key_file,
                                    int(clock() * 1000))
        except BaseException:
            storage.close()  # its threads, connections and the SQLite relay lock
            db.dispose()
            raise
        app.state.relay = relay
        await storage.refresh_suspended()
        alive = presence.process_key()
        await presence.note_alive(storage, alive, int(time.time() * 1000))
        tasks = [asyncio.create_task(_janitor(relay, alive)),
                 asyncio.create_task(_checkpoints(relay)),
                 asyncio.create_task(_suspensions(relay))]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await fanout.close()
            if relay.shared_limits is not None:
                await relay.shared_limits.close()
            with contextlib.suppress(Exception):  # the database may be what failed
                await storage.flush()  # acknowledgements still waiting to share a commit
                # Leave the queues whole in ``messages`` (the next start would move them,
                # but backups and cipherpost-admin read the database meanwhile too).
                await storage.move_queue_log(everything=True)
            with contextlib.suppress(Exception):
                await presence.forget(storage, alive)
            storage.close()
            db.dispose()

    app = RelayApp(
        title="Cipherpost relay",
        version="0.1.0",
        description="Relays end-to-end encrypted messages. It stores only ciphertext and "
                    "public keys. Authenticate with `Authorization: Bearer <device token>`. "
                    "The WebSocket protocol is described in docs/websocket.md.",
        lifespan=lifespan,
    )
    for module in (accounts, keys, messages, sealed, attachments, ops, provisioning, history,
                   two_factor, privacy, registration_lock):
        app.include_router(module.router)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
                   for e in exc.errors()][:10]
        return JSONResponse({"error": {"code": "invalid_request",
                                       "message": "the request is malformed"},
                             "details": details}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        return JSONResponse({"error": {"code": code, "message": str(exc.detail)}},
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        if _storage_unavailable(exc):
            # The disk is full, the database is read-only or unreachable: nothing was
            # stored; the client retries later (nothing it sent is half-done).
            log.error("storage unavailable: %s", type(exc).__name__)
            return JSONResponse({"error": {"code": "storage_unavailable",
                                           "message": "the server cannot store anything "
                                                      "right now; try again later"}},
                                status_code=503, headers={"Retry-After": "5"})
        log.exception("unexpected error")
        return JSONResponse({"error": {"code": "internal_error",
                                       "message": "internal error"}}, status_code=500)

    web = _web_dir(settings)
    if web is not None:
        app.mount("/", _Hardened(StaticFiles(directory=web, html=True)), name="web")

    if settings.web_origins:
        # A separately hosted copy of the browser client (web/README.md) calls the API
        # from its own origin. Tokens travel in headers, never cookies: no credentials.
        # Its sealed sends carry the recipient's access key in a header of their own.
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.web_origins),
                           allow_methods=["GET", "POST", "PUT", "DELETE"],
                           allow_headers=["Authorization", "Content-Type",
                                          "Unidentified-Access-Key"],
                           allow_credentials=False, max_age=600)
    app.add_middleware(_AccessLog)
    app.add_middleware(_BodyLimit, default=settings.max_request_bytes,
                       attachments=settings.max_attachment_bytes)
    return app


def _storage_unavailable(exc: BaseException) -> bool:
    """A database that cannot write now (full disk, I/O error, read-only, lost), as
    opposed to a bug: SQLite's and PostgreSQL's operational errors, raw or wrapped."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (sqlite3.OperationalError, sqlalchemy.exc.OperationalError)):
            return True
        name = type(seen).__module__ + "." + type(seen).__name__
        if name.startswith("psycopg") and type(seen).__name__ in (
                "OperationalError", "ReadOnlySqlTransaction", "DiskFull",
                "AdminShutdown", "ConnectionFailure"):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


class RelayApp(FastAPI):
    """FastAPI for HTTP; ``/v1/websocket`` is served as raw ASGI, so that the work per
    frame stays out of the framework's routing, dependency and middleware layers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == websocket.PATH:
            await websocket.serve(self.state.relay, _token_from_subprotocol(scope), receive, send)
            return
        await super().__call__(scope, receive, send)


#: Browsers cannot set headers on a WebSocket: the browser client offers its token as the
#: subprotocol ``cipherpost.token.<token>`` (never in the URL) beside ``cipherpost.batch``,
#: the one the relay echoes. Taken out of the list, it becomes the Authorization header.
TOKEN_SUBPROTOCOL = "cipherpost.token."  # noqa: S105 - a prefix, not a secret


def _token_from_subprotocol(scope: Scope) -> Scope:
    offered = list(scope.get("subprotocols", ()))
    tokens = [p for p in offered if p.startswith(TOKEN_SUBPROTOCOL)]
    if not tokens:
        return scope
    dropped = (b"authorization", b"sec-websocket-protocol")
    headers = [(k, v) for k, v in scope["headers"] if k not in dropped]
    if len(tokens) == 1 and not any(k == b"authorization" for k, _ in scope["headers"]):
        token = tokens[0][len(TOKEN_SUBPROTOCOL):]
        headers.append((b"authorization", b"Bearer " + token.encode("latin-1")))
    return {**scope, "headers": headers,
            "subprotocols": [p for p in offered if not p.startswith(TOKEN_SUBPROTOCOL)]}


#: An origin: scheme, host, optional port; no path, no wildcard.
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|http://\[::1\](:[0-9]{1,5})?")

#: The browser client's policy: its own script and styles only, no inline script, no
#: eval (WebAssembly compilation only, for the Argon2id KDF), connections only back here.
#: Trusted Types: the one policy the client makes (the URL of strength.js) and no other.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; "
    "trusted-types cipherpost-strength")
_WEB_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cache-control", b"no-cache"),
]


def _web_dir(settings: Settings) -> Path | None:
    """Where the built browser client is, or None when there is none to serve."""
    web = Path(settings.web_dir) if settings.web_dir else \
        Path(__file__).resolve().parents[3] / "web" / "dist"
    return web if (web / "index.html").is_file() else None


class _Hardened:
    """Static files with the browser client's security headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *_WEB_HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)


async def _checkpoints(relay: Relay) -> None:
    """Checkpoint the SQLite WAL every second, off the event loop (the loop's own
    connection never does it inside a commit), and move the queue log's old rows to the
    queues if no send did (``Storage.move_queue_log``)."""
    while True:
        await asyncio.sleep(1)
        try:
            await relay.storage.move_queue_log()
            await relay.storage.checkpoint()
        except Exception:
            log.exception("checkpoint failed")


#: Seconds between reads of which accounts are suspended (``cipherpost-admin`` writes
#: the database directly; every relay process notices within this).
SUSPENSION_POLL = 2.0


async def _suspensions(relay: Relay) -> None:
    """Close the connections of accounts an operator suspended, and refuse sends to them
    (their own requests are refused at once: credentials are checked per request)."""
    while True:
        await asyncio.sleep(SUSPENSION_POLL)
        try:
            for account_id, device_ids in (await relay.storage.refresh_suspended()).items():
                for device_id in device_ids:
                    relay.hub.disconnect(account_id, device_id, websocket.SUSPENDED)
        except Exception:
            log.exception("reading suspensions failed")


async def _janitor(relay: Relay, alive: str) -> None:
    """Expire old messages and blobs once a minute (see :mod:`.retention`), and note
    that this process still uses the database (:mod:`.storage.presence`)."""
    while True:
        try:
            await presence.note_alive(relay.storage, alive, int(time.time() * 1000))
            applied = await retention.apply(relay.storage, relay.settings, relay.now_ms())
            relay.metrics.messages_expired.inc(applied.messages_expired)
            for account_id, device_id in applied.idle_devices:
                relay.hub.disconnect(account_id, device_id, 4401)
        except Exception:
            log.exception("expiry failed")
        await asyncio.sleep(60)


class _BodyLimit:
    """Refuse request bodies over the limit with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, default: int, attachments: int) -> None:
        self.app = app
        self.default = default
        self.attachments = attachments

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = (self.attachments if scope["path"].startswith("/v1/attachments")
                 else self.default)
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                await _too_large(send, limit)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise ApiError(413, "too_large", f"request bodies are limited to {limit}")
            return message

        await self.app(scope, limited, send)


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"error": {"code": "too_large",
                                 "message": f"request bodies are limited to {limit} bytes"}})
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body.encode()})


class _AccessLog:
    """One structured line per request: route template, status, duration. No ids, no IPs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            app: Any = scope.get("app")
            relay = getattr(getattr(app, "state", None), "relay", None)
            if relay is not None:
                relay.metrics.requests.labels(template, str(status)).inc()
            log.info(json.dumps({"event": "request", "method": scope.get("method"),
                                 "route": template, "status": status,
                                 "ms": round((time.perf_counter() - start) * 1000, 2)}))
