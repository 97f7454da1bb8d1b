"""The opt-in ``cipherpost.batch`` subprotocol: several envelopes per pushed frame;
clients that do not offer it get one envelope per frame, as before. (TestClient adds the
subprotocol header to the dict it is given: each connection gets a copy.)"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from fastapi.testclient import TestClient

from cipherpost.server.api import websocket

from .conftest import Registered, register
from .helpers import b64


def _put(client: TestClient, sender: Registered, to: Registered, i: int,
         content: bytes = b"m") -> None:
    r = client.put(f"/v1/messages/{to.account_id}", headers=sender.headers, json={
        "timestamp": i, "messages": [{"device_id": 1,
                                      "registration_id": to.keys.registration_id,
                                      "type": 2, "content": b64(content)}]})
    assert r.status_code == 200, r.text


def _envelopes(ws: Any, n: int) -> tuple[list[dict[str, Any]], int]:
    """Read ``messages`` frames until ``n`` envelopes came; return them and the frames."""
    out: list[dict[str, Any]] = []
    frames = 0
    while len(out) < n:
        frame = ws.receive_json()
        assert frame["type"] == "messages"
        assert 1 <= len(frame["envelopes"]) <= websocket.BATCH_ENVELOPES
        out += frame["envelopes"]
        frames += 1
    return out, frames


def test_batch_frames_in_order_with_acks_and_redelivery(client: TestClient) -> None:
    alice, bob = register(client), register(client)
    for i in range(150):
        _put(client, alice, bob, i)
    with client.websocket_connect("/v1/websocket", headers=dict(bob.headers),
                                  subprotocols=[websocket.BATCH_SUBPROTOCOL]) as ws:
        assert ws.accepted_subprotocol == websocket.BATCH_SUBPROTOCOL
        envelopes, frames = _envelopes(ws, 150)
        assert frames < 150  # batched
        assert [e["client_timestamp"] for e in envelopes] == list(range(150))
        ids = [e["id"] for e in envelopes]
        ws.send_json({"type": "ack", "ids": ids[:100], "confirm": True})
        assert ws.receive_json() == {"type": "acked", "ids": ids[:100]}
        # Sent while connected and caught up: pushed from memory, in order.
        for i in range(150, 153):
            _put(client, alice, bob, i)
        live, _ = _envelopes(ws, 3)
        assert [e["client_timestamp"] for e in live] == [150, 151, 152]
    with client.websocket_connect("/v1/websocket", headers=dict(bob.headers),
                                  subprotocols=[websocket.BATCH_SUBPROTOCOL]) as ws:
        again, _ = _envelopes(ws, 53)
        assert [e["id"] for e in again] == ids[100:] + [e["id"] for e in live]


def test_window_bounds_in_flight_and_acks_release_more(client: TestClient) -> None:
    alice, bob = register(client), register(client)
    total = websocket.WINDOW + 40
    for i in range(total):
        _put(client, alice, bob, i)
    with client.websocket_connect("/v1/websocket", headers=dict(bob.headers),
                                  subprotocols=[websocket.BATCH_SUBPROTOCOL]) as ws:
        first, _ = _envelopes(ws, websocket.WINDOW)
        assert len(first) == websocket.WINDOW  # no more until acknowledged
        ws.send_json({"type": "ack", "ids": [e["id"] for e in first[:50]]})
        rest, _ = _envelopes(ws, 40)  # unconfirmed: no ``acked`` frame comes first
        assert [e["client_timestamp"] for e in first + rest] == list(range(total))


def test_large_envelopes_split_frames_and_old_clients_get_single_frames(
        client: TestClient) -> None:
    alice, bob = register(client), register(client)
    big = b"x" * (websocket.BATCH_BYTES // 2 + 1)
    for i in range(3):
        _put(client, alice, bob, i, big)
    with client.websocket_connect("/v1/websocket", headers=dict(bob.headers),
                                  subprotocols=[websocket.BATCH_SUBPROTOCOL]) as ws:
        sizes = [len(ws.receive_json()["envelopes"]) for _ in range(3)]
        assert sizes == [1, 1, 1]
    with client.websocket_connect("/v1/websocket", headers=dict(bob.headers)) as ws:
        assert ws.accepted_subprotocol is None
        frames = [ws.receive_json() for _ in range(3)]
        assert [f["type"] for f in frames] == ["message"] * 3
        assert [f["envelope"]["client_timestamp"] for f in frames] == [0, 1, 2]


def test_pipelined_sends_are_answered_and_delivered_in_order(client: TestClient) -> None:
    alice, bob = register(client), register(client)
    reg = bob.keys.registration_id
    with client.websocket_connect("/v1/websocket", headers=dict(alice.headers)) as ws:
        for i in range(100):  # no waiting for answers in between
            ws.send_json({"type": "send", "id": i, "account_id": bob.account_id,
                          "timestamp": i, "messages": [{"device_id": 1,
                                                        "registration_id": reg, "type": 2,
                                                        "content": b64(b"%d" % i)}]})
        answers = [ws.receive_json() for _ in range(100)]
        assert sorted(a["id"] for a in answers) == list(range(100))
        assert all(a["status"] == 200 for a in answers)
    deadline = time.monotonic() + 5
    with client.websocket_connect("/v1/websocket", headers=dict(bob.headers)) as ws:
        got = [ws.receive_json()["envelope"]["client_timestamp"] for _ in range(100)]
        assert got == list(range(100)) and time.monotonic() < deadline


def test_batch_acks_are_confirmed_only_on_request_and_delete_either_way(
        client: TestClient) -> None:
    alice, bob = register(client), register(client)
    for i in range(4):
        _put(client, alice, bob, i)
    with client.websocket_connect("/v1/websocket", headers=dict(bob.headers),
                                  subprotocols=[websocket.BATCH_SUBPROTOCOL]) as ws:
        envelopes, _ = _envelopes(ws, 4)
        ids = [e["id"] for e in envelopes]
        ws.send_json({"type": "ack", "ids": ids[:2]})  # no answer asked for
        ws.send_json({"type": "ack", "ids": ids[2:3], "confirm": True})
        # Frames of one connection are handled in order: had the first ack been
        # answered, its ``acked`` would come before this one.
        assert ws.receive_json() == {"type": "acked", "ids": ids[2:3]}
    left = client.get("/v1/messages", headers=bob.headers).json()["messages"]
    assert [m["id"] for m in left] == ids[3:]
    with client.websocket_connect("/v1/websocket", headers=dict(bob.headers),
                                  subprotocols=[websocket.BATCH_SUBPROTOCOL]) as ws:
        assert [e["id"] for e in _envelopes(ws, 1)[0]] == ids[3:]
        ws.send_json({"type": "ack", "ids": ids[3:], "confirm": "yes"})
        closed = ws.receive()  # confirm must be a boolean
        assert closed["type"] == "websocket.close" and closed["code"] == 1003


def test_an_ack_nobody_waits_for_frees_the_window_at_once_and_its_rows_go_soon(
        client: TestClient) -> None:
    """Under the batch subprotocol an unconfirmed ack is taken at once (the window has
    room again before any commit) and, on SQLite, its rows leave the queue log within
    ``queue_log.DELETE_HOLD`` even with nothing else to commit."""
    alice, bob = register(client), register(client)
    for i in range(websocket.WINDOW + 1):
        _put(client, alice, bob, i)
    storage = client.app.state.relay.storage  # type: ignore[attr-defined]
    with client.websocket_connect("/v1/websocket", headers=dict(bob.headers),
                                  subprotocols=[websocket.BATCH_SUBPROTOCOL]) as ws:
        envelopes, _ = _envelopes(ws, websocket.WINDOW)  # the window is full
        ws.send_json({"type": "ack", "ids": [e["id"] for e in envelopes]})
        last, _ = _envelopes(ws, 1)
        assert last[0]["client_timestamp"] == websocket.WINDOW
        if storage.queue_log is not None:  # SQLite: what another connection sees
            path = client.app.state.relay.settings.database_url  # type: ignore[attr-defined]
            deadline = time.monotonic() + 5
            while _log_rows(path.removeprefix("sqlite:///")) > 1 \
                    and time.monotonic() < deadline:
                time.sleep(0.02)
            assert _log_rows(path.removeprefix("sqlite:///")) == 1  # the last one only
        ws.send_json({"type": "ack", "ids": [last[0]["id"]], "confirm": True})
        assert ws.receive_json()["type"] == "acked"
    assert client.get("/v1/messages", headers=bob.headers).json()["messages"] == []


def _log_rows(path: str) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM queue_log").fetchone()[0])
