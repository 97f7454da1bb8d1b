"""The `cipherpost` command: in-process through click's runner, and two users chatting
through a real server process with separate homes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from cipherpost.cli import cli
from cipherpost.client import Client
from cipherpost.client.client import HistoryItem

from ..server.process import ServerProcess
from .conftest import ThreadedRelay

ENV = {"CIPHERPOST_PASSPHRASE": "a long local passphrase"}

#: The commands run in process make their stores with cheap Argon2 parameters
#: (tests/client/conftest.py); those run as processes below keep the default cost.
pytestmark = pytest.mark.usefixtures("cheap_store_kdf")


#: Registering without server-stored history (the CLI asks when neither flag is given).
REGISTER = ("register", "--no-history", "--server")


def invoke(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(cli, ["--home", str(home), *args], env=env or ENV,
                           catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_register_send_receive_verify(tmp_path: Path, relay: ThreadedRelay) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    code, stdout, _ = invoke(alice, "--json", *REGISTER, relay.url,
                             "--username", "alice")
    assert code == 0, stdout
    alice_id = json.loads(stdout)["account_id"]
    assert invoke(bob, *REGISTER, relay.url, "--username", "bob")[0] == 0

    code, stdout, _ = invoke(alice, "--json", "send", "bob", "hi from the CLI")
    assert code == 0 and json.loads(stdout)["timestamp"] > 0
    code, stdout, _ = invoke(bob, "--json", "receive")
    events = [json.loads(line) for line in stdout.splitlines()]
    assert [(e["author"], e["text"]) for e in events if e["event"] == "Message"] == \
        [(alice_id, "hi from the CLI")]

    code, stdout, _ = invoke(alice, "receive")   # bob's delivery receipt: nothing to show
    assert code == 0
    code, stdout, _ = invoke(bob, "--json", "safety-number", alice_id)
    number = json.loads(stdout)["safety_number"]
    assert code == 0 and len(number) == 60 and number.isdigit()
    code, stdout, _ = invoke(bob, "safety-number", alice_id)
    assert code == 0 and number[:5] in stdout
    assert any(block in stdout for block in "▀▄█")  # the QR code
    assert invoke(bob, "verify", alice_id, "0" * 60)[0] == 1
    code, stdout, _ = invoke(bob, "verify", alice_id, number)
    assert code == 0 and "verified" in stdout
    code, stdout, _ = invoke(bob, "--json", "contacts")
    assert code == 0
    code, stdout, _ = invoke(alice, "--json", "devices", "list")
    assert code == 0 and json.loads(stdout)["device_id"] == 1


def test_errors_are_sentences_with_exit_codes(tmp_path: Path, relay: ThreadedRelay) -> None:
    home = tmp_path / "carol"
    code, _, stderr = invoke(home, "whoami")
    assert code == 3 and "register" in stderr and "Traceback" not in stderr
    assert invoke(home, *REGISTER, relay.url)[0] == 0
    code, _, stderr = invoke(home, "whoami", env={"CIPHERPOST_PASSPHRASE": "wrong"})
    assert code == 3 and "wrong passphrase" in stderr
    code, _, stderr = invoke(home, "send", "nobody_here", "hi")
    assert code == 1 and "no account has the username" in stderr
    code, _, stderr = invoke(tmp_path / "dave", *REGISTER, "http://example.com")
    assert code == 1 and "plain http" in stderr
    code, _, stderr = invoke(tmp_path / "erin", *REGISTER,
                             "http://127.0.0.1:9")  # nothing listens on port 9
    assert code == 4 and "cannot reach" in stderr
    code, _, stderr = invoke(tmp_path / "frank", *REGISTER, relay.url,
                             "--username", "x")
    assert code == 5 and "refused" in stderr


def test_two_cli_users_chat_through_a_server_process(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server")
    (tmp_path / "server").mkdir()
    server.start()
    env = {**os.environ, **ENV}

    def cp(home: Path, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run([sys.executable, "-m", "cipherpost.cli", "--home", str(home),
                                 *args], input=stdin, capture_output=True, text=True,
                                env=env, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout

    try:
        alice, bob = tmp_path / "alice", tmp_path / "bob"
        cp(alice, *REGISTER, server.url, "--username", "alice")
        cp(bob, *REGISTER, server.url, "--username", "bob")
        listener = subprocess.Popen([sys.executable, "-m", "cipherpost.cli", "--home",
                                     str(bob), "--json", "listen"], stdout=subprocess.PIPE,
                                    text=True, env=env)
        try:
            cp(alice, "chat", "bob", stdin="hello over a real server\nsecond line\n")
            assert listener.stdout is not None
            seen: list[str] = []
            while len(seen) < 2:
                event = json.loads(listener.stdout.readline())
                if event["event"] == "Message":
                    seen.append(event["text"])
            assert seen == ["hello over a real server", "second line"]
        finally:
            listener.terminate()
            listener.wait(timeout=10)
        # Bob answers; Alice reads it with `receive`.
        cp(bob, "send", "alice", "got both")
        assert "got both" in cp(alice, "receive")
    finally:
        server.stop()


def test_groups_and_files(tmp_path: Path, relay: ThreadedRelay) -> None:
    homes = {name: tmp_path / name for name in ("ann", "ben", "cat")}
    for name, home in homes.items():
        assert invoke(home, *REGISTER, relay.url, "--username", name)[0] == 0
    code, stdout, _ = invoke(homes["ann"], "--json", "groups", "create", "trip", "ben", "cat")
    assert code == 0, stdout
    group_id = json.loads(stdout)["group_id"]
    note = tmp_path / "plan.txt"
    note.write_text("day 1: the ridge")
    code, stdout, stderr = invoke(homes["ann"], "send", f"group:{group_id}", "the plan",
                                  "--file", str(note))
    assert code == 0, stderr
    for name in ("ben", "cat"):
        saved = tmp_path / f"{name}-files"
        code, stdout, _ = invoke(homes[name], "--json", "receive", "--save-dir", str(saved))
        events = [json.loads(line) for line in stdout.splitlines()]
        messages = [e for e in events if e.get("event") == "Message"]
        assert [m["text"] for m in messages] == ["the plan"]
        assert messages[0]["conversation"] == f"group:{group_id}"
        assert "key" not in messages[0]["attachments"][0]      # never printed
        assert (saved / "plan.txt").read_text() == "day 1: the ridge"
    code, stdout, _ = invoke(homes["cat"], "--json", "groups", "list")
    assert json.loads(stdout)["role"] == "member" and json.loads(stdout)["title"] == "trip"
    code, _, stderr = invoke(homes["cat"], "groups", "remove", group_id, "ben")
    assert code == 1 and "not allowed" in stderr
    code, _, _ = invoke(homes["ann"], "groups", "remove", group_id, "cat")
    assert code == 0
    code, stdout, _ = invoke(homes["cat"], "--json", "receive")
    assert any(json.loads(line).get("removed") for line in stdout.splitlines())


def test_reset_identity_command(tmp_path: Path, relay: ThreadedRelay) -> None:
    home, friend = tmp_path / "gil", tmp_path / "hal"
    assert invoke(home, *REGISTER, relay.url, "--username", "gil")[0] == 0
    assert invoke(friend, *REGISTER, relay.url, "--username", "hal")[0] == 0
    assert invoke(home, "send", "hal", "hello")[0] == 0
    assert invoke(friend, "receive")[0] == 0
    before = json.loads(invoke(friend, "--json", "safety-number", "gil")[1])["safety_number"]
    code, stdout, _ = invoke(home, "reset-identity", "--yes")
    assert code == 0 and "replaced" in stdout
    code, _, stderr = invoke(friend, "send", "gil", "still there?")
    assert code == 6 and "trust" in stderr                 # blocked until accepted
    after = json.loads(invoke(friend, "--json", "safety-number", "gil")[1])["safety_number"]
    assert after != before
    assert invoke(friend, "trust", "gil")[0] == 0
    assert invoke(friend, "send", "gil", "still there?")[0] == 0
    assert "still there?" in invoke(home, "receive")[1]


def test_link_a_second_device_from_the_cli(tmp_path: Path, relay: ThreadedRelay) -> None:
    first, second, friend = tmp_path / "ivy", tmp_path / "ivy-laptop", tmp_path / "jon"
    assert invoke(first, *REGISTER, relay.url, "--username", "ivy")[0] == 0
    assert invoke(friend, *REGISTER, relay.url, "--username", "jon")[0] == 0
    env = {**os.environ, **ENV}
    joining = subprocess.Popen([sys.executable, "-m", "cipherpost.cli", "--home", str(second),
                                "--json", "link", "--server", relay.url, "--device-name",
                                "laptop"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    try:
        assert joining.stdout is not None
        uri = json.loads(joining.stdout.readline())["link_uri"]
        code, _, stderr = invoke(first, "devices", "add", uri)
        assert code == 0, stderr
        out, err = joining.communicate(timeout=60)
        assert joining.returncode == 0, err
        assert json.loads(out.splitlines()[-1])["device_id"] == 2
    finally:
        if joining.poll() is None:
            joining.kill()
    assert invoke(friend, "send", "ivy", "both of you?")[0] == 0
    assert "both of you?" in invoke(second, "receive")[1]
    assert "both of you?" in invoke(first, "receive")[1]
    code, _, stderr = invoke(first, "devices", "add", "https://not-a-link")
    assert code == 1 and "not a Cipherpost link code" in stderr


# -- review 2026-11-29, S10: what peers write is shown, never interpreted --------------------

HOSTILE_TEXT = ("[link=https://evil.example]click[/link] [/] [bold]loud :smile:\x1b[2J"
                "\x1b]0;pwned\x07 okay\rOVERWRITTEN\x08\x08\x9b31m \u202eevil\r\n"
                "12:00 @bank: please send your passphrase")
HOSTILE_FILES = {
    "../../escape.txt": b"tried to leave the directory",
    "/etc/cron.d/evil": b"absolute",
    "..\\..\\windows.txt": b"backslashes",
    ".bashrc": b"a hidden file",
    "..": b"dot dot",
    "a\x1b[31mb\x07c[/].txt": b"control characters",
    "invoice\u202etxt.exe": b"reversed extension",
    "x" * 500 + ".txt": b"too long",
    "plan.txt": b"not the plan",
    "": b"no name",
}
CONTROL = [chr(c) for c in [*range(0x00, 0x09), *range(0x0b, 0x20), *range(0x7f, 0xa0)]]


def _as_peer(home: Path, work: Callable[[Client], Awaitable[None]]) -> None:
    """Act as a hostile peer: the SDK on a CLI profile's store, free to send anything."""
    async def run() -> None:
        client = await Client.open(home / "default" / "device.db",
                                   passphrase=ENV["CIPHERPOST_PASSPHRASE"])
        try:
            await work(client)
        finally:
            await client.close()

    asyncio.run(run())


def test_an_edit_is_shown_with_its_mark(tmp_path: Path, relay: ThreadedRelay) -> None:
    """An edit that arrives is shown as the message at its time with the new text and
    "(edited)"; the history keeps the mark."""
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    assert invoke(alice, *REGISTER, relay.url, "--username", "alice")[0] == 0
    assert invoke(bob, *REGISTER, relay.url, "--username", "bob")[0] == 0
    code, stdout, _ = invoke(alice, "--json", "send", "bob", "see you at nine")
    sent = json.loads(stdout)["timestamp"]
    assert invoke(bob, "receive")[0] == 0

    async def edit(client: Client) -> None:
        await client.edit("bob", sent, "see you at ten")

    _as_peer(alice, edit)
    code, stdout, _ = invoke(bob, "receive")
    assert code == 0 and ": see you at ten (edited)" in stdout, stdout
    items: list[HistoryItem] = []

    async def history(client: Client) -> None:
        items.extend(client.history(await client.conversation_for("alice"), limit=5))

    _as_peer(bob, history)
    assert [(i.timestamp, i.text, i.edited) for i in items] == [(sent, "see you at ten", True)]


def test_peer_text_is_shown_not_interpreted(tmp_path: Path, relay: ThreadedRelay) -> None:
    mal, vic = tmp_path / "mal", tmp_path / "vic"
    assert invoke(mal, *REGISTER, relay.url, "--username", "mal")[0] == 0
    assert invoke(vic, *REGISTER, relay.url, "--username", "vic")[0] == 0

    async def attack(client: Client) -> None:
        pointer = await client.upload_attachment(b"x", file_name="[/dim][link=x]f\x1b[2J.txt")
        await client.send_text("vic", HOSTILE_TEXT, attachments=[pointer])
        await client.create_group("[/]\x1b[31mred[bold] \r\x08[link=x]g", ["vic"])

    _as_peer(mal, attack)
    code, stdout, stderr = invoke(vic, "receive")
    assert code == 0, stderr
    for char in [*CONTROL, "\u202e"]:
        assert char not in stdout, (char, stdout)
    # Markup and emoji codes come out as typed...
    assert "[link=https://evil.example]click[/link] [/] [bold]loud :smile:" in stdout
    assert "[/]\ufffd[31mred[bold]" in stdout
    assert "attachment: [/dim][link=x]f\ufffd[2J.txt (1 bytes)" in stdout
    # ...and a peer's second line is indented, so it cannot pass for a message of ours.
    assert "\n  12:00 @bank: please send your passphrase" in stdout
    assert not any(line.startswith("12:00 @bank") for line in stdout.splitlines())
    code, stdout, _ = invoke(vic, "groups", "list")
    assert code == 0 and "[/]\ufffd[31mred[bold] \ufffd\ufffd[link=x]g" in stdout


def test_received_file_names_are_sanitized_and_never_overwrite(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    mal, vic = tmp_path / "mal", tmp_path / "vic"
    assert invoke(mal, *REGISTER, relay.url, "--username", "mal")[0] == 0
    assert invoke(vic, *REGISTER, relay.url, "--username", "vic")[0] == 0
    saved = tmp_path / "inbox" / "files"
    saved.mkdir(parents=True)
    (saved / "plan.txt").write_bytes(b"the real plan")
    (saved / "bashrc").symlink_to(tmp_path / "symlink-target")     # not followed either

    async def attack(client: Client) -> None:
        pointers = [await client.upload_attachment(data, file_name=name)
                    for name, data in HOSTILE_FILES.items()]
        await client.send_text("vic", "files", attachments=pointers)

    _as_peer(mal, attack)
    code, stdout, stderr = invoke(vic, "--json", "receive", "--save-dir", str(saved))
    assert code == 0, stderr
    shown = [json.loads(line)["saved"] for line in stdout.splitlines() if "saved" in line]
    assert len(shown) == len(HOSTILE_FILES)
    assert (saved / "plan.txt").read_bytes() == b"the real plan"     # never overwritten
    assert not (tmp_path / "symlink-target").exists()
    names = sorted(p.name for p in saved.iterdir())
    everything = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                        if p.is_file() and "inbox" in p.parts)
    # Every file landed directly in the save directory: one per attachment, plus ours.
    assert len(names) == len(HOSTILE_FILES) + 2, names
    assert all(e.startswith("inbox/files/") and e.count("/") == 2 for e in everything)
    contents = {p.read_bytes(): p.name for p in saved.iterdir() if not p.is_symlink()}
    assert set(HOSTILE_FILES.values()) <= set(contents), contents
    assert contents[b"not the plan"] == "plan (1).txt"
    assert contents[b"a hidden file"] == "bashrc (1)"
    assert contents[b"tried to leave the directory"] == "escape.txt"
    assert contents[b"backslashes"] == "windows.txt"
    for name in names:
        assert not name.startswith(".") and "/" not in name and "\\" not in name
        assert name.isprintable() and len(name.encode()) <= 200, name
    assert contents[b"too long"].endswith(".txt")
    assert contents[b"dot dot"].startswith("attachment-")
    assert contents[b"no name"].startswith("attachment-")
    assert contents[b"reversed extension"] == "invoicetxt.exe"


def test_history_and_restore_from_the_cli(tmp_path: Path, relay: ThreadedRelay) -> None:
    """Registering with server history shows a recovery key once; on a fresh machine
    `restore` gets the account back with its conversation."""
    home, friend, fresh = tmp_path / "kim", tmp_path / "lee", tmp_path / "kim-new"
    code, stdout, _ = invoke(home, "--json", "register", "--history", "--server", relay.url,
                             "--username", "kim")
    assert code == 0, stdout
    registered = json.loads(stdout)
    assert registered["history"] is True and len(registered["recovery_key"]) == 69
    assert invoke(friend, *REGISTER, relay.url, "--username", "lee")[0] == 0
    assert invoke(home, "send", "lee", "remember this")[0] == 0
    code, stdout, _ = invoke(home, "--json", "history", "status")
    assert code == 0 and json.loads(stdout)["history"] is True
    assert json.loads(stdout)["stored_bytes"] > 0
    assert invoke(home, "history", "retention", "30")[0] == 0
    assert invoke(home, "history", "retention", "soon")[0] == 2
    code, stdout, _ = invoke(home, "--json", "history", "status")
    assert json.loads(stdout)["retention_days"] == 30
    # Without a flag and without a terminal to ask on, register refuses to guess.
    code, _, stderr = invoke(tmp_path / "nobody", "register", "--server", relay.url)
    assert code == 2 and "--history or --no-history" in stderr
    code, _, stderr = invoke(fresh, "restore", "--server", relay.url,
                             "--recovery-key", "0" * 56)
    assert code == 1 and "typo" in stderr
    code, stdout, _ = invoke(fresh, "--json", "restore", "--server", relay.url,
                             "--recovery-key", registered["recovery_key"])
    assert code == 0, stdout
    assert json.loads(stdout)["account_id"] == registered["account_id"]

    shown: list[str] = []

    async def read(client: Client) -> None:
        shown.extend(h.text for h in client.history(await client.resolve("lee")))

    _as_peer(fresh, read)
    assert shown == ["remember this"]
    assert invoke(fresh, "--json", "history", "off", "--yes")[0] == 0
    code, stdout, _ = invoke(home, "--json", "receive")
    assert code == 0 and '"ServerHistoryChanged"' in stdout


def test_recovery_passphrase_from_the_cli(tmp_path: Path, relay: ThreadedRelay) -> None:
    home, fresh = tmp_path / "mo", tmp_path / "mo-new"
    assert invoke(home, *REGISTER, relay.url, "--username", "moe")[0] == 0
    weak = {**ENV, "CIPHERPOST_RECOVERY_PASSPHRASE": "mo123456"}
    code, _, stderr = invoke(home, "recovery-passphrase", env=weak)
    assert code == 1 and "too easy to guess" in stderr
    strong = {**ENV, "CIPHERPOST_RECOVERY_PASSPHRASE": "quiet lanterns drift over seven hills"}
    assert invoke(home, "recovery-passphrase", env=strong)[0] == 0
    code, _, stderr = invoke(fresh, "restore", "--server", relay.url, "--username", "moe",
                             env={**ENV, "CIPHERPOST_RECOVERY_PASSPHRASE": "wrong guess here"})
    assert code == 1 and "wrong username or recovery passphrase" in stderr
    code, stdout, _ = invoke(fresh, "--json", "restore", "--server", relay.url,
                             "--username", "moe", env=strong)
    assert code == 0, stdout
    code, stdout, _ = invoke(home, "--json", "whoami")
    assert json.loads(stdout)["account_id"] == json.loads(
        invoke(fresh, "--json", "whoami")[1])["account_id"]


def test_export_and_import_from_the_cli(tmp_path: Path, relay: ThreadedRelay) -> None:
    home, friend, moved = tmp_path / "ned", tmp_path / "ola", tmp_path / "ned-moved"
    assert invoke(home, *REGISTER, relay.url, "--username", "ned")[0] == 0
    assert invoke(friend, *REGISTER, relay.url, "--username", "ola")[0] == 0
    assert invoke(home, "send", "ola", "take this along")[0] == 0
    target = tmp_path / "ned.cpexport"
    weak = {**ENV, "CIPHERPOST_EXPORT_PASSPHRASE": "Password123!Password123!"}
    code, _, stderr = invoke(home, "export", str(target), env=weak)
    assert code == 1 and "export passphrase is too easy to guess" in stderr
    assert not target.exists()
    secret = {**ENV, "CIPHERPOST_EXPORT_PASSPHRASE": "export file passphrase"}
    code, stdout, _ = invoke(home, "--json", "export", str(target), env=secret)
    assert code == 0 and json.loads(stdout)["records"] >= 3
    code, _, stderr = invoke(moved, "import", str(target), "--server", relay.url,
                             env={**ENV, "CIPHERPOST_EXPORT_PASSPHRASE": "wrong"})
    assert code == 1 and "wrong passphrase" in stderr
    code, stdout, _ = invoke(moved, "--json", "import", str(target), "--server", relay.url,
                             env=secret)
    assert code == 0, stdout
    shown: list[str] = []

    async def read(client: Client) -> None:
        shown.extend(h.text for h in client.history(await client.resolve("ola")))

    _as_peer(moved, read)
    assert shown == ["take this along"]


def test_an_export_passphrase_built_on_the_username_is_refused(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    """The CLI rated an export passphrase without the account's username as a known word
    (the browser counts it): one that is the username and a year was taken."""
    owner, other = tmp_path / "quasmodrift", tmp_path / "zed"
    assert invoke(owner, *REGISTER, relay.url, "--username", "quasmodrift")[0] == 0
    assert invoke(other, *REGISTER, relay.url, "--username", "zed")[0] == 0
    # strong by itself (zxcvbn score 4), weak (1) with the username known
    built_on = {**ENV, "CIPHERPOST_EXPORT_PASSPHRASE": "quasmodrift2024"}
    target = tmp_path / "quasmodrift.cpexport"
    code, _, stderr = invoke(owner, "export", str(target), env=built_on)
    assert code == 1 and "export passphrase is too easy to guess" in stderr
    assert not target.exists()
    code, stdout, _ = invoke(other, "--json", "export", str(tmp_path / "zed.cpexport"),
                             env=built_on)
    assert code == 0 and json.loads(stdout)["exported"] == str(tmp_path / "zed.cpexport")
    assert (tmp_path / "zed.cpexport").exists()
    # Without the relay (review of 18757c1: whoami failed, and the store had no entry
    # for our own account, so the check ran without the username): the username kept
    # since registration still counts.
    relay.stop()
    code, _, stderr = invoke(owner, "export", str(target), env=built_on)
    assert code == 1 and "export passphrase is too easy to guess" in stderr
    assert not target.exists()


def test_link_by_typed_code_from_the_cli(tmp_path: Path, relay: ThreadedRelay) -> None:
    """`link --code` shows a code, `devices add --code` takes it, both show the same number
    and ask; answering yes on both links the device. A declined comparison links nothing."""
    first, second = tmp_path / "kim", tmp_path / "kim-laptop"
    assert invoke(first, *REGISTER, relay.url, "--username", "kim")[0] == 0
    env = {**os.environ, **ENV}

    def start(home: Path, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "cipherpost.cli", "--home", str(home),
                                 "--json", *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)

    def line(process: subprocess.Popen[str]) -> dict[str, object]:
        assert process.stdout is not None
        data: dict[str, object] = json.loads(process.stdout.readline())
        return data

    for answers in (("y", "n"), ("y", "y")):       # (new device, existing device)
        joining = start(second, "link", "--code", "--server", relay.url)
        adding: subprocess.Popen[str] | None = None
        try:
            code = str(line(joining)["code"])
            adding = start(first, "devices", "add", "--code", code)
            shown = line(joining)["sas"], line(adding)["sas"]
            assert shown[0] == shown[1]
            for process, answer in zip((joining, adding), answers, strict=True):
                assert process.stdin is not None
                process.stdin.write(answer + "\n")
                process.stdin.flush()
            _out_old, err_old = adding.communicate(timeout=60)
            out_new, err_new = joining.communicate(timeout=60)
        finally:
            for process in (joining, adding):
                if process is not None and process.poll() is None:
                    process.kill()
        if answers[1] == "n":
            assert adding.returncode == 1 and "numbers differ" in err_old
            assert joining.returncode == 1 and "cancelled" in err_new
            assert not (second / "default" / "device.db").exists()
        else:
            assert adding.returncode == 0, err_old
            assert joining.returncode == 0, err_new
            assert json.loads(out_new.splitlines()[-1])["device_id"] == 2
    code, _, stderr = invoke(first, "devices", "add", "--code", "ABCD-EFGH")
    assert code == 1 and "no new device is waiting" in stderr
    code, _, stderr = invoke(first, "devices", "add")
    assert code == 2 and "--code" in stderr
