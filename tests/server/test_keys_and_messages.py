"""Prekey directory, sending, delivery, attachments, operations."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from cipherpost.server import Settings, create_app

from .conftest import Registered, link, register
from .helpers import b64


def _send(client: TestClient, sender: Registered, to: Registered | str,
          contents: dict[int, bytes], registration: dict[int, int] | None = None,
          ts: int = 1) -> Any:
    account_id = to if isinstance(to, str) else to.account_id
    if registration is None:
        devices = client.get(f"/v1/keys/{account_id}/*", headers=sender.headers).json()
        registration = {d["device_id"]: d["registration_id"] for d in devices["devices"]}
    messages = [{"device_id": d, "registration_id": registration[d], "type": 2,
                 "content": b64(c)} for d, c in contents.items()]
    return client.put(f"/v1/messages/{account_id}", headers=sender.headers,
                      json={"timestamp": ts, "messages": messages})


def test_one_time_keys_handed_out_once(client: TestClient) -> None:
    bob = register(client, one_time=3, kyber=2)
    alice = register(client)
    assert client.get("/v1/keys/count", headers=bob.headers).json() == {
        "one_time_prekeys": 3, "kyber_prekeys": 2}
    seen_ec, seen_kyber = [], []
    for _ in range(5):
        device = client.get(f"/v1/keys/{bob.account_id}/1",
                            headers=alice.headers).json()["devices"][0]
        seen_ec.append(device["one_time_prekey"]["key_id"] if device["one_time_prekey"] else None)
        seen_kyber.append(device["kyber_prekey"]["key_id"])
    assert len(set(seen_ec[:3])) == 3 and seen_ec[3:] == [None, None]
    assert len(set(seen_kyber[:2])) == 2
    last_resort = seen_kyber[2]
    assert seen_kyber[2:] == [last_resort] * 3 and last_resort not in seen_kyber[:2]
    assert client.get("/v1/keys/count", headers=bob.headers).json() == {
        "one_time_prekeys": 0, "kyber_prekeys": 0}
    upload = client.put("/v1/keys", headers=bob.headers, json={
        "one_time_prekeys": bob.keys.one_time(4), "kyber_prekeys": [bob.keys.kyber()]})
    assert upload.status_code == 204
    assert client.get("/v1/keys/count", headers=bob.headers).json() == {
        "one_time_prekeys": 4, "kyber_prekeys": 1}
    forged = bob.keys.kyber()
    forged["signature"] = b64(bytes(64))
    response = client.put("/v1/keys", headers=bob.headers, json={"kyber_prekeys": [forged]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"


def test_bundle_lookup_errors(client: TestClient) -> None:
    alice = register(client)
    assert client.get("/v1/keys/nobody/1", headers=alice.headers).status_code == 404
    assert client.get(f"/v1/keys/{alice.account_id}/5", headers=alice.headers).status_code == 404
    assert client.get(f"/v1/keys/{alice.account_id}/0", headers=alice.headers).status_code == 400
    assert client.get(f"/v1/keys/{alice.account_id}/x", headers=alice.headers).status_code == 400


def test_device_mismatch_and_stale(client: TestClient) -> None:
    alice = register(client)
    bob = register(client)
    bob2 = link(client, bob)
    reg = {1: bob.keys.registration_id, 2: bob2.keys.registration_id}
    missing = _send(client, alice, bob, {1: b"x"}, reg)
    assert missing.status_code == 409
    assert missing.json()["missing_devices"] == [2] and missing.json()["extra_devices"] == []
    extra = _send(client, alice, bob, {1: b"x", 2: b"y", 3: b"z"}, {**reg, 3: 5})
    assert extra.status_code == 409 and extra.json()["extra_devices"] == [3]
    stale = _send(client, alice, bob, {1: b"x", 2: b"y"}, {1: reg[1], 2: reg[2] % 16380 + 1})
    assert stale.status_code == 410 and stale.json()["stale_devices"] == [2]
    assert _send(client, alice, bob, {1: b"x", 2: b"y"}, reg).json() == {"queued": 2}
    # Nothing from the refused attempts was queued (beside it: the relay's notice of
    # bob's second device, type 0).
    assert [m["type"] for m in client.get("/v1/messages", headers=bob.headers).json()[
        "messages"]] == [0, 2]
    # To one's own account: every other device, never the sender's own.
    own = _send(client, bob, bob, {2: b"sync"}, reg)
    assert own.json() == {"queued": 1}
    assert _send(client, bob, bob, {1: b"me", 2: b"sync"}, reg).status_code == 409
    assert _send(client, alice, "00000000-0000-0000-0000-000000000000", {1: b"x"},
                 {1: 1}).status_code == 404


def test_queue_budget_refuses_with_clear_error(settings: Settings) -> None:
    with TestClient(create_app(dataclasses.replace(settings, queue_byte_budget=1000))) as c:
        alice, bob = register(c), register(c)
        reg = {1: bob.keys.registration_id}
        assert _send(c, alice, bob, {1: b"a" * 600}, reg).status_code == 200
        full = _send(c, alice, bob, {1: b"b" * 600}, reg)
        assert full.status_code == 507 and full.json()["error"]["code"] == "queue_full"
        ids = [m["id"] for m in c.get("/v1/messages", headers=bob.headers).json()["messages"]]
        assert c.post("/v1/messages/ack", headers=bob.headers,
                      json={"ids": ids}).json() == {"deleted": 1}
        assert _send(c, alice, bob, {1: b"b" * 600}, reg).status_code == 200


def test_message_and_body_limits(settings: Settings) -> None:
    small = dataclasses.replace(settings, max_message_bytes=100, max_request_bytes=20_000)
    with TestClient(create_app(small)) as c:
        alice, bob = register(c), register(c)
        reg = {1: bob.keys.registration_id}
        big = _send(c, alice, bob, {1: b"x" * 101}, reg)
        assert big.status_code == 400 and big.json()["error"]["code"] == "too_large"
        huge = c.put(f"/v1/messages/{bob.account_id}",
                     headers={**alice.headers, "content-type": "application/json"},
                     content=b"{" + b" " * 30_000 + b"}")
        assert huge.status_code == 413 and huge.json()["error"]["code"] == "too_large"


def test_websocket_order_redelivery_and_http_fallback(client: TestClient) -> None:
    alice, bob = register(client), register(client)
    reg = {1: bob.keys.registration_id}
    for i in range(10):
        assert _send(client, alice, bob, {1: b"m%d" % i}, reg, ts=i).status_code == 200
    with client.websocket_connect("/v1/websocket", headers=bob.headers) as ws:
        frames = [ws.receive_json()["envelope"] for _ in range(10)]
        assert [f["client_timestamp"] for f in frames] == list(range(10))
        ws.send_json({"type": "ack", "ids": [f["id"] for f in frames[:4]]})
        assert ws.receive_json() == {"type": "acked", "ids": [f["id"] for f in frames[:4]]}
        # A message sent while connected arrives without polling.
        _send(client, alice, bob, {1: b"live"}, reg, ts=99)
        assert ws.receive_json()["envelope"]["client_timestamp"] == 99
    _wait_for(lambda: len(client.get("/v1/messages", headers=bob.headers).json()[
        "messages"]) == 7)
    # Reconnect: the unacknowledged ones come again, still in order.
    with client.websocket_connect("/v1/websocket", headers=bob.headers) as ws:
        again = [ws.receive_json()["envelope"] for _ in range(7)]
        assert [f["client_timestamp"] for f in again] == [4, 5, 6, 7, 8, 9, 99]
        ws.send_json({"type": "ack", "ids": [f["id"] for f in again]})
        ws.send_json({"type": "ack", "ids": [f["id"] for f in again]})  # repeated: harmless
    _wait_for(lambda: client.get("/v1/messages", headers=bob.headers).json()[
        "messages"] == [])


def test_websocket_refuses_bad_credentials_and_frames(client: TestClient) -> None:
    bob = register(client)
    with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect(
            "/v1/websocket", headers={"Authorization": "Bearer nope"}) as ws:
        ws.receive_json()
    assert info.value.code == 4401
    with client.websocket_connect("/v1/websocket", headers=bob.headers) as ws:
        ws.send_text("not json")
        closed = ws.receive()
        assert closed["type"] == "websocket.close" and closed["code"] == 1003


def test_message_expiry(settings: Settings) -> None:
    now = [1_800_000_000.0]
    app = create_app(dataclasses.replace(settings, message_ttl=60), clock=lambda: now[0])
    with TestClient(app) as c:
        alice, bob = register(c), register(c)
        _send(c, alice, bob, {1: b"old"}, {1: bob.keys.registration_id})
        now[0] += 61
        removed = c.portal.call(app.state.relay.storage.expire, int(now[0] * 1000))
        assert removed == 1
        assert c.get("/v1/messages", headers=bob.headers).json()["messages"] == []
        assert _send(c, alice, bob, {1: b"new"}, {1: bob.keys.registration_id}).status_code \
            == 200


def test_attachments(settings: Settings) -> None:
    with TestClient(create_app(dataclasses.replace(settings,
                                                   max_attachment_bytes=10_000))) as c:
        alice, bob = register(c), register(c)
        blob = bytes(range(256)) * 20
        created = c.post("/v1/attachments", headers=alice.headers, content=blob)
        assert created.status_code == 201
        blob_id = created.json()["id"]
        got = c.get(f"/v1/attachments/{blob_id}", headers=bob.headers)
        assert got.status_code == 200 and got.content == blob
        assert c.get("/v1/attachments/" + "A" * 43, headers=bob.headers).status_code == 404
        assert c.get("/v1/attachments/../../etc", headers=bob.headers).status_code == 404
        too_big = c.post("/v1/attachments", headers=alice.headers, content=b"x" * 10_001)
        assert too_big.status_code == 413
        assert c.post("/v1/attachments", headers=alice.headers, content=b"").status_code == 400
        assert c.post("/v1/attachments", content=blob).status_code == 401


def test_operations(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    register(client)
    metrics = client.get("/metrics").text
    assert "cipherpost_messages_queued_total" in metrics
    assert "cipherpost_http_requests_total" in metrics
    spec = client.get("/openapi.json").json()
    assert "/v1/messages/{account_id}" in spec["paths"]
    assert client.get("/docs").status_code == 200
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = client.post("/healthz")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def _wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def test_send_over_websocket(client: TestClient) -> None:
    alice, bob = register(client), register(client)
    reg = bob.keys.registration_id
    with client.websocket_connect("/v1/websocket", headers=alice.headers) as ws:
        ws.send_json({"type": "send", "id": 1, "account_id": bob.account_id, "timestamp": 7,
                      "messages": [{"device_id": 1, "registration_id": reg, "type": 2,
                                    "content": b64(b"over ws")}]})
        assert ws.receive_json() == {"type": "sent", "id": 1, "status": 200, "queued": 1}
        ws.send_json({"type": "send", "id": "two", "account_id": bob.account_id,
                      "timestamp": 8, "messages": [{"device_id": 1,
                                                    "registration_id": reg % 16380 + 1,
                                                    "type": 2, "content": b64(b"x")}]})
        stale = ws.receive_json()
        assert (stale["id"], stale["status"], stale["error"]["code"], stale["stale_devices"]) \
            == ("two", 410, "stale_devices", [1])
        ws.send_json({"type": "send", "id": 3, "account_id": bob.account_id,
                      "timestamp": "soon", "messages": []})
        bad = ws.receive_json()
        assert (bad["status"], bad["error"]["code"]) == (400, "invalid_request")
        ws.send_json({"type": "send", "id": 4, "account_id": "nobody", "timestamp": 1,
                      "messages": [{"device_id": 1, "registration_id": 1, "type": 2,
                                    "content": ""}]})
        assert ws.receive_json()["status"] == 404
        ws.send_json({"type": "send", "account_id": bob.account_id})  # no id: a bad frame
        closed = ws.receive()
        assert closed["type"] == "websocket.close" and closed["code"] == 1003
    with client.websocket_connect("/v1/websocket", headers=bob.headers) as ws:
        envelope = ws.receive_json()["envelope"]
        assert (envelope["content"], envelope["client_timestamp"]) == (b64(b"over ws"), 7)
