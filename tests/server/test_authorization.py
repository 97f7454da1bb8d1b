"""The authorization matrix: every authenticated route, every kind of bad caller."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from ..assurance import results
from .conftest import link, register
from .helpers import b64

# Open by design: registering, joining with a link code, opening a provisioning mailbox
# (a new device has no account yet) and taking from it (the unguessable address is the
# capability, and what is inside is encrypted to a key the relay never sees).
PUBLIC = {("POST", "/v1/accounts"), ("POST", "/v1/devices"), ("GET", "/healthz"),
          ("GET", "/metrics"), ("POST", "/v1/provisioning"),
          ("GET", "/v1/provisioning/{address}"),
          # Typed-code linking: the new device's side of a code mailbox, and closing it.
          ("POST", "/v1/provisioning/codes"), ("PUT", "/v1/provisioning/{address}/new/{index}"),
          ("GET", "/v1/provisioning/{address}/existing/{index}"),
          ("DELETE", "/v1/provisioning/{address}"),
          # Recovery (docs/spec/history.md): the secret in the body is the credential.
          ("POST", "/v1/recovery/open"), ("POST", "/v1/recovery/devices"),
          ("GET", "/v1/recovery/passphrase/{username}"),
          ("POST", "/v1/recovery/passphrase/open"),
          ("POST", "/v1/recovery/passphrase/devices"),
          # Registration lock: proof of the recovery secret in the body is the credential.
          ("POST", "/v1/accounts/reregister"),
          # Sealed sender: the public trust root, pinned before an account exists, and
          # sealed sends, authorised by the recipient's unidentified-access key instead of
          # a device token (test_sealed_sender.py checks that key).
          ("GET", "/v1/certificates/trust-root"), ("PUT", "/v1/sealed/{account_id}")}


def _routes(client: TestClient) -> list[tuple[str, str]]:
    spec = client.get("/openapi.json").json()
    return [(method.upper(), path) for path, item in spec["paths"].items() for method in item]


def _fill(path: str, account_id: str) -> str:
    return (path.replace("{account_id}", account_id).replace("{device}", "1")
            .replace("{device_id}", "1").replace("{username}", "someone")
            .replace("{attachment_id}", "A" * 43).replace("{address}", "A" * 43)
            .replace("{event_id}", "0" * 32).replace("{index}", "0"))


def test_every_route_refuses_bad_callers(client: TestClient) -> None:
    alice = register(client)
    spare = link(client, alice)
    removed_token = spare.token
    assert client.delete(f"/v1/devices/{spare.device_id}",
                         headers=alice.headers).status_code == 204
    secret = alice.token.split(".")[2]
    callers: dict[str, dict[str, str]] = {
        "none": {},
        "malformed": {"Authorization": "Bearer !!!"},
        "wrong secret": {"Authorization": f"Bearer {alice.account_id}.1.{secret[::-1]}"},
        "other device's secret": {"Authorization": f"Bearer {alice.account_id}.2.{secret}"},
        "removed device": {"Authorization": f"Bearer {removed_token}"},
    }
    attempts = allowed = 0
    routes = _routes(client)
    assert len(routes) >= 12
    for method, path in routes:
        if (method, path) in PUBLIC:
            continue
        for name, headers in callers.items():
            attempts += 1
            response = client.request(method, _fill(path, alice.account_id), headers=headers,
                                      json={} if method in ("POST", "PUT") else None)
            if response.status_code != 401:
                allowed += 1
                raise AssertionError(f"{method} {path} as {name}: {response.status_code}")
    assert attempts >= 50 and allowed == 0
    backend = "sqlite" if client.app.state.relay.storage.db.is_sqlite else "postgresql"
    results.write("authorization", f"matrix-{backend}", {
        "routes": len(routes), "public_routes": len(PUBLIC), "callers": sorted(callers),
        "attempts": attempts, "allowed": allowed})


def test_one_account_cannot_touch_anothers_devices_keys_or_queue(client: TestClient) -> None:
    alice = register(client)
    bob = register(client)
    link(client, bob)
    reg = {1: bob.keys.registration_id}
    bundles = client.get(f"/v1/keys/{bob.account_id}/*", headers=alice.headers).json()
    reg = {d["device_id"]: d["registration_id"] for d in bundles["devices"]}
    sent = client.put(f"/v1/messages/{bob.account_id}", headers=alice.headers, json={
        "timestamp": 1, "messages": [{"device_id": d, "registration_id": r, "type": 2,
                                      "content": b64(b"for bob")} for d, r in reg.items()]})
    assert sent.status_code == 200
    bob_queue: list[dict[str, Any]] = client.get("/v1/messages",
                                                 headers=bob.headers).json()["messages"]
    # Bob's first device also holds the relay's notice of his second one (type 0).
    assert [m["type"] for m in bob_queue] == [0, 2]
    # Alice's view is her own: empty queue, one device; acking Bob's ids does nothing.
    assert client.get("/v1/messages", headers=alice.headers).json()["messages"] == []
    assert client.post("/v1/messages/ack", headers=alice.headers,
                       json={"ids": [m["id"] for m in bob_queue]}).json() == {"deleted": 0}
    assert client.delete("/v1/devices/2", headers=alice.headers).status_code == 404
    assert [d["device_id"] for d in client.get("/v1/devices",
                                               headers=bob.headers).json()] == [1, 2]
    # Alice uploads keys: they go to her device, not Bob's.
    before = client.get("/v1/keys/count", headers=bob.headers).json()
    assert client.put("/v1/keys", headers=alice.headers,
                      json={"one_time_prekeys": alice.keys.one_time(5)}).status_code == 204
    assert client.get("/v1/keys/count", headers=bob.headers).json() == before
    # Bob's keys signed by Alice's identity cannot be uploaded anywhere by Alice.
    forged = bob.keys.signed()
    response = client.put("/v1/keys", headers=alice.headers, json={"signed_prekey": forged})
    assert response.status_code == 400
    assert len(client.get("/v1/messages", headers=bob.headers).json()["messages"]) == 2
