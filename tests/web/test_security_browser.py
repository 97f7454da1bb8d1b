"""The browser's account security page in chromium: login notices (a device joining the
account shows up on the other), enrolling a TOTP second factor (a wrong code refused, the
right one accepted and the recovery codes shown), the second-factor prompt on the
browser's own protected actions (replayed and wrong codes refused), and the privacy
dashboard (what it shows checked against the relay's database)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cipherpost.client import Client, account_security, recovery
from cipherpost.client import events as ev
from cipherpost.client.api import RelayError
from cipherpost.client.devices import request_link
from cipherpost.client.store.crypto import TEST_PARAMS
from cipherpost.server import key_chain, totp
from cipherpost.server.storage.schema import metadata

from ..client.conftest import Devices, ThreadedRelay, relay_queue
from .browsing import (
    ARTIFACTS,
    PASSWORD,
    Browser,
    account_of,
    answer_second_factor_prompt,
    enrol_second_factor,
    link_sdk_device,
    needs_browser,
    real_problems,
    relay_db,
    sign_up,
    wait_for_text,
    wait_until,
)

pytestmark = needs_browser


#: test_recovery_secrets_browser imports it from here.
_enrol = enrol_second_factor


def test_a_new_device_shows_as_a_login_notice(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    user = "nora"
    step = browser.step(user)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            await sign_up(step, relay.url, user)
            await step("click", testid="open-security")
            await step("wait_selector", selector="[data-testid=no-notices]")
            await step("click", testid="close-page")
            linked = await link_sdk_device(step, tmp_path, relay, devices, "laptop")
            assert linked.device_id == 2
            await step("click", testid="close-page")
            await step("click", testid="open-security")
            shown = (await step("elements", testid="notice"))["elements"]
            assert [n["data"]["kind"] for n in shown] == ["device_added"]
            assert 'a new device joined, device 2 "laptop"' in shown[0]["text"]
            await step("screenshot", path=str(ARTIFACTS / "14-login-notice.png"))
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_enrolling_a_second_factor(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    user = "otto"
    browser.do("open", user=user, url=relay.url + "/")
    browser.do("signup", user=user, username=user, password=PASSWORD)
    browser.do("click", user=user, testid="open-security")
    browser.do("wait_selector", user=user, selector='[data-testid="2fa-state"][data-enabled=false]')
    browser.do("click", user=user, testid="2fa-start")
    secret_text = browser.do("text", user=user, testid="2fa-secret")["text"]
    assert browser.do("text", user=user, testid="2fa-uri")["text"].startswith("otpauth://totp/")
    secret = base64.b32decode(secret_text)
    good = totp.code_at(secret, totp.step_of(int(time.time() * 1000)))
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    browser.do("fill", user=user, testid="2fa-code", text=wrong)
    browser.do("click", user=user, testid="2fa-confirm")
    browser.do("wait_selector", user=user, selector='[data-testid="2fa-error"]:has-text("wrong")')
    with relay_db(tmp_path) as db:
        assert db.execute("SELECT enabled FROM two_factor WHERE account_id = ?",
                          (account_of(tmp_path, user),)).fetchone() == (0,)
    browser.do("fill", user=user, testid="2fa-code", text=good)
    browser.do("click", user=user, testid="2fa-confirm")
    codes = browser.do("elements", user=user,
                       selector='[data-testid="2fa-recovery-codes"] li')["elements"]
    assert len(codes) == totp.RECOVERY_CODES
    browser.do("wait_selector", user=user, selector='[data-testid="2fa-state"][data-enabled=true]')
    with relay_db(tmp_path) as db:
        assert db.execute("SELECT enabled FROM two_factor WHERE account_id = ?",
                          (account_of(tmp_path, user),)).fetchone() == (1,)
    browser.do("screenshot", user=user, path=str(ARTIFACTS / "15-second-factor.png"))
    # chromium logs the refused wrong code (403) by itself; nothing else went wrong
    problems = real_problems(browser.do("problems", user=user)["problems"])
    assert [p for p in problems if "status of 403" not in p] == []


def test_the_privacy_dashboard_and_its_export_show_what_the_relay_holds(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """The dashboard lists the devices with their last-seen days, the account's audit
    events and the history count as the relay's database holds them; the file the browser
    saves is the relay's export and says the same. (One test since the export had its own:
    the same sign-up, message and page.)"""
    user = "pia"
    step = browser.step(user)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            quinn = await devices.register("quinn")
            await sign_up(step, relay.url, user)
            account = account_of(tmp_path, user)
            await quinn.send_text(user, "hello pia")
            await step("wait_selector", selector="[data-testid=conversation]")
            await step("click", testid="open-security")
            shown = (await step("elements", testid="privacy-device"))["elements"]
            audit = (await step("elements", testid="audit-event"))["elements"]
            with relay_db(tmp_path) as db:
                held = db.execute("SELECT device_id, last_seen FROM devices WHERE account_id = ? "
                                  "ORDER BY device_id", (account,)).fetchall()
                events = db.execute("SELECT event FROM audit_log WHERE account_id = ?",
                                    (account,)).fetchall()
            day = 86_400_000
            assert [(int(d["data"]["device"]), int(d["data"]["lastSeenDay"])) for d in shown] \
                == [(device, last_seen // day) for device, last_seen in held]
            assert sorted(e["data"]["event"] for e in audit) == sorted(e for (e,) in events)
            history = (await step("elements", testid="privacy-history"))["elements"][0]
            assert history["data"]["entries"] == "0"
            await step("screenshot", path=str(ARTIFACTS / "16-privacy.png"))

            saved = await step("download_click", testid="privacy-export")
            assert saved["filename"] == "cipherpost-server-data.json"
            document = json.loads(saved["text"])
            with relay_db(tmp_path) as db:
                held = db.execute("SELECT device_id, last_seen FROM devices WHERE account_id = ? "
                                  "ORDER BY device_id", (account,)).fetchall()
                events = [e for (e,) in db.execute(
                    "SELECT event FROM audit_log WHERE account_id = ? ORDER BY seq", (account,))]
            assert document["format"] == "cipherpost-server-data"
            assert document["account_id"] == account and document["username"] == user
            assert [(d["device_id"], d["last_seen_day"]) for d in document["devices"]] \
                == [(device, last_seen // day) for device, last_seen in held]
            # The relay records the export after writing it.
            assert events[-1] == "account_exported"
            assert sorted(e["event"] for e in document["audit"]) == sorted(events[:-1])
            assert document["history_entries"] == _history_count(tmp_path, account) == 0
            await step("wait_selector",
                       selector='[data-testid=privacy-action-state]:has-text("Saved")')
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()

    asyncio.run(scenario())


def _two_factor_row(tmp_path: Path, account: str) -> tuple[int, int, int]:
    """(enabled, last_step, failures) of the account's second factor."""
    with relay_db(tmp_path) as db:
        row = db.execute("SELECT enabled, last_step, failures FROM two_factor WHERE account_id = ?",
                         (account,)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def test_linking_from_the_browser_asks_for_the_second_factor(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """With a second factor on, a link code (403 second_factor_required without one) asks
    for a code: the one that enrolled (replayed) and a wrong one are refused with a clear
    message and leave no link code; the next step's code goes through and the new device
    joins."""
    user = "rhea"
    step = browser.step(user)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            await sign_up(step, relay.url, user)
            account = account_of(tmp_path, user)
            secret, enrolled, _codes = await asyncio.to_thread(enrol_second_factor, browser, user)
            assert _two_factor_row(tmp_path, account) == (1, enrolled, 0)
            await step("click", testid="close-page")
            await step("click", testid="open-devices")
            pending = await request_link(relay.url)
            await step("fill", testid="link-code", text=pending.uri)
            await step("click", testid="link-submit")
            asked = (await step("elements", testid="2fa-prompt"))["elements"]
            assert "Linking a new device needs a code" in asked[0]["text"]
            assert asked[0]["data"]["refused"] == "false"

            await step("fill", testid="2fa-prompt-code", text=totp.code_at(secret, enrolled))
            await step("click", testid="2fa-prompt-submit")
            await step("wait_selector", selector='[data-testid="2fa-prompt"][data-refused=true]')
            shown = (await step("text", testid="2fa-prompt-error"))["text"]
            assert "wrong, was used already or has expired" in shown
            await asyncio.to_thread(wait_until, lambda: _two_factor_row(tmp_path, account)[2] == 1,
                                    "the replayed code counted")

            good = totp.code_at(secret, enrolled + 1)
            wrong = f"{(int(good) + 1) % 1_000_000:06d}"
            await step("fill", testid="2fa-prompt-code", text=wrong)
            await step("click", testid="2fa-prompt-submit")
            await asyncio.to_thread(wait_until, lambda: _two_factor_row(tmp_path, account)[2] == 2,
                                    "the wrong code counted")
            await step("wait_selector", selector='[data-testid="2fa-prompt"][data-refused=true]')
            with relay_db(tmp_path) as db:
                assert db.execute("SELECT count(*) FROM link_codes WHERE account_id = ?",
                                  (account,)).fetchone() == (0,)
            await step("screenshot", path=str(ARTIFACTS / "17-second-factor-prompt.png"))

            await step("fill", testid="2fa-prompt-code", text=good)
            await step("click", testid="2fa-prompt-submit")
            await step("wait_selector", selector='[data-testid=link-state]:has-text("Sent")')
            assert _two_factor_row(tmp_path, account) == (1, enrolled + 1, 0)
            linked = await pending.complete(tmp_path / "rhea-laptop.db", passphrase="correct horse",
                                            device_name="laptop", argon2=TEST_PARAMS,
                                            options=devices.options, timeout=30)
            devices.clients.append(linked)
            assert linked.device_id == 2
            with relay_db(tmp_path) as db:
                assert db.execute("SELECT device_id FROM devices WHERE account_id = ? "
                                  "ORDER BY device_id", (account,)).fetchall() == [(1,), (2,)]
            problems = real_problems((await step("problems"))["problems"])
            assert [p for p in problems if "status of 403" not in p] == []
        finally:
            await devices.close()

    asyncio.run(scenario())


def _code_hashes(tmp_path: Path, account: str) -> set[bytes]:
    with relay_db(tmp_path) as db:
        return {bytes(h) for (h,) in db.execute(
            "SELECT code_hash FROM two_factor_codes WHERE account_id = ?", (account,))}


def _hashed(account: str, codes: list[str]) -> set[bytes]:
    return {totp.hash_recovery_code(account, str(totp.normalize_recovery_code(c)))
            for c in codes}


def test_new_recovery_codes_and_turning_the_second_factor_off(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """Both ask for the second factor: new recovery codes with a recovery code (the old
    ones then fail, the relay holds only the new ones' hashes), turning it off with an old
    recovery code refused and the authenticator's next code accepted (nothing of it left
    on the relay)."""
    user = "sami"
    browser.do("open", user=user, url=relay.url + "/")
    browser.do("signup", user=user, username=user, password=PASSWORD)
    account = account_of(tmp_path, user)
    secret, enrolled, old = enrol_second_factor(browser, user)
    assert _code_hashes(tmp_path, account) == _hashed(account, old)
    browser.do("click", user=user, testid="2fa-codes-done")

    browser.do("click", user=user, testid="2fa-new-codes")
    assert "Making new recovery codes needs a code" in browser.do(
        "text", user=user, testid="2fa-prompt")["text"]
    answer_second_factor_prompt(browser, user, old[0].upper())  # typed in any case
    browser.do("wait_selector", user=user, selector='[data-testid="2fa-recovery-codes"] li')
    new = [c["text"] for c in browser.do(
        "elements", user=user, selector='[data-testid="2fa-recovery-codes"] li')["elements"]]
    assert len(new) == totp.RECOVERY_CODES and not set(new) & set(old)
    assert _code_hashes(tmp_path, account) == _hashed(account, new)
    with relay_db(tmp_path) as db:
        assert ("two_factor_recovery_code_used",) in db.execute(
            "SELECT event FROM audit_log WHERE account_id = ?", (account,)).fetchall()
    browser.do("wait_selector", user=user,
               selector='[data-testid="2fa-state"][data-codes-left="10"]')
    browser.do("click", user=user, testid="2fa-codes-done")

    browser.do("click", user=user, testid="2fa-disable")
    answer_second_factor_prompt(browser, user, old[1])  # replaced: refused
    browser.do("wait_selector", user=user, selector='[data-testid="2fa-prompt"][data-refused=true]')
    assert _two_factor_row(tmp_path, account)[0] == 1
    answer_second_factor_prompt(browser, user, totp.code_at(secret, enrolled + 1))
    browser.do("wait_selector", user=user, selector='[data-testid="2fa-state"][data-enabled=false]')
    with relay_db(tmp_path) as db:
        assert db.execute("SELECT count(*) FROM two_factor WHERE account_id = ?",
                          (account,)).fetchone() == (0,)
    assert _code_hashes(tmp_path, account) == set()
    browser.do("wait_selector", user=user, selector='[data-testid="2fa-start"]')
    problems = real_problems(browser.do("problems", user=user)["problems"])
    assert [p for p in problems if "status of 403" not in p] == []


def _history_count(tmp_path: Path, account: str) -> int:
    with relay_db(tmp_path) as db:
        return int(db.execute("SELECT count(*) FROM history WHERE account_id = ?",
                              (account,)).fetchone()[0])


def test_deleting_the_stored_history_from_the_dashboard(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """The SDK device of the account keeps server history (a message it received is
    stored on the relay); the browser's dashboard shows the relay's count, deletes it
    (nothing left in the database) and turns history off on the SDK device too."""
    user = "vera"
    step = browser.step(user)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            await sign_up(step, relay.url, user)
            account = account_of(tmp_path, user)
            laptop = await link_sdk_device(step, tmp_path, relay, devices, "vera-laptop")
            await step("click", testid="close-page")
            await laptop.set_server_history(True)
            quinn = await devices.register("quinn")
            await quinn.send_text(user, "kept on the server")
            deadline = time.monotonic() + 20
            while _history_count(tmp_path, account) == 0:
                assert time.monotonic() < deadline, "the SDK device stored no history"
                await laptop.receive()
            stored = _history_count(tmp_path, account)
            await step("click", testid="open-security")
            await step("wait_selector",
                       selector=f'[data-testid=privacy-history][data-entries="{stored}"]')
            await step("click", testid="privacy-delete-history")
            await step("wait_text", testid="privacy-delete-history",
                       text="Really delete it on the server?")
            assert _history_count(tmp_path, account) == stored  # not before the second click
            await step("click", testid="privacy-delete-history")
            await step("wait_selector",
                       selector='[data-testid=privacy-action-state]:has-text("deleted")')
            await step("wait_selector", selector='[data-testid=privacy-history][data-entries="0"]')
            assert _history_count(tmp_path, account) == 0
            with relay_db(tmp_path) as db:
                assert ("history_cleared",) in db.execute(
                    "SELECT event FROM audit_log WHERE account_id = ?", (account,)).fetchall()
            deadline = time.monotonic() + 20
            while laptop.server_history:
                assert time.monotonic() < deadline, "the SDK device kept server history on"
                await laptop.receive()
            # Off on both devices: a new message is stored nowhere on the relay.
            await quinn.send_text(user, "after the deletion")
            await step("click", testid="close-page")
            await step("open_conversation", account=quinn.account_id)
            await step("wait_message", text="after the deletion")
            await _collect(laptop, _got_text("after the deletion"), settle=2.0)
            assert _history_count(tmp_path, account) == 0
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()

    asyncio.run(scenario())


def _rows_naming(tmp_path: Path, account: str) -> dict[str, int]:
    """Rows of every relay table with the account id in any text column."""
    found = {}
    with relay_db(tmp_path) as db:
        for table in metadata.sorted_tables:
            for column in table.columns:
                if isinstance(column.type, (sa.String, sa.Text)):
                    (count,) = db.execute(f"SELECT count(*) FROM {table.name} "
                                          f"WHERE {column.name} = ?", (account,)).fetchone()
                    if count:
                        found[f"{table.name}.{column.name}"] = int(count)
    return found


def test_deleting_the_account_leaves_nothing_on_the_relay_or_in_the_browser(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """After a confirm step and the second factor, the relay holds no row and no archive
    naming the account (but the queued message it sent to a contact, which is the
    contact's), the username is free, and the browser's IndexedDB is empty."""
    user = "wren"
    step = browser.step(user)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            xavi = await devices.register("xavi")
            await sign_up(step, relay.url, user)
            account = account_of(tmp_path, user)
            await xavi.send_text(user, "hello wren")
            await step("wait_selector", selector="[data-testid=conversation]")
            await step("open_conversation", account=xavi.account_id)
            await step("send", text="hello xavi")
            await step("wait_message", text="hello xavi", outgoing=True, status="sent")
            secret, enrolled, _codes = await asyncio.to_thread(enrol_second_factor, browser, user)
            await step("click", testid="2fa-codes-done")
            before = _rows_naming(tmp_path, account)
            assert {"accounts.id", "devices.account_id", "two_factor.account_id",
                    "two_factor_codes.account_id", "audit_log.account_id"} <= set(before)

            await step("click", testid="privacy-delete-account")
            await step("fill", testid="privacy-delete-username", text="someone")
            await step("click", testid="privacy-delete-confirm")
            await step("wait_selector", selector='[data-testid=privacy-error]:has-text("username")')
            await step("fill", testid="privacy-delete-username", text=user)
            await step("click", testid="privacy-delete-confirm")
            assert "Deleting your account needs a code" in (
                await step("text", testid="2fa-prompt"))["text"]
            await step("click", testid="2fa-prompt-cancel")  # cancelled: nothing deleted
            await step("wait_selector", selector='[data-testid=privacy-error]:has-text("Not done")')
            assert _rows_naming(tmp_path, account) == before
            await step("click", testid="privacy-delete-confirm")
            await asyncio.to_thread(answer_second_factor_prompt, browser, user,
                                    totp.code_at(secret, enrolled + 1))
            await step("wait_selector", selector='[data-testid=account-deleted][data-wiped=true]')
            await step("screenshot", path=str(ARTIFACTS / "18-account-deleted.png"))

            left = _rows_naming(tmp_path, account)
            assert set(left) <= {"messages.sender_account_id"}, left
            archives = tmp_path / "relay" / "blobs" / "archives"
            assert not archives.exists() or list(archives.iterdir()) == []
            with pytest.raises(RelayError) as refused:
                await xavi.api.request("GET", f"/v1/usernames/{user}")
            assert refused.value.status == 404
            dump = await step("dump_store")
            assert dump["records"] == 0
            problems = real_problems((await step("problems"))["problems"])
            assert [p for p in problems if "status of 403" not in p] == []
        finally:
            await devices.close()

    asyncio.run(scenario())


async def _collect(client: Client, until: Any, timeout: float = 20.0,
                   settle: float = 0.0) -> list[ev.Event]:
    """Events ``client`` receives until ``until(events)`` holds, then ``settle`` seconds more."""
    seen: list[ev.Event] = []
    deadline = time.monotonic() + timeout
    while not until(seen):
        assert time.monotonic() < deadline, f"never got there: {seen}"
        seen += await client.receive()
        await asyncio.sleep(0.1)
    end = time.monotonic() + settle
    while time.monotonic() < end:
        seen += await client.receive()
        await asyncio.sleep(0.2)
    return seen


def _got_text(text: str) -> Any:
    return lambda seen: any(isinstance(e, ev.Message) and e.text == text for e in seen)


def test_receipts_and_typing_follow_the_dashboard_settings(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """With read receipts and typing off in the browser (this device's settings, kept in
    its store, as the SDK keeps them), reading and answering a message sends the SDK peer
    a delivery receipt but no read receipt and no typing, and the peer's typing is not
    shown; turned on again, both arrive and the peer's typing shows until it stops."""
    user = "zoe"
    step = browser.step(user)

    async def toggle(testid: str, on: bool) -> None:
        await step("click", testid="open-security")
        await step("click", testid=testid)
        saved = str(on).lower()
        await step("wait_selector", selector=f"[data-testid={testid}][data-saved={saved}]")
        await step("click", testid="close-page")

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            abe = await devices.register("abe")
            await sign_up(step, relay.url, user)
            await toggle("setting-read-receipts", False)
            await toggle("setting-typing", False)

            first = await abe.send_text(user, "are you there?")
            await step("wait_selector", selector="[data-testid=conversation]")
            await step("open_conversation", account=abe.account_id)  # read here
            await step("wait_message", text="are you there?", read="true")
            await abe.send_typing(user)  # not shown here: typing is off
            await step("send", text="reply without receipts")
            seen = await _collect(abe, _got_text("reply without receipts"), settle=3.0)
            # abe's delivery receipt came after the typing: that was processed, not shown
            await step("wait_message", text="reply without receipts", status="delivered")
            assert (await step("count", selector="[data-testid=typing]"))["count"] == 0
            receipts = [e for e in seen if isinstance(e, ev.Receipt)]
            assert ("delivery", (first,)) in [(r.kind, r.timestamps) for r in receipts]
            assert [r for r in receipts if r.kind == "read"] == []
            assert [e for e in seen if isinstance(e, ev.Typing)] == []

            await toggle("setting-read-receipts", True)
            await toggle("setting-typing", True)
            await step("open_conversation", account=abe.account_id)
            await abe.send_typing(user)
            await step("wait_selector", selector="[data-testid=typing]")
            await abe.send_typing(user, started=False)
            await step("wait_gone", testid="typing")
            second = await abe.send_text(user, "and now?")
            await step("wait_message", text="and now?", read="true")
            await step("send", text="reply with receipts")
            seen = await _collect(abe, lambda s: _got_text("reply with receipts")(s) and any(
                isinstance(e, ev.Receipt) and e.kind == "read" and second in e.timestamps
                for e in s))
            assert any(isinstance(e, ev.Typing) and e.started and e.sender == account_of(
                tmp_path, user) for e in seen)
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_refused_sealed_message_shows_on_the_security_page(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """An SDK contact seals a message under a sender certificate of another trust root:
    the browser drops it unread (nothing in the conversation), acknowledges it (the
    relay's queue for the browser is empty) and lists the refusal on the security page;
    a reload keeps it."""
    user = "zed"
    step = browser.step(user)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            abe = await devices.register("abe")
            await sign_up(step, relay.url, user)
            account = account_of(tmp_path, user)
            await step("chat", username="abe")
            await step("send", text="hello abe")  # carries the profile key: abe seals to zed
            await _collect(abe, _got_text("hello abe"))
            await abe.send_text(user, "sealed and fine")
            await step("wait_message", text="sealed and fine")
            # acknowledged (an ack may wait up to a second for a send to ride on)
            await asyncio.to_thread(wait_until, lambda: _queued(tmp_path, account) == 0,
                                    "the sealed message acknowledged")
            other = key_chain.load_or_create(tmp_path / "other-root.json")
            forged = other.issue(abe.account_id, abe.device_id,
                                 abe.store.get_identity_key_pair().public,
                                 int(time.time() * 1000) + 86_400_000)
            with abe.store.transaction():
                abe.store.set_secret("sender_certificate", forged.serialized)
            await abe.send_text(user, "under a forged root")

            await step("click", testid="open-security")
            shown = (await step("elements", testid="sealed-rejected"))["elements"]
            assert [s["data"]["error"] for s in shown] == ["invalid_certificate"]
            assert "sender certificate did not check out" in shown[0]["text"]
            await step("screenshot", path=str(ARTIFACTS / "19-sealed-refused.png"))
            await asyncio.to_thread(wait_until, lambda: _queued(tmp_path, account) == 0,
                                    "the refused envelope acknowledged")
            await step("click", testid="close-page")
            await step("wait_message", text="sealed and fine")
            texts = [m["text"] for m in (await step("messages"))["messages"]]
            assert "under a forged root" not in texts and "sealed and fine" in texts
            await step("reload")
            await step("unlock", password=PASSWORD)
            await step("click", testid="open-security")
            shown = (await step("elements", testid="sealed-rejected"))["elements"]
            assert [s["data"]["error"] for s in shown] == ["invalid_certificate"]
            problems = real_problems((await step("problems"))["problems"])
            assert [p for p in problems if "sealed envelope was refused" not in p] == []
        finally:
            await devices.close()

    asyncio.run(scenario())


def _queued(tmp_path: Path, account: str) -> int:
    return len(relay_queue(tmp_path / "relay" / "relay.db", account))


def test_recovering_an_account_with_a_second_factor_asks_for_the_code(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """An SDK account with TOTP on is recovered in a fresh browser by its recovery key:
    the relay wants a code before it releases the blob ("Recovering your account"), the
    page asks for it, refuses the code that enrolled (replayed), takes the next step's,
    and the browser joins the account as its next device with a working identity."""
    user = "tess-recovered"
    step = browser.step(user)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        tess = await devices.register("tess")
        uma = await devices.register("uma")
        try:
            await tess.send_text("uma", "before the loss")
            await wait_for_text(uma, "before the loss")
            key = await recovery.create_key(tess)
            enrolment = await account_security.begin_two_factor(tess)
            secret = base64.b32decode(enrolment.secret)
            enrolled = totp.step_of(int(time.time() * 1000))
            await account_security.confirm_two_factor(tess, totp.code_at(secret, enrolled))
            assert _two_factor_row(tmp_path, tess.account_id) == (1, enrolled, 0)

            await step("open", url=relay.url + "/")
            await step("click", testid="start-recover")
            await step("fill", testid="recover-key", text=key)
            await step("fill", testid="recover-password", text=PASSWORD)
            await step("fill", testid="recover-confirm", text=PASSWORD)
            await step("click", testid="recover-submit")
            asked = (await step("elements", testid="2fa-prompt"))["elements"]
            assert "Recovering your account needs a code" in asked[0]["text"]
            assert asked[0]["data"]["refused"] == "false"
            await step("fill", testid="2fa-prompt-code", text=totp.code_at(secret, enrolled))
            await step("click", testid="2fa-prompt-submit")
            await step("wait_selector", selector='[data-testid="2fa-prompt"][data-refused=true]')
            with relay_db(tmp_path) as db:
                assert db.execute("SELECT count(*) FROM devices WHERE account_id = ?",
                                  (tess.account_id,)).fetchone() == (1,)
            await step("fill", testid="2fa-prompt-code", text=totp.code_at(secret, enrolled + 1))
            await step("click", testid="2fa-prompt-submit")
            await step("wait_inbox")
            assert (await step("text", testid="me"))["text"] == "tess"
            assert _two_factor_row(tmp_path, tess.account_id) == (1, enrolled + 1, 0)
            with relay_db(tmp_path) as db:
                assert db.execute("SELECT device_id FROM devices WHERE account_id = ? "
                                  "ORDER BY device_id", (tess.account_id,)).fetchall() \
                    == [(1,), (2,)]
            await step("chat", username="uma")
            await step("send", text="back with the code")
            got = await wait_for_text(uma, "back with the code")
            assert got.author == tess.account_id
            problems = real_problems((await step("problems"))["problems"])
            assert [p for p in problems if "status of 403" not in p] == []
        finally:
            await devices.close()

    asyncio.run(scenario())
