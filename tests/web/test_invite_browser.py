"""The browser client on a relay that registers by invitation: signing up without a code
shows the relay's refusal; with a code from `cipherpost-admin invites create` it works."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cipherpost.server.admin_cli import cli as admin_cli

from ..client.conftest import ThreadedRelay
from .browsing import (
    PASSWORD,
    Browser,
    needs_browser,
)

pytestmark = needs_browser


@pytest.fixture
def invite_relay(tmp_path: Path) -> Iterator[ThreadedRelay]:
    (tmp_path / "relay").mkdir()
    server = ThreadedRelay(tmp_path / "relay", registration="invite")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _admin(relay: ThreadedRelay, *args: str, token: str = "") -> dict[str, object]:
    result = CliRunner().invoke(admin_cli, ["--json", *args], env={
        "CIPHERPOST_DATABASE_URL": relay.settings.database_url,
        "CIPHERPOST_ADMIN_TOKEN": token})
    assert result.exit_code == 0, result.output
    loaded: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return loaded


def test_browser_signs_up_with_an_invite(invite_relay: ThreadedRelay,
                                         browser: Browser) -> None:
    token = str(_admin(invite_relay, "operators", "bootstrap", "root")["token"])
    codes = _admin(invite_relay, "invites", "create", token=token)["codes"]
    assert isinstance(codes, list)
    browser.do("open", user="ivy", url=invite_relay.url)
    refused = browser.do("signup", user="ivy", username="ivy", password=PASSWORD,
                         expect_error=True)
    assert "invitation" in refused["error_text"]
    browser.do("open", user="ivy", url=invite_relay.url)
    browser.do("signup", user="ivy", username="ivy", password=PASSWORD, invite=codes[0])
    assert _admin(invite_relay, "invites", "list", token=token)["used"] == 1
