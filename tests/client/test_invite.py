"""The SDK and CLI against operators' actions: registering on a relay that registers by
invitation (`cipherpost-admin invites create` makes the code, `cipherpost register
--invite CODE`, the SDK's ``invite=``, spends it), and an account being suspended."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cipherpost.client import AccountSuspended, RelayError
from cipherpost.server.admin_cli import cli as admin_cli
from cipherpost.server.storage import admin
from cipherpost.server.storage.engine import Database

from .conftest import Devices, ThreadedRelay
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


def test_a_suspended_account_stops_listening(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        db = Database(relay.settings.database_url)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            listening = asyncio.ensure_future(_drain(alice))
            await asyncio.sleep(0.5)
            with db.writer.begin() as conn:
                admin.set_suspended(conn, alice.account_id, True, 1, "root")
            with pytest.raises(AccountSuspended):
                await asyncio.wait_for(listening, 15)
            with pytest.raises(RelayError) as refused:
                await bob.send_text("alice", "hello?")
            assert refused.value.code == "recipient_suspended"
        finally:
            db.dispose()
            await devices.close()

    asyncio.run(scenario())


async def _drain(client: object) -> None:
    async for _event in client.listen():  # type: ignore[attr-defined]
        pass
