"""Registration, device linking and removal, usernames."""

from __future__ import annotations

import dataclasses

from fastapi.testclient import TestClient

from cipherpost.server import Settings, create_app

from .conftest import link, register
from .helpers import KeyMaker, auth, b64


def test_register_validates_keys(client: TestClient) -> None:
    keys = KeyMaker()
    good = keys.device_body()
    cases = {
        "identity not a key": ({**good, "identity_key": b64(b"\x05" + bytes(10))}, "invalid_key"),
        "identity bad base64": ({**good, "identity_key": "!!"}, "invalid_request"),
        "signed prekey signature": ({**good, "signed_prekey": {
            **good["signed_prekey"], "signature": b64(bytes(64))}}, "invalid_signature"),
        "kyber signature": ({**good, "last_resort_kyber_prekey": {
            **good["last_resort_kyber_prekey"], "signature": b64(bytes(64))}},
            "invalid_signature"),
        "kyber type": ({**good, "last_resort_kyber_prekey": {
            **good["last_resort_kyber_prekey"],
            "public_key": b64(b"\x0a" + bytes(1568))}}, "invalid_key"),
        "one-time key": ({**good, "one_time_prekeys": [{"key_id": 1, "public_key": b64(
            b"\x06" + bytes(32))}]}, "invalid_key"),
        "another identity's signatures": ({**good, "identity_key": b64(
            KeyMaker().identity.public.serialize())}, "invalid_signature"),
        "registration id": ({**good, "registration_id": 0}, "invalid_request"),
        "unknown field": ({**good, "surprise": 1}, "invalid_request"),
        "missing field": ({k: v for k, v in good.items() if k != "signed_prekey"},
                          "invalid_request"),
        "bad username": ({**good, "username": "Not Allowed!"}, "invalid_request"),
    }
    for name, (body, code) in cases.items():
        response = client.post("/v1/accounts", json=body)
        assert response.status_code == 400, (name, response.text)
        assert response.json()["error"]["code"] == code, (name, response.json())
    assert client.post("/v1/accounts", content=b"{not json",
                       headers={"content-type": "application/json"}).status_code == 400
    assert client.post("/v1/accounts", json=good).status_code == 201


def test_usernames_unique_and_changeable(client: TestClient) -> None:
    alice = register(client, "alice")
    keys = KeyMaker()
    taken = client.post("/v1/accounts", json={**keys.device_body(), "username": "alice"})
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "username_taken"
    bob = register(client, "bob")
    assert client.put("/v1/accounts/me/username", headers=bob.headers,
                      json={"username": "alice"}).status_code == 409
    assert client.put("/v1/accounts/me/username", headers=alice.headers,
                      json={"username": "alice2"}).status_code == 204
    assert client.get("/v1/usernames/alice", headers=bob.headers).status_code == 404
    assert client.get("/v1/usernames/alice2", headers=bob.headers).json() == {
        "account_id": alice.account_id}
    me = client.get("/v1/accounts/me", headers=alice.headers).json()
    assert me["username"] == "alice2" and me["account_id"] == alice.account_id
    assert [d["device_id"] for d in me["devices"]] == [1]


def test_link_devices(client: TestClient) -> None:
    alice = register(client)
    second = link(client, alice)
    assert second.account_id == alice.account_id and second.device_id == 2
    devices = client.get("/v1/devices", headers=second.headers).json()
    assert [d["device_id"] for d in devices] == [1, 2]
    # A device with another identity key is refused; a code works once.
    code = client.post("/v1/devices/link-codes", headers=alice.headers).json()["link_code"]
    other = KeyMaker()
    response = client.post("/v1/devices", json={**other.device_body(), "link_code": code})
    assert response.status_code == 409 and response.json()["error"]["code"] == \
        "identity_mismatch"
    again = client.post("/v1/devices", json={**alice.keys.linked().device_body(),
                                             "link_code": code})
    assert again.status_code == 403 and again.json()["error"]["code"] == "invalid_link_code"


def test_device_cap(settings: Settings) -> None:
    with TestClient(create_app(dataclasses.replace(settings, max_devices_per_account=3))) as c:
        owner = register(c)
        link(c, owner)
        link(c, owner)
        code = c.post("/v1/devices/link-codes", headers=owner.headers).json()["link_code"]
        response = c.post("/v1/devices", json={**owner.keys.linked().device_body(),
                                               "link_code": code})
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "too_many_devices"


def test_expired_link_code(settings: Settings) -> None:
    now = [1_800_000_000.0]
    with TestClient(create_app(settings, clock=lambda: now[0])) as c:
        owner = register(c)
        code = c.post("/v1/devices/link-codes", headers=owner.headers).json()["link_code"]
        now[0] += settings.link_code_ttl + 1
        response = c.post("/v1/devices", json={**owner.keys.linked().device_body(),
                                               "link_code": code})
        assert response.status_code == 403


def test_remove_device_kills_token_socket_queue_and_keys(client: TestClient) -> None:
    alice = register(client)
    second = link(client, alice)
    bob = register(client)
    bundles = client.get(f"/v1/keys/{alice.account_id}/*", headers=bob.headers).json()
    messages = [{"device_id": d["device_id"], "registration_id": d["registration_id"],
                 "type": 3, "content": b64(b"x")} for d in bundles["devices"]]
    assert client.put(f"/v1/messages/{alice.account_id}", headers=bob.headers,
                      json={"timestamp": 1, "messages": messages}).status_code == 200
    with client.websocket_connect("/v1/websocket", headers=second.headers) as ws:
        assert ws.receive_json()["type"] == "message"
        assert client.delete("/v1/devices/2", headers=alice.headers).status_code == 204
        closed = ws.receive()
        assert closed["type"] == "websocket.close" and closed["code"] == 4401
    assert client.get("/v1/devices", headers=second.headers).status_code == 401
    assert [d["device_id"] for d in client.get(
        "/v1/devices", headers=alice.headers).json()] == [1]
    assert client.get(f"/v1/keys/{alice.account_id}/2", headers=bob.headers).status_code == 404
    # Sending to the old device list is now a mismatch that names the extra device.
    response = client.put(f"/v1/messages/{alice.account_id}", headers=bob.headers,
                          json={"timestamp": 2, "messages": messages})
    assert response.status_code == 409 and response.json()["extra_devices"] == [2]
    # The last device cannot go.
    last = client.delete("/v1/devices/1", headers=alice.headers)
    assert last.status_code == 400 and last.json()["error"]["code"] == "last_device"
    assert client.delete("/v1/devices/9", headers=alice.headers).status_code == 404


def test_authentication_failures(client: TestClient) -> None:
    alice = register(client)
    bad_tokens = [None, "", "Bearer", "Bearer x", f"Bearer {alice.account_id}.1",
                  f"Bearer {alice.account_id}.1.wrongsecret",
                  f"Bearer {alice.account_id}.2.{alice.token.split('.')[2]}",
                  f"Basic {alice.token}", "Bearer " + "a" * 5000]
    for token in bad_tokens:
        headers = {"Authorization": token} if token is not None else {}
        response = client.get("/v1/accounts/me", headers=headers)
        assert response.status_code == 401, token
        assert response.json()["error"]["code"] == "unauthorized"
    assert client.get("/v1/accounts/me", headers=auth(alice.token)).status_code == 200
