"""End to end against a real uvicorn process: WebSocket delivery and a device that stops
reading (SIGKILL durability: tests/assurance/test_chaos.py, on both databases)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from .helpers import KeyMaker, auth, b64
from .process import ServerProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path)
    proc.start()
    yield proc
    proc.stop()


def _register(url: str) -> dict[str, Any]:
    keys = KeyMaker()
    response = httpx.post(f"{url}/v1/accounts", json=keys.device_body())
    assert response.status_code == 201, response.text
    return {**response.json(), "registration_id": keys.registration_id}


def _ws(url: str, token: str) -> Any:
    return connect(url.replace("http", "ws") + "/v1/websocket",
                   additional_headers=auth(token), open_timeout=5)


def test_websocket_delivery_over_real_server(server: ServerProcess) -> None:
    alice, bob = _register(server.url), _register(server.url)
    with _ws(server.url, bob["token"]) as ws:
        for i in range(5):
            r = httpx.put(f"{server.url}/v1/messages/{bob['account_id']}",
                          headers=auth(alice["token"]), json={
                              "timestamp": i, "messages": [{
                                  "device_id": 1, "registration_id": bob["registration_id"],
                                  "type": 2, "content": b64(b"hello %d" % i)}]})
            assert r.status_code == 200
        frames = [json.loads(ws.recv(timeout=5))["envelope"] for _ in range(5)]
        assert [f["client_timestamp"] for f in frames] == [0, 1, 2, 3, 4]
        ws.send(json.dumps({"type": "ack", "ids": [f["id"] for f in frames]}))
        assert json.loads(ws.recv(timeout=5))["type"] == "acked"
    plain = httpx.get(f"{server.url}/v1/messages", headers=auth(bob["token"])).json()
    assert plain == {"messages": [], "more": False}


def test_socket_sends_and_bad_frames_over_real_server(server: ServerProcess) -> None:
    """The relay's protocol takes frames as they are parsed (server/ws_protocol.py): a
    burst of pipelined sends is answered in order and delivered in order, and a
    malformed or oversized frame still closes the connection with 1003 / 1009."""
    alice, bob = _register(server.url), _register(server.url)
    with _ws(server.url, alice["token"]) as a, _ws(server.url, bob["token"]) as b:
        for i in range(100):
            a.send(json.dumps({"type": "send", "id": i, "account_id": bob["account_id"],
                               "timestamp": i, "messages": [{
                                   "device_id": 1, "registration_id": bob["registration_id"],
                                   "type": 2, "content": b64(b"m%d" % i)}]}))
        answers = [json.loads(a.recv(timeout=10)) for _ in range(100)]
        assert sorted(x["id"] for x in answers) == list(range(100))
        assert all(x["type"] == "sent" and x["status"] == 200 for x in answers)
        got: list[dict[str, Any]] = []
        while len(got) < 100:
            got.append(json.loads(b.recv(timeout=10))["envelope"])
        assert [e["client_timestamp"] for e in got] == list(range(100))
        b.send(json.dumps({"type": "ack", "ids": [e["id"] for e in got]}))
        assert json.loads(b.recv(timeout=5)) == {"type": "acked",
                                                 "ids": [e["id"] for e in got]}
        a.send(json.dumps({"type": "nonsense"}))
        with pytest.raises(WebSocketException):
            a.recv(timeout=5)
        assert a.close_code == 1003
        b.send("x" * (64 * 1024 + 1))
        with pytest.raises(WebSocketException):
            b.recv(timeout=5)
        assert b.close_code == 1009
    plain = httpx.get(f"{server.url}/v1/messages", headers=auth(bob["token"])).json()
    assert plain == {"messages": [], "more": False}


def test_a_device_that_does_not_read_gets_everything_in_order(server: ServerProcess) -> None:
    """Frames for a device that stops reading fill its socket: the relay's direct writes
    (server/ws_protocol.py) give way to ASGI ``send``, which waits for room, and nothing
    is lost or reordered once the device reads again."""
    alice, bob = _register(server.url), _register(server.url)
    content = b64(bytes(40_000))  # 200 of them: more than loopback's socket buffers hold
    with _ws(server.url, alice["token"]) as a, _ws(server.url, bob["token"]) as b:
        for i in range(200):
            a.send(json.dumps({"type": "send", "id": i, "account_id": bob["account_id"],
                               "timestamp": i, "messages": [{
                                   "device_id": 1, "registration_id": bob["registration_id"],
                                   "type": 2, "content": content}]}))
        answers = [json.loads(a.recv(timeout=30)) for _ in range(200)]
        assert all(x["type"] == "sent" and x["status"] == 200 for x in answers)
        time.sleep(1)  # let the relay run into the full socket before bob reads
        got = [json.loads(b.recv(timeout=30))["envelope"] for _ in range(200)]
        assert [e["client_timestamp"] for e in got] == list(range(200))
        assert all(e["content"] == content for e in got)
        b.send(json.dumps({"type": "ack", "ids": [e["id"] for e in got]}))
        assert json.loads(b.recv(timeout=10))["type"] == "acked"

