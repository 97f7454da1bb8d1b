"""Registering on a relay that registers by invitation: `cipherpost-admin invites create`
makes the code, `cipherpost register --invite CODE` (the SDK's ``invite=``) spends it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cipherpost.server.admin_cli import cli as admin_cli

from .conftest import ThreadedRelay
from .test_cli import ENV, REGISTER, invoke


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


def test_register_with_an_invite(tmp_path: Path, invite_relay: ThreadedRelay) -> None:
    token = str(_admin(invite_relay, "operators", "bootstrap", "root")["token"])
    codes = _admin(invite_relay, "invites", "create", "--count", "1", token=token)["codes"]
    assert isinstance(codes, list)
    code, _, stderr = invoke(tmp_path / "a", *REGISTER, invite_relay.url)
    assert code == 5 and "invitation" in stderr
    code, stdout, _ = invoke(tmp_path / "b", "--json", *REGISTER, invite_relay.url,
                             "--invite", codes[0], "--username", "bea")
    assert code == 0, stdout
    assert json.loads(stdout)["username"] == "bea"
    code, _, stderr = invoke(tmp_path / "c", *REGISTER, invite_relay.url, "--invite",
                             codes[0], env={**ENV})
    assert code == 5 and "invite code" in stderr
    assert _admin(invite_relay, "invites", "list", token=token)["used"] == 1
    # The relay's own counters next to the database's (read from its /metrics).
    shown = _admin(invite_relay, "metrics", "--url", f"{invite_relay.url}/metrics",
                   token=token)
    assert shown["database"]["accounts"] == 1  # type: ignore[index]
    assert shown["relay"]["cipherpost_http_requests_total"] >= 3  # type: ignore[index]
