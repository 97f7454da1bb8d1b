from __future__ import annotations

from fastapi.testclient import TestClient

from .conftest import register


def test_two_devices_exchange_ciphertext(client: TestClient) -> None:
    alice = register(client, "alice")
    bob = register(client, "bob")
    found = client.get("/v1/usernames/bob", headers=alice.headers)
    assert found.json() == {"account_id": bob.account_id}
    bundles = client.get(f"/v1/keys/{bob.account_id}/*", headers=alice.headers).json()
    assert [d["device_id"] for d in bundles["devices"]] == [1]
    device = bundles["devices"][0]
    sent = client.put(f"/v1/messages/{bob.account_id}", headers=alice.headers, json={
        "timestamp": 1, "messages": [{"device_id": 1, "registration_id": device["registration_id"],
                                      "type": 3, "content": "aGVsbG8="}]})
    assert sent.status_code == 200, sent.text
    with client.websocket_connect("/v1/websocket", headers=bob.headers) as ws:
        frame = ws.receive_json()
        assert frame["type"] == "message"
        frame = frame["envelope"]
        assert frame["content"] == "aGVsbG8=" and frame["type"] == 3
        assert frame["sender_account_id"] == alice.account_id
        ws.send_json({"type": "ack", "ids": [frame["id"]]})
    import time
    for _ in range(50):
        if client.get("/v1/messages", headers=bob.headers).json()["messages"] == []:
            break
        time.sleep(0.02)
    assert client.get("/v1/messages", headers=bob.headers).json() == {"messages": [],
                                                                      "more": False}
