"""Devices unused for ``device_idle_days`` are removed (an account keeps its last one);
using a device (any authenticated request or a WebSocket) keeps it."""

from __future__ import annotations

from fastapi.testclient import TestClient

from .conftest import link, register

DAY_MS = 86_400_000


def test_idle_devices_are_removed_but_not_an_accounts_last(client: TestClient) -> None:
    relay = client.app.state.relay  # type: ignore[attr-defined]
    now = [relay.now_ms()]
    relay.clock = lambda: now[0] / 1000
    alice = register(client)
    laptop, tablet = link(client, alice), link(client, alice)
    bob = register(client)
    now[0] += 100 * DAY_MS
    for device in (alice, laptop):          # used on day 100; the tablet and Bob are not
        assert client.get("/v1/accounts/me", headers=device.headers).status_code == 200
    now[0] += 81 * DAY_MS

    async def sweep() -> list[tuple[str, int]]:
        return await relay.storage.remove_idle_devices(
            now[0] - relay.settings.device_idle_days * DAY_MS, now[0])

    removed = client.portal.call(sweep)
    assert removed == [(alice.account_id, tablet.device_id)]
    assert client.get("/v1/accounts/me", headers=tablet.headers).status_code == 401
    assert client.get("/v1/accounts/me", headers=bob.headers).status_code == 200
    listed = client.get("/v1/devices", headers=alice.headers).json()
    assert sorted(d["device_id"] for d in listed) == [alice.device_id, laptop.device_id]
    # Much later, nobody used Alice's account: only its most recently used device stays.
    now[0] += 400 * DAY_MS
    removed = client.portal.call(sweep)
    assert (alice.account_id, laptop.device_id) not in removed or \
        (alice.account_id, alice.device_id) not in removed
    assert len([r for r in removed if r[0] == alice.account_id]) == 1
    assert not [r for r in removed if r[0] == bob.account_id]
