"""The browser makes and changes the recovery secrets and resets the identity key, in
chromium next to Python SDK devices on one relay (web/src/app/recovery_secrets.ts,
identity_reset.ts, ui/recovery_secrets.ts):

* a recovery key and a recovery passphrase set in the browser restore the account with
  the SDK (the same identity key and contacts), the passphrase in a second browser too
  (which then keeps its derived values, as an SDK device does), and a redraw while the security page
  shows a new key or holds a half-typed passphrase loses neither;
* with a second factor on, changing the key, changing the passphrase and resetting the
  identity each fail without a code (the prompt cancelled) and with a wrong one, and go
  through with a right one: the relay's database shows no change until then, and the
  blobs it then holds open with the new secrets (the SDK's own code opens them); the old
  key and passphrase are refused;
* after the reset the account's SDK devices take the new key (SyncMessage.identity_reset),
  an SDK contact sees the key change, and messages flow both ways once it accepts.

One browser account and one SDK contact for all of it: each signup and restore costs
seconds, and the checks build on each other (the restored SDK devices are the ones the
reset must reach).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cipherpost.client import account_security, recovery
from cipherpost.client import events as ev
from cipherpost.client.errors import ClientError, IdentityNotTrusted
from cipherpost.client.proto.app_pb2 import RecoveryBlob
from cipherpost.client.store.crypto import TEST_PARAMS, Argon2Params
from cipherpost.protocol import IdentityKeyPair
from cipherpost.server import totp

from ..client.conftest import Devices, ThreadedRelay
from .browsing import (
    ARTIFACTS,
    PASSWORD,
    Browser,
    account_of,
    enrol_second_factor,
    needs_browser,
    real_problems,
    relay_db,
    sign_up,
    wait_for_event,
    wait_for_text,
    wait_until,
)

pytestmark = needs_browser

USER = "rita"
PASSPHRASES = ("orbit walnut pencil tundra", "velvet harbor quartz meadow")
PASSPHRASE_SET = '[data-testid=recovery-state]:has-text("passphrase is set")'


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[ThreadedRelay]:
    """The conftest's relay (tmp_path/relay, see relay_db) with room for this test's
    eleven recovery requests from one address (restores and refused old secrets; the
    relay's default lets ten through, then one a hundred seconds)."""
    (tmp_path / "relay").mkdir()
    server = ThreadedRelay(tmp_path / "relay", rate_recovery_per_ip="100/1")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _query(tmp_path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with relay_db(tmp_path) as db:
        return [tuple(row) for row in db.execute(sql, args).fetchall()]


def _key_blob(tmp_path: Path, account: str, key: str) -> RecoveryBlob | None:
    """The relay's recovery blob opened with ``key`` by the SDK (None: it is another key's)."""
    secrets = recovery.Secrets.derive(recovery.parse_key(key))
    rows = _query(tmp_path, "SELECT lookup_id, blob FROM recovery WHERE account_id = ?", account)
    if not rows or bytes(rows[0][0]) != secrets.lookup_id:
        return None
    return secrets.open(bytes(rows[0][1]))


def _passphrase_blob(tmp_path: Path, account: str, passphrase: str) -> RecoveryBlob | None:
    """The relay's passphrase blob opened with ``passphrase`` as the SDK derives it."""
    rows = _query(tmp_path, "SELECT salt, params, blob FROM recovery_passphrase "
                  "WHERE account_id = ?", account)
    if not rows:
        return None
    salt, params, sealed = bytes(rows[0][0]), Argon2Params.decode(rows[0][1]), bytes(rows[0][2])
    key, _verifier = recovery._passphrase_keys(passphrase, salt, params)
    try:
        plain = AESGCM(key).decrypt(sealed[:12], sealed[12:], recovery._PASSPHRASE_AAD + salt)
    except InvalidTag:
        return None
    return RecoveryBlob.FromString(plain)


def _identity(tmp_path: Path, account: str) -> bytes:
    return bytes(_query(tmp_path, "SELECT identity_key FROM accounts WHERE id = ?", account)[0][0])


def test_recovery_secrets_and_identity_reset_from_the_browser(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    step = browser.step(USER)

    async def prompt_refuses_then_takes(right: str, wrong: str) -> None:
        """The second-factor prompt is up: a wrong code is refused, then the right one."""
        await step("fill", testid="2fa-prompt-code", text=wrong)
        await step("click", testid="2fa-prompt-submit")
        await step("wait_selector", selector='[data-testid="2fa-prompt"][data-refused=true]')
        await step("fill", testid="2fa-prompt-code", text=right)
        await step("click", testid="2fa-prompt-submit")

    async def cancel_prompt() -> None:
        await step("wait_selector", selector='[data-testid="2fa-prompt"][data-refused=false]')
        await step("click", testid="2fa-prompt-cancel")
        await step("wait_selector", selector="[data-testid=recovery-error]:not(:empty)")

    async def new_key() -> str:
        await step("click", testid="recovery-key-new")
        text = str((await step("text", testid="recovery-key-text"))["text"])
        await step("click", testid="recovery-key-saved")
        return text

    async def set_passphrase(passphrase: str) -> None:
        await step("fill", testid="recovery-passphrase-new", text=passphrase)
        await step("fill", testid="recovery-passphrase-again", text=passphrase)
        await step("click", testid="recovery-passphrase-save")

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        sam = await devices.register("sam")
        try:
            await sign_up(step, relay.url, USER)
            account = account_of(tmp_path, USER)
            await step("chat", username="sam")
            await step("send", text="hello sam")
            await wait_for_text(sam, "hello sam")
            await step("click", testid="open-security")

            # A message arriving redraws the app; the security page keeps the key it shows
            # and the passphrase being typed (a new page would have lost both).
            key = await new_key()
            await step("fill", testid="recovery-passphrase-new", text="half typed")
            await sam.send_text(account, "a redraw")
            await step("wait_selector", selector="[data-testid=conversation]"
                       f'[data-account="{sam.account_id}"] .preview:has-text("a redraw")')
            assert (await step("text", testid="recovery-key-text"))["text"] == key
            assert (await step("value", testid="recovery-passphrase-new"))["value"] == "half typed"
            assert _query(tmp_path, "SELECT count(*) FROM recovery") == [(0,)]
            await step("screenshot", path=str(ARTIFACTS / "25-recovery-key.png"))

            # No second factor yet: the key and the passphrase restore the account with the SDK.
            await step("click", testid="recovery-key-save")
            await step("wait_gone", testid="recovery-key-text")
            blob = _key_blob(tmp_path, account, key)
            assert blob is not None and blob.account_id == account
            assert [(c.account_id, c.username) for c in blob.contacts] == [(sam.account_id, "sam")]
            restored = await recovery.restore(tmp_path / "rita-key.db", relay.url, key,
                                              passphrase="correct horse", argon2=TEST_PARAMS,
                                              options=devices.options)
            devices.clients.append(restored)
            assert (restored.account_id, restored.device_id) == (account, 2)
            assert restored.store.get_identity_key_pair().public.serialize() \
                == _identity(tmp_path, account)
            assert (sam.account_id, "sam") in restored.store.contacts()

            await set_passphrase(PASSPHRASES[0])
            await step("wait_selector", selector=PASSPHRASE_SET)
            by_passphrase = await recovery.restore_with_passphrase(
                tmp_path / "rita-passphrase.db", relay.url, USER, PASSPHRASES[0],
                passphrase="correct horse", argon2=TEST_PARAMS, options=devices.options)
            devices.clients.append(by_passphrase)
            assert (by_passphrase.account_id, by_passphrase.device_id) == (account, 3)
            held = (await step("elements", testid="recovery-held"))["elements"][0]["data"]
            assert held == {"testid": "recovery-held", "key": "true", "passphrase": "true"}

            # A second factor: every change now needs a code.
            secret, _enrolled, codes = await asyncio.to_thread(enrol_second_factor, browser, USER)
            await step("click", testid="2fa-codes-done")
            good = totp.code_at(secret, totp.step_of(int(time.time() * 1000)))
            wrong = f"{(int(good) + 1) % 1_000_000:06d}"

            new = await new_key()
            await step("click", testid="recovery-key-save")
            await cancel_prompt()
            assert _key_blob(tmp_path, account, key) is not None  # unchanged without a code
            await step("click", testid="recovery-key-save")
            await prompt_refuses_then_takes(codes[0], wrong)
            await step("wait_gone", testid="recovery-key-text")
            assert _key_blob(tmp_path, account, key) is None
            blob = _key_blob(tmp_path, account, new)
            assert blob is not None and blob.identity_key_pair \
                == restored.store.get_identity_key_pair().serialize()
            with pytest.raises(ClientError, match="no account for that recovery key"):
                await recovery.restore(tmp_path / "old-key.db", relay.url, key,
                                       passphrase="correct horse", argon2=TEST_PARAMS)

            await set_passphrase(PASSPHRASES[1])
            await cancel_prompt()
            assert _passphrase_blob(tmp_path, account, PASSPHRASES[0]) is not None
            await step("click", testid="recovery-passphrase-save")
            await prompt_refuses_then_takes(codes[1], wrong)
            await step("wait_selector", selector=PASSPHRASE_SET)
            assert _passphrase_blob(tmp_path, account, PASSPHRASES[0]) is None
            opened = _passphrase_blob(tmp_path, account, PASSPHRASES[1])
            assert opened is not None and opened.account_id == account
            with pytest.raises(ClientError, match="wrong username or recovery passphrase"):
                await recovery.restore_with_passphrase(
                    tmp_path / "old-passphrase.db", relay.url, USER, PASSPHRASES[0],
                    passphrase="correct horse", argon2=TEST_PARAMS)

            # The identity reset: refused without a code and with a wrong one.
            old_identity = _identity(tmp_path, account)
            await step("click", testid="identity-reset")
            await step("click", testid="identity-reset")
            await cancel_prompt()
            assert _identity(tmp_path, account) == old_identity
            await step("click", testid="identity-reset")
            await step("click", testid="identity-reset")
            await prompt_refuses_then_takes(codes[2], wrong)
            await step("wait_selector", selector="[data-testid=recovery-state][data-reset=done]")
            new_identity = _identity(tmp_path, account)
            assert new_identity != old_identity
            state = (await step("text", testid="recovery-state"))["text"]
            assert "could not be given" not in state and "carries the new key" in state
            blob = _key_blob(tmp_path, account, new)  # sealed again with the new key pair
            assert blob is not None
            assert IdentityKeyPair.deserialize(blob.identity_key_pair).public.serialize() \
                == new_identity

            # Our SDK devices take the new key; the contact sees the change.
            for device in (restored, by_passphrase):
                await wait_for_event(device, lambda e: isinstance(e, ev.IdentityChanged)
                                     and e.account == account)
                assert device.store.get_identity_key_pair().public.serialize() == new_identity
            await step("click", testid="close-page")
            await step("open_conversation", account=sam.account_id)
            await step("send", text="my key changed")
            seen: list[object] = []

            def changed_and_received(event: object) -> bool:
                seen.append(event)
                changed = any(isinstance(e, ev.IdentityChanged) and e.account == account
                              for e in seen)
                return changed and any(isinstance(e, ev.Message) and e.text == "my key changed"
                                       for e in seen)

            await wait_for_event(sam, changed_and_received)
            with pytest.raises(IdentityNotTrusted):
                await sam.send_text(account, "blocked until accepted")
            sam.trust_identity(account)
            await sam.send_text(account, "accepted your new key")
            await step("wait_message", text="accepted your new key", outgoing=False)
            await step("send", text="and it flows")
            await wait_for_text(sam, "and it flows")
            problems = real_problems((await step("problems"))["problems"])
            assert [p for p in problems if "status of 403" not in p] == []
            # The new passphrase in a second browser: the blob the reset sealed again carries the
            # new key pair (the relay takes no device under another identity key); the browser keeps
            # the passphrase's values, as an SDK device does
            other = browser.step(USER + "-2")
            await other("open", url=relay.url + "/")
            await other("click", testid="start-recover")
            await other("select", testid="recover-how", value="passphrase")
            await other("fill", testid="recover-username", text=USER)
            await other("fill", testid="recover-passphrase", text=PASSPHRASES[1])
            await other("fill", testid="recover-password", text=PASSWORD)
            await other("fill", testid="recover-confirm", text=PASSWORD)
            await other("click", testid="recover-submit")
            await other("wait_selector", selector='[data-testid="2fa-prompt"][data-refused=false]')
            await other("fill", testid="2fa-prompt-code", text=codes[3])
            await other("click", testid="2fa-prompt-submit")
            await other("wait_inbox")
            await other("click", testid="open-security")
            held = (await other("elements", testid="recovery-held"))["elements"][0]["data"]
            assert (held["key"], held["passphrase"]) == ("false", "true")
            assert _query(tmp_path, "SELECT device_id FROM devices WHERE account_id = ? "
                          "ORDER BY device_id", account) == [(1,), (2,), (3,), (4,)]

            # An SDK device of the account resets the key in turn: the browsers take the new
            # key pair, publish keys under it, and the contact sees the browser's messages
            # under it.
            with account_security.second_factor(restored.api, codes[4]):
                assert await restored.reset_identity() == []
            newest = _identity(tmp_path, account)
            for device in (1, 4):
                wait_until(lambda d=device: _query(
                    tmp_path, "SELECT count(*) FROM signed_prekeys WHERE account_id = ? "
                    "AND device_id = ?", account, d) == [(1,)], f"device {device}'s keys")
            await step("open_conversation", account=sam.account_id)
            await step("send", text="after the second reset")
            seen.clear()

            def received(event: object) -> bool:
                seen.append(event)
                return isinstance(event, ev.Message) and event.text == "after the second reset"

            await wait_for_event(sam, received)
            assert any(isinstance(e, ev.IdentityChanged) and e.account == account for e in seen)
            record = next(r for r in sam.store.identity_records() if r.account == account)
            assert record.identity_key.serialize() == newest

            # The browser holds the recovery key, so it seals the blob again under the new
            # key pair (the reset's device holds only a replaced key, which the relay
            # refuses to put back): a restore gets the newest identity.
            def sealed_identity() -> bytes | None:
                found = _key_blob(tmp_path, account, new)
                return None if found is None else \
                    IdentityKeyPair.deserialize(found.identity_key_pair).public.serialize()
            wait_until(lambda: sealed_identity() == newest, "the blob under the newest key pair")
        finally:
            await devices.close()

    started = time.monotonic()
    asyncio.run(scenario())
    (ARTIFACTS / "recovery-secrets-seconds.txt").write_text(f"{time.monotonic() - started:.1f}\n")
