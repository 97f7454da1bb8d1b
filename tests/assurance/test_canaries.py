"""Plaintext canaries: a unique string in every message, title, caption, file name and file
of an end-to-end run (SDK and CLI, 1:1 and group, several devices) through a relay process
logging at DEBUG; then no canary may appear, in any encoding, in what the relay keeps (its
database with -wal and -shm, blobs, log output, /metrics) or in the clients' stores at
rest. Figures (bytes scanned, hits) go to ``build/assurance/canaries/``."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from pathlib import Path

import httpx
from click.testing import CliRunner

from cipherpost.cli import cli
from cipherpost.client import events as ev
from cipherpost.client.devices import request_link
from cipherpost.client.recovery import restore
from cipherpost.client.store.crypto import TEST_PARAMS
from tests.client.conftest import Devices
from tests.server.process import ServerProcess

from . import results
from .scan import Scan, encodings

PURPOSES = ["dm", "reply", "edit", "linked-device-dm", "group-title", "group-text",
            "group-retitle", "file-contents", "file-name", "caption", "message-with-file",
            "cli-text", "cli-file-contents", "cli-file-name", "cli-group-title",
            "cli-group-text"]
CLI_ENV = {"CIPHERPOST_PASSPHRASE": "a long local passphrase",
           "CIPHERPOST_EXPORT_PASSPHRASE": "an export passphrase"}


def _canaries() -> dict[str, str]:
    return {p: f"CANARY{secrets.token_hex(10)}{p.replace('-', '')}" for p in PURPOSES}


def _cli(home: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--home", str(home), *args], env=CLI_ENV,
                                catch_exceptions=False)
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result.stdout


async def _sdk_flows(devices: Devices, c: dict[str, str]) -> list[str]:
    """1:1 with an edit, a linked device, a group with a retitle, an attachment."""
    seen: list[str] = []

    def keep(events: list[ev.Event]) -> None:
        for e in events:
            if isinstance(e, ev.Message):
                seen.append(e.text)
            if isinstance(e, ev.MessageEdited):
                seen.append(e.text)
            if isinstance(e, ev.GroupUpdated):
                seen.append(e.title)

    devices.history = True            # Alice's account keeps its history on the relay
    alice = await devices.register("alice")
    devices.history = False
    alice2 = await devices.link(alice, "alice laptop")
    bob, carol = await devices.register("bob"), await devices.register("carol")
    keep(await alice.receive())
    sent = await alice.send_text("bob", c["dm"])
    keep(await bob.receive())
    await bob.send_text("alice", c["reply"])
    keep(await alice.receive())
    await alice.edit("bob", sent, c["edit"])
    await alice2.send_text("bob", c["linked-device-dm"])
    keep(await bob.receive())
    keep(await alice2.receive())

    group = await alice.create_group(c["group-title"], ["bob", "carol"])
    for member in (bob, carol, alice2):
        keep(await member.receive())
    await alice.send_text(group.id, c["group-text"])
    await alice.set_group_title(group.id, c["group-retitle"])
    for member in (bob, carol, alice2):
        keep(await member.receive())

    contents = (c["file-contents"] + "\n").encode() * 64
    pointer = await alice.upload_attachment(contents, file_name=c["file-name"] + ".txt",
                                            content_type="text/plain", caption=c["caption"])
    await alice.send_text("bob", c["message-with-file"], attachments=[pointer])
    for event in await bob.receive():
        if isinstance(event, ev.Message) and event.attachments:
            seen.append(event.text)
            attachment = event.attachments[0]
            seen += [attachment.file_name, attachment.caption]
            seen.append((await bob.download(attachment)).decode())
    # Bob keeps no server history: a device he links gets a one-time archive through the
    # relay; Alice gets her account back on a fresh machine from her recovery key.
    pending = await request_link(devices.relay.url)
    joining = asyncio.create_task(pending.complete(
        devices.path("bob-tablet"), passphrase="correct horse", argon2=TEST_PARAMS,
        options=dataclasses.replace(devices.options)))
    await asyncio.sleep(0.2)
    await bob.provision(pending.uri)
    tablet = await asyncio.wait_for(joining, 60)
    devices.clients.append(tablet)
    seen += [h.text for h in tablet.history(alice.account_id, limit=1000)]
    key = await alice.create_recovery_key()
    restored = await restore(devices.path("alice-restored"), devices.relay.url, key,
                             passphrase="correct horse", argon2=TEST_PARAMS,
                             options=dataclasses.replace(devices.options))
    devices.clients.append(restored)
    seen += [h.text for h in restored.history(bob.account_id, limit=1000)]
    return seen


def _cli_flows(root: Path, server: str, c: dict[str, str]) -> list[str]:
    homes = {name: root / name for name in ("ann", "ben")}
    _cli(homes["ann"], "register", "--history", "--server", server, "--username", "ann")
    _cli(homes["ben"], "register", "--no-history", "--server", server, "--username", "ben")
    _cli(homes["ann"], "send", "ben", c["cli-text"])
    note = root / f"{c['cli-file-name']}.txt"
    note.write_text(c["cli-file-contents"])
    _cli(homes["ann"], "send", "ben", "here is a file", "--file", str(note))
    group_id = json.loads(_cli(homes["ann"], "--json", "groups", "create", c["cli-group-title"],
                               "ben"))["group_id"]
    _cli(homes["ann"], "send", f"group:{group_id}", c["cli-group-text"])
    saved = root / "ben-files"
    out = _cli(homes["ben"], "--json", "receive", "--save-dir", str(saved))
    seen = out.splitlines()  # JSON lines: messages, group updates (with the title)
    seen += [p.read_text() for p in saved.iterdir()] + [p.name for p in saved.iterdir()]
    _cli(homes["ann"], "export", str(root / "ann.cpexport"))   # scanned with the stores
    note.unlink()  # the plaintext source is not part of any store
    for p in saved.iterdir():
        p.unlink()
    return seen


def test_the_scanner_finds_what_it_looks_for() -> None:
    """The scan can fail: each encoding of a canary planted in a larger value is found."""
    import base64

    canary = b"CANARY0123456789abcdefplanted"
    for prefix in (b"", b"x", b"xy"):
        blob = b"\x00" * 7 + prefix + canary + b"\x01" * 5
        for where in (blob, blob.hex().encode(), blob.hex().upper().encode(),
                      base64.b64encode(blob), base64.urlsafe_b64encode(blob)):
            scan = Scan({"c": canary})
            scan.data("planted", b"noise " + where + b" noise")
            assert scan.hits, (prefix, where)
    assert len(encodings(canary)) == 11
    scan = Scan({"c": canary})
    scan.data("clean", b"CANARY0123456789abcdefplante" + bytes(100))
    assert not scan.hits


def test_no_canary_reaches_the_relay_or_the_stores_at_rest(tmp_path: Path) -> None:
    c = _canaries()
    secrets_ = {p: text.encode() for p, text in c.items()}
    relay_dir, clients_dir, cli_dir = (tmp_path / d for d in ("relay", "clients", "cli"))
    for folder in (relay_dir, clients_dir, cli_dir):
        folder.mkdir()
    relay = ServerProcess(relay_dir, log_level="DEBUG")
    live = Scan(secrets_)

    async def run_and_scan_live() -> list[str]:
        devices = Devices(clients_dir, relay)  # type: ignore[arg-type]
        try:
            seen = await _sdk_flows(devices, c)
            # While the relay and the SDK stores are open: their -wal files exist.
            async with httpx.AsyncClient() as http:
                live.text("GET /metrics", (await http.get(f"{relay.url}/metrics")).text)
            live.paths([relay_dir, clients_dir, cli_dir])
            return seen
        finally:
            await devices.close()

    relay.start()
    try:
        seen = _cli_flows(cli_dir, relay.url, c)
        seen += asyncio.run(run_and_scan_live())
    finally:
        relay.stop()
    # Everything was sent and arrived, so the scans looked at a real run.
    missing = [p for p, text in c.items() if not any(text in s for s in seen)]
    assert not missing, f"never delivered: {missing}"
    wal_files = [f for f in live.files if f.endswith("-wal")]
    assert any(f.startswith(str(relay_dir)) for f in wal_files), live.files
    assert any(f.startswith(str(clients_dir)) for f in wal_files), live.files

    at_rest = Scan(secrets_)
    at_rest.paths([relay_dir, clients_dir, cli_dir])  # stopped and closed
    log = relay.log.read_bytes()
    assert b"DEBUG" in log or b"request" in log, "the relay's log output was not captured"
    assert any("/blobs/" in f for f in at_rest.files), "no attachment blob where the scan looks"
    summary = {
        "name": "end-to-end", "canaries": len(c),
        "bytes_scanned": live.bytes_scanned + at_rest.bytes_scanned,
        "files_scanned": len(live.files) + len(at_rest.files),
        "hits": len(live.hits) + len(at_rest.hits),
        "hit_list": [list(h) for h in (live.hits + at_rest.hits)[:20]],
        "relay_log_bytes": len(log),
        "scanned": ["relay database with -wal/-shm (running and stopped)", "blobs",
                    "relay log output (DEBUG)", "GET /metrics",
                    "SDK and CLI stores with -wal/-shm (open and closed)"],
    }
    results.write("canaries", "end-to-end", summary)
    assert not live.hits and not at_rest.hits, summary["hit_list"]
