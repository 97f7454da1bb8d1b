"""Unlocking the browser's store with a passkey, in chromium with a virtual authenticator
(the DevTools protocol's WebAuthn domain: CTAP2, internal transport, resident keys, user
verification and PRF). A passkey is registered on the security page, unlocks the store
after a reload with the inbox and an SDK contact's message there, gives a clear error
when its authenticator is gone (the password still unlocks), and once removed only the
password unlocks; changing the password removes it too (it must be added again).
IndexedDB never holds the store key in the clear.

The page is opened at ``localhost`` (the relay listens on 127.0.0.1): WebAuthn takes a
domain as relying party id, never an IP address.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from argon2.low_level import Type, hash_secret_raw
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..client.conftest import Devices, ThreadedRelay
from .test_browser import (  # noqa: F401 - fixtures
    ARTIFACTS,
    PASSWORD,
    Browser,
    browser,
    built,
    real_problems,
    relay,
)

pytestmark = pytest.mark.usefixtures("built")

UNLOCK_ERROR = "[data-testid=unlock] [data-testid=error]:not(:empty)"
PASSKEY_BUTTON = "[data-testid=unlock-passkey]:not([hidden])"
CHECKED = "[data-testid=unlock]:has([data-testid=unlock-passkey][data-checked=true])"
NEW_PASSWORD = "another long browser password"


def _records(dump: dict[str, Any]) -> dict[str, bytes]:
    """The cipherpost database's records from the driver's dump_store: key -> value."""
    out: dict[str, bytes] = {}
    binary = iter(dump["binary"])
    for text in dump["text"]:
        entry = json.loads(text)
        values = [base64.b64decode(next(binary)) if v == "<binary>" else v for v in entry["values"]]
        if entry["db"] == "cipherpost" and entry["store"] == "kv":
            out.update(zip(entry["keys"], values, strict=True))
    return out


def _store_key(records: dict[str, bytes]) -> bytes:
    """The store's local key, derived here as the browser does (Argon2id of the password),
    and checked: it opens the store's sealed check value."""
    kdf = json.loads(records["meta:kdf"])
    t, m, p = (int(x) for x in kdf["argon2"].split(","))
    key = hash_secret_raw(PASSWORD.encode(), bytes.fromhex(kdf["salt"]), time_cost=t, memory_cost=m,
                          parallelism=p, hash_len=32, type=Type.ID)
    check = records["meta:check"]
    assert AESGCM(key).decrypt(check[:12], check[12:], b"cipherpost local key check") == b"ok"
    return key


def _account(tmp_path: Path, username: str) -> str:
    with sqlite3.connect(tmp_path / "relay" / "relay.db") as db:
        row = db.execute("SELECT id FROM accounts WHERE username = ?", (username,)).fetchone()
    assert row is not None
    return str(row[0])


def test_a_passkey_unlocks_the_store_and_the_password_still_does(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:  # noqa: F811
    user = "ada"
    started = time.monotonic()
    timings: dict[str, float] = {}

    async def step(cmd: str, **args: Any) -> dict[str, Any]:
        return await asyncio.to_thread(browser.do, cmd, user=user, **args)

    async def registered(flag: bool) -> None:
        state = f"[data-testid=passkey-state][data-registered={str(flag).lower()}]"
        await step("wait_selector", selector=state)

    async def credentials(authenticator: str) -> list[dict[str, Any]]:
        answer = await step("webauthn", action="credentials", authenticator=authenticator)
        return list(answer["credentials"])

    async def password_only(password: str) -> None:
        """After a reload: no passkey offered, a wrong password refused, `password` opens."""
        await step("reload")
        await step("wait_selector", selector=CHECKED)
        assert (await step("count", selector=PASSKEY_BUTTON))["count"] == 0
        wrong = await step("unlock", password="not the password", expect_error=True)
        assert "Wrong password" in wrong["error_text"]
        await step("unlock", password=password)

    async def passkey_error(cancel: bool = False) -> str:
        await step("click", testid="unlock-passkey")
        if cancel:
            await step("wait_selector", selector="[data-testid=unlock-passkey]:has-text('cancel')")
            await asyncio.sleep(0.5)
            assert (await step("count", selector=UNLOCK_ERROR))["count"] == 0
            await step("click", testid="unlock-passkey")
        await step("wait_selector", selector=UNLOCK_ERROR)
        return str((await step("text", testid="error"))["text"])

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        bob = await devices.register("bob")
        try:
            url = relay.url.replace("127.0.0.1", "localhost") + "/"
            csp = (await step("open", url=url))["csp"] or ""
            assert "script-src 'self' 'wasm-unsafe-eval'" in csp and "unsafe-inline" not in csp
            await step("signup", username=user, password=PASSWORD)
            _account(tmp_path, user)  # registered on the relay
            await bob.send_text(user, "hello ada, from the SDK")
            await step("open_conversation", account=bob.account_id)
            await step("wait_message", text="hello ada, from the SDK", outgoing=False)
            first = (await step("webauthn", action="add"))["authenticator"]

            # Register: a wrong password asks no authenticator and stores nothing.
            await step("click", testid="open-security")
            await registered(False)
            await step("fill", testid="passkey-password", text="not the password")
            await step("click", testid="passkey-add")
            await step("wait_selector",
                       selector="[data-testid=passkey-error]:has-text('Wrong password')")
            assert await credentials(first) == []
            await step("fill", testid="passkey-password", text=PASSWORD)
            await step("click", testid="passkey-add")
            await registered(True)
            [credential] = await credentials(first)
            assert credential["rp_id"] == "localhost"
            await step("screenshot", path=str(ARTIFACTS / "20-passkey-registered.png"))

            # What IndexedDB holds: the versioned record naming that credential, and the
            # store key nowhere, in no encoding the page could have written it in.
            records = _records(await step("dump_store"))
            key = _store_key(records)
            record = records["meta:passkey"]
            credential_id = base64.b64decode(credential["id"])
            assert record[0] == 1
            assert int.from_bytes(record[9:11], "big") == len(credential_id)
            assert record[11:11 + len(credential_id)] == credential_id
            assert len(record) == 11 + len(credential_id) + 32 + 32 + 12 + 48
            everything = b"".join(k.encode() + v for k, v in records.items())
            forms = (key, key.hex().encode(), base64.b64encode(key), base64.urlsafe_b64encode(key))
            for form in forms:
                assert form not in everything

            # Reload: the passkey alone opens the store, with the inbox and the message.
            await step("reload")
            await step("wait_selector", selector=PASSKEY_BUTTON)
            await step("screenshot", path=str(ARTIFACTS / "21-unlock-with-passkey.png"))
            clicked = time.monotonic()
            await step("click", testid="unlock-passkey")
            await step("wait_inbox")
            timings["passkey_unlock_to_inbox_s"] = round(time.monotonic() - clicked, 2)
            await step("open_conversation", account=bob.account_id)
            await step("wait_message", text="hello ada, from the SDK", outgoing=False)
            [after] = await credentials(first)
            assert after["sign_count"] > credential["sign_count"]  # the assertion was made

            # The credential deleted from the authenticator: a clear error at once.
            await step("webauthn", action="remove_credential", authenticator=first,
                       credential=credential["id"])
            await step("reload")
            await step("wait_selector", selector=PASSKEY_BUTTON)
            clicked = time.monotonic()
            error = await passkey_error()
            timings["removed_credential_error_s"] = round(time.monotonic() - clicked, 2)
            assert "The passkey was not used" in error, error
            assert "Unlock with your password" in error, error
            # The authenticator gone: chromium waits for one (no UI here to say there is
            # none), the button cancels the wait, and the password still unlocks.
            await step("webauthn", action="remove", authenticator=first)
            error = await passkey_error(cancel=True)
            assert "The passkey was not used" in error, error
            await step("unlock", password=PASSWORD)

            # Removed (its record still names the gone credential): only the password
            # unlocks, and the unlock screen offers no passkey.
            await step("click", testid="open-security")
            await registered(True)
            await step("click", testid="passkey-remove")
            await step("click", testid="passkey-remove")  # confirmed
            await registered(False)
            assert "meta:passkey" not in _records(await step("dump_store"))
            await password_only(PASSWORD)

            # Added again on a new authenticator, it unlocks; changing the password
            # removes it (it wrapped the old key) and says it must be added again.
            second = (await step("webauthn", action="add"))["authenticator"]
            await step("click", testid="open-security")
            await step("fill", testid="passkey-password", text=PASSWORD)
            await step("click", testid="passkey-add")
            await registered(True)
            [again] = await credentials(second)
            assert again["rp_id"] == "localhost" and again["id"] != credential["id"]
            await step("reload")
            await step("click", testid="unlock-passkey")
            await step("wait_inbox")
            await step("click", testid="open-security")
            await step("click", testid="password-open")
            await step("fill", testid="password-old", text=PASSWORD)
            await step("fill", testid="password-new", text=NEW_PASSWORD)
            await step("fill", testid="password-confirm", text=NEW_PASSWORD)
            await step("click", testid="password-change")
            await step("wait_selector", selector="[data-testid=password-state][data-changed=true]")
            assert "add it again" in (await step("text", testid="password-state"))["text"]
            await registered(False)
            await password_only(NEW_PASSWORD)
            await step("open_conversation", account=bob.account_id)
            await step("wait_message", text="hello ada, from the SDK", outgoing=False)
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()

    asyncio.run(scenario())
    timings["module_s"] = round(time.monotonic() - started, 1)
    print(f"passkey timings: {timings}")
