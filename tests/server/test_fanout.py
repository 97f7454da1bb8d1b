"""Fan-out between relay processes through Redis: two real relay processes on one
PostgreSQL database and one Redis server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from cipherpost.server.fanout.redis_pubsub import decode_envelope, encode_envelope
from cipherpost.server.storage.models import Envelope
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer

from .helpers import auth, b64
from .process import ServerProcess
from .test_e2e import _register, _ws


def test_envelope_codec_round_trip() -> None:
    for envelope in (Envelope(2**40, "0" * 36, "a" * 36, 127, 3, b"\x00" * 1000, 1, 2**62),
                     Envelope(1, "g", None, None, 8, b"", 0, 0),
                     Envelope(5, "é", "", 1, 255, b"x", -1, 7)):
        assert decode_envelope(encode_envelope(envelope)) == envelope


@pytest.fixture
def two_relays(tmp_path: Path, postgres: PostgresServer,
               redis_server: RedisServer) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    database = postgres.create_database()
    settings = {"database_url": postgres.url(database), "redis_url": redis_server.url()}
    relays = [ServerProcess(tmp_path / name, **settings) for name in ("one", "two")]
    try:
        for relay in relays:
            relay.workdir.mkdir()
            relay.start()
        yield relays[0], relays[1]
    finally:
        for relay in relays:
            relay.stop()
        postgres.drop_database(database)


def _send(url: str, sender: dict[str, Any], to: dict[str, Any], text: bytes) -> None:
    r = httpx.put(f"{url}/v1/messages/{to['account_id']}", headers=auth(sender["token"]),
                  json={"timestamp": 0, "messages": [{
                      "device_id": 1, "registration_id": to["registration_id"], "type": 2,
                      "content": b64(text)}]})
    assert r.status_code == 200, r.text


def _next(ws: Any) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(ws.recv(timeout=5))
    return frame


@pytest.mark.postgresql
def test_a_message_reaches_a_device_on_another_process_at_once(
        two_relays: tuple[ServerProcess, ServerProcess]) -> None:
    one, two = two_relays
    alice, bob = _register(one.url), _register(two.url)
    with _ws(two.url, bob["token"]) as on_two:
        start = time.monotonic()
        _send(one.url, alice, bob, b"via one")
        frame = _next(on_two)
        assert frame["type"] == "message", frame
        assert frame["envelope"]["content"] == b64(b"via one")
        assert time.monotonic() - start < 2
        on_two.send(json.dumps({"type": "ack", "ids": [frame["envelope"]["id"]]}))
        assert _next(on_two)["type"] == "acked"
        # The device moves to relay one: its connection there replaces the one on two.
        with _ws(one.url, bob["token"]) as on_one:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    on_two.recv(timeout=5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4409
            _send(two.url, alice, bob, b"via two")
            frame = _next(on_one)
            assert frame["envelope"]["content"] == b64(b"via two")

