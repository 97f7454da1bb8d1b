"""Account security (docs/server.md): the TOTP second factor on sensitive actions,
recovery codes, registration lock, and the notices every device gets."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cipherpost.server import Settings, create_app, totp
from tests.server.conftest import Registered, link, register
from tests.server.helpers import KeyMaker, b64

START = 1_790_000_000.0  # seconds; a multiple of 30 plus 20


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def step(self) -> int:
        return totp.step_of(int(self.now * 1000))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(settings: Settings, clock: Clock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, clock=clock)) as test_client:
        yield test_client


def _enrol(app: TestClient, who: Registered, clock: Clock) -> tuple[bytes, list[str]]:
    begun = app.post("/v1/accounts/me/2fa", headers=who.headers)
    assert begun.status_code == 201, begun.text
    data = begun.json()
    secret = base64.b32decode(data["secret"] + "=" * (-len(data["secret"]) % 8))
    assert data["uri"].startswith("otpauth://totp/Cipherpost:")
    assert f"secret={data['secret']}" in data["uri"]
    wrong = app.post("/v1/accounts/me/2fa/confirm", headers=who.headers,
                     json={"code": _other(totp.code_at(secret, clock.step()))})
    assert wrong.status_code == 403
    assert app.get("/v1/accounts/me/2fa", headers=who.headers).json() == {
        "enabled": False, "pending": True, "recovery_codes_left": 0}
    confirmed = app.post("/v1/accounts/me/2fa/confirm", headers=who.headers,
                         json={"code": totp.code_at(secret, clock.step())})
    assert confirmed.status_code == 200, confirmed.text
    codes = confirmed.json()["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    return secret, codes


def _other(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def _with(who: Registered, code: str) -> dict[str, str]:
    return {**who.headers, "X-Second-Factor": code}


def _reset_body(keys: KeyMaker, device_ids: dict[int, int]) -> dict[str, Any]:
    return {"identity_key": b64(keys.identity.public.serialize()),
            "registration_ids": [{"device_id": d, "registration_id": r}
                                 for d, r in device_ids.items()],
            "signed_prekey": keys.signed(), "last_resort_kyber_prekey": keys.kyber()}


def test_rfc6238_vector() -> None:
    # RFC 6238 appendix B, SHA-1, T = 59 s: 94287082 (8 digits); the 6-digit code is its
    # last six digits.
    assert totp.code_at(b"12345678901234567890", 59 // 30) == "287082"


def test_protected_actions_need_a_valid_fresh_code(app: TestClient, clock: Clock) -> None:
    alice = register(app, "alice")
    secret, _codes = _enrol(app, alice, clock)
    assert app.get("/v1/accounts/me/2fa", headers=alice.headers).json()["enabled"] is True
    # Confirming used the current step: it cannot be used again.
    clock.now += 30
    new_keys = KeyMaker()
    attempts: list[tuple[str, str, Any]] = [
        ("POST", "/v1/devices/link-codes", None),
        ("PUT", "/v1/accounts/me/identity",
         _reset_body(new_keys, {1: new_keys.registration_id})),
        ("DELETE", "/v1/recovery", None),
        ("PUT", "/v1/recovery", {"lookup_id": b64(os.urandom(16)), "auth": b64(os.urandom(32)),
                                 "blob": b64(b"sealed")}),
        ("DELETE", "/v1/recovery/passphrase", None),
        ("DELETE", "/v1/accounts/me", None),
        ("DELETE", "/v1/accounts/me/2fa", None),
    ]
    for method, path, body in attempts:
        missing = app.request(method, path, headers=alice.headers, json=body)
        assert missing.status_code == 403, (path, missing.text)
        assert missing.json()["error"]["code"] == "second_factor_required"
        wrong = app.request(method, path, json=body, headers=_with(
            alice, _other(totp.code_at(secret, clock.step()))))
        assert wrong.status_code == 403, (path, wrong.text)
        assert wrong.json()["error"]["code"] == "second_factor_invalid"
        clock.now += 3600  # past any wait the wrong codes caused
    # Nothing happened: same identity, still there.
    me = app.get("/v1/accounts/me", headers=alice.headers).json()
    assert me["identity_key"] == b64(alice.keys.identity.public.serialize())
    # A right code works once; the same code again (a replay) is refused.
    code = totp.code_at(secret, clock.step())
    assert app.post("/v1/devices/link-codes", headers=_with(alice, code)).status_code == 201
    replay = app.post("/v1/devices/link-codes", headers=_with(alice, code))
    assert replay.status_code == 403
    assert replay.json()["error"]["code"] == "second_factor_invalid"
    # So is the previous step's code (older than the one used), though inside the window.
    previous = totp.code_at(secret, clock.step() - 1)
    assert app.post("/v1/devices/link-codes",
                    headers=_with(alice, previous)).status_code == 403
    # The next step's code (a clock one step ahead) is inside the window.
    ahead = totp.code_at(secret, clock.step() + 1)
    assert app.post("/v1/devices/link-codes", headers=_with(alice, ahead)).status_code == 201
    # Two steps away is outside it.
    clock.now += 120
    far = totp.code_at(secret, clock.step() + 2)
    assert app.post("/v1/devices/link-codes", headers=_with(alice, far)).status_code == 403


def test_window_accepts_one_step_behind(app: TestClient, clock: Clock) -> None:
    alice = register(app)
    secret, _ = _enrol(app, alice, clock)
    clock.now += 90
    behind = totp.code_at(secret, clock.step() - 1)
    assert app.post("/v1/devices/link-codes", headers=_with(alice, behind)).status_code == 201
    too_old = totp.code_at(secret, clock.step() - 2)
    assert app.post("/v1/devices/link-codes", headers=_with(alice, too_old)).status_code == 403


def test_wrong_codes_make_the_account_wait(app: TestClient, clock: Clock) -> None:
    alice = register(app)
    secret, _ = _enrol(app, alice, clock)
    clock.now += 30
    for _ in range(6):
        wrong = _other(totp.code_at(secret, clock.step()))
        assert app.post("/v1/devices/link-codes",
                        headers=_with(alice, wrong)).status_code == 403
    # Even the right code waits now, and says how long.
    right = totp.code_at(secret, clock.step())
    waiting = app.post("/v1/devices/link-codes", headers=_with(alice, right))
    assert waiting.status_code == 429
    assert int(waiting.headers["Retry-After"]) >= 1
    clock.now += 2
    assert app.post("/v1/devices/link-codes", headers=_with(alice, right)).status_code == 201


def test_recovery_codes_work_once(app: TestClient, clock: Clock) -> None:
    alice = register(app)
    _secret, codes = _enrol(app, alice, clock)
    typed = codes[0].upper().replace("-", " ")  # as a person might type it
    assert app.post("/v1/devices/link-codes", headers=_with(alice, typed)).status_code == 201
    again = app.post("/v1/devices/link-codes", headers=_with(alice, codes[0]))
    assert again.status_code == 403
    assert app.get("/v1/accounts/me/2fa", headers=alice.headers).json()[
        "recovery_codes_left"] == 9
    # New codes replace the old ones (which stop working).
    fresh = app.post("/v1/accounts/me/2fa/recovery-codes", headers=_with(alice, codes[1]))
    assert fresh.status_code == 200
    assert app.post("/v1/devices/link-codes",
                    headers=_with(alice, codes[2])).status_code == 403
    clock.now += 3600
    new_code = fresh.json()["recovery_codes"][0]
    # A recovery code turns the second factor off; then no code is needed any more.
    assert app.delete("/v1/accounts/me/2fa",
                      headers=_with(alice, new_code)).status_code == 204
    assert app.post("/v1/devices/link-codes", headers=alice.headers).status_code == 201
    assert app.get("/v1/accounts/me/2fa", headers=alice.headers).json()["enabled"] is False


def test_a_second_enrolment_needs_the_first_turned_off(app: TestClient, clock: Clock) -> None:
    alice = register(app)
    _enrol(app, alice, clock)
    again = app.post("/v1/accounts/me/2fa", headers=alice.headers)
    assert again.status_code == 409


def test_resealing_the_recovery_blob_needs_no_code(app: TestClient, clock: Clock) -> None:
    alice = register(app)
    lookup, auth = b64(os.urandom(16)), b64(os.urandom(32))
    body = {"lookup_id": lookup, "auth": auth, "blob": b64(b"sealed v1")}
    assert app.put("/v1/recovery", headers=alice.headers, json=body).status_code == 204
    secret, _ = _enrol(app, alice, clock)
    # The same key's blob sealed again (new history keys): no code, no secret changed.
    resealed = app.put("/v1/recovery", headers=alice.headers,
                       json={**body, "blob": b64(b"sealed v2")})
    assert resealed.status_code == 204
    # A new key is a change of recovery secrets.
    changed = {**body, "auth": b64(os.urandom(32))}
    assert app.put("/v1/recovery", headers=alice.headers, json=changed).status_code == 403
    clock.now += 30
    assert app.put("/v1/recovery", json=changed, headers=_with(
        alice, totp.code_at(secret, clock.step()))).status_code == 204


def test_recovery_release_needs_the_code_and_hands_a_link_code(app: TestClient,
                                                               clock: Clock) -> None:
    alice = register(app)
    lookup, auth = b64(os.urandom(16)), b64(os.urandom(32))
    assert app.put("/v1/recovery", headers=alice.headers, json={
        "lookup_id": lookup, "auth": auth, "blob": b64(b"sealed")}).status_code == 204
    secret, _ = _enrol(app, alice, clock)
    clock.now += 30
    release = {"lookup_id": lookup, "auth": auth}
    refused = app.post("/v1/recovery/open", json=release)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "second_factor_required"
    opened = app.post("/v1/recovery/open", json=release,
                      headers={"X-Second-Factor": totp.code_at(secret, clock.step())})
    assert opened.status_code == 200
    assert opened.json()["blob"] == b64(b"sealed")
    # One code did: the link code joins without a second one.
    joined = app.post("/v1/devices", json={**alice.keys.linked().device_body(),
                                           "link_code": opened.json()["link_code"]})
    assert joined.status_code == 201
    # Joining with the recovery secret alone is refused too.
    alone = app.post("/v1/recovery/devices",
                     json={**alice.keys.linked().device_body(), **release})
    assert alone.status_code == 403


# -- notices ------------------------------------------------------------------------------


def _notices(app: TestClient, who: Registered) -> list[dict[str, Any]]:
    queue = app.get("/v1/messages", headers=who.headers).json()["messages"]
    found = []
    for envelope in queue:
        if envelope["type"] == 0:
            assert envelope["sender_account_id"] is None
            found.append(json.loads(base64.b64decode(envelope["content"])))
    return found


def test_every_other_device_is_told_of_a_new_device_and_an_identity_reset(
        app: TestClient, clock: Clock) -> None:
    alice = register(app)
    laptop = link(app, alice)
    told = _notices(app, alice)
    assert [(n["kind"], n["device_id"], n["via"]) for n in told] == [
        ("device_added", laptop.device_id, "link_code")]
    assert told[0]["at"] % 60_000 == 0 and abs(told[0]["at"] - clock.now * 1000) < 60_000
    assert set(told[0]) == {"v", "kind", "at", "device_id", "via"}  # no address, no agent
    assert _notices(app, laptop) == []  # the new device itself is not told
    new_keys = KeyMaker()
    assert app.put("/v1/accounts/me/identity", headers=laptop.headers, json=_reset_body(
        new_keys, {1: 4321, laptop.device_id: new_keys.registration_id})).status_code == 204
    kinds = [n["kind"] for n in _notices(app, alice)]
    assert kinds == ["device_added", "identity_reset"]


def test_clients_cannot_forge_a_notice(app: TestClient) -> None:
    alice = register(app)
    mallory = register(app)
    forged = app.put(f"/v1/messages/{alice.account_id}", headers=mallory.headers, json={
        "timestamp": 1, "messages": [{"device_id": 1, "registration_id":
                                      alice.keys.registration_id, "type": 0,
                                      "content": b64(b'{"kind":"device_added"}')}]})
    assert forged.status_code == 400
    assert _notices(app, alice) == []


def test_recovery_and_secret_changes_are_told(app: TestClient) -> None:
    alice = register(app, "alice")
    phone = link(app, alice)
    lookup, auth = b64(os.urandom(16)), b64(os.urandom(32))
    assert app.put("/v1/recovery", headers=phone.headers, json={
        "lookup_id": lookup, "auth": auth, "blob": b64(b"x")}).status_code == 204
    assert app.post("/v1/recovery/open", json={"lookup_id": lookup,
                                               "auth": auth}).status_code == 200
    kinds = [(n["kind"], n.get("what") or n.get("via")) for n in _notices(app, alice)]
    assert kinds == [("device_added", "link_code"), ("recovery_changed", "recovery_key"),
                     ("recovery", "recovery_key")]


# -- registration lock -----------------------------------------------------------------------


def test_registration_lock_takeover_fails_and_owner_succeeds(app: TestClient) -> None:
    alice = register(app, "alice")
    lookup, auth = b64(os.urandom(16)), b64(os.urandom(32))
    assert app.put("/v1/recovery", headers=alice.headers, json={
        "lookup_id": lookup, "auth": auth, "blob": b64(b"sealed")}).status_code == 204
    original = b64(alice.keys.identity.public.serialize())
    mallory = KeyMaker()
    # Registering the name is refused as ever; re-registering needs the secret.
    taken = app.post("/v1/accounts", json={**mallory.device_body(), "username": "alice"})
    assert taken.status_code == 409
    bare = app.post("/v1/accounts/reregister", json={**mallory.device_body(),
                                                     "username": "alice"})
    assert bare.status_code == 403
    assert bare.json()["error"]["code"] == "registration_locked"
    guessed = app.post("/v1/accounts/reregister", json={
        **mallory.device_body(), "username": "alice", "lookup_id": lookup,
        "auth": b64(os.urandom(32))})
    assert guessed.status_code == 403
    # Another account's own recovery secret does not open alice's name either.
    other = register(app, "mallory")
    m_lookup, m_auth = b64(os.urandom(16)), b64(os.urandom(32))
    assert app.put("/v1/recovery", headers=other.headers, json={
        "lookup_id": m_lookup, "auth": m_auth, "blob": b64(b"m")}).status_code == 204
    crossed = app.post("/v1/accounts/reregister", json={
        **mallory.device_body(), "username": "alice", "lookup_id": m_lookup,
        "auth": m_auth})
    assert crossed.status_code == 403
    me = app.get("/v1/accounts/me", headers=alice.headers)
    assert me.status_code == 200 and me.json()["identity_key"] == original
    # The owner, with the recovery key's secret, gets a new identity under the same name.
    fresh = KeyMaker()
    owner = app.post("/v1/accounts/reregister", json={
        **fresh.device_body(), "username": "alice", "lookup_id": lookup, "auth": auth})
    assert owner.status_code == 201, owner.text
    assert owner.json()["account_id"] == alice.account_id
    assert app.get("/v1/accounts/me", headers=alice.headers).status_code == 401
    now = app.get("/v1/accounts/me", headers={
        "Authorization": f"Bearer {owner.json()['token']}"}).json()
    assert now["username"] == "alice"
    assert now["identity_key"] == b64(fresh.identity.public.serialize())
    # The old recovery blob sealed the old identity: it is gone.
    assert app.post("/v1/recovery/open", json={"lookup_id": lookup,
                                               "auth": auth}).status_code == 403


def test_an_account_without_recovery_secret_cannot_be_reregistered(app: TestClient) -> None:
    register(app, "bob")
    attempt = app.post("/v1/accounts/reregister", json={
        **KeyMaker().device_body(), "username": "bob", "lookup_id": b64(os.urandom(16)),
        "auth": b64(os.urandom(32))})
    assert attempt.status_code == 403


def test_reregistering_needs_the_second_factor_too(app: TestClient, clock: Clock) -> None:
    alice = register(app, "alice")
    lookup, auth = b64(os.urandom(16)), b64(os.urandom(32))
    assert app.put("/v1/recovery", headers=alice.headers, json={
        "lookup_id": lookup, "auth": auth, "blob": b64(b"s")}).status_code == 204
    secret, _ = _enrol(app, alice, clock)
    clock.now += 30
    body = {**KeyMaker().device_body(), "username": "alice", "lookup_id": lookup,
            "auth": auth}
    assert app.post("/v1/accounts/reregister", json=body).status_code == 403
    ok = app.post("/v1/accounts/reregister", json=body,
                  headers={"X-Second-Factor": totp.code_at(secret, clock.step())})
    assert ok.status_code == 201
