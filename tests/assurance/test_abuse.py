"""Resource abuse against a relay process: oversized bodies and frames, slow clients,
many connections, a message flood and a queue that keeps growing. The relay stays up,
answers 413/429/507 (or closes the frame's connection), keeps answering others, and its
memory stays bounded. Figures (peak RSS per scenario) go to build/assurance/abuse/."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.server.helpers import KeyMaker, auth, b64
from tests.server.process import ServerProcess

from . import results

MIB = 1024 * 1024


def _rss(server: ServerProcess) -> tuple[int, int]:
    """(current, peak) resident set of the relay process, in bytes."""
    assert server.proc is not None
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{server.proc.pid}/status").read_text().splitlines())
    return (int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024)


def _register(url: str) -> dict[str, Any]:
    keys = KeyMaker()
    response = httpx.post(f"{url}/v1/accounts", json=keys.device_body(), timeout=10)
    response.raise_for_status()
    return {**response.json(), "registration_id": keys.registration_id}


def _healthy(server: ServerProcess) -> bool:
    return httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("abuse"),
                           rate_messages_per_pair="50/5", queue_byte_budget=str(2 * MIB))
    server.start()
    yield server
    server.stop()


FIGURES: dict[str, Any] = {}


def _record(name: str, server: ServerProcess, **extra: Any) -> None:
    current, peak = _rss(server)
    FIGURES[name] = {"rss_mib": round(current / MIB, 1), "peak_rss_mib": round(peak / MIB, 1),
                     **extra}
    results.write("abuse", "relay", FIGURES)


def test_oversized_bodies_are_refused_without_reading_them(relay: ServerProcess) -> None:
    alice, bob = _register(relay.url), _register(relay.url)
    before = _rss(relay)[0]
    big = b"x" * (16 * MIB)
    codes = []
    with httpx.Client(timeout=30) as http:
        for _ in range(5):  # 585 MiB offered: nine times the growth allowed below
            codes.append(http.put(f"{relay.url}/v1/messages/{bob['account_id']}",
                                  headers=auth(alice["token"]), content=big).status_code)
            codes.append(http.post(f"{relay.url}/v1/attachments",
                                   headers=auth(alice["token"]),
                                   content=b"y" * (101 * MIB)).status_code)
    assert set(codes) == {413}
    assert _healthy(relay)
    grown = _rss(relay)[0] - before
    _record("oversized_bodies", relay, requests=len(codes), grown_mib=round(grown / MIB, 1))
    assert grown < 64 * MIB, grown


def test_oversized_websocket_frames_close_that_connection_only(relay: ServerProcess) -> None:
    alice = _register(relay.url)
    url = relay.url.replace("http", "ws") + "/v1/websocket"
    closed = 0
    for _ in range(10):
        with connect(url, additional_headers=auth(alice["token"]), max_size=None) as ws:
            try:
                ws.send("x" * (2 * MIB))
                ws.recv(timeout=5)
            except ConnectionClosed:
                closed += 1
    assert closed == 10
    assert _healthy(relay)
    _record("oversized_frames", relay, frames=10, closed=closed)


def test_slow_clients_do_not_starve_others(relay: ServerProcess) -> None:
    """Connections that send half a request and then nothing (slowloris)."""
    sockets = []
    for _ in range(200):
        s = socket.create_connection(("127.0.0.1", relay.port))
        s.sendall(b"PUT /v1/messages/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab")
        sockets.append(s)
    try:
        started = time.monotonic()
        assert _healthy(relay)
        answered_in = time.monotonic() - started
    finally:
        for s in sockets:
            s.close()
    _record("slow_clients", relay, connections=200, healthz_seconds=round(answered_in, 3))
    assert answered_in < 5


def test_many_idle_connections(relay: ServerProcess) -> None:
    devices = [_register(relay.url) for _ in range(30)]
    url = relay.url.replace("http", "ws") + "/v1/websocket"
    before = _rss(relay)[0]
    with contextlib.ExitStack() as stack:
        for device in devices:
            stack.enter_context(connect(url, additional_headers=auth(device["token"]),
                                        open_timeout=10))
        time.sleep(0.5)
        assert _healthy(relay)
        grown = _rss(relay)[0] - before
    _record("many_connections", relay, connections=len(devices),
            grown_kib_per_connection=round(grown / len(devices) / 1024, 1))
    assert grown < 100 * MIB


def test_a_flood_is_rate_limited_and_a_queue_is_bounded(relay: ServerProcess) -> None:
    sender, target = _register(relay.url), _register(relay.url)
    codes: dict[int, int] = {}
    with httpx.Client(timeout=10) as http:
        for i in range(400):
            r = http.put(f"{relay.url}/v1/messages/{target['account_id']}",
                         headers=auth(sender["token"]), json={
                             "timestamp": i, "messages": [{
                                 "device_id": 1, "registration_id": target["registration_id"],
                                 "type": 2, "content": b64(b"z" * (200 * 1024))}]})
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
    assert codes.get(429, 0) > 0, codes       # the pair's rate limit
    flooders = [_register(relay.url) for _ in range(20)]
    queue_codes: dict[int, int] = {}
    with httpx.Client(timeout=10) as http:
        for n, flooder in enumerate(flooders):
            for i in range(3):
                r = http.put(f"{relay.url}/v1/messages/{target['account_id']}",
                             headers=auth(flooder["token"]), json={
                                 "timestamp": n * 10 + i, "messages": [{
                                     "device_id": 1,
                                     "registration_id": target["registration_id"],
                                     "type": 2, "content": b64(b"q" * (200 * 1024))}]})
                queue_codes[r.status_code] = queue_codes.get(r.status_code, 0) + 1
    assert queue_codes.get(507, 0) > 0, queue_codes   # the device's queue budget
    assert _healthy(relay)
    _record("flood_and_queue", relay, flood=codes, queue=queue_codes)
