"""How the relay serves the browser client: the static app at ``/`` with its security
headers (the API untouched), and the WebSocket token offered as a subprotocol (browsers
cannot set an Authorization header on a WebSocket), never logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from cipherpost import logfilter
from cipherpost.server import Settings, create_app
from cipherpost.server.api import websocket
from cipherpost.server.app import CONTENT_SECURITY_POLICY, TOKEN_SUBPROTOCOL

from ..server.conftest import register


def _settings(tmp_path: Path, web_dir: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/relay.db",
                    attachment_dir=str(tmp_path / "blobs"), web_dir=str(web_dir),
                    rate_register_per_ip="1000/100")


@pytest.fixture
def web(tmp_path: Path) -> Iterator[TestClient]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<!doctype html><title>app</title>")
    (site / "app.js").write_text("export {};")
    with TestClient(create_app(_settings(tmp_path, site))) as client:
        yield client


def test_the_app_is_served_at_the_root_with_a_strict_policy(web: TestClient) -> None:
    page = web.get("/")
    assert page.status_code == 200 and "<title>app</title>" in page.text
    policy = page.headers["content-security-policy"]
    assert policy == CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in policy and "script-src 'self' 'wasm-unsafe-eval';" in policy
    assert "unsafe-inline" not in policy and "'unsafe-eval'" not in policy
    assert "frame-ancestors 'none'" in policy
    assert policy.endswith("require-trusted-types-for 'script'; trusted-types cipherpost-strength")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    script = web.get("/app.js")
    assert script.status_code == 200 and script.headers["content-security-policy"]


def test_the_api_keeps_its_routes_and_json_errors(web: TestClient) -> None:
    assert web.get("/healthz").json() == {"status": "ok"}
    assert web.get("/openapi.json").status_code == 200
    missing = web.get("/v1/no-such-thing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert web.get("/../pyproject.toml").status_code == 404


def test_without_a_build_nothing_is_served_at_the_root(tmp_path: Path) -> None:
    with TestClient(create_app(_settings(tmp_path, tmp_path / "absent"))) as client:
        assert client.get("/").status_code == 404
        assert client.get("/healthz").status_code == 200


def test_the_token_as_a_subprotocol_authenticates_a_websocket(web: TestClient) -> None:
    bob = register(web)
    offered = [websocket.BATCH_SUBPROTOCOL, TOKEN_SUBPROTOCOL + bob.token]
    with web.websocket_connect("/v1/websocket", subprotocols=offered) as ws:
        assert ws.accepted_subprotocol == websocket.BATCH_SUBPROTOCOL  # never the token
        ws.send_json({"type": "ack", "ids": [], "confirm": True})
        assert ws.receive_json() == {"type": "acked", "ids": []}


@pytest.mark.parametrize("tokens", [
    ["wrong"],                                  # not a token
    ["{account}.1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"],  # wrong secret
    ["{token}", "{token}"],                     # two tokens: ambiguous
])
def test_a_bad_or_ambiguous_subprotocol_token_is_refused(web: TestClient,
                                                          tokens: list[str]) -> None:
    bob = register(web)
    offered = [websocket.BATCH_SUBPROTOCOL] + [
        TOKEN_SUBPROTOCOL + t.format(account=bob.account_id, token=bob.token) for t in tokens]
    with pytest.raises(WebSocketDisconnect) as closed, \
            web.websocket_connect("/v1/websocket", subprotocols=offered) as ws:
        ws.receive_json()
    assert closed.value.code == 4401


def test_a_token_in_both_the_header_and_a_subprotocol_is_refused(web: TestClient) -> None:
    bob = register(web)
    offered = [TOKEN_SUBPROTOCOL + bob.token]
    with pytest.raises(WebSocketDisconnect) as closed, \
            web.websocket_connect("/v1/websocket", headers=dict(bob.headers),
                                  subprotocols=offered) as ws:
        ws.receive_json()
    assert closed.value.code == 4401


def test_the_subprotocol_header_is_redacted_in_logs() -> None:
    record = logging.LogRecord("websockets.server", logging.DEBUG, __file__, 1, "< %s: %s",
                               ("Sec-WebSocket-Protocol", "cipherpost.token.secret"), None)
    logfilter.RedactCredentials().filter(record)
    assert "secret" not in record.getMessage()
