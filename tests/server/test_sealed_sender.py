"""Sealed sender on the relay: the key chain, sender certificates, unidentified-access
keys, and sealed sends (no sender stored, coarse times, limits, 401/403/409/410)."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from cipherpost.protocol.certificates import SenderCertificate
from cipherpost.protocol.errors import ExpiredCertificate, UntrustedCertificate
from cipherpost.protocol.keys import PrivateKey, PublicKey
from cipherpost.server import Settings, create_app
from cipherpost.server.api.sealed import COARSE_MS, SEALED_TYPE
from cipherpost.server.key_chain import KeyChainError, load_or_create, rotate_server_key
from cipherpost.server.key_chain import main as key_chain_main
from cipherpost.server.settings import sealed_sender_key_file

from .conftest import Registered, link, register
from .helpers import b64

UAK = bytes(range(16))


def _devices(client: TestClient, who: Registered, target: Registered) -> dict[int, int]:
    answer = client.get(f"/v1/keys/{target.account_id}/*", headers=who.headers).json()
    return {d["device_id"]: d["registration_id"] for d in answer["devices"]}


def _sealed(client: TestClient, to: Registered | str, contents: dict[int, bytes],
            registration: dict[int, int], key: bytes | None = UAK,
            headers: dict[str, str] | None = None) -> Any:
    account_id = to if isinstance(to, str) else to.account_id
    extra = {"Unidentified-Access-Key": b64(key)} if key is not None else {}
    body = {"messages": [{"device_id": d, "registration_id": registration[d],
                          "content": b64(c)} for d, c in contents.items()]}
    return client.put(f"/v1/sealed/{account_id}", json=body,
                      headers={**extra, **(headers or {})})


def _enable(client: TestClient, device: Registered, key: bytes = UAK) -> None:
    response = client.put("/v1/accounts/me/unidentified-access", headers=device.headers,
                          json={"key": b64(key)})
    assert response.status_code == 204, response.text


def test_trust_root_and_sender_certificate(client: TestClient, settings: Settings) -> None:
    alice = register(client)
    root = client.get("/v1/certificates/trust-root")
    assert root.status_code == 200
    trust_root = PublicKey.deserialize(base64.b64decode(
        root.json()["trust_root"]))
    assert client.get("/v1/certificates/sender").status_code == 401
    answer = client.get("/v1/certificates/sender", headers=alice.headers).json()
    certificate = SenderCertificate.deserialize(base64.b64decode(
        answer["certificate"]))
    assert certificate.sender_uuid == alice.account_id
    assert certificate.sender_device_id == alice.device_id
    assert certificate.identity_key == alice.keys.identity.public
    assert certificate.expires == answer["expires"]
    certificate.validate([trust_root], answer["expires"])  # valid up to its expiry...
    with pytest.raises(ExpiredCertificate):
        certificate.validate([trust_root], answer["expires"] + 1)  # ...and no later
    with pytest.raises(UntrustedCertificate):
        certificate.validate([PrivateKey.generate(os.urandom).public_key()], 0)
    # Issued for the configured lifetime.
    assert abs(answer["expires"] - (time.time() + settings.sender_certificate_ttl) * 1000) \
        < 60_000
    # The key file is private, and the next start (another process) reads the same root.
    path = sealed_sender_key_file(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create(path).trust_root == trust_root


def test_sealed_send_stores_no_sender(client: TestClient, settings: Settings) -> None:
    alice, bob = register(client), register(client)
    _enable(client, bob)
    registration = _devices(client, alice, bob)
    response = _sealed(client, bob, {1: b"sealed bytes"}, registration)
    assert response.status_code == 200, response.text
    assert response.json() == {"queued": 1}
    envelope = client.get("/v1/messages", headers=bob.headers).json()["messages"][0]
    assert envelope["sender_account_id"] is None and envelope["sender_device_id"] is None
    assert envelope["type"] == SEALED_TYPE and envelope["client_timestamp"] == 0
    assert envelope["server_timestamp"] % COARSE_MS == 0
    # An identified send for comparison: the columns are filled there.
    identified = client.put(f"/v1/messages/{bob.account_id}", headers=alice.headers, json={
        "timestamp": 1_790_000_000_123, "messages": [
            {"device_id": 1, "registration_id": registration[1], "type": 2,
             "content": b64(b"identified")}]})
    assert identified.status_code == 200
    engine = sa.create_engine(settings.database_url.replace("postgresql://",
                                                           "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            columns = ("sender_account_id, sender_device_id, client_timestamp, "
                       "server_timestamp, expires_at, type, seq")
            rows = conn.execute(sa.text(  # queued, or on SQLite still in the queue log
                f"SELECT {columns} FROM (SELECT {columns} FROM messages UNION ALL "
                f"SELECT {columns} FROM queue_log) AS q ORDER BY seq")).all()
    finally:
        engine.dispose()
    sealed_row, identified_row = rows
    assert sealed_row[:3] == (None, None, 0)
    assert sealed_row[3] % COARSE_MS == 0 and sealed_row[4] % COARSE_MS == 0
    assert sealed_row[5] == SEALED_TYPE
    assert identified_row[:3] == (alice.account_id, alice.device_id, 1_790_000_000_123)


def test_sealed_send_needs_the_recipients_key(client: TestClient) -> None:
    alice, bob = register(client), register(client)
    registration = _devices(client, alice, bob)
    # No key registered yet: refused like a wrong key.
    assert _sealed(client, bob, {1: b"x"}, registration).status_code == 401
    _enable(client, bob)
    assert _sealed(client, bob, {1: b"x"}, registration, key=bytes(16)).status_code == 401
    assert _sealed(client, bob, {1: b"x"}, registration, key=None).status_code == 401
    assert _sealed(client, bob, {1: b"x"}, registration, key=bytes(15)).status_code == 401
    # An unknown account answers as a wrong key does (no existence oracle).
    unknown = _sealed(client, "00000000-0000-4000-8000-000000000000", {1: b"x"},
                      registration)
    assert unknown.status_code == 401
    # Credentials on a sealed send are refused, not silently linked to it.
    with_token = _sealed(client, bob, {1: b"x"}, registration, headers=alice.headers)
    assert with_token.status_code == 400
    assert _sealed(client, bob, {1: b"x"}, registration).status_code == 200
    # The account can take sealed sends back.
    assert client.delete("/v1/accounts/me/unidentified-access",
                         headers=bob.headers).status_code == 204
    assert _sealed(client, bob, {1: b"x"}, registration).status_code == 401
    # A new key replaces the old one.
    _enable(client, bob, key=b"k" * 16)
    assert _sealed(client, bob, {1: b"x"}, registration).status_code == 401
    assert _sealed(client, bob, {1: b"x"}, registration, key=b"k" * 16).status_code == 200
    bad = client.put("/v1/accounts/me/unidentified-access", headers=bob.headers,
                     json={"key": b64(bytes(8))})
    assert bad.status_code == 400


def test_sealed_send_device_list_answers(client: TestClient) -> None:
    alice, bob = register(client), register(client)
    _enable(client, bob)
    laptop = link(client, bob)
    registration = _devices(client, alice, bob)
    # The laptop has not said it opens sealed envelopes: 403, the sender goes identified.
    refused = _sealed(client, bob, {1: b"a", laptop.device_id: b"b"}, registration)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "sealed_sender_unsupported"
    assert refused.json()["unsupported_devices"] == [laptop.device_id]
    _enable(client, laptop)
    missing = _sealed(client, bob, {1: b"a"}, registration)
    assert missing.status_code == 409
    assert missing.json()["missing_devices"] == [laptop.device_id]
    extra = _sealed(client, bob, {1: b"a", laptop.device_id: b"b", 9: b"c"},
                    {**registration, 9: 1})
    assert extra.status_code == 409 and extra.json()["extra_devices"] == [9]
    stale = _sealed(client, bob, {1: b"a", laptop.device_id: b"b"},
                    {**registration, 1: registration[1] % 16380 + 1})
    assert stale.status_code == 410 and stale.json()["stale_devices"] == [1]
    assert _sealed(client, bob, {1: b"a", laptop.device_id: b"b"},
                   registration).status_code == 200


def test_sealed_sends_limited_per_recipient_and_address(settings: Settings) -> None:
    per_recipient = dataclasses.replace(settings, rate_sealed_per_recipient="3/0.001")
    with TestClient(create_app(per_recipient)) as c:
        alice, bob, carol = register(c), register(c), register(c)
        _enable(c, bob)
        _enable(c, carol)
        to_bob, to_carol = _devices(c, alice, bob), _devices(c, alice, carol)
        # Sends without the key spend nothing of Bob's: a stranger cannot block him.
        assert [_sealed(c, bob, {1: b"x"}, to_bob, key=bytes(16)).status_code
                for _ in range(4)] == [401] * 4
        assert [_sealed(c, bob, {1: b"x"}, to_bob).status_code for _ in range(4)] \
            == [200, 200, 200, 429]
        assert _sealed(c, carol, {1: b"x"}, to_carol).status_code == 200  # another bucket
    per_address = dataclasses.replace(settings, rate_sealed_per_ip="3/0.001",
                                      sealed_sender_keys="")
    with TestClient(create_app(per_address)) as c:
        alice, bob, carol = register(c), register(c), register(c)
        _enable(c, bob)
        _enable(c, carol)
        to_bob, to_carol = _devices(c, alice, bob), _devices(c, alice, carol)
        codes = [_sealed(c, bob, {1: b"x"}, to_bob).status_code for _ in range(2)]
        codes += [_sealed(c, carol, {1: b"x"}, to_carol).status_code for _ in range(2)]
        assert codes == [200, 200, 200, 429]  # one address, whichever recipient


def test_sealed_envelope_pushed_over_websocket(client: TestClient) -> None:
    alice, bob = register(client), register(client)
    _enable(client, bob)
    with client.websocket_connect("/v1/websocket", headers=bob.headers) as ws:
        assert _sealed(client, bob, {1: b"live"}, _devices(client, alice, bob)) \
            .status_code == 200
        frame = ws.receive_json()
        envelope = frame["envelope"]
        assert envelope["sender_account_id"] is None and envelope["type"] == SEALED_TYPE


def test_key_chain_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys" / "sealed.json"
    first = load_or_create(path)
    key_chain_main(["show", str(path)])
    root = base64.b64encode(first.trust_root.serialize()).decode()
    assert capsys.readouterr().out == f"trust root: {root}\nserver key id: 1\n"
    assert first.server_certificate.key_id == 1
    assert first.server_certificate.is_signed_by(first.trust_root)
    assert "server_key" not in repr(first)
    key_chain_main(["rotate", str(path)])
    assert capsys.readouterr().out == f"trust root: {root}\nserver key id: 2\n"
    rotated = load_or_create(path)
    assert rotated.trust_root == first.trust_root
    assert rotated.server_certificate.key_id == 2
    assert rotated.server_key.public_key() != first.server_key.public_key()
    # The root's private key taken offline: issuing works, rotating says what is missing.
    document = json.loads(path.read_text())
    del document["trust_root_private"]
    path.write_text(json.dumps(document))
    assert load_or_create(path).server_certificate.key_id == 2
    with pytest.raises(KeyChainError, match="trust_root_private"):
        rotate_server_key(path)
    # A server certificate under another root is refused at start.
    other = tmp_path / "other.json"
    load_or_create(other)
    document["trust_root_public"] = json.loads(other.read_text())["trust_root_public"]
    path.write_text(json.dumps(document))
    with pytest.raises(KeyChainError, match="not signed by the trust root"):
        load_or_create(path)
    path.write_text("{")
    with pytest.raises(KeyChainError):
        load_or_create(path)


def test_sealed_bytes_limited_per_recipient(settings: Settings) -> None:
    """Review R6: whoever holds an access key is not named, so the bytes sealed sends
    queue for one recipient are bounded too (the largest ciphertext of each send), by
    default a quarter of ``queue_byte_budget`` refilled over an hour; the refusal is
    the usual 429 with Retry-After, and another recipient's budget is its own."""
    small = dataclasses.replace(settings, queue_byte_budget=4000)  # 1000 B, 1000 B/h
    with TestClient(create_app(small)) as c:
        alice, bob, carol = register(c), register(c), register(c)
        laptop = link(c, bob)
        _enable(c, bob)
        _enable(c, laptop)
        _enable(c, carol)
        to_bob, to_carol = _devices(c, alice, bob), _devices(c, alice, carol)
        # Two devices of 600 and 100 bytes cost 600, not 700: each queue gets one.
        assert _sealed(c, bob, {1: b"x" * 600, laptop.device_id: b"y" * 100},
                       to_bob).status_code == 200
        refused = _sealed(c, bob, {1: b"x" * 600, laptop.device_id: b"y"}, to_bob)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "rate_limited"
        # 200 bytes missing at 1000/3600 bytes a second: 720 s.
        assert 715 <= int(refused.headers["retry-after"]) <= 721
        assert _sealed(c, bob, {1: b"y", laptop.device_id: b"x" * 400},
                       to_bob).status_code == 200
        assert _sealed(c, bob, {1: b"x", laptop.device_id: b"y"}, to_bob).status_code == 429
        assert _sealed(c, carol, {1: b"x" * 1000}, to_carol).status_code == 200
        # A send larger than the whole budget needs a full bucket, not forever.
        assert _sealed(c, carol, {1: b"x" * 1500}, to_carol).status_code == 429
        assert 'cipherpost_rate_limited_total{limit="sealed_recipient_bytes"} 3.0' \
            in c.get("/metrics").text
    explicit = dataclasses.replace(settings, rate_sealed_bytes_per_recipient="50/0.001",
                                   sealed_sender_keys="")
    with TestClient(create_app(explicit)) as c:
        alice, bob = register(c), register(c)
        _enable(c, bob)
        to_bob = _devices(c, alice, bob)
        assert [_sealed(c, bob, {1: b"x" * 20}, to_bob).status_code for _ in range(3)] \
            == [200, 200, 429]
