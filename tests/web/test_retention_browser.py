"""The browser's retention settings on the privacy dashboard, in chromium, with Python
SDK devices: the disappearing-message default for conversations the browser starts
(the SDK's ``Client.set_default_expire_timer``), checked in what the SDK contact
receives; server history turned on from the browser (the SDK's ``history on``), checked
in the relay's database and on an SDK device of the same account."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from cipherpost.client import Client, history
from cipherpost.client import events as ev
from cipherpost.client.devices import request_link
from cipherpost.client.store.crypto import TEST_PARAMS

from ..client.conftest import Devices, ThreadedRelay
from .browsing import (
    PASSWORD,
    Browser,
    needs_browser,
    real_problems,
    sign_up,
)
from .test_linking_browser import logged

pytestmark = needs_browser

DEFAULT = "[data-testid=setting-default-timer]"
HISTORY = "[data-testid=privacy-history-setting]"


async def _until_text(client: Client, text: str, timeout: float = 30.0) -> list[ev.Event]:
    """Everything ``client`` receives up to and including the message ``text``."""
    seen: list[ev.Event] = []
    deadline = time.monotonic() + timeout
    while not any(isinstance(e, ev.Message) and e.text == text for e in seen):
        assert time.monotonic() < deadline, f"no message {text!r}: {seen}"
        seen += await client.receive()
        await asyncio.sleep(0.2)
    return seen


def test_the_disappearing_default_applies_to_conversations_the_browser_starts(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """With a default of one hour chosen on the dashboard (kept across a reload), the
    first message the browser sends to a new SDK contact comes after a timer update: the
    contact's conversation has the hour and the message expires; a conversation that had
    messages before keeps no timer."""
    user = "rosa"
    step = browser.step(user)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            old = await devices.register("olaf")
            new = await devices.register("nina")
            await sign_up(step, relay.url, user)
            await step("chat", username="olaf")
            await step("send", text="before the default")
            await _until_text(old, "before the default")

            await step("click", testid="open-security")
            await step("wait_selector", selector=f"{DEFAULT}[data-saved='0']")
            await step("select", testid="setting-default-timer", value="3600")
            await step("wait_selector", selector=f"{DEFAULT}[data-saved='3600']")
            await step("reload")
            await step("unlock", password=PASSWORD)
            await step("click", testid="open-security")
            await step("wait_selector", selector=f"{DEFAULT}[data-saved='3600']")
            await step("click", testid="close-page")

            await step("chat", username="nina")
            await step("send", text="hello with a timer")
            seen = await _until_text(new, "hello with a timer")
            rosa = next(e.author for e in seen if isinstance(e, ev.Message))
            timers = [e for e in seen if isinstance(e, ev.ExpireTimerChanged)]
            assert [(t.author, t.seconds) for t in timers] == [(rosa, 3600)]
            assert seen.index(timers[0]) < next(
                i for i, e in enumerate(seen) if isinstance(e, ev.Message))
            message = next(e for e in seen if isinstance(e, ev.Message))
            assert message.expire_timer == 3600
            assert new.store.conversation_timer(rosa)[0] == 3600
            chosen = "[data-testid=expire-timer] option[value='3600']:checked"
            assert (await step("count", selector=chosen))["count"] == 1

            # a second message: no second timer update
            await step("send", text="second with a timer")
            seen = await _until_text(new, "second with a timer")
            assert [e for e in seen if isinstance(e, ev.ExpireTimerChanged)] == []
            assert next(e for e in seen if isinstance(e, ev.Message)).expire_timer == 3600

            # the conversation that had messages keeps no timer
            await step("chat", username="olaf")
            await step("send", text="still without a timer")
            seen = await _until_text(old, "still without a timer")
            assert [e for e in seen if isinstance(e, ev.ExpireTimerChanged)] == []
            assert next(e for e in seen if isinstance(e, ev.Message)).expire_timer == 0
            assert old.store.conversation_timer(rosa) == (0, 0)
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()

    asyncio.run(scenario())


def _stored(tmp_path: Path, account: str) -> int:
    """The history entries (not tombstones) the relay holds for ``account``."""
    with sqlite3.connect(tmp_path / "relay" / "relay.db") as db:
        row = db.execute("SELECT count(*) FROM history WHERE account_id = ? AND blob IS NOT NULL",
                         (account,)).fetchone()
    return int(row[0])


def test_server_history_turned_on_in_the_browser_reaches_the_sdk_device(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """A browser account without server history and its linked SDK device: the relay
    stores nothing. Turned on from the dashboard, the browser uploads what it holds
    (opened with the keys the SDK device received), the SDK device records what it
    receives while the browser is locked, and deleting the stored history turns it off on
    both again."""
    user = "hugo"
    step = browser.step(user)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            ida = await devices.register("ida")
            await sign_up(step, relay.url, user)
            await step("click", testid="open-devices")
            pending = await request_link(relay.url)
            await step("fill", testid="link-code", text=pending.uri)
            await step("click", testid="link-submit")
            await step("wait_selector", selector='[data-testid=link-state]:has-text("Sent")')
            laptop = await pending.complete(tmp_path / "hugo-laptop.db", passphrase="correct horse",
                                            device_name="laptop", argon2=TEST_PARAMS,
                                            options=devices.options, timeout=30)
            devices.clients.append(laptop)
            account = laptop.account_id
            await step("click", testid="close-page")
            await step("chat", username="ida")
            await step("send", text="before history")
            await _until_text(ida, "before history")
            await laptop.receive()
            assert not history.enabled(laptop.store)
            assert _stored(tmp_path, account) == 0

            await step("click", testid="open-security")
            await step("wait_selector", selector=f"{HISTORY}[data-on=false]")
            await step("click", testid="privacy-history-on")
            await step("wait_selector", selector=f"{HISTORY}[data-on=true]")
            await step("wait_selector", selector="[data-testid=privacy-history][data-entries='1']")
            assert _stored(tmp_path, account) == 1
            seen: list[ev.Event] = []
            deadline = time.monotonic() + 20
            while not any(isinstance(e, ev.ServerHistoryChanged) for e in seen):
                assert time.monotonic() < deadline, f"the SDK device was not told: {seen}"
                seen += await laptop.receive()
                await asyncio.sleep(0.2)
            assert history.enabled(laptop.store)
            assert await logged(laptop) == ["before history"]

            # the browser is locked: what arrives now is recorded by the SDK device alone
            await step("reload")
            await ida.send_text(account, "while the browser sleeps")
            await _until_text(laptop, "while the browser sleeps")
            assert _stored(tmp_path, account) == 2
            assert await logged(laptop) == ["before history", "while the browser sleeps"]

            await step("unlock", password=PASSWORD)
            await step("click", testid="open-security")
            await step("click", testid="privacy-delete-history")
            await step("click", testid="privacy-delete-history")
            await step("wait_selector", selector=f"{HISTORY}[data-on=false]")
            seen = []
            deadline = time.monotonic() + 20
            while history.enabled(laptop.store):
                assert time.monotonic() < deadline, "the SDK device kept server history on"
                seen += await laptop.receive()
                await asyncio.sleep(0.2)
            assert _stored(tmp_path, account) == 0
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()

    asyncio.run(scenario())
