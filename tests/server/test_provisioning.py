"""Provisioning mailboxes: one message, taken once, only within their lifetime."""

from __future__ import annotations

from fastapi.testclient import TestClient

from .conftest import register


def test_mailbox_life_cycle(client: TestClient) -> None:
    device = register(client)
    opened = client.post("/v1/provisioning")
    assert opened.status_code == 201
    address = opened.json()["address"]
    assert len(address) >= 40
    assert client.get(f"/v1/provisioning/{address}").status_code == 204   # nothing yet
    # Only a device of some account may leave a message, and only one.
    assert client.put(f"/v1/provisioning/{address}", content=b"x").status_code == 401
    assert client.put(f"/v1/provisioning/{address}", content=b"sealed",
                      headers=device.headers).status_code == 204
    assert client.put(f"/v1/provisioning/{address}", content=b"other",
                      headers=device.headers).status_code == 404
    taken = client.get(f"/v1/provisioning/{address}?wait=1")
    assert taken.status_code == 200 and taken.content == b"sealed"
    assert client.get(f"/v1/provisioning/{address}").status_code == 404     # taken once


def test_mailbox_limits(client: TestClient) -> None:
    device = register(client)
    address = client.post("/v1/provisioning").json()["address"]
    too_big = b"x" * (256 * 1024 + 1)
    assert client.put(f"/v1/provisioning/{address}", content=too_big,
                      headers=device.headers).status_code == 413
    assert client.put(f"/v1/provisioning/{address}", content=b"",
                      headers=device.headers).status_code == 400
    for bad in ("short", "x" * 43 + "!", "unknown" + "A" * 40):
        assert client.get(f"/v1/provisioning/{bad}").status_code == 404
    assert client.get(f"/v1/provisioning/{address}?wait=31").status_code == 400
