"""Fan-out between relay processes through Redis: two real relay processes on one
PostgreSQL database and one Redis server."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, WebSocketException

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
    # One key file for both, as deploy.md says: a relay with a root of its own refuses
    # to start on a database whose relays serve another (server/trust_root.py).
    settings = {"database_url": postgres.url(database), "redis_url": redis_server.url(),
                "sealed_sender_keys": str(tmp_path / "sealed-sender-keys.json")}
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



@pytest.mark.postgresql
def test_sigkill_of_either_process_loses_nothing(
        two_relays: tuple[ServerProcess, ServerProcess]) -> None:
    """Sends go through one relay process and the recipient's WebSocket is on the other;
    each in turn is killed with SIGKILL under load (sender and recipient move to the
    survivor, the killed one comes back, and they end on different processes again).
    The sender, about 50 a second, runs until 40 more were accepted after each restart.
    Every accepted message is delivered, and none whose acknowledgement was confirmed is
    delivered again."""
    relays = list(two_relays)
    alice, bob = _register(relays[0].url), _register(relays[1].url)
    sending = threading.Event()
    sending.set()
    sent = [0]  # how many the sender tried
    accepted: set[int] = set()
    unknown: set[int] = set()
    received: dict[str, int] = {}
    deliveries: list[str] = []
    confirmed: set[str] = set()
    violations: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def sender() -> None:
        with httpx.Client(timeout=5) as http:
            for i in range(5_000):
                if not sending.is_set():
                    break
                sent[0] = i + 1
                time.sleep(0.02)
                at = 0  # relay one whenever it is up: the recipient ends on relay two
                while True:
                    url = relays[at].url
                    try:
                        r = http.put(f"{url}/v1/messages/{bob['account_id']}",
                                     headers=auth(alice["token"]), json={
                                         "timestamp": i, "messages": [{
                                             "device_id": 1,
                                             "registration_id": bob["registration_id"],
                                             "type": 2, "content": b64(b"%d" % i)}]})
                    except httpx.ConnectError:  # never reached it: the other one
                        at = 1 - at
                        time.sleep(0.02)
                        continue
                    except httpx.HTTPError:
                        with lock:
                            unknown.add(i)
                        break
                    with lock:
                        (accepted if r.status_code == 200 else unknown).add(i)
                    break

    def receiver() -> None:
        at = 1
        while not stop.is_set():
            try:
                with _ws(relays[at].url, bob["token"]) as ws:
                    while not stop.is_set():
                        try:
                            frame = json.loads(ws.recv(timeout=0.5))
                        except TimeoutError:
                            continue
                        with lock:
                            if frame["type"] == "acked":
                                confirmed.update(frame["ids"])
                                continue
                            frame = frame["envelope"]
                            if frame["id"] in confirmed:
                                violations.append(frame["id"])
                            received[frame["id"]] = int(base64.b64decode(frame["content"]))
                            deliveries.append(frame["id"])
                        ws.send(json.dumps({"type": "ack", "ids": [frame["id"]]}))
            except (OSError, WebSocketException, TimeoutError):
                at = 1 - at
                time.sleep(0.05)

    threads = [threading.Thread(target=sender), threading.Thread(target=receiver)]
    for t in threads:
        t.start()
    try:
        for victim in (1, 0, None):  # the recipient's relay, then the sender's
            deadline = time.monotonic() + 30
            start_count = len(accepted)
            while len(accepted) < start_count + 40:
                assert time.monotonic() < deadline and threads[0].is_alive(), "the sender stalled"
                time.sleep(0.01)
            if victim is not None:
                relays[victim].kill()
                time.sleep(0.3)
                relays[victim].start()
        sending.clear()
        threads[0].join(timeout=120)
        total = sent[0]
        # Both back: the last messages go through relay one to the device on relay two.
        for i in range(total, total + 20):
            _send(relays[0].url, alice, bob, b"%d" % i)
            with lock:
                accepted.add(i)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with lock:
                if accepted <= set(received.values()):
                    break
            time.sleep(0.05)
    finally:
        stop.set()
        threads[1].join(timeout=10)
    missing = accepted - set(received.values())
    assert not missing, f"accepted but never delivered: {sorted(missing)[:20]}"
    assert not violations, f"delivered again after a confirmed ack: {violations[:5]}"
    assert len(accepted) + len(unknown) == sent[0] + 20 and len(unknown) <= 10, (
        len(accepted), len(unknown), sent[0])
    print(f"accepted={len(accepted)} unknown={len(unknown)} deliveries={len(deliveries)} "
          f"distinct={len(received)} redelivered={len(deliveries) - len(received)}")
