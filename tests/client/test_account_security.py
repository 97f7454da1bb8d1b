"""Account security from the SDK and the CLI: notices as events, the second factor on
linking, the privacy dashboard, re-registering with the recovery key, deleting the
account."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cipherpost.cli import cli
from cipherpost.client import ClientError, RelayError
from cipherpost.client import account_security as security
from cipherpost.client import events as ev
from cipherpost.client.recovery import create_key, restore
from cipherpost.client.store.crypto import TEST_PARAMS
from cipherpost.server import totp

from .conftest import Devices, ThreadedRelay, run

ENV = {"CIPHERPOST_PASSPHRASE": "a long local passphrase"}

#: Stores the CLI makes in process: cheap Argon2 parameters (tests/client/conftest.py).
pytestmark = pytest.mark.usefixtures("cheap_store_kdf")


def _code(secret: str, steps_ahead: int = 0) -> str:
    raw = base64.b32decode(secret + "=" * (-len(secret) % 8))
    return totp.code_at(raw, totp.step_of(int(time.time() * 1000)) + steps_ahead)


def test_notices_second_factor_and_dashboard(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            a1 = await devices.register("alice")
            a2 = await devices.link(a1, "alice laptop")
            notices = [e for e in await a1.receive() if isinstance(e, ev.AccountNotice)]
            assert [(n.kind, n.device_id, n.name, n.via) for n in notices] == [
                ("device_added", a2.device_id, "alice laptop", "link_code")]
            assert not [e for e in await a1.receive() if isinstance(e, ev.Unsupported)]

            enrolment = await security.begin_two_factor(a1)
            assert enrolment.secret not in repr(enrolment)
            codes = await security.confirm_two_factor(a1, _code(enrolment.secret))
            assert len(codes) == 10
            with pytest.raises(RelayError) as refused:
                await a1.create_link_code()
            assert refused.value.code == "second_factor_required"
            # The next step's code (inside the window; the current one is used up).
            with security.second_factor(a1.api, _code(enrolment.secret, 1)):
                assert await a1.create_link_code()
            assert "X-Second-Factor" not in a1.api.extra_headers
            with security.second_factor(a1.api, codes[0]):
                await a1.create_link_code()
            status = await security.two_factor_status(a1)
            assert status == {"enabled": True, "pending": False, "recovery_codes_left": 9}
            # The other device is told the second factor went on.
            told = [e for e in await a2.receive() if isinstance(e, ev.AccountNotice)]
            assert [(n.kind, n.device_id) for n in told] == [("two_factor_enabled", 1)]
            held = await security.privacy_dashboard(a2)
            assert [d["device_id"] for d in held["devices"]] == [1, a2.device_id]
            assert held["two_factor_enabled"] is True
            # The salt of the account's audit entries (review O3) and its registered
            # sealed-sender key are listed: the devices registered it at sign-up/link.
            assert held["audit_salt"] is True and held["access_key_day"] is not None
            assert held["this_device"]["read_receipts"] is True
            assert held["this_device"]["server_history"] is False
            exported = json.loads(await security.export_server_data(a2))
            assert exported["account_id"] == a1.account_id
        finally:
            await devices.close()

    run(scenario())


def test_reregister_with_the_recovery_key(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice = await devices.register("alice")
            key = await create_key(alice)
            old_identity = alice.store.get_identity_key_pair().public
            with pytest.raises(RelayError):
                await security.reregister(tmp_path / "thief.db", relay.url, "alice",
                                          recovery_key=_other_key(key),
                                          passphrase="p", argon2=TEST_PARAMS)
            assert not (tmp_path / "thief.db").exists()
            fresh = await security.reregister(tmp_path / "new.db", relay.url, "alice",
                                              recovery_key=key, passphrase="p",
                                              argon2=TEST_PARAMS)
            devices.clients.append(fresh)
            assert fresh.account_id == alice.account_id and fresh.device_id == 1
            assert fresh.store.get_identity_key_pair().public != old_identity
            with pytest.raises(RelayError):
                await alice.api.whoami()  # the old device is gone
        finally:
            await devices.close()

    run(scenario())


def _other_key(key: str) -> str:
    from cipherpost.client.recovery import format_key, new_key
    other = format_key(new_key())
    assert other != key
    return other


def invoke(home: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--home", str(home), *args], env=ENV,
                                catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_cli_2fa_privacy_export_delete(tmp_path: Path, relay: ThreadedRelay) -> None:
    home = tmp_path / "alice"
    assert invoke(home, "register", "--no-history", "--server", relay.url,
                  "--username", "alice")[0] == 0
    code, stdout, _ = invoke(home, "--json", "2fa", "enable")
    assert code == 0, stdout
    started = json.loads(stdout.splitlines()[-1])
    assert started["confirmed"] is False and started["uri"].startswith("otpauth://")
    code, stdout, _ = invoke(home, "--json", "2fa", "confirm", _code(started["secret"]))
    assert code == 0, stdout
    recovery_codes = json.loads(stdout)["recovery_codes"]
    code, stdout, _ = invoke(home, "2fa", "status")
    assert code == 0 and "on, 10 recovery codes left" in stdout
    code, stdout, _ = invoke(home, "privacy")
    assert code == 0 and "Devices the server knows" in stdout and "account_created" in stdout
    assert "audit-log salt" in stdout and "held (deleted with the account)" in stdout
    assert "invite code (SHA-256)" in stdout  # open registration: none held
    code, stdout, _ = invoke(home, "--json", "privacy")
    assert json.loads(stdout)["two_factor_enabled"] is True
    assert json.loads(stdout)["audit_salt"] is True
    assert json.loads(stdout)["invite_code"] is False
    target = tmp_path / "server-data.json"
    code, stdout, _ = invoke(home, "account", "export-server-data", str(target))
    assert code == 0 and json.loads(target.read_text())["username"] == "alice"
    # Linking a device needs the code too: --2fa (or CIPHERPOST_2FA) carries it.
    code, _, stderr = invoke(home, "devices", "link-code")
    assert code == 5 and "second_factor_required" in stderr
    code, stdout, _ = invoke(home, "--json", "--2fa", recovery_codes[1], "devices", "link-code")
    assert code == 0 and json.loads(stdout)["link_code"]
    code, stdout, _ = invoke(home, "2fa", "status")
    assert "on, 9 recovery codes left" in stdout
    # Without the code the account stays; with a recovery code it goes.
    code, _, stderr = invoke(home, "account", "delete", "--yes")
    assert code == 5 and "second_factor_required" in stderr
    code, stdout, _ = invoke(home, "--2fa", recovery_codes[0], "account", "delete", "--yes")
    assert code == 0, stdout
    assert not (home / "default" / "device.db").exists()
    assert invoke(tmp_path / "again", "register", "--no-history", "--server", relay.url,
                  "--username", "alice")[0] == 0


def test_restore_with_the_second_factor(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice = await devices.register("alice")
            key = await create_key(alice)
            enrolment = await security.begin_two_factor(alice)
            await security.confirm_two_factor(alice, _code(enrolment.secret))
            with pytest.raises(RelayError) as refused:
                await restore(tmp_path / "r1.db", relay.url, key, passphrase="p",
                              argon2=TEST_PARAMS)
            assert refused.value.code == "second_factor_required"
            assert not (tmp_path / "r1.db").exists()
            # One code opens the blob; the link code it comes with joins the device.
            restored = await restore(tmp_path / "r2.db", relay.url, key, passphrase="p",
                                     argon2=TEST_PARAMS, device_name="new phone",
                                     second_factor=_code(enrolment.secret, 1))
            devices.clients.append(restored)
            assert restored.account_id == alice.account_id
            told = [(n.kind, n.via) for n in await alice.receive()
                    if isinstance(n, ev.AccountNotice)]
            assert told == [("recovery", "recovery_key"), ("device_added", "link_code")]
        finally:
            await devices.close()

    run(scenario())


def test_cli_reregister(tmp_path: Path, relay: ThreadedRelay) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    code, stdout, _ = invoke(old, "--json", "register", "--no-history", "--server", relay.url,
                             "--username", "alice")
    assert code == 0, stdout
    lines = [json.loads(line) for line in stdout.splitlines()]
    account_id = lines[0]["account_id"]
    key = next(line["recovery_key"] for line in lines if "recovery_key" in line)
    code, _, stderr = invoke(new, "account", "reregister", "--server", relay.url,
                             "--username", "alice", "--no-history", "--recovery-key",
                             _other_key(key))
    assert code == 5 and "invalid_recovery" in stderr
    code, stdout, _ = invoke(new, "--json", "account", "reregister", "--server", relay.url,
                             "--username", "alice", "--no-history", "--recovery-key", key)
    assert code == 0, stdout
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert lines[0]["account_id"] == account_id and lines[0]["device_id"] == 1
    assert lines[1]["recovery_key"] != key
    assert invoke(old, "whoami")[0] == 5  # the old device was removed


def test_cli_turns_receipts_and_typing_off_and_keeps_it(tmp_path: Path,
                                                        relay: ThreadedRelay) -> None:
    """The dashboard lists receipts and typing as this device's settings (issue #9): the
    CLI changes them, and every later command (a new process, a new client) keeps them."""
    home = tmp_path / "alice"
    assert invoke(home, "register", "--no-history", "--server", relay.url,
                  "--username", "alice")[0] == 0
    code, stdout, _ = invoke(home, "--json", "settings")
    assert code == 0 and json.loads(stdout) == {
        "delivery-receipts": True, "read-receipts": True, "typing": True}
    for name in ("read-receipts", "typing"):
        assert invoke(home, "settings", name, "off")[0] == 0
    code, stdout, _ = invoke(home, "settings")
    assert code == 0 and "read-receipts: off" in stdout and "typing: off" in stdout
    assert "delivery-receipts: on" in stdout
    code, stdout, _ = invoke(home, "--json", "privacy")
    local = json.loads(stdout)["this_device"]
    assert (local["read_receipts"], local["typing_indicators"],
            local["delivery_receipts"]) == (False, False, True)
    assert invoke(home, "settings", "typing", "on")[0] == 0
    code, stdout, _ = invoke(home, "--json", "settings")
    assert json.loads(stdout)["typing"] is True
    assert invoke(home, "settings", "typing")[0] == 2  # on or off?
    assert invoke(home, "settings", "sound", "off")[0] == 2


def test_a_default_timer_for_conversations_this_device_starts(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    """The dashboard's disappearing-message default (issue #9): a conversation Alice
    starts gets her default timer before her first message; one that already has
    messages keeps none. From the CLI too."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice = await devices.register("alice")
            bob = await devices.register("bob")
            carol = await devices.register("carol")
            await carol.send_text("alice", "we talk already")
            await alice.receive()
            alice.set_default_expire_timer(3600)
            assert security.local_settings(alice)["disappearing_default"] == 3600
            await alice.send_text("bob", "hello")
            got = await bob.receive()
            assert [e.seconds for e in got if isinstance(e, ev.ExpireTimerChanged)] == [3600]
            assert [(e.text, e.expire_timer) for e in got if isinstance(e, ev.Message)] == \
                [("hello", 3600)]
            await alice.send_text("carol", "no timer here")
            got = await carol.receive()
            assert [(e.text, e.expire_timer) for e in got if isinstance(e, ev.Message)] == \
                [("no timer here", 0)]
            assert not any(isinstance(e, ev.ExpireTimerChanged) for e in got)
            with pytest.raises(ClientError):
                alice.set_default_expire_timer(-1)
        finally:
            await devices.close()

    run(scenario())
    home = tmp_path / "dora"
    assert invoke(home, "register", "--no-history", "--server", relay.url,
                  "--username", "dora")[0] == 0
    code, stdout, _ = invoke(home, "--json", "default-timer", "60")
    assert code == 0 and json.loads(stdout) == {"default_expire_timer": 60}
    code, stdout, _ = invoke(home, "--json", "privacy")
    assert json.loads(stdout)["this_device"]["disappearing_default"] == 60
    code, stdout, _ = invoke(home, "default-timer", "0")
    assert code == 0 and "disappearing messages off" in stdout
