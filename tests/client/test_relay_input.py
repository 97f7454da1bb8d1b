"""What the relay sends a client is checked before it reaches the decryption path: the
envelopes of a WebSocket frame or a ``GET /v1/messages`` page, the frames themselves and
the answers to ``send`` frames (#10, found by the ``relay_frame`` and
``receive_pipeline`` fuzz targets)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from cipherpost.client import events as ev
from cipherpost.client.api import (
    Envelope,
    MalformedEnvelope,
    RelayError,
    parse_messages,
)
from cipherpost.client.inbox import Inbox
from cipherpost.client.options import ClientOptions
from cipherpost.client.socket import RelaySocket, SocketLost, sent_answer
from cipherpost.client.store.crypto import TEST_PARAMS
from cipherpost.client.store.database import Store
from cipherpost.protocol import IdentityKeyPair
from cipherpost.server.api.websocket import envelope_json
from cipherpost.server.storage.models import Envelope as StoredEnvelope

GOOD: dict[str, Any] = {"id": "0f8e7c1e-2f36-4a44-9a4e-6c0ed3f5d1aa",
                        "sender_account_id": "alice", "sender_device_id": 1, "type": 2,
                        "content": "AAEC", "client_timestamp": 1, "server_timestamp": 2}
INFINITY = json.loads("1e999")


def test_an_envelope_as_the_relay_encodes_it_is_read_back() -> None:
    fields = {f: GOOD[f] for f in ("sender_account_id", "sender_device_id", "type",
                                   "client_timestamp", "server_timestamp")}
    stored = StoredEnvelope(guid=GOOD["id"], content=b"\x00\x01\x02", seq=1, **fields)
    envelope = Envelope.from_json(json.loads(json.dumps(envelope_json(stored))))
    assert envelope == Envelope(GOOD["id"], "alice", 1, 2, b"\x00\x01\x02", 1, 2)
    notice = Envelope.from_json({**GOOD, "sender_account_id": None, "sender_device_id": None,
                                 "type": 0})
    assert (notice.sender_account_id, notice.sender_device_id) == (None, None)


@pytest.mark.parametrize("change", [
    # Before: OverflowError out of from_json (and out of the socket's reader task).
    {"type": INFINITY}, {"client_timestamp": INFINITY}, {"server_timestamp": -INFINITY},
    # Before: accepted, then ValueError out of Inbox.process (and Client.listen).
    {"sender_device_id": 0}, {"sender_device_id": 128}, {"sender_device_id": "1"},
    {"sender_account_id": []}, {"sender_account_id": ""},
    # Before: accepted silently changed (truncated, stringified, a bool as an int).
    {"type": 2.9}, {"id": {}}, {"id": 7}, {"type": True}, {"sender_device_id": True},
    # Out of range or malformed.
    {"type": 256}, {"type": -1}, {"client_timestamp": 2**63}, {"id": ""}, {"id": "x" * 65},
    {"sender_account_id": "a" * 65}, {"content": "not base64!"}, {"content": None},
    {"id": None}, {"type": None},
])
def test_malformed_envelopes_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(MalformedEnvelope, match="malformed envelope"):
        Envelope.from_json({**GOOD, **change})


@pytest.mark.parametrize("data", [[], "x", None, 1, {}])
def test_what_is_no_envelope_object_is_refused(data: Any) -> None:
    with pytest.raises(MalformedEnvelope):
        Envelope.from_json(data)


@pytest.mark.parametrize("page", [{}, {"messages": [], "more": 1}, {"messages": {}, "more": False},
                                  {"messages": [GOOD, []], "more": False}, [], None])
def test_malformed_pages_of_messages_are_refused(page: Any) -> None:
    """Before: KeyError, TypeError or AttributeError out of RelayApi.fetch."""
    with pytest.raises(MalformedEnvelope):
        parse_messages(page)


def test_a_page_of_messages_is_read() -> None:
    envelopes, more = parse_messages({"messages": [GOOD, GOOD], "more": True})
    assert more is True and [e.id for e in envelopes] == [GOOD["id"]] * 2


class _Frames:
    """A WebSocket that yields ``frames``, then ends as a closed connection would."""

    def __init__(self, frames: list[str]) -> None:
        self.frames = frames

    def __aiter__(self) -> AsyncIterator[str]:
        return self._each()

    async def _each(self) -> AsyncIterator[str]:
        for frame in self.frames:
            yield frame


@pytest.mark.parametrize("frame", [
    "[]", '"text"', "7",                                            # before: AttributeError
    json.dumps({"type": "message", "envelope": {**GOOD, "type": 1e308 * 10}}),  # OverflowError
    json.dumps({"type": "message", "envelope": {**GOOD, "sender_device_id": 0}}),
    json.dumps({"type": "message"}),
    "{not json",
])
def test_a_malformed_frame_ends_the_connection_cleanly(frame: str) -> None:
    """The socket's reader ends with the error kept (the listener reconnects; nothing
    was acknowledged), never with an exception escaping its task; the envelope before
    the bad frame is delivered, none after it."""
    async def scenario() -> None:
        good = json.dumps({"type": "message", "envelope": GOOD})
        sock = RelaySocket(_Frames([good, frame, good]))
        assert (await sock.next_envelope()).id == GOOD["id"]
        with pytest.raises(SocketLost):
            await sock.next_envelope()
        assert sock._reader.done() and sock._reader.exception() is None
        assert isinstance(sock.error, (MalformedEnvelope, ValueError))
        await sock.close()
    asyncio.run(scenario())


def test_a_closed_connection_still_raises_its_close() -> None:
    class Closed(_Frames):
        async def _each(self) -> AsyncIterator[str]:
            raise websockets.ConnectionClosed(None, None)
            yield ""  # pragma: no cover - makes this a generator

    async def scenario() -> None:
        sock = RelaySocket(Closed([]))
        with pytest.raises(websockets.ConnectionClosed):
            await sock.next_envelope()
    asyncio.run(scenario())


@pytest.mark.parametrize("answer", [
    {"status": "200"}, {"status": None}, {}, {"status": 200, "queued": "2"},
    {"status": 1e999}, {"status": 200, "queued": INFINITY},
])
def test_a_malformed_answer_to_a_send_is_a_lost_answer(answer: dict[str, Any]) -> None:
    """Before: TypeError, OverflowError or AttributeError out of RelaySocket.send."""
    with pytest.raises(SocketLost, match="malformed"):
        sent_answer(answer)


def test_answers_to_a_send_are_read() -> None:
    assert sent_answer({"status": 200, "queued": 3}) == 3
    with pytest.raises(RelayError) as refused:
        sent_answer({"status": 409, "error": "not an object"})  # before: AttributeError
    assert refused.value.status == 409
    with pytest.raises(RelayError, match="devices changed"):
        sent_answer({"status": 409, "error": {"code": "mismatched_devices",
                                              "message": "devices changed"}})


def test_an_envelope_from_no_valid_address_is_reported_and_dropped(tmp_path: Path) -> None:
    """Built otherwise than by from_json, an envelope may name device 0: Inbox.process
    reports it (before: ValueError out of process, so the envelope was never
    acknowledged and stopped the queue)."""
    store = Store.create(tmp_path / "bob.db", passphrase="pw", params=TEST_PARAMS)
    store.set_identity(IdentityKeyPair.generate(os.urandom), 1)
    inbox = Inbox(store, "bob", 1, ClientOptions())
    envelope = Envelope("e1", "alice", 0, 2, b"\x00" * 40, 1, 1)
    events, follow_ups = inbox.process(envelope)
    assert [type(e) for e in events] == [ev.Unsupported] and follow_ups == []
    assert store.envelope_seen("e1")
    store.close()
