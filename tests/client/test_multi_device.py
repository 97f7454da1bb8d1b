"""Alice with two devices, Bob with two: every message reaches all four (own copies
included); a device added later gets new messages; a removed device gets nothing more; a
re-installed device (new keys, new registration id, same device id) is handled via 410."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from cipherpost.client import Client, RelayError
from cipherpost.client import events as ev

from ..server.helpers import KeyMaker, auth
from .conftest import Devices, ThreadedRelay


def texts(events: list[ev.Event]) -> list[tuple[str, str, bool]]:
    """(conversation, text, outgoing) of the message events."""
    return [(e.conversation, e.text, e.outgoing) for e in events if isinstance(e, ev.Message)]


async def drain(*clients: Client) -> list[list[ev.Event]]:
    return [await c.receive() for c in clients]


def test_every_device_sees_the_conversation(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            a1 = await devices.register("alice")
            a2 = await devices.link(a1, "alice laptop")
            b1 = await devices.register("bob")
            b2 = await devices.link(b1, "bob laptop")
            added = [e for e in await a1.receive() if isinstance(e, ev.DeviceAdded)]
            assert added == [ev.DeviceAdded(2, "alice laptop")]
            assert [e for e in await b1.receive() if isinstance(e, ev.DeviceAdded)]
            alice, bob = a1.account_id, b1.account_id

            await a1.send_text("bob", "one")
            got = await drain(a2, b1, b2)
            assert texts(got[0]) == [(bob, "one", True)]         # alice's own copy
            assert texts(got[1]) == texts(got[2]) == [(alice, "one", False)]

            await b2.send_text("alice", "two")
            got = await drain(a1, a2, b1)
            assert texts(got[0]) == texts(got[1]) == [(bob, "two", False)]
            assert texts(got[2]) == [(alice, "two", True)]
            for client in (a1, a2, b1, b2):
                history = [(h.text, h.outgoing) for h in client.history(
                    bob if client.account_id == alice else alice)]
                mine = client.account_id == alice
                assert history == [("one", mine), ("two", not mine)]

            # A device added later gets the messages sent after it joined.
            a3 = await devices.link(a1, "alice tablet")
            await b1.send_text("alice", "three")
            got = await drain(a1, a2, a3, b2)
            assert all(texts(g)[-1:] == [(bob, "three", False)] for g in got[:3])
            assert texts(got[3]) == [(alice, "three", True)]

            # A removed device gets nothing more: its token is dead.
            await a1.api.remove_device(a3.device_id)
            await b1.send_text("alice", "four")
            with pytest.raises(RelayError) as denied:
                await a3.receive()
            assert denied.value.status == 401
            got = await drain(a1, a2)
            assert texts(got[0]) == texts(got[1]) == [(bob, "four", False)]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_reinstalled_device_is_handled_through_410(tmp_path: Path,
                                                   relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            a1 = await devices.register("alice")
            a2 = await devices.link(a1, "old phone")
            b1 = await devices.register("bob")
            await b1.send_text("alice", "before")
            assert texts(await a2.receive()) == [(b1.account_id, "before", False)]
            await a1.receive()
            # Remove device 2, then cycle device ids until 2 comes round again (ids are
            # reused only after 127), and link a fresh install there.
            await a1.api.remove_device(a2.device_id)
            keys = KeyMaker(identity=a1.store.get_identity_key_pair())
            headers = auth(a1.credentials.token)
            async with httpx.AsyncClient(base_url=relay.url) as http:
                while True:
                    code = (await http.post("/v1/devices/link-codes",
                                            headers=headers)).json()["link_code"]
                    linked = (await http.post("/v1/devices", json={
                        **keys.linked().device_body(one_time=0, kyber=0),
                        "link_code": code})).json()
                    if linked["device_id"] == 127:
                        await http.delete(f"/v1/devices/{linked['device_id']}",
                                          headers=headers)
                        break
                    await http.delete(f"/v1/devices/{linked['device_id']}", headers=headers)
            a2_new = await devices.link(a1, "new phone")
            assert a2_new.device_id == a2.device_id
            await a1.receive()
            # Bob still has a session with the old device 2: the relay answers 410, the
            # SDK fetches the new bundle and resends, and the new install reads it.
            await b1.send_text("alice", "after")
            assert texts(await a2_new.receive()) == [(b1.account_id, "after", False)]
            assert texts(await a1.receive()) == [(b1.account_id, "after", False)]
        finally:
            await devices.close()

    asyncio.run(scenario())
