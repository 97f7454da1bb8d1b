"""The security page checks a recovery passphrase with zxcvbn as the SDK does, in
chromium (web/src/app/passphrase_rating.ts, web/src/app/strength.ts, web/src/strength/):

* strength.js is not loaded until a passphrase is chosen, then once, as a same-origin
  module script under the SHA-256 SRI value app.js carries, with no CSP or Trusted
  Types complaint;
* weak passphrases (zxcvbn finds them in 10^5..10^7 guesses, one only because it holds
  the username) are refused with zxcvbn's warning and suggestions shown, and nothing
  reaches the relay; a strong one is set;
* a strength.js whose bytes are not the built ones does not run: the page refuses to set
  a passphrase and says the check could not be loaded, never taking it unchecked.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..client.conftest import ThreadedRelay
from .browsing import (
    ARTIFACTS,
    PASSWORD,
    WEB,
    Browser,
    account_of,
    needs_browser,
    real_problems,
    relay_db,
)

pytestmark = needs_browser

#: Not a word zxcvbn knows: a passphrase built on it is weak only as the username.
USER = "vorbulax"
WEAK = ("Password123!Password123!", "password password password", "vorbulax2026!")
STRONG = "orbit walnut pencil tundra"
STRENGTH_SCRIPT = 'script[type=module][src$="/strength.js"][integrity^="sha256-"]'
PASSPHRASE_SET = '[data-testid=recovery-state]:has-text("passphrase is set")'
ADVICE = "[data-testid=recovery-passphrase-advice] li"
REFUSED_WEAK = '[data-testid=recovery-error]:has-text("too easy to guess")'
REFUSED_UNCHECKED = '[data-testid=recovery-error]:has-text("strength check could not be loaded")'


def _passphrases(tmp_path: Path, account: str) -> int:
    with relay_db(tmp_path) as db:
        row = db.execute("SELECT count(*) FROM recovery_passphrase WHERE account_id = ?",
                         (account,)).fetchone()
    return int(row[0])


def _set_passphrase(browser: Browser, passphrase: str) -> None:
    browser.do("fill", user=USER, testid="recovery-passphrase-new", text=passphrase)
    browser.do("fill", user=USER, testid="recovery-passphrase-again", text=passphrase)
    browser.do("click", user=USER, testid="recovery-passphrase-save")


def _open_security_page(browser: Browser, relay: ThreadedRelay) -> None:
    browser.do("open", user=USER, url=relay.url + "/")
    browser.do("signup", user=USER, username=USER, password=PASSWORD)
    browser.do("click", user=USER, testid="open-security")
    browser.do("wait_selector", user=USER, selector="[data-testid=recovery-passphrase-new]")


def test_the_security_page_refuses_a_weak_recovery_passphrase_with_zxcvbns_advice(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    _open_security_page(browser, relay)
    account = account_of(tmp_path, USER)
    assert browser.do("count", user=USER, selector="script[src$='/strength.js']")["count"] == 0, \
        "strength.js is loaded only when a passphrase is chosen"

    for weak in WEAK:
        _set_passphrase(browser, weak)
        browser.do("wait_selector", user=USER, selector=REFUSED_WEAK)
        advice = [e["text"] for e in browser.do("elements", user=USER, selector=ADVICE)["elements"]]
        assert advice and all(advice), (weak, advice)
        if weak != "vorbulax2026!":
            assert any("Repeated" in line for line in advice), (weak, advice)
        assert _passphrases(tmp_path, account) == 0, weak
    browser.do("screenshot", user=USER, path=str(ARTIFACTS / "40-weak-passphrase.png"))

    # one script, with the SRI value app.js carries: the built file's SHA-256
    assert browser.do("count", user=USER, selector=STRENGTH_SCRIPT)["count"] == 1
    built = json.loads((WEB / "dist" / "build.json").read_text())["sha256"]["strength.js"]
    browser.do("click", user=USER, testid="open-about")
    assert browser.do("text", user=USER, testid="strength-sha256")["text"] == built
    browser.do("click", user=USER, testid="open-security")

    _set_passphrase(browser, STRONG)
    browser.do("wait_selector", user=USER, selector=PASSPHRASE_SET)
    assert browser.do("count", user=USER, selector=ADVICE)["count"] == 0
    assert browser.do("text", user=USER, testid="recovery-error")["text"] == ""
    assert _passphrases(tmp_path, account) == 1
    assert real_problems(browser.do("problems", user=USER)["problems"]) == []


@pytest.fixture
def tampered_relay(tmp_path: Path, built: None) -> Iterator[ThreadedRelay]:
    """A relay serving a copy of web/dist whose strength.js has one byte more."""
    dist = tmp_path / "dist"
    shutil.copytree(WEB / "dist", dist)
    with (dist / "strength.js").open("a") as script:
        script.write("\n")
    (tmp_path / "relay").mkdir()
    server = ThreadedRelay(tmp_path / "relay", web_dir=str(dist))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_no_passphrase_is_set_when_strength_js_is_not_the_built_one(
        tmp_path: Path, tampered_relay: ThreadedRelay, browser: Browser) -> None:
    _open_security_page(browser, tampered_relay)
    account = account_of(tmp_path, USER)
    _set_passphrase(browser, STRONG)
    browser.do("wait_selector", user=USER, selector=REFUSED_UNCHECKED)
    assert _passphrases(tmp_path, account) == 0
    assert browser.do("count", user=USER, selector="script[src$='/strength.js']")["count"] == 0
    # chromium refused the file for its digest; nothing else went wrong
    problems = real_problems(browser.do("problems", user=USER)["problems"])
    assert problems and all("integrity" in p for p in problems), problems
    # and again: still refused, never taken unchecked
    _set_passphrase(browser, STRONG)  # the submit clears the error before it tries again
    browser.do("wait_selector", user=USER, selector=REFUSED_UNCHECKED)
    assert _passphrases(tmp_path, account) == 0


def test_a_key_file_is_not_written_under_a_weak_passphrase(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """The Devices page's key file export takes the CLI's check of a new export
    passphrase (the file holds the identity key, open to offline guessing)."""
    _open_security_page(browser, relay)
    browser.do("click", user=USER, testid="recovery-key-new")
    browser.do("click", user=USER, testid="recovery-key-saved")
    browser.do("click", user=USER, testid="recovery-key-save")
    browser.do("wait_gone", user=USER, testid="recovery-key-text")
    browser.do("click", user=USER, testid="open-devices")
    for passphrase in ("vorbulax2026!", "Password123!Password123!"):
        browser.do("fill", user=USER, testid="keyfile-export-passphrase", text=passphrase)
        browser.do("fill", user=USER, testid="keyfile-export-confirm", text=passphrase)
        browser.do("click", user=USER, testid="keyfile-export")
        browser.do("wait_selector", user=USER, selector='[data-testid=keyfile-export-error]'
                   ':has-text("key file passphrase is too easy to guess")')
    assert browser.do("text", user=USER, testid="keyfile-export-state")["text"] == ""
    browser.do("fill", user=USER, testid="keyfile-export-passphrase", text=STRONG)
    browser.do("fill", user=USER, testid="keyfile-export-confirm", text=STRONG)
    saved = browser.do("download_click", user=USER, testid="keyfile-export")
    assert saved["filename"].endswith(".cpexport")
    assert base64.b64decode(saved["base64"]).startswith(b"CPEXPORT")
    assert browser.do("text", user=USER, testid="keyfile-export-error")["text"] == ""
    assert real_problems(browser.do("problems", user=USER)["problems"]) == []
