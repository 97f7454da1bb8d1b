"""The documented deployment: nginx (docs/deploy/nginx.conf, rendered for loopback) in
front of two relay processes on one PostgreSQL database and one Redis server."""

from __future__ import annotations

import json
import os
import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from cipherpost.server import Settings
from tests.support.nginx import SITE, NginxServer, NginxUnavailable, find_nginx, render_site
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer

from .helpers import KeyMaker, auth, b64
from .process import ServerProcess
from .test_tls import _self_signed

pytestmark = pytest.mark.postgresql

#: Loopback addresses the test's clients send from (nginx listens on 127.0.0.1): the
#: relays must see these, not nginx's own address.
ALICE_HOST, BOB_HOST, OTHER_HOST = "127.0.0.5", "127.0.0.6", "127.0.0.7"


def _size(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([km]?)", value).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "k": 1024, "m": 1024 * 1024}[unit]


def test_body_limits_match_the_relays() -> None:
    """nginx's body limits are the relay's default ones: smaller would refuse what the
    relay takes."""
    sizes = re.findall(r"client_max_body_size (\w+);", SITE.read_text())
    defaults = Settings()
    assert [_size(s) for s in sizes] == [defaults.max_request_bytes,
                                         defaults.max_attachment_bytes]


@pytest.fixture
def behind_nginx(tmp_path: Path, postgres: PostgresServer,
                 redis_server: RedisServer) -> Iterator[tuple[NginxServer, ssl.SSLContext,
                                                               list[ServerProcess]]]:
    if find_nginx() is None:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail("nginx is not installed (`make test` installs Debian's nginx)",
                        pytrace=False)
        pytest.skip("nginx is not installed (`make test` installs Debian's nginx package)")
    database = postgres.create_database()
    # One key file for both, as deploy.md says: a relay with a root of its own refuses
    # to start on a database whose relays serve another (server/trust_root.py).
    settings = {"database_url": postgres.url(database), "redis_url": redis_server.url(),
                "sealed_sender_keys": str(tmp_path / "sealed-sender-keys.json"),
                "trusted_proxies": "127.0.0.1", "rate_register_per_ip": "3/0.001"}
    relays = [ServerProcess(tmp_path / name, **settings) for name in ("one", "two")]
    cert, key = _self_signed(tmp_path)
    nginx: NginxServer | None = None
    try:
        for relay in relays:
            relay.workdir.mkdir()
            relay.start()
        site = SITE.read_text()
        try:
            nginx = NginxServer.start(lambda http, https: render_site(
                site, relays=(relays[0].port, relays[1].port), http_port=http,
                https_port=https, cert=cert, key=key))
        except NginxUnavailable as exc:
            pytest.fail(f"nginx did not start: {exc}", pytrace=False)
        yield nginx, ssl.create_default_context(cafile=str(cert)), relays
    finally:
        if nginx is not None:
            nginx.stop()
        for relay in relays:
            relay.stop()
        postgres.drop_database(database)


def _register(http: httpx.Client) -> httpx.Response:
    return http.post("/v1/accounts", json=KeyMaker().device_body())


def test_two_relays_behind_the_documented_nginx(
        behind_nginx: tuple[NginxServer, ssl.SSLContext, list[ServerProcess]]) -> None:
    nginx, tls, relays = behind_nginx
    base = f"https://127.0.0.1:{nginx.https_port}"

    def client(host: str) -> httpx.Client:
        return httpx.Client(base_url=base, timeout=10, transport=httpx.HTTPTransport(
            verify=tls, local_address=host))

    plain = httpx.get(f"http://127.0.0.1:{nginx.http_port}/healthz", follow_redirects=False)
    assert plain.status_code == 308
    assert plain.headers["location"] == "https://127.0.0.1/healthz"

    with client(ALICE_HOST) as http:
        alice = _register(http)
        bob_keys = KeyMaker()
        bob = http.post("/v1/accounts", json=bob_keys.device_body())
        assert alice.status_code == bob.status_code == 201, (alice.text, bob.text)
        alice_token, bob_id = alice.json()["token"], bob.json()["account_id"]
        bob_token, registration_id = bob.json()["token"], bob_keys.registration_id

        # A WebSocket through nginx (TLS, upgrade) from another address; sends over
        # HTTPS, spread by nginx over both relay processes, reach it at once.
        with connect(f"wss://127.0.0.1:{nginx.https_port}/v1/websocket", ssl=tls,
                     additional_headers=auth(bob_token), open_timeout=10,
                     source_address=(BOB_HOST, 0)) as ws:
            for i in range(6):
                sent = http.put(f"/v1/messages/{bob_id}", headers=auth(alice_token), json={
                    "timestamp": i, "messages": [{
                        "device_id": 1, "registration_id": registration_id, "type": 2,
                        "content": b64(b"hello %d" % i)}]})
                assert sent.status_code == 200, sent.text
            received: list[dict[str, Any]] = []
            while len(received) < 6:
                frame = json.loads(ws.recv(timeout=10))
                assert frame["type"] == "message", frame
                received.append(frame["envelope"])
            assert sorted(e["content"] for e in received) == sorted(
                b64(b"hello %d" % i) for i in range(6))
            ws.send(json.dumps({"type": "ack", "ids": [e["id"] for e in received]}))
            assert json.loads(ws.recv(timeout=10))["type"] == "acked"
        assert http.get("/v1/messages", headers=auth(bob_token)).json()["messages"] == []

        # Registrations per client address: 3 per bucket, shared by both processes.
        assert _register(http).status_code == 201  # ALICE_HOST's third
        refused = _register(http)
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 990
        # What a client writes in X-Forwarded-For is replaced by nginx: no new bucket.
        spoofed = http.post("/v1/accounts", json=KeyMaker().device_body(),
                            headers={"X-Forwarded-For": "203.0.113.50"})
        assert spoofed.status_code == 429, spoofed.text
        too_large = http.put(f"/v1/messages/{bob_id}", headers=auth(alice_token),
                             content=b"x" * (Settings().max_request_bytes + 1))
        assert too_large.status_code == 413
        # Linking mailboxes live in one process's memory: opened, filled and emptied
        # through nginx, which sends all of them to the same process.
        for _ in range(4):
            opened = http.post("/v1/provisioning")
            assert opened.status_code == 201, opened.text
            address = opened.json()["address"]
            left = http.put(f"/v1/provisioning/{address}", headers=auth(alice_token),
                            content=b"sealed provisioning message")
            assert left.status_code == 204, left.text
            taken = http.get(f"/v1/provisioning/{address}")
            assert taken.status_code == 200 and taken.content == b"sealed provisioning message"
        assert http.get("/metrics").status_code == 404  # on 127.0.0.1 only
    # Another client address has a bucket of its own: the relays see the address nginx
    # saw, not nginx's.
    with client(OTHER_HOST) as http:
        assert _register(http).status_code == 201

    # nginx spread the requests over both relay processes.
    for relay in relays:
        metrics = httpx.get(f"{relay.url}/metrics").text
        assert re.search(r'cipherpost_http_requests_total\{route="/v1/accounts",'
                         r'status="201"\} [1-9]', metrics), relay.url
