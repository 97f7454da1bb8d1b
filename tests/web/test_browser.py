"""The browser client in a real browser: Debian's chromium, headless, driven through
playwright-core (web/test/e2e/driver.ts), against a relay on 127.0.0.1 that serves the
built app at ``/``, chatting with a Python SDK user both ways; a reload keeps the account
and the conversation behind the password. Screenshots of the main screens and the
timings go to build/web/.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import http.server
import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cipherpost.client import Client, RelayError, events
from cipherpost.client.devices import request_link
from cipherpost.client.store.crypto import TEST_PARAMS

from ..client.conftest import Devices, ThreadedRelay
from .browsing import (
    ARTIFACTS,
    CHROMIUM,
    PASSWORD,
    ROOT,
    WEB,
    Browser,
    browser,
    build_hash,
    built,
    needs_browser,
    real_problems,
    relay,
    sign_up,
    sign_up_and_write,
    wait_for_event,
    wait_for_text,
)

# The browser modules import these from here (tests/web/browsing.py holds them; the
# fixtures are in tests/web/conftest.py too, so a new module needs no import for them).
__all__ = ["ARTIFACTS", "CHROMIUM", "PASSWORD", "ROOT", "WEB", "Browser", "browser", "build_hash",
           "built", "real_problems", "relay", "wait_for_event", "wait_for_text"]

pytestmark = needs_browser


def test_browser_user_chats_with_an_sdk_user_and_a_reload_keeps_everything(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    timings: dict[str, int] = {}

    async def step(cmd: str, **args: Any) -> dict[str, Any]:
        return await asyncio.to_thread(browser.do, cmd, **args)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        bob = await devices.register("bob")
        try:
            opened = await step("open", url=relay.url + "/")
            csp = opened["csp"] or ""
            assert "script-src 'self' 'wasm-unsafe-eval'" in csp and "default-src 'none'" in csp
            assert "unsafe-inline" not in csp

            signed_up = await step("signup", username="alice", password=PASSWORD,
                                   screenshot=str(ARTIFACTS / "1-signup.png"))
            timings["signup_to_online_inbox_ms"] = signed_up["ms"]
            await step("screenshot", path=str(ARTIFACTS / "2-inbox.png"))

            # browser -> Python, then the delivery receipt back
            await step("chat", username="bob")
            await step("send", text="hello from the browser")
            received = await wait_for_text(bob, "hello from the browser")
            alice_id = received.author
            assert not received.outgoing
            await step("wait_message", text="hello from the browser", status="delivered")

            # Python -> browser
            await bob.send_text(alice_id, "hi from python")
            await step("wait_message", text="hi from python", outgoing=False)
            await step("screenshot", path=str(ARTIFACTS / "3-chat.png"))

            # both sides compute the same 60 digits
            digits = (await step("safety"))["digits"]
            assert digits == bob.safety_number(alice_id).displayable
            assert len(digits) == 60
            await step("screenshot", path=str(ARTIFACTS / "4-safety-number.png"))
            await step("click", testid="mark-verified")
            await step("wait_text", testid="safety-state", text="Verified.")
            await step("click", testid="close-safety")

            # a reload: only the password opens the store again, and nothing was lost
            timings["reload_to_unlock_screen_ms"] = (await step("reload"))["ms"]
            await step("screenshot", path=str(ARTIFACTS / "5-unlock.png"))
            wrong = await step("unlock", password="not the password", expect_error=True)
            assert "Wrong password" in wrong["error_text"]
            unlocked = await step("unlock", password=PASSWORD)
            timings["unlock_to_inbox_ms"] = unlocked["ms"]
            timings["unlock_to_connected_ms"] = unlocked["online_ms"]
            await step("open_conversation", account=bob.account_id)
            shown = (await step("messages"))["messages"]
            assert [m["text"] for m in shown] == ["hello from the browser", "hi from python"]
            assert shown[0]["status"] == "delivered"

            # the sessions survived the reload, both ways
            await step("send", text="still here after a reload")
            await wait_for_text(bob, "still here after a reload")
            await bob.send_text(alice_id, "welcome back")
            await step("wait_message", text="welcome back", outgoing=False)
            await step("wait_message", text="still here after a reload", status="delivered")
            await step("screenshot", path=str(ARTIFACTS / "6-chat-after-reload.png"))
            assert (await step("problems"))["problems"] == []
        finally:
            await devices.close()

    try:
        asyncio.run(scenario())
    finally:
        (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")


def test_two_browser_users_unread_counts_read_receipts_and_sending_after_offline(
        relay: ThreadedRelay, browser: Browser) -> None:
    """Two people in two browser contexts: the list counts unread messages, opening a
    chat sends read receipts, and what one types offline is kept and sent by itself once
    the network is back (the WebSocket reconnects without a reload)."""
    carol, dave = "carol", "dave"
    for name in (carol, dave):
        browser.do("open", user=name, url=relay.url + "/")
        browser.do("signup", user=name, username=name, password=PASSWORD)

    browser.do("chat", user=carol, username=dave)
    browser.do("send", user=carol, text="hi dave")
    browser.do("wait_message", user=carol, text="hi dave", status="delivered")
    browser.do("send", user=carol, text="are you there?")
    listed = browser.do("conversations", user=dave)["conversations"]
    assert len(listed) == 1
    carol_id = listed[0]["account"]
    browser.do("wait_unread", user=dave, account=carol_id, count=2)
    browser.do("screenshot", user=dave, path=str(ARTIFACTS / "7-unread.png"))

    # dave reads: carol's two messages turn "read"; dave's count goes to 0
    browser.do("open_conversation", user=dave, account=carol_id)
    browser.do("wait_message", user=dave, text="are you there?", outgoing=False, read=True)
    browser.do("wait_unread", user=dave, account=carol_id, count=0)
    for text in ("hi dave", "are you there?"):
        browser.do("wait_message", user=carol, text=text, status="read")

    # carol has the chat open: dave's reply is read at once
    browser.do("send", user=dave, text="yes, here")
    browser.do("wait_message", user=carol, text="yes, here", outgoing=False, read=True)
    browser.do("wait_message", user=dave, text="yes, here", status="read")

    # offline: typed messages wait (kept in IndexedDB), then go out in order by themselves
    browser.do("offline", user=carol, offline=True)
    for text in ("typed offline 1", "typed offline 2"):  # the list renders after the click
        browser.do("send", user=carol, text=text)
        browser.do("wait_message", user=carol, text=text, status="sending")
    waiting = [m for m in browser.do("messages", user=carol)["messages"]
               if m["text"].startswith("typed offline")]
    assert [m["status"] for m in waiting] == ["sending", "sending"]
    browser.do("screenshot", user=carol, path=str(ARTIFACTS / "8-offline-queue.png"))
    time.sleep(1)  # nothing leaks out while offline
    at_dave = browser.do("messages", user=dave)["messages"]
    assert "typed offline 1" not in [m["text"] for m in at_dave]
    browser.do("offline", user=carol, offline=False)
    for text in ("typed offline 1", "typed offline 2"):
        browser.do("wait_message", user=dave, text=text, outgoing=False)
        browser.do("wait_message", user=carol, text=text, status="read")
    shown = [m["text"] for m in browser.do("messages", user=dave)["messages"]]
    assert shown == ["hi dave", "are you there?", "yes, here", "typed offline 1", "typed offline 2"]
    browser.do("screenshot", user=dave, path=str(ARTIFACTS / "9-two-browsers.png"))
    for name in (carol, dave):
        assert real_problems(browser.do("problems", user=name)["problems"]) == []


def test_a_second_tab_waits_until_the_user_moves_cipherpost_there(
        relay: ThreadedRelay, browser: Browser) -> None:
    """Two tabs on one store would each run the sessions from their own copy and roll
    each other's ratchets back: a second tab shows that Cipherpost is open elsewhere, and
    "Use it here" moves it (the first tab reloads and then shows the same notice)."""
    first, second = "uma", "uma-second-tab"
    browser.do("open", user=first, url=relay.url + "/")
    browser.do("signup", user=first, username=first, password=PASSWORD)
    browser.do("tab", user=second, of=first)
    browser.do("open", user=second, url=relay.url + "/")
    browser.do("wait_selector", user=second, selector="[data-testid=other-tab]")
    assert browser.do("count", user=first, selector="[data-testid=inbox]")["count"] == 1
    browser.do("click", user=second, testid="use-here")
    browser.do("unlock", user=second, password=PASSWORD)
    browser.do("wait_selector", user=first, selector="[data-testid=other-tab]")
    assert browser.do("count", user=first, selector="[data-testid=inbox]")["count"] == 0
    browser.do("wait_selector", user=second, selector="[data-testid=connection][data-online=true]")
    assert real_problems(browser.do("problems", user=first)["problems"]) == []


def test_read_receipts_and_key_change_banner_between_browser_and_sdk(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """Read receipts both ways with a Python user; when the Python user resets its
    identity key, the browser shows the banner and sends only after the user accepts."""
    user = "erin"
    step = browser.step(user)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        frank = await devices.register("frank")
        try:
            received = await sign_up_and_write(step, relay.url, "erin", frank, "frank", "read me")
            erin_id = received.author
            await step("wait_message", text="read me", status="delivered")
            await frank.mark_read(erin_id, [(erin_id, received.timestamp)])
            await step("wait_message", text="read me", status="read")

            # the browser has the chat open: frank's message is read there at once; the
            # redraw it causes keeps what erin was typing in the sidebar's forms
            await step("fill", testid="new-chat-username", text="half-typed")
            await step("click", testid="new-group")
            await step("fill", testid="new-group-title", text="a group in progress")
            await frank.send_text(erin_id, "and you read mine")
            receipt = await wait_for_event(
                frank, lambda e: isinstance(e, events.Receipt) and e.kind == "read")
            assert isinstance(receipt, events.Receipt) and receipt.sender == erin_id
            await step("wait_message", text="and you read mine", outgoing=False, read=True)
            for testid, typed in (("new-chat-username", "half-typed"),
                                  ("new-group-title", "a group in progress")):
                field = await step("value", testid=testid)
                assert (field["value"], field["visible"]) == (typed, True)
            await step("fill", testid="new-chat-username", text="")
            await step("click", testid="new-group")  # closes it again

            # a new identity key: the banner, sending blocked until accepted
            await frank.reset_identity()
            await frank.send_text(erin_id, "my key changed")
            await step("wait_message", text="my key changed", outgoing=False)
            await step("wait_text", testid="key-changed-text",
                       text="frank's safety number changed. Compare it before you send.")
            await step("screenshot", path=str(ARTIFACTS / "10-key-changed.png"))
            await step("send", text="blocked until accepted")
            await step("wait_message", text="blocked until accepted", status="failed")
            error = (await step("text", testid="send-error"))["text"]
            assert "safety number changed" in error
            await step("click", testid="review-key-change")
            digits = (await step("text", testid="safety-state"))["text"]
            assert digits == "Changed: not accepted yet."
            shown = (await step("safety_digits"))["digits"]
            assert shown == frank.safety_number(erin_id).displayable
            await step("click", testid="accept-change")
            await step("click", testid="close-safety")
            await step("wait_gone", testid="key-changed")
            await step("send", text="accepted the new key")
            await wait_for_text(frank, "accepted the new key")
            await step("wait_message", text="accepted the new key", status="delivered")
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_redraw_waits_for_the_click_under_way(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """Chromium drops the click of a press whose element left the document before the
    release, and every message redraws the page. A message that arrives while a button is
    held is drawn once it is let go, and the click goes through: the devices page opens.
    There, a link code being typed is kept through the next redraw."""
    step = browser.step("gina")

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        hugo = await devices.register("hugo")
        try:
            gina_id = (await sign_up_and_write(step, relay.url, "gina", hugo, "hugo",
                                               "hello hugo")).author
            await step("press", testid="open-devices")
            await hugo.send_text(gina_id, "sent while the button is down")
            await step("wait_selector", selector="#app[data-redraw-held]")
            shown = '[data-testid=conversation] .preview:text-is("sent while the button is down")'
            assert (await step("count", selector=shown))["count"] == 0
            await step("release")
            await step("wait_selector", selector="[data-testid=devices]")
            await step("wait_selector", selector=shown)
            assert (await step("count", selector="#app[data-redraw-held]"))["count"] == 0

            # a link code half typed on the devices page stays through the next redraw
            await step("fill", testid="link-code", text="cipherpost://link?half")
            await hugo.send_text(gina_id, "sent while a link code is typed")
            await step("wait_selector", selector='[data-testid=conversation] .preview:text-is('
                       '"sent while a link code is typed")')
            assert (await step("value", testid="link-code"))["value"] == "cipherpost://link?half"
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_devices_page_links_an_sdk_device_and_removes_it(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """The browser provisions a Python device by its link code (the new device joins
    the account with the identity key and the contacts); both get what is sent; the
    devices page lists it and removes it, and its token stops working."""
    user = "gina"
    step = browser.step(user)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        hank = await devices.register("hank")
        linked: Client | None = None
        try:
            await sign_up(step, relay.url, "gina")
            await step("chat", username="hank")
            await step("send", text="before linking")
            gina_id = (await wait_for_text(hank, "before linking")).author

            await step("click", testid="open-devices")
            shown = (await step("devices", count=1))["devices"]
            assert shown == [{"device": 1, "self": True, "name": "browser"}]
            pending = await request_link(relay.url)
            await step("fill", testid="link-code", text=pending.uri)
            await step("click", testid="link-submit")
            linked = await pending.complete(tmp_path / "gina-laptop.db", passphrase="correct horse",
                                            device_name="laptop", argon2=TEST_PARAMS,
                                            options=devices.options, timeout=30)
            assert linked.account_id == gina_id and linked.device_id == 2
            # the contact and its key came along
            assert linked.safety_number(hank.account_id).displayable \
                == hank.safety_number(gina_id).displayable
            await step("wait_text", testid="link-state",
                       text="Sent. The new device finishes joining by itself.")
            await step("click", testid="open-devices")
            shown = (await step("devices", count=2))["devices"]
            assert {d["device"]: d["name"] for d in shown} == {1: "browser", 2: "laptop"}
            await step("screenshot", path=str(ARTIFACTS / "11-devices.png"))

            # both devices of gina's account take part
            await step("open_conversation", account=hank.account_id)
            await step("send", text="from the browser, copied to the laptop")
            copy = await wait_for_text(linked, "from the browser, copied to the laptop")
            assert copy.outgoing and copy.conversation == hank.account_id
            await hank.send_text(gina_id, "to both of gina's devices")
            await wait_for_text(linked, "to both of gina's devices")
            await step("wait_message", text="to both of gina's devices", outgoing=False)

            # removed from the browser: the laptop's token is dead
            await step("click", testid="open-devices")
            await step("devices", count=2)
            await step("click", testid="remove-device")
            await step("click", testid="remove-device")  # "Really remove?"
            shown = (await step("devices", count=1))["devices"]
            assert [d["device"] for d in shown] == [1]
            with pytest.raises(RelayError) as refused:
                await linked.receive()
            assert refused.value.status == 401
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()
            if linked is not None:
                await linked.close()

    asyncio.run(scenario())


def test_the_build_is_reproducible_and_the_about_page_shows_its_hash(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """Two builds give the same bytes; the About page hashes the app.js the browser
    received (SRI-checked) and shows the same SHA-256, the SHA-256 app.js accepts
    strength.js under (the built file's), and the server it talks to."""
    first, second = build_hash(tmp_path / "one"), build_hash(tmp_path / "two")
    assert first == second and len(first) == 64
    for name in ("app.js", "app.css", "strength.js", "index.html", "build.json"):
        one, two = (tmp_path / "one" / name).read_bytes(), (tmp_path / "two" / name).read_bytes()
        assert one == two, name
    assert (WEB / "dist" / "app.js").read_bytes() == (tmp_path / "one" / "app.js").read_bytes()

    user = "ivan"
    browser.do("open", user=user, url=relay.url + "/")
    browser.do("signup", user=user, username=user, password=PASSWORD)
    browser.do("click", user=user, testid="open-about")
    browser.do("wait_text", user=user, testid="bundle-sha256", text=first)
    strength = json.loads((tmp_path / "one" / "build.json").read_text())["sha256"]["strength.js"]
    assert browser.do("text", user=user, testid="strength-sha256")["text"] == strength
    assert browser.do("text", user=user, testid="about-server")["text"] == relay.url
    browser.do("screenshot", user=user, path=str(ARTIFACTS / "12-about.png"))
    assert browser.do("problems", user=user)["problems"] == []


def test_readme_lists_the_bundle_hash(tmp_path: Path) -> None:
    """web/README.md names the SHA-256 of the bundle these sources build, and of its
    passphrase check strength.js (after a change to web/src or the lock file: `make
    web-hash` rewrites both)."""
    listed = (WEB / "README.md").read_text()
    hashed = build_hash(tmp_path / "out")
    assert f"Bundle SHA-256 (app.js): `{hashed}`" in listed, (
        f"web/README.md does not list the current bundle hash {hashed}: run `make web-hash`")
    strength = json.loads((tmp_path / "out" / "build.json").read_text())["sha256"]["strength.js"]
    assert f"Passphrase check SHA-256 (strength.js): `{strength}`" in listed, (
        f"web/README.md does not list strength.js's hash {strength}: run `make web-hash`")


def test_groups_between_a_browser_user_and_sdk_users(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """Groups in the Python SDK's wire format both ways: a group made in the browser
    (signed change, sender keys over 1:1 sessions, sender-key ciphertexts) reaches two
    Python members, and a group a Python user made reaches the browser, which answers."""
    user = "kim"
    step = browser.step(user)

    def group_text(text: str, conversation: str) -> Callable[[object], bool]:
        return lambda e: isinstance(e, events.Message) and e.text == text \
            and e.conversation == conversation

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        leo, mia = await devices.register("leo"), await devices.register("mia")
        try:
            await sign_up(step, relay.url, user)

            # made in the browser
            made = (await step("create_group", title="trio", members="leo, mia"))["conversation"]
            assert made.startswith("group:")
            for member in (leo, mia):
                updated = await wait_for_event(
                    member, lambda e: isinstance(e, events.GroupUpdated) and e.title == "trio")
                assert isinstance(updated, events.GroupUpdated)
                assert "group:" + updated.group_id.hex() == made and len(updated.members) == 3
            await step("send", text="hello group from the browser")
            for member in (leo, mia):
                await wait_for_event(member, group_text("hello group from the browser", made))
            await step("wait_message", text="hello group from the browser", status="delivered")
            await leo.send_group_text(bytes.fromhex(made[6:]), "hi from leo")
            await step("wait_message", text="hi from leo", outgoing=False)
            shown = (await step("messages"))["messages"]
            assert [(m["text"], m["author"]) for m in shown] == [
                ("hello group from the browser", None), ("hi from leo", "leo")]
            await wait_for_event(mia, group_text("hi from leo", made))
            await step("screenshot", path=str(ARTIFACTS / "13-group.png"))

            # made in Python: the browser is added, reads and answers
            theirs = await mia.create_group("from python", ["leo", "kim"])
            conversation = "group:" + theirs.id.hex()
            await mia.send_group_text(theirs.id, "welcome to mia's group")
            await step("wait_unread", account=conversation, count=1)
            await step("open_conversation", account=conversation)
            await step("wait_message", text="welcome to mia's group", outgoing=False)
            assert (await step("text", testid="chat-title"))["text"] == "from python"
            await step("send", text="thanks, mia")
            await wait_for_event(mia, group_text("thanks, mia", conversation))
            await wait_for_event(leo, group_text("thanks, mia", conversation))
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_attachments_between_a_browser_user_and_an_sdk_user(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """Files both ways in the SDK's attachment format (Padme, AES-CBC, HMAC, digest): the
    browser encrypts and uploads, Python downloads and checks; Python sends, the
    browser downloads, checks and decrypts the same bytes."""
    user = "nora"
    from_browser = os.urandom(300_000)  # more than one of the SDK's 256 KiB chunks
    from_python = os.urandom(70_001)

    step = browser.step(user)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        omar = await devices.register("omar")
        try:
            await sign_up(step, relay.url, user)
            await step("chat", username="omar")
            await step("attach", name="photo.bin", mime="application/octet-stream",
                       data=base64.b64encode(from_browser).decode())
            got = await wait_for_event(omar, lambda e: isinstance(e, events.Message)
                                       and len(e.attachments) == 1)
            assert isinstance(got, events.Message)
            pointer = got.attachments[0]
            assert (pointer.file_name, pointer.size) == ("photo.bin", len(from_browser))
            assert await omar.download(pointer) == from_browser

            sent = await omar.upload_attachment(from_python, file_name="notes.txt",
                                                content_type="text/plain")
            await omar.send_text(got.author, "the notes", attachments=[sent])
            await step("wait_message", text="the notes", outgoing=False)
            fetched = await step("download", name="notes.txt")
            assert fetched["sha256"] == hashlib.sha256(from_python).hexdigest()
            assert fetched["filename"] == "notes.txt"
            await step("screenshot", path=str(ARTIFACTS / "14-attachments.png"))
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_disappearing_messages_between_a_browser_user_and_an_sdk_user(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """The timer set in the browser reaches Python (expire_timer_update, versioned) and
    rides on every message; messages go 10 s after reading (incoming) or sending
    (outgoing), and a timer turned off in Python is off in the browser."""
    user = "pia"
    step = browser.step(user)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        quinn = await devices.register("quinn")
        try:
            await sign_up(step, relay.url, user)
            await step("chat", username="quinn")
            await step("send", text="before the timer")
            pia_id = (await wait_for_text(quinn, "before the timer")).author

            await step("select", testid="expire-timer", value="10")
            await step("wait_text", testid="timer-notice",
                       text="Disappearing messages: 10 seconds after reading.")
            changed = await wait_for_event(
                quinn, lambda e: isinstance(e, events.ExpireTimerChanged))
            assert changed == events.ExpireTimerChanged(pia_id, pia_id, 10)
            await step("send", text="vanishing from the browser")
            mine = await wait_for_text(quinn, "vanishing from the browser")
            assert mine.expire_timer == 10
            await quinn.send_text(pia_id, "vanishing from python")
            await step("wait_message", text="vanishing from python", outgoing=False, read=True)
            await step("screenshot", path=str(ARTIFACTS / "15-disappearing.png"))
            for text in ("vanishing from the browser", "vanishing from python"):
                await step("wait_message_gone", text=text, timeout=25_000)
            shown = [m["text"] for m in (await step("messages"))["messages"]]
            assert shown == ["before the timer"]

            await quinn.set_expire_timer(pia_id, 0)
            await step("wait_gone", testid="timer-notice")
            await quinn.send_text(pia_id, "this one stays")
            await step("wait_message", text="this one stays", outgoing=False)
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()

    asyncio.run(scenario())


class StaticHost:
    """A copy of web/dist on a plain static server of its own origin (no CSP)."""

    def __init__(self, directory: Path) -> None:
        shutil.copytree(WEB / "dist", directory)
        handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                    directory=str(directory))
        handler.log_message = lambda *args: None  # type: ignore[method-assign]
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_separately_hosted_client_points_at_a_relay_that_allows_its_origin(
        tmp_path: Path, browser: Browser) -> None:
    """The static files served from another origin, opened with ?server=: sign-up,
    chat and the WebSocket go to that relay (its web_origins allows the origin)."""
    host = StaticHost(tmp_path / "static")
    (tmp_path / "relay").mkdir()
    relay = ThreadedRelay(tmp_path / "relay", web_origins=(host.origin,))
    relay.start()
    user = "rosa"
    step = browser.step(user)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        sam = await devices.register("sam")
        try:
            opened = await step("open", url=f"{host.origin}/?server={relay.url}")
            assert opened["csp"] is None  # not the relay's page
            await step("signup", username=user, password=PASSWORD)
            await step("chat", username="sam")
            await step("send", text="from a copy hosted elsewhere")
            rosa_id = (await wait_for_text(sam, "from a copy hosted elsewhere")).author
            await sam.send_text(rosa_id, "over the relay's WebSocket")
            await step("wait_message", text="over the relay's WebSocket", outgoing=False)
            await step("click", testid="open-about")
            assert (await step("text", testid="about-server"))["text"] == relay.url
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()

    try:
        asyncio.run(scenario())
    finally:
        relay.stop()
        host.stop()


def test_a_relay_without_the_origin_refuses_the_separate_copy(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    """CORS is opt-in: the default relay sends no Access-Control-Allow-Origin, so a page
    on another origin cannot read its answers; a malformed origin is refused at start."""
    request = urllib.request.Request(relay.url + "/v1/usernames/nobody", method="OPTIONS",
                                     headers={"Origin": "http://127.0.0.1:1",
                                              "Access-Control-Request-Method": "GET"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            headers = answer.headers
    except urllib.error.HTTPError as refused:
        headers = refused.headers
    assert headers.get("access-control-allow-origin") is None
    with pytest.raises(ValueError, match="not an origin"):
        ThreadedRelay(tmp_path / "other", web_origins=("https://*.example",))


def test_a_browser_linked_to_an_sdk_account_gets_its_conversations(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """This browser as a new device of a Python account: it shows a link code, the
    Python device provisions it (identity key, contacts, the one-time archive of the
    conversations), the browser replays the archive and takes part from then on."""
    user = "uma-browser"
    step = browser.step(user)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        uma, vic = await devices.register("uma"), await devices.register("vic")
        try:
            await uma.send_text("vic", "one from uma")
            await wait_for_text(vic, "one from uma")
            await vic.send_text(uma.account_id, "reply from vic")
            await wait_for_text(uma, "reply from vic")

            await step("open", url=relay.url + "/")
            await step("click", testid="start-link")
            await step("fill", testid="link-password", text=PASSWORD)
            await step("fill", testid="link-confirm", text=PASSWORD)
            await step("click", testid="link-start")
            uri = (await step("text", testid="link-uri"))["text"]
            assert uri.startswith("cipherpost://link?")
            await step("screenshot", path=str(ARTIFACTS / "16-link-code.png"))
            await step("watch_progress")
            await uma.provision(uri)
            await step("wait_inbox")
            # the progress indicator counted the archive's two messages
            assert (await step("progress_seen"))["seen"][-1] == "2 / 2"
            assert (await step("text", testid="me"))["text"] == "uma"
            await step("open_conversation", account=vic.account_id)
            shown = (await step("messages"))["messages"]
            assert [(m["text"], m["outgoing"]) for m in shown] == [
                ("one from uma", "true"), ("reply from vic", "false")]
            assert (await step("text", testid="chat-title"))["text"] == "vic"
            await step("screenshot", path=str(ARTIFACTS / "17-linked-history.png"))

            # from now on the browser is one of uma's devices
            await vic.send_text(uma.account_id, "to all of uma's devices")
            await step("wait_message", text="to all of uma's devices", outgoing=False)
            await wait_for_text(uma, "to all of uma's devices")
            await step("send", text="from uma's new browser")
            await wait_for_text(vic, "from uma's new browser")
            copy = await wait_for_text(uma, "from uma's new browser")
            assert copy.outgoing
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()

    asyncio.run(scenario())
