"""Provisioning mailboxes: one message, taken once, only within their lifetime."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from cipherpost.server import Settings, create_app
from cipherpost.server.archives import Archives
from cipherpost.server.provisioning import Mailboxes, MailboxesFull

from .conftest import link, register
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


# -- typed-code linking: code mailboxes (docs/spec/linking.md, "Typed code") ----------------


def test_code_mailbox_exchange(settings: Settings) -> None:
    settings = dataclasses.replace(settings, rate_provisioning_claim="100/1")
    with TestClient(create_app(settings)) as client:
        _code_mailbox_exchange(client)


def _code_mailbox_exchange(client: TestClient) -> None:
    existing, other = register(client), register(client)
    opened = client.post("/v1/provisioning/codes")
    assert opened.status_code == 201
    address, code = opened.json()["address"], opened.json()["code"]
    assert len(code) == 8 and all(c in "0123456789ABCDEFGHJKMNPQRSTVWXYZ" for c in code)
    new, ex = f"/v1/provisioning/{address}/new", f"/v1/provisioning/{address}/existing"
    assert client.put(f"{new}/0", content=b"commitment").status_code == 204
    # A wrong code, or one not of the alphabet, names nothing; claiming needs a device.
    wrong = "0" * 8 if code != "0" * 8 else "1" * 8
    for bad in (wrong, "il0u-xyz", ""):
        refused = client.post("/v1/provisioning/codes/claim", json={"code": bad},
                              headers=existing.headers)
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "unknown_code"
    assert client.post("/v1/provisioning/codes/claim", json={"code": code}).status_code == 401
    claimed = client.post("/v1/provisioning/codes/claim", json={"code": code},
                          headers=existing.headers)
    assert claimed.status_code == 200 and claimed.json()["address"] == address
    # Claimed once: a replayed code names nothing, for anyone.
    for device in (existing, other):
        again = client.post("/v1/provisioning/codes/claim", json={"code": code},
                            headers=device.headers)
        assert again.status_code == 404 and again.json()["error"]["code"] == "unknown_code"
    # Only the claimer reads the new device's side and writes the existing one's.
    assert client.get(f"{new}/0").status_code == 401
    assert client.get(f"{new}/0", headers=other.headers).status_code == 404
    assert client.put(f"{ex}/0", content=b"k", headers=other.headers).status_code == 404
    read = client.get(f"{new}/0?wait=1", headers=existing.headers)
    assert read.status_code == 200 and read.content == b"commitment"
    assert client.get(f"{new}/0", headers=existing.headers).content == b"commitment"  # again
    assert client.get(f"{new}/1", headers=existing.headers).status_code == 204
    assert client.get(f"{ex}/0").status_code == 204
    assert client.put(f"{ex}/0", content=b"key B", headers=existing.headers).status_code == 204
    assert client.get(f"{ex}/0?wait=1").content == b"key B"
    # Retrying the same bytes is harmless; other bytes, gaps and extra messages are not.
    assert client.put(f"{ex}/0", content=b"key B", headers=existing.headers).status_code == 204
    assert client.put(f"{ex}/0", content=b"key M", headers=existing.headers).status_code == 409
    assert client.put(f"{new}/2", content=b"gap").status_code == 409
    assert client.put(f"{new}/1", content=b"x" * 1025).status_code == 413
    assert client.put(f"{new}/1", content=b"").status_code == 400
    assert client.put(f"{new}/1", content=b"reveal").status_code == 204
    assert client.put(f"{new}/2", content=b"confirm").status_code == 204
    assert client.put(f"{new}/3", content=b"one too many").status_code == 409
    assert client.put(f"{ex}/1", content=b"sealed", headers=existing.headers).status_code == 204
    assert client.put(f"{ex}/2", content=b"extra", headers=existing.headers).status_code == 409
    # Not a QR mailbox: its one-message routes do not apply.
    assert client.get(f"/v1/provisioning/{address}").status_code == 404
    assert client.put(f"/v1/provisioning/{address}", content=b"m",
                      headers=existing.headers).status_code == 404
    assert client.delete(f"/v1/provisioning/{address}").status_code == 204
    assert client.get(f"{ex}/1").status_code == 404
    assert client.delete(f"/v1/provisioning/{address}").status_code == 404


def test_code_mailbox_expires_with_its_code_and_bytes() -> None:
    async def scenario() -> None:
        boxes = Mailboxes()
        address, code = boxes.open_with_code(NOW, 1_000)
        boxes.send(address, "new", 0, b"x" * 100, NOW)
        assert boxes.bytes_held == 100
        waiter = asyncio.create_task(boxes.read(address, "existing", 0, NOW, 30))
        await asyncio.sleep(0.01)
        boxes.expire(NOW + 1_000)
        with pytest.raises(KeyError):
            await asyncio.wait_for(waiter, 1)                 # released at once
        assert len(boxes) == 0 and boxes.bytes_held == 0
        with pytest.raises(KeyError):
            boxes.claim(code, ("acct", 1), NOW + 1_000)       # the code went with it
        # An unexpired one: a waiter wakes when the message comes.
        address, code = boxes.open_with_code(NOW, 60_000)
        assert boxes.claim(code, ("acct", 1), NOW) == (address, NOW + 60_000)
        waiter = asyncio.create_task(boxes.read(address, "existing", 0, NOW, 30))
        await asyncio.sleep(0.01)
        boxes.send(address, "existing", 0, b"key", NOW, ("acct", 1))
        assert await asyncio.wait_for(waiter, 1) == b"key"
        with pytest.raises(KeyError):                          # only the claimer
            boxes.send(address, "existing", 1, b"m", NOW, ("acct", 2))

    asyncio.run(scenario())


def test_claiming_codes_is_rate_limited(settings: Settings) -> None:
    settings = dataclasses.replace(settings, rate_provisioning_claim="3/0.0001")
    with TestClient(create_app(settings)) as client:
        guesser, other = register(client), register(client)
        answers = [client.post("/v1/provisioning/codes/claim", json={"code": "00000000"},
                               headers=guesser.headers).status_code for _ in range(4)]
        assert answers == [404, 404, 404, 429]
        # Per account and per address: the same client address is spent too.
        assert client.post("/v1/provisioning/codes/claim", json={"code": "00000000"},
                           headers=other.headers).status_code == 429


# -- one-time history archives (docs/spec/history.md, "Archive") ----------------------------


def test_archive_parts_are_kept_only_until_taken(client: TestClient, settings: Settings) -> None:
    alice, mallory = register(client), register(client)
    linked = link(client, alice)
    up = client.post("/v1/provisioning/archives", content=b"sealed part",
                     headers=alice.headers)
    assert up.status_code == 201
    part = up.json()["id"]
    path = f"/v1/provisioning/archives/{part}"
    # Another account learns nothing of it, not even whether it exists.
    assert client.get(path, headers=mallory.headers).status_code == 404
    assert client.delete(path, headers=mallory.headers).status_code == 404
    got = client.get(path, headers=linked.headers)
    assert got.status_code == 200 and got.content == b"sealed part"
    assert client.delete(path, headers=linked.headers).status_code == 204
    assert client.get(path, headers=linked.headers).status_code == 404
    assert client.delete(path, headers=linked.headers).status_code == 404
    assert Archives(Path(settings.attachment_dir) / "archives").count() == 0
    assert client.post("/v1/provisioning/archives", content=b"",
                       headers=alice.headers).status_code == 400
    too_big = b"x" * (2 * 1024 * 1024 + 1)
    assert client.post("/v1/provisioning/archives", content=too_big,
                       headers=alice.headers).status_code == 413
    for bad in ("../../relay.db", "short"):
        assert client.get(f"/v1/provisioning/archives/{bad}",
                          headers=alice.headers).status_code == 404


def test_archive_parts_expire_after_a_day(tmp_path: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"sealed"

    archives = Archives(tmp_path / "archives")
    part, expires_at = asyncio.run(archives.put("acct", chunks(), NOW))
    assert expires_at == NOW + 24 * 3600 * 1000
    assert archives.get("acct", part, NOW) is not None and archives.get("other", part, NOW) \
        is None
    assert archives.get("acct", part, expires_at) is None          # swept
    assert archives.count() == 0 and list((tmp_path / "archives").iterdir()) == []
