"""Provisioning mailboxes: one message, taken once, only within their lifetime."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import pytest
from fastapi.testclient import TestClient

from cipherpost.server import Settings, create_app
from cipherpost.server.provisioning import Mailboxes, MailboxesFull

from .conftest import register
from .helpers import KeyMaker, auth

NOW = 1_790_000_000_000


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


# -- review 2026-11-29, S12: one taker per message, and bounded mailboxes -------------------


def test_concurrent_takers_get_the_message_exactly_once() -> None:
    """Several waiters on one mailbox (a retried long poll, or someone else who learned the
    address): the message goes to exactly one of them; the others find the mailbox gone."""
    boxes = Mailboxes()

    async def scenario() -> list[bytes | str | None]:
        address = boxes.open(NOW, 60_000)

        async def taker() -> bytes | str | None:
            try:
                return await boxes.take(address, NOW, 5)
            except KeyError:
                return "gone"

        waiters = [asyncio.create_task(taker()) for _ in range(5)]
        await asyncio.sleep(0.05)                     # all five are waiting
        assert boxes.put(address, b"sealed", NOW)
        return list(await asyncio.wait_for(asyncio.gather(*waiters), 5))

    results = asyncio.run(scenario())
    assert results.count(b"sealed") == 1 and results.count("gone") == 4, results
    assert len(boxes) == 0 and boxes.bytes_held == 0


def test_concurrent_takers_over_http(settings: Settings) -> None:
    """The same through the API: two long polls in flight when the message arrives."""
    app = create_app(settings)

    async def scenario() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), \
                httpx.AsyncClient(transport=transport, base_url="http://relay") as http:
            keys = KeyMaker()
            device = (await http.post("/v1/accounts", json=keys.device_body())).json()
            address = (await http.post("/v1/provisioning")).json()["address"]
            polls = [asyncio.create_task(http.get(f"/v1/provisioning/{address}?wait=5"))
                     for _ in range(2)]
            await asyncio.sleep(0.2)
            put = await http.put(f"/v1/provisioning/{address}", content=b"sealed",
                                 headers=auth(device["token"]))
            assert put.status_code == 204
            answers = await asyncio.wait_for(asyncio.gather(*polls), 10)
            assert [a.content for a in answers if a.status_code == 200] == [b"sealed"]
            return sorted(a.status_code for a in answers)

    assert asyncio.run(scenario()) == [200, 404]


def test_expired_mailbox_releases_its_waiter_and_bytes() -> None:
    async def scenario() -> None:
        boxes = Mailboxes()
        address = boxes.open(NOW, 1_000)
        assert boxes.put(address, b"x" * 100, NOW)
        assert boxes.bytes_held == 100
        boxes.expire(NOW + 1_000)
        assert len(boxes) == 0 and boxes.bytes_held == 0
        waiting = boxes.open(NOW, 1_000)
        taker = asyncio.create_task(boxes.take(waiting, NOW, 30))
        await asyncio.sleep(0.01)
        boxes.expire(NOW + 1_000)                     # the waiter stops waiting at once
        with pytest.raises(KeyError):
            await asyncio.wait_for(taker, 1)

    asyncio.run(scenario())


def test_mailboxes_hold_a_bounded_number_of_bytes() -> None:
    """The count cap alone let 10,000 full mailboxes hold 2.5 GiB of memory."""
    boxes = Mailboxes(limit=100, max_bytes=1000)
    addresses = [boxes.open(NOW, 60_000) for _ in range(5)]
    for address in addresses[:3]:
        assert boxes.put(address, b"x" * 300, NOW)
    with pytest.raises(MailboxesFull):
        boxes.put(addresses[3], b"x" * 300, NOW)
    assert boxes.bytes_held == 900
    assert boxes.put(addresses[3], b"x" * 100, NOW)     # what still fits is accepted
    asyncio.run(boxes.take(addresses[0], NOW, 0))       # taking frees its bytes
    assert boxes.put(addresses[4], b"x" * 300, NOW) and boxes.bytes_held == 1000


def test_mailbox_count_and_byte_caps_over_http(settings: Settings) -> None:
    settings = dataclasses.replace(settings, max_provisioning_mailboxes=3,
                                   provisioning_byte_budget=1000)
    with TestClient(create_app(settings)) as client:
        device = register(client)
        addresses = [client.post("/v1/provisioning").json()["address"] for _ in range(3)]
        full = client.post("/v1/provisioning")
        assert full.status_code == 503 and full.json()["error"]["code"] == "busy"
        assert client.put(f"/v1/provisioning/{addresses[0]}", content=b"x" * 900,
                          headers=device.headers).status_code == 204
        over = client.put(f"/v1/provisioning/{addresses[1]}", content=b"x" * 200,
                          headers=device.headers)
        assert over.status_code == 503
        assert client.get(f"/v1/provisioning/{addresses[0]}").content == b"x" * 900
        assert client.put(f"/v1/provisioning/{addresses[1]}", content=b"x" * 200,
                          headers=device.headers).status_code == 204
        assert client.post("/v1/provisioning").status_code == 201  # a taken one freed a slot


def test_opening_mailboxes_is_rate_limited_per_address(settings: Settings) -> None:
    """Its own bucket (no longer the registration one), an IPv6 client counted by its /64."""
    settings = dataclasses.replace(settings, rate_provisioning_per_ip="3/0.0001",
                                   trusted_proxies=("testclient",))
    with TestClient(create_app(settings)) as client:
        def open_from(ip: str) -> int:
            return client.post("/v1/provisioning",
                               headers={"X-Forwarded-For": ip}).status_code

        assert [open_from("2001:db8:1:2::1") for _ in range(3)] == [201] * 3
        assert open_from("2001:db8:1:2:ffff::99") == 429       # same /64, other address
        assert open_from("2001:db8:1:3::1") == 201              # another /64
        assert [open_from("192.0.2.7") for _ in range(3)] == [201] * 3
        assert open_from("192.0.2.7") == 429
        assert open_from("192.0.2.8") == 201
        assert register(client).device_id == 1                  # registering is not spent


def test_leaving_messages_is_rate_limited_per_account(settings: Settings) -> None:
    settings = dataclasses.replace(settings, rate_provisioning_put_per_account="2/0.0001")
    with TestClient(create_app(settings)) as client:
        device, other = register(client), register(client)
        addresses = [client.post("/v1/provisioning").json()["address"] for _ in range(4)]
        codes = [client.put(f"/v1/provisioning/{a}", content=b"m",
                            headers=device.headers).status_code for a in addresses[:3]]
        assert codes == [204, 204, 429]
        assert client.put(f"/v1/provisioning/{addresses[3]}", content=b"m",
                          headers=other.headers).status_code == 204
