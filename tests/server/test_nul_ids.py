"""Ids with a NUL character name nothing: PostgreSQL refuses NUL in text parameters, so a
send to such an account id answered 500 and an acknowledgement of such an id closed the
WebSocket with 1011 (logging an error each time); found by the ``device_frame`` fuzz
target's inputs replayed on PostgreSQL (#10). Runs on both databases."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from .conftest import register


def _send_frame(request_id: int, account_id: str, registration_id: int = 1) -> str:
    return json.dumps({"type": "send", "id": request_id, "account_id": account_id,
                       "timestamp": 1, "messages": [{"device_id": 1,
                                                     "registration_id": registration_id,
                                                     "type": 2, "content": "AAAA"}]})


def test_a_websocket_send_to_an_account_id_with_nul_is_not_found(client: TestClient) -> None:
    alice = register(client, "alicenul")
    with client.websocket_connect("/v1/websocket", headers=dict(alice.headers)) as ws:
        ws.send_text(_send_frame(1, "ab\u0000c"))
        answer = json.loads(ws.receive_text())
        assert (answer["id"], answer["status"], answer["error"]["code"]) == (1, 404, "not_found")


def test_a_websocket_ack_of_ids_with_nul_deletes_nothing_and_goes_on(
        client: TestClient) -> None:
    alice, bob = register(client, "alicenul"), register(client, "bobnul")
    with client.websocket_connect("/v1/websocket", headers=dict(alice.headers)) as ws:
        ws.send_text(json.dumps({"type": "ack", "ids": ["a\u0000b", "\u0000"],
                                 "confirm": True}))
        assert json.loads(ws.receive_text()) == {"type": "acked", "ids": ["a\u0000b", "\u0000"]}
        # the connection is still served: a send after it is answered
        ws.send_text(_send_frame(2, bob.account_id, bob.keys.registration_id))
        answer = json.loads(ws.receive_text())
        assert (answer["id"], answer["status"], answer["queued"]) == (2, 200, 1), answer


def test_http_send_and_ack_with_nul_ids(client: TestClient) -> None:
    alice = register(client, "alicenul")
    body = {"timestamp": 1, "messages": [{"device_id": 1, "registration_id": 1, "type": 2,
                                          "content": "AAAA"}]}
    response = client.put("/v1/messages/ab%00c", json=body, headers=alice.headers)
    assert response.status_code == 404, response.text
    response = client.post("/v1/messages/ack", json={"ids": ["a\u0000b"]},
                           headers=alice.headers)
    assert response.status_code == 200 and response.json() == {"deleted": 0}, response.text
