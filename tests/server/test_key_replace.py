"""A device can replace all its one-time keys at once (to repair its directory entry)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from .conftest import register


def test_replace_one_time_keys(client: TestClient) -> None:
    device = register(client)
    counts = client.get("/v1/keys/count", headers=device.headers).json()
    assert counts == {"one_time_prekeys": 3, "kyber_prekeys": 2}
    # Adding keeps the old ones; replacing drops them first (last-resort key untouched).
    body = {"one_time_prekeys": device.keys.one_time(2),
            "kyber_prekeys": [device.keys.kyber()]}
    assert client.put("/v1/keys", json=body, headers=device.headers).status_code == 204
    assert client.get("/v1/keys/count", headers=device.headers).json() == \
        {"one_time_prekeys": 5, "kyber_prekeys": 3}
    fresh_ec, fresh_kyber = device.keys.one_time(2), [device.keys.kyber()]
    body = {"one_time_prekeys": fresh_ec, "kyber_prekeys": fresh_kyber,
            "replace_one_time": True}
    assert client.put("/v1/keys", json=body, headers=device.headers).status_code == 204
    assert client.get("/v1/keys/count", headers=device.headers).json() == \
        {"one_time_prekeys": 2, "kyber_prekeys": 1}
    other = register(client)
    served = set()
    for _ in range(4):
        bundle = client.get(f"/v1/keys/{device.account_id}/1",
                            headers=other.headers).json()["devices"][0]
        if bundle["one_time_prekey"]:
            served.add(bundle["one_time_prekey"]["key_id"])
        served.add(("kyber", bundle["kyber_prekey"]["key_id"]))
    assert {k["key_id"] for k in fresh_ec} <= served
    assert ("kyber", fresh_kyber[0]["key_id"]) in served
    # Once they are used up, the last-resort Kyber key is served again.
    last = client.get(f"/v1/keys/{device.account_id}/1", headers=other.headers).json()
    assert last["devices"][0]["one_time_prekey"] is None
