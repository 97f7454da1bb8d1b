"""Acknowledgements carried in ``send`` frames (``cipherpost.batch.2``, docs/websocket.md)
and acks of many envelopes at once: only the acknowledging device's own messages named
are deleted, and only by a commit: a relay killed before it delivers them again."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from websockets.sync.client import connect

from cipherpost.server.api import websocket

from .conftest import Registered, register
from .helpers import KeyMaker, auth, b64
from .process import ServerProcess
from .test_websocket_batch import _envelopes, _put

V2 = websocket.ACKS_ON_SEND_SUBPROTOCOL


def _send_frame(request_id: int, to: Registered, **extra: Any) -> dict[str, Any]:
    return {"type": "send", "id": request_id, "account_id": to.account_id, "timestamp": 1,
            "messages": [{"device_id": 1, "registration_id": to.keys.registration_id,
                          "type": 2, "content": b64(b"reply")}], **extra}


def _queued(client: TestClient, device: Registered) -> list[str]:
    return [m["id"] for m in
            client.get("/v1/messages", headers=device.headers).json()["messages"]]


def test_the_relay_echoes_batch_2_first_and_batch_to_older_clients(client: TestClient) -> None:
    bob = register(client)
    for offered, echoed in (([V2, websocket.BATCH_SUBPROTOCOL], V2),
                            ([websocket.BATCH_SUBPROTOCOL, V2], V2),
                            ([websocket.BATCH_SUBPROTOCOL], websocket.BATCH_SUBPROTOCOL)):
        with client.websocket_connect("/v1/websocket", headers=dict(bob.headers),
                                      subprotocols=offered) as ws:
            assert ws.accepted_subprotocol == echoed


def test_acks_carried_by_a_send_delete_every_id_named(client: TestClient) -> None:
    alice, bob = register(client), register(client)
    for i in range(5):
        _put(client, alice, bob, i)
    with client.websocket_connect("/v1/websocket", headers=dict(bob.headers),
                                  subprotocols=[V2]) as ws:
        envelopes, _ = _envelopes(ws, 5)
        ids = [e["id"] for e in envelopes]
        ws.send_json(_send_frame(7, alice, ack=ids[:4]))
        # The acks go into the commit of the send they came with (submitted before it):
        # once it is answered, they are durable.
        assert ws.receive_json() == {"type": "sent", "id": 7, "status": 200, "queued": 1}
        assert _queued(client, bob) == ids[4:]
        # A send without acks, and one with none left to carry, are plain sends.
        ws.send_json(_send_frame(8, alice, ack=[]))
        assert ws.receive_json()["status"] == 200
    assert [m["content"] for m in client.get(
        "/v1/messages", headers=alice.headers).json()["messages"]] == [b64(b"reply")] * 2
    with client.websocket_connect("/v1/websocket", headers=dict(bob.headers),
                                  subprotocols=[V2]) as ws:  # the unacknowledged one only
        assert [e["id"] for e in _envelopes(ws, 1)[0]] == ids[4:]


def test_foreign_and_unknown_ids_in_a_batched_ack_delete_nothing_of_others(
        client: TestClient) -> None:
    alice, bob, carol = register(client), register(client), register(client)
    for i in range(3):
        _put(client, alice, bob, i)
        _put(client, alice, carol, i)
    carols = _queued(client, carol)
    unknown = "00000000-0000-4000-8000-000000000000"
    with client.websocket_connect("/v1/websocket", headers=dict(bob.headers),
                                  subprotocols=[V2]) as ws:
        ids = [e["id"] for e in _envelopes(ws, 3)[0]]
        # In an ack frame, as for a single id: others' ids are ignored, not an error.
        ws.send_json({"type": "ack", "ids": [ids[0], carols[0], unknown, "x\x00"],
                      "confirm": True})
        assert ws.receive_json() == {"type": "acked",
                                     "ids": [ids[0], carols[0], unknown, "x\x00"]}
        # And carried by a send.
        ws.send_json(_send_frame(1, alice, ack=[carols[1], ids[1], unknown]))
        assert ws.receive_json()["status"] == 200
        assert _queued(client, bob) == ids[2:]
        assert _queued(client, carol) == carols
        # The connection is still served.
        _put(client, alice, bob, 9)
        assert [e["client_timestamp"] for e in _envelopes(ws, 1)[0]] == [9]


def test_a_malformed_carried_ack_closes_like_a_malformed_ack_frame(client: TestClient) -> None:
    alice, bob = register(client), register(client)
    _put(client, alice, bob, 0)
    for bad in ("not a list", [1, 2], {"id": "x"}):
        with client.websocket_connect("/v1/websocket", headers=dict(bob.headers),
                                      subprotocols=[V2]) as ws:
            _envelopes(ws, 1)
            ws.send_json(_send_frame(1, alice, ack=bad))
            closed = ws.receive()
            assert closed["type"] == "websocket.close" and closed["code"] == 1003
    assert len(_queued(client, bob)) == 1  # nothing was sent, nothing deleted
    assert _queued(client, alice) == []


_LONG_LAZY_WINDOW = """\
import cipherpost.server.storage.group as group
group.LAZY_WINDOW = 60.0  # an unconfirmed ack waits for a commit it can share
"""


def test_a_relay_killed_before_the_ack_commit_delivers_the_message_again(
        tmp_path: Path) -> None:
    # A relay whose unconfirmed acks wait a minute for a commit: the ack below is read
    # and submitted (a later frame of the same connection is answered), not committed.
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(_LONG_LAZY_WINDOW)
    server = ServerProcess(tmp_path / "relay")
    (tmp_path / "relay").mkdir()
    server.env["PYTHONPATH"] = os.pathsep.join(
        [str(hooks), *filter(None, [os.environ.get("PYTHONPATH")])])
    server.start()
    try:
        users = []
        for _ in range(2):
            keys = KeyMaker()
            r = httpx.post(f"{server.url}/v1/accounts", json=keys.device_body())
            assert r.status_code == 201, r.text
            users.append({**r.json(), "registration_id": keys.registration_id})
        alice, bob = users
        for i in range(2):
            r = httpx.put(f"{server.url}/v1/messages/{bob['account_id']}",
                          headers=auth(alice["token"]), json={
                              "timestamp": i, "messages": [{
                                  "device_id": 1, "registration_id": bob["registration_id"],
                                  "type": 2, "content": b64(b"m")}]})
            assert r.status_code == 200, r.text

        def connection() -> Any:
            return connect(server.url.replace("http", "ws") + "/v1/websocket",
                           additional_headers=auth(bob["token"]), subprotocols=[V2],
                           open_timeout=10)

        def pushed(ws: Any) -> list[str]:
            frame = json.loads(ws.recv(timeout=10))
            assert frame["type"] == "messages"
            return [e["id"] for e in frame["envelopes"]]

        with connection() as ws:
            ids = pushed(ws)
            assert len(ids) == 2
            # The first confirmed (committed before ``acked``), the second not.
            ws.send(json.dumps({"type": "ack", "ids": ids[:1], "confirm": True}))
            assert json.loads(ws.recv(timeout=10)) == {"type": "acked", "ids": ids[:1]}
            ws.send(json.dumps({"type": "ack", "ids": ids[1:]}))
            # A send refused before any write: answered at once, after the ack was taken.
            ws.send(json.dumps({"type": "send", "id": 1, "account_id": 5, "timestamp": 1,
                                "messages": []}))
            assert json.loads(ws.recv(timeout=10))["status"] == 400
            server.kill()
        server.start()
        with connection() as ws:
            assert pushed(ws) == ids[1:]
    finally:
        server.stop()
