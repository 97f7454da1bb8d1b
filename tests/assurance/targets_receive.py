"""Fuzz targets of the receive side, from both ends of the WebSocket: the envelopes and
frames a relay sends a client (``Envelope.from_json``, the socket's frame sorting, a page
of ``GET /v1/messages``), the frames a device sends the relay (``websocket.Session.read``
and what it dispatches to), and the client's whole receive pipeline (``Inbox.process``:
decrypt and store) fed random and mutated envelopes between two parties that hold a
session; after each input a normal message between them must still decrypt.

Registered in ``targets.TARGETS`` (``targets.py`` imports this module).
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import uuid
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from cipherpost.client import content as codec
from cipherpost.client import events as ev
from cipherpost.client.api import Envelope, MalformedEnvelope, parse_messages
from cipherpost.client.inbox import Inbox
from cipherpost.client.options import ClientOptions
from cipherpost.client.proto.app_pb2 import Content, DataMessage
from cipherpost.client.socket import RelaySocket, SocketLost, sent_answer
from cipherpost.client.store.crypto import TEST_PARAMS
from cipherpost.client.store.database import Store
from cipherpost.protocol import (
    PREKEY_TYPE,
    SENDERKEY_TYPE,
    WHISPER_TYPE,
    IdentityKeyPair,
    ProtocolAddress,
    encrypt,
    process_prekey_bundle,
)
from cipherpost.protocol.bundles import generate_prekey_bundle
from cipherpost.server import Settings, create_app
from cipherpost.server.api import websocket
from cipherpost.server.auth import authenticate

from . import corpus as c
from .targets import _split, target

_DIR = Path(tempfile.mkdtemp(prefix="cipherpost-fuzz-receive-"))
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)
NOW_MS = c.NOW * 1000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- what a relay sends a client -------------------------------------------------------------

ENVELOPE = {"id": str(uuid.UUID(int=1)), "sender_account_id": "alice-account",
            "sender_device_id": 1, "type": WHISPER_TYPE, "content": _b64(c.WHISPER),
            "client_timestamp": NOW_MS, "server_timestamp": NOW_MS + 3}
NOTICE = {**ENVELOPE, "id": str(uuid.UUID(int=2)), "sender_account_id": None,
          "sender_device_id": None, "type": 0,
          "content": _b64(json.dumps({"kind": "device_linked", "at": NOW_MS}).encode())}
RELAY_FRAMES = [
    {"type": "message", "envelope": ENVELOPE},
    {"type": "message", "envelope": NOTICE},
    {"type": "sent", "id": 1, "status": 200, "queued": 2},
    {"type": "sent", "id": 1, "status": 409, "error": {"code": "mismatched_devices",
                                                        "message": "devices changed"}},
    {"messages": [ENVELOPE, NOTICE], "more": True},
]


def _check_envelope(envelope: Envelope, raw: dict[str, Any]) -> None:
    """An accepted envelope holds exactly the relay's values, each of its type and range."""
    assert isinstance(envelope.id, str) and 0 < len(envelope.id) <= 64
    assert envelope.sender_account_id is None or (
        isinstance(envelope.sender_account_id, str) and envelope.sender_account_id)
    assert envelope.sender_device_id is None or (
        type(envelope.sender_device_id) is int and 1 <= envelope.sender_device_id <= 127)
    assert type(envelope.type) is int and 0 <= envelope.type <= 255
    for value in (envelope.client_timestamp, envelope.server_timestamp):
        assert type(value) is int and 0 <= value < 2**63
    assert isinstance(envelope.content, bytes)
    assert (envelope.id, envelope.sender_account_id, envelope.sender_device_id, envelope.type,
            _b64(envelope.content), envelope.client_timestamp, envelope.server_timestamp) \
        == (raw["id"], raw.get("sender_account_id"), raw.get("sender_device_id"), raw["type"],
            base64.b64encode(base64.b64decode(raw["content"])).decode(),
            raw["client_timestamp"], raw["server_timestamp"])
    if envelope.sender_account_id is not None and envelope.sender_device_id is not None:
        ProtocolAddress(envelope.sender_account_id, envelope.sender_device_id)


def _sorting_socket() -> RelaySocket:
    """A RelaySocket without a connection, to sort frames with (its reader never runs)."""
    sock = RelaySocket.__new__(RelaySocket)
    sock._envelopes = asyncio.Queue()
    sock._pending = {}
    return sock


@target("relay_frame", "what a relay sends a client: RelaySocket's sorting of a WebSocket "
        "frame (Envelope.from_json of a message frame, a sent frame read by sent_answer) and "
        "api.parse_messages of a GET /v1/messages page",
        "json's ValueError (the socket ends the connection), MalformedEnvelope, and for a "
        "sent frame RelayError or SocketLost; an accepted envelope keeps the relay's values, "
        "each of its type and range",
        lambda: [json.dumps(f).encode() for f in RELAY_FRAMES])
def relay_frame(data: bytes) -> None:
    from cipherpost.client.api import RelayError

    try:
        frame = json.loads(data)
    except (ValueError, RecursionError):
        return  # RelaySocket._read ends the connection on these
    if isinstance(frame, dict) and "messages" in frame:
        try:
            envelopes, more = parse_messages(frame)
        except MalformedEnvelope:
            return
        assert isinstance(more, bool) and len(envelopes) == len(frame["messages"])
        for envelope, raw in zip(envelopes, frame["messages"], strict=True):
            _check_envelope(envelope, raw)
        return
    sock = _sorting_socket()
    future: asyncio.Future[dict[str, Any]] = asyncio.Future(loop=_LOOP)
    sock._pending[1] = future
    try:
        sock._frame(frame)
    except MalformedEnvelope:
        assert sock._envelopes.empty()
        return
    if not sock._envelopes.empty():
        assert isinstance(frame, dict)
        _check_envelope(sock._envelopes.get_nowait(), frame["envelope"])
        assert sock._envelopes.empty()
    if future.done():
        assert isinstance(frame, dict) and frame.get("id") == 1
        try:
            queued = sent_answer(future.result())
        except (RelayError, SocketLost):
            return
        assert type(queued) is int


_LOOP = asyncio.new_event_loop()
atexit.register(_LOOP.close)


# -- what a device sends the relay -----------------------------------------------------------

def _database_url() -> str:
    """SQLite, or with ``FUZZ_DATABASE=postgresql`` a private PostgreSQL server of this
    process (``make fuzz`` runs ``device_frame`` on both: PostgreSQL refuses what SQLite
    takes, such as NUL in text)."""
    if os.environ.get("FUZZ_DATABASE", "sqlite") != "postgresql":
        return f"sqlite:///{_DIR}/relay.db"
    from tests.support.postgres import PostgresServer

    server = PostgresServer.start()
    atexit.register(server.stop)
    return server.url(server.create_database())


_SETTINGS = Settings(database_url=_database_url(),
                     attachment_dir=str(_DIR / "blobs"),
                     rate_register_per_ip="1000/100", rate_prekey_fetch_per_account="1000/100",
                     rate_messages_per_pair="1000000/1")
_HTTP = TestClient(create_app(_SETTINGS))
_HTTP.__enter__()
atexit.register(_HTTP.__exit__, None, None, None)
_RELAY = _HTTP.app.state.relay  # type: ignore[attr-defined]


def _register(name: str) -> dict[str, Any]:
    from tests.server.helpers import KeyMaker

    keys = KeyMaker()
    response = _HTTP.post("/v1/accounts", json={**keys.device_body(), "username": name})
    assert response.status_code == 201, response.text
    return {**response.json(), "registration_id": keys.registration_id}


_WS_SENDER, _WS_RECIPIENT = _register("fuzzsender"), _register("fuzzrecipient")
_DEVICE = _HTTP.portal.call(authenticate, _RELAY.storage,  # type: ignore[union-attr]
                            f"Bearer {_WS_SENDER['token']}")
_SEND = {"type": "send", "id": 7, "account_id": _WS_RECIPIENT["account_id"],
         "timestamp": NOW_MS, "messages": [{
             "device_id": 1, "registration_id": _WS_RECIPIENT["registration_id"],
             "type": WHISPER_TYPE, "content": _b64(c.WHISPER)}]}
DEVICE_FRAMES = [
    _SEND,
    {**_SEND, "id": "request-8", "messages": [{**_SEND["messages"][0], "type": 6}]},
    {"type": "ack", "ids": [str(uuid.UUID(int=3)), "1-" + str(uuid.UUID(int=4))]},
    {"type": "ack", "ids": [str(uuid.UUID(int=5))], "confirm": True},
    # NUL names nothing (PostgreSQL refuses it in text: these answered 500 and 1011)
    {"type": "ack", "ids": ["a\u0000b"], "confirm": True},
    {**_SEND, "id": 9, "account_id": "ab\u0000c"},
]


class _Errors(logging.Handler):
    """Counts the relay's error log records (a 500 or a failed commit logs one)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_ERRORS = _Errors()


async def _one_frame(message: dict[str, Any], batch: bool) -> tuple[websocket.Session,
                                                                     list[dict[str, Any]], bool]:
    sent: list[dict[str, Any]] = []

    async def send(out: dict[str, Any]) -> None:
        sent.append(out)

    session = websocket.Session(_RELAY, _DEVICE, send, batch)
    incoming = [message]

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop()
        for _ in range(5000):  # what the frame started is answered before disconnecting
            if session._outstanding == 0 and session._draining is None:
                break
            await asyncio.sleep(0.001)
        else:
            raise AssertionError("the relay never answered what a frame started")
        return {"type": "websocket.disconnect", "code": 1000}

    gone = await session.read(receive)
    await session.close(send_close=not gone)
    return session, sent, gone


@target("device_frame", "what a device sends the relay: websocket.Session.read of one "
        "frame (text or binary, with or without the batch subprotocol) and the send and "
        "ack it dispatches to",
        "close code 1003 (not JSON, or not a send or ack frame) or 1009 (too large); a send "
        "answered by a sent frame with status 200 or 4xx; no 5xx, no 1011 close, no error "
        "logged, no exception out of the handler",
        lambda: [b"\x00" + json.dumps(f).encode() for f in DEVICE_FRAMES]
        + [b"\x02" + json.dumps(DEVICE_FRAMES[3]).encode()])
def device_frame(data: bytes) -> None:
    selector, payload = _split(data)
    if selector & 1:
        message = {"type": "websocket.receive", "bytes": payload}
    else:
        message = {"type": "websocket.receive", "text": payload.decode("utf-8", "replace")}
    logger = logging.getLogger("cipherpost")
    logger.addHandler(_ERRORS)  # only while this input runs
    try:
        session, sent, gone = _HTTP.portal.call(  # type: ignore[union-attr]
            _one_frame, message, bool(selector & 2))
    finally:
        logger.removeHandler(_ERRORS)
    errors = [r.getMessage() for r in _ERRORS.records]
    _ERRORS.records.clear()
    assert not errors, f"the relay logged errors: {errors}"
    closes = [m.get("code") for m in sent if m["type"] == "websocket.close"]
    if not gone:
        assert session.close_code in (1003, 1009), session.close_code
        assert closes == [session.close_code], closes
    frames = [json.loads(m["text"]) for m in sent if m["type"] == "websocket.send"]
    for frame in frames:
        assert frame["type"] in ("sent", "acked", "message", "messages"), frame
        if frame["type"] == "sent":
            assert frame["status"] == 200 or 400 <= frame["status"] < 500, frame
            assert frame["status"] == 200 or frame["error"]["code"], frame


# -- the client's receive pipeline -----------------------------------------------------------

ALICE_ID, BOB_ID = "alice-account", "bob-account"
ALICE_ADDRESS, BOB_ADDRESS = ProtocolAddress(ALICE_ID, 1), ProtocolAddress(BOB_ID, 1)
_clock = [NOW_MS]


def _store(name: str) -> Store:
    store = Store.create(_DIR / f"{name}.db", passphrase="fuzz", params=TEST_PARAMS)
    store._db.execute("PRAGMA synchronous = OFF")  # a scratch store: no fsync per input
    store.set_identity(IdentityKeyPair.generate(c.rng), 1)
    return store


_OPTIONS = ClientOptions(clock=lambda: _clock[0])
ALICE_STORE, BOB_STORE = _store("alice"), _store("bob")
BOB_INBOX = Inbox(BOB_STORE, BOB_ID, 1, _OPTIONS)
ALICE_INBOX = Inbox(ALICE_STORE, ALICE_ID, 1, _OPTIONS)
_ids = iter(range(1, 1 << 62))


_stamps = iter(range(NOW_MS, NOW_MS + (1 << 40)))


def _text(text: str, timestamp: int | None = None) -> bytes:
    """A text message; each made with a timestamp of its own (one repeated is a
    duplicate, dropped)."""
    return codec.encode(Content(data=DataMessage(
        timestamp=next(_stamps) if timestamp is None else timestamp, text=text)))


def _envelope(sender: str, kind: int, content: bytes) -> Envelope:
    return Envelope(f"env-{next(_ids)}", sender, 1, kind, content, _clock[0], _clock[0])


def _deliver(frm: Store, to: Inbox, sender: str, recipient: ProtocolAddress,
             plaintext: bytes) -> list[ev.Event]:
    message = encrypt(frm, recipient, plaintext, now=c.NOW, rng=c.rng)
    events, _later = to.process(_envelope(sender, message.message_type, message.serialized))
    return events


def _texts(events: list[ev.Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, ev.Message)]


process_prekey_bundle(ALICE_STORE, BOB_ADDRESS, generate_prekey_bundle(
    BOB_STORE, device_id=1, signed_pre_key_id=1, kyber_pre_key_id=2, pre_key_id=3, rng=c.rng,
    now_ms=NOW_MS), rng=c.rng, now=c.NOW)
assert _texts(_deliver(ALICE_STORE, BOB_INBOX, ALICE_ID, BOB_ADDRESS, _text("hi bob"))) \
    == ["hi bob"]
assert _texts(_deliver(BOB_STORE, ALICE_INBOX, BOB_ID, ALICE_ADDRESS, _text("hi alice"))) \
    == ["hi alice"]
#: Alice's next message (a whisper message), and her next one as a PreKey message of a
#: session Bob has not seen (another base key).
NEXT_WHISPER = encrypt(ALICE_STORE, BOB_ADDRESS, _text("next"), now=c.NOW, rng=c.rng).serialized
_MALLORY = _store("mallory")
process_prekey_bundle(_MALLORY, BOB_ADDRESS, generate_prekey_bundle(
    BOB_STORE, device_id=1, signed_pre_key_id=11, kyber_pre_key_id=12, pre_key_id=13,
    rng=c.rng, now_ms=NOW_MS), rng=c.rng, now=c.NOW)
#: A PreKey message from another identity key (what a relay could stamp Alice's name on).
MALLORY_FIRST = encrypt(_MALLORY, BOB_ADDRESS, _text("from mallory"), now=c.NOW,
                        rng=c.rng).serialized


def _snapshot(store: Store) -> sqlite3.Connection:
    copy = sqlite3.connect(":memory:")
    store._db.backup(copy)
    return copy


_PRISTINE = {id(s): _snapshot(s) for s in (ALICE_STORE, BOB_STORE)}


def _restore() -> None:
    for store in (ALICE_STORE, BOB_STORE):
        _PRISTINE[id(store)].backup(store._db)


#: Selector bits 0-2: the envelope type; bit 3: sender Alice (else the selector's sender);
#: bits 4-5: raw content as received, or plaintext Alice encrypts (fuzzed Content), or
#: plaintext sealed nowhere (a notice).
_TYPES = [WHISPER_TYPE, PREKEY_TYPE, SENDERKEY_TYPE, 6, 0, 1, 255, WHISPER_TYPE]
_SENDERS = [None, BOB_ID, "carol-account", ALICE_ID]
_LATER = NOW_MS - 1  # the normal message's timestamp (the seeds' are NOW_MS and later)


@target("receive_pipeline", "Inbox.process (the client's decrypt-and-store path) of an "
        "envelope between two parties holding a session: its content as received (random, "
        "mutated ciphertexts, another identity's PreKey message) or a plaintext Alice "
        "encrypts (fuzzed Content); then a normal message from Alice",
        "no exception (each refusal is an event: DecryptionFailed, Unsupported, "
        "SealedRejected); the normal message that follows still decrypts and is shown",
        lambda: [b"\x08" + NEXT_WHISPER, b"\x09" + MALLORY_FIRST, b"\x18" + _text("fuzzed"),
                 b"\x18" + c.CONTENTS[0], b"\x0b" + c.GROUP, b"\x04" + NOTICE["content"]
                 .encode(), b"\x02" + c.WHISPER, b"\x0e" + _b64(c.FIRST).encode()])
def receive_pipeline(data: bytes) -> None:
    selector, payload = _split(data)
    kind = _TYPES[selector & 7]
    sender = ALICE_ID if selector & 8 else _SENDERS[(selector >> 6) & 3]
    try:
        if (selector >> 4) & 3 == 1:
            message = encrypt(ALICE_STORE, BOB_ADDRESS, payload, now=c.NOW, rng=c.rng)
            kind, payload = message.message_type, message.serialized
        envelope = Envelope(f"fuzz-{selector}", sender, 1 if sender else None, kind, payload,
                            _clock[0], _clock[0])
        events, follow_ups = BOB_INBOX.process(envelope)
        assert all(isinstance(e, ev.Event) for e in events)
        assert all(f.kind for f in follow_ups)
        after = _deliver(ALICE_STORE, BOB_INBOX, ALICE_ID, BOB_ADDRESS,
                         _text("still here", _LATER))
        assert not [e for e in after if isinstance(e, (ev.DecryptionFailed, ev.Unsupported))], \
            f"a normal message no longer decrypts after the input: {after}"
        # (not shown only when the input was Alice's own message of that timestamp)
        assert "still here" in _texts(after) or any(
            isinstance(e, ev.Message) and e.timestamp == _LATER for e in events), after
    finally:
        _restore()
