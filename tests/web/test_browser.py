"""The browser client in a real browser: Debian's chromium, headless, driven through
playwright-core (web/test/e2e/driver.ts), against a relay on 127.0.0.1 that serves the
built app at ``/``, chatting with a Python SDK user both ways; a reload keeps the account
and the conversation behind the password. Screenshots of the main screens and the
timings go to build/web/.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from cipherpost.client import Client, events

from ..client.conftest import Devices, ThreadedRelay

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
ARTIFACTS = ROOT / "build" / "web"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
PASSWORD = "a long browser password"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() or not (WEB / "node_modules" / "playwright-core").is_dir()
    or shutil.which("node") is None,
    reason="needs /usr/bin/chromium and web/node_modules (make test installs both)")


@pytest.fixture(scope="module")
def built() -> None:
    """Build web/dist (a second or two), so the relay serves the current sources."""
    subprocess.run(["npm", "run", "--silent", "build"], cwd=WEB, check=True, timeout=180,
                   capture_output=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)


class Browser:
    """The driver process: one JSON command in, one JSON answer out."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["node", "--import", "tsx", "test/e2e/driver.ts"], cwd=WEB, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "CHROMIUM": str(CHROMIUM)})
        assert self._read().get("ready"), "the browser driver did not start"

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            stderr = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"the browser driver stopped: {stderr[-2000:]}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def do(self, cmd: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        if "error" in answer:
            raise AssertionError(f"browser {cmd}: {answer['error']}")
        return answer

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.do("close")
            self.proc.wait(timeout=20)
        except Exception:
            self.proc.kill()
            self.proc.wait(timeout=10)


async def wait_for_text(client: Client, text: str, timeout: float = 30) -> events.Message:
    """Receive over HTTP until a message with ``text`` arrives."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in await client.receive():
            if isinstance(event, events.Message) and event.text == text:
                return event
        await asyncio.sleep(0.2)
    raise AssertionError(f"no message {text!r} within {timeout} s")


def test_browser_user_chats_with_an_sdk_user_and_a_reload_keeps_everything(
        tmp_path: Path, built: None) -> None:
    (tmp_path / "relay").mkdir()
    relay = ThreadedRelay(tmp_path / "relay")
    relay.start()
    browser = Browser()
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
        browser.close()
        relay.stop()
        (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
