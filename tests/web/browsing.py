"""What the browser tests share: the chromium driver (web/test/e2e/driver.ts), the bundle
build, the per-test fixtures, waiting for an SDK user's events, the relay's SQLite
database, and the set-up sequences several scenarios start with (sign-up, linking an
SDK device from the Devices page, enrolling a second factor).

tests/web/conftest.py registers the fixtures; the session-wide parts (one build and one
chromium per xdist worker) live there. test_browser.py re-exports the names the browser
modules import from it.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cipherpost.client import Client, events
from cipherpost.client.devices import request_link
from cipherpost.client.store.crypto import TEST_PARAMS
from cipherpost.server import totp

from ..client.conftest import Devices, ThreadedRelay, settle

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
ARTIFACTS = ROOT / "build" / "web"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
PASSWORD = "a long browser password"

#: Every browser module's ``pytestmark``.
needs_browser = pytest.mark.skipif(
    not CHROMIUM.exists() or not (WEB / "node_modules" / "playwright-core").is_dir()
    or shutil.which("node") is None,
    reason="needs /usr/bin/chromium and web/node_modules (make test installs both)")

T = TypeVar("T")
Step = Callable[..., Awaitable[dict[str, Any]]]


def _sources_digest() -> str:
    """SHA-256 over what the bundle is built from (paths and contents)."""
    digest = hashlib.sha256()
    files = [WEB / "build.mjs", WEB / "package-lock.json",
             *sorted((WEB / "src").rglob("*")), *sorted((WEB / "static").rglob("*"))]
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(WEB)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def build_bundle() -> None:
    """Build web/dist (a second or two) unless it was built from these sources, under a
    lock: the two xdist workers may both ask at once, and a second build rewriting dist/
    while the other worker's browser loads app.js failed its SRI check, and that page
    never came up."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with (ARTIFACTS / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = ARTIFACTS / ".built-from"
        digest = _sources_digest()
        if (WEB / "dist" / "app.js").is_file() and stamp.is_file() \
                and stamp.read_text() == digest:
            return
        subprocess.run(["npm", "run", "--silent", "build"], cwd=WEB, check=True, timeout=180,
                       capture_output=True)
        stamp.write_text(digest)


def build_hash(out: Path) -> str:
    """Build the bundle into ``out``; the SHA-256 of its app.js."""
    done = subprocess.run(["node", "build.mjs", "--hash", f"--out={out}"], cwd=WEB, check=True,
                          timeout=180, capture_output=True, text=True)
    return done.stdout.strip()


class Browser:
    """The driver process: one JSON command in, one JSON answer out. Commands from two
    threads (a scenario's step and an SDK callback's) take turns: the driver answers in
    order, and each answer goes to the thread that asked."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["node", "--import", "tsx", "test/e2e/driver.ts"], cwd=WEB, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "CHROMIUM": str(CHROMIUM)})
        self._turn = threading.Lock()
        self._unanswered = 0
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
        with self._turn:
            self._unanswered += 1
            self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
            self.proc.stdin.flush()
            answer = self._read()
            self._unanswered -= 1
        if "error" in answer:
            raise AssertionError(f"browser {cmd}: {answer['error']}")
        return answer

    def step(self, user: str) -> Step:
        """``await step(cmd, **args)``: a command as ``user``, off the event loop."""
        async def step(cmd: str, **args: Any) -> dict[str, Any]:
            return await asyncio.to_thread(self.do, cmd, user=user, **args)
        return step

    def reusable(self) -> bool:
        """Whether the next test can have this chromium: the driver runs and owes no
        answer (a test that stopped in the middle of a command leaves one behind)."""
        return self.proc.poll() is None and self._unanswered == 0 and not self._turn.locked()

    def reset(self) -> bool:
        """Close every user's browser context (pages, IndexedDB, console problems), so the
        next test starts from a browser that never saw its users. False when the driver
        could not do it (then close this one and start another)."""
        if not self.reusable():
            return False
        try:
            self.do("reset")
        except AssertionError as failed:
            if "unknown command reset" in str(failed):
                raise AssertionError(
                    "web/test/e2e/driver.ts lost its reset command: every browser test "
                    "would start a chromium of its own") from failed
            return False
        return True

    def close(self) -> None:
        try:
            if self.proc.poll() is None and not self._turn.locked():
                self.do("close")
            self.proc.wait(timeout=20)
        except Exception:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Chromium:
    """One driver (one chromium) per xdist worker, lent to one test at a time and reset
    after each; started again when a test left it unusable."""

    def __init__(self) -> None:
        self._driver: Browser | None = None

    def lend(self) -> Browser:
        if self._driver is None:
            self._driver = Browser()
        return self._driver

    def give_back(self) -> None:
        if self._driver is None:
            return
        try:
            reset = self._driver.reset()
        except AssertionError:
            self.close()
            raise
        if not reset:
            self.close()

    def close(self) -> None:
        if self._driver is not None:
            self._driver.close()
            self._driver = None


@pytest.fixture(scope="session")
def built() -> None:
    """web/dist built from the current sources, once per session and worker. Session
    scope also sets it up before a test's relay (pytest sets up the wider scopes first):
    a relay mounts the app only when dist/index.html exists as it starts, so on a clean
    clone a relay started before the build served no page at all."""
    build_bundle()


@pytest.fixture
def browser(built: None, _chromium: Chromium) -> Iterator[Browser]:
    """The worker's chromium with no users yet; each user is a browser context of its own."""
    driver = _chromium.lend()
    try:
        yield driver
    finally:
        _chromium.give_back()


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[ThreadedRelay]:
    """A relay of the test's own on SQLite, in tmp_path/relay (see relay_db)."""
    (tmp_path / "relay").mkdir()
    server = ThreadedRelay(tmp_path / "relay")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def real_problems(problems: list[str]) -> list[str]:
    """Console errors but the ones chromium logs by itself for requests made offline."""
    return [p for p in problems if "ERR_INTERNET_DISCONNECTED" not in p
            and "WebSocket connection to" not in p]


async def wait_for_event(client: Client, match: Callable[[object], bool],
                         timeout: float = 30) -> object:
    """Receive over HTTP until an event matches."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in await client.receive():
            if match(event):
                return event
        await asyncio.sleep(0.2)
    raise AssertionError(f"no matching event within {timeout} s")


async def wait_for_text(client: Client, text: str, timeout: float = 30) -> events.Message:
    """Receive over HTTP until a message with ``text`` arrives."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in await client.receive():
            if isinstance(event, events.Message) and event.text == text:
                return event
        await asyncio.sleep(0.2)
    raise AssertionError(f"no message {text!r} within {timeout} s")


def wait_until(check: Callable[[], T], what: str, timeout: float = 30) -> T:
    """Poll ``check`` (every 0.1 s) until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def relay_db(tmp_path: Path) -> sqlite3.Connection:
    """The database of the ``relay`` fixture's relay (use as ``with relay_db(...) as db``),
    once the relay has committed what it took (``conftest.settle``)."""
    settle(tmp_path / "relay" / "relay.db")
    return sqlite3.connect(tmp_path / "relay" / "relay.db")


def account_of(tmp_path: Path, username: str) -> str:
    """The account id the relay gave ``username``."""
    with relay_db(tmp_path) as db:
        row = db.execute("SELECT id FROM accounts WHERE username = ?", (username,)).fetchone()
    assert row is not None, username
    return str(row[0])


async def sign_up(step: Step, relay_url: str, username: str) -> None:
    """Open the relay's app and sign up as ``username`` (PASSWORD), up to the online inbox."""
    await step("open", url=relay_url + "/")
    await step("signup", username=username, password=PASSWORD)


async def sign_up_and_write(step: Step, relay_url: str, username: str, contact: Client,
                            contact_name: str, text: str) -> events.Message:
    """Sign up as ``username``, open a chat with ``contact_name`` and send ``text``: the
    message as the SDK user ``contact`` received it (its author: the browser's account)."""
    await sign_up(step, relay_url, username)
    await step("chat", username=contact_name)
    await step("send", text=text)
    return await wait_for_text(contact, text)


async def turn_server_history_on(step: Step) -> None:
    """From the inbox: the security page's server-history switch on, until it shows on
    (the page stays open)."""
    await step("click", testid="open-security")
    await step("click", testid="privacy-history-on")
    await step("wait_selector", selector="[data-testid=privacy-history-setting][data-on=true]")


async def link_sdk_device(step: Step, tmp_path: Path, relay: ThreadedRelay,
                          devices: Devices, name: str) -> Client:
    """An SDK device ``name`` linked to the browser user's account from the Devices page
    (left open); ``devices`` closes it."""
    await step("click", testid="open-devices")
    pending = await request_link(relay.url)
    await step("fill", testid="link-code", text=pending.uri)
    await step("click", testid="link-submit")
    linked = await pending.complete(tmp_path / f"{name}.db", passphrase="correct horse",
                                    device_name=name, argon2=TEST_PARAMS,
                                    options=devices.options, timeout=30)
    devices.clients.append(linked)
    return linked


def enrol_second_factor(browser: Browser, user: str) -> tuple[bytes, int, list[str]]:
    """Turn the second factor on from the security page: its secret, the step whose code
    confirmed it, and the recovery codes shown."""
    browser.do("click", user=user, testid="open-security")
    browser.do("click", user=user, testid="2fa-start")
    secret = base64.b32decode(browser.do("text", user=user, testid="2fa-secret")["text"])
    step = totp.step_of(int(time.time() * 1000))
    browser.do("fill", user=user, testid="2fa-code", text=totp.code_at(secret, step))
    browser.do("click", user=user, testid="2fa-confirm")
    shown = browser.do("elements", user=user, selector='[data-testid="2fa-recovery-codes"] li')
    codes = [c["text"] for c in shown["elements"]]
    browser.do("wait_selector", user=user, selector='[data-testid="2fa-state"][data-enabled=true]')
    return secret, step, codes


def answer_second_factor_prompt(browser: Browser, user: str, code: str) -> None:
    browser.do("fill", user=user, testid="2fa-prompt-code", text=code)
    browser.do("click", user=user, testid="2fa-prompt-submit")

