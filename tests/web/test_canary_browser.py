"""Plaintext canaries through the browser client (issue #10): a browser user and an SDK
user exchange messages, files and a group whose every text, file name and file body is a
random canary; then the relay's database (with its WAL, while running and after a stop),
its blobs and its DEBUG log, and every record the browser keeps in IndexedDB, are searched
for each canary in every encoding ``tests/assurance/scan.py`` knows. Every canary must
arrive (so the scan looked at a real run) and none may be found."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from pathlib import Path
from typing import Any

import httpx

from cipherpost.client import events

from ..assurance import results
from ..assurance.scan import Scan
from ..client.conftest import Devices
from ..server.process import ServerProcess
from .browsing import (
    Browser,
    needs_browser,
    real_problems,
    sign_up,
    wait_for_event,
    wait_for_text,
)

pytestmark = needs_browser

PLACES = ["browser-text", "sdk-text", "browser-file-name", "browser-file-body",
          "sdk-file-name", "sdk-file-body", "group-title", "group-text"]


def test_no_plaintext_of_a_browser_conversation_at_rest_on_the_relay_or_in_indexeddb(
        tmp_path: Path, browser: Browser) -> None:
    c = {place: f"canary-{place}-{secrets.token_hex(12)}" for place in PLACES}
    browser_file = (c["browser-file-body"] + "\n").encode() * 40
    sdk_file = (c["sdk-file-body"] + "\n").encode() * 40
    user = "wren"
    relay_dir = tmp_path / "relay"
    relay_dir.mkdir()
    relay = ServerProcess(relay_dir, log_level="DEBUG")
    live = Scan({k: v.encode() for k, v in c.items()})
    seen: list[str] = []

    step = browser.step(user)

    async def scenario() -> dict[str, Any]:
        devices = Devices(tmp_path / "clients", relay)  # type: ignore[arg-type]
        otto = await devices.register("otto")
        try:
            await sign_up(step, relay.url, user)
            await step("chat", username="otto")
            await step("send", text=c["browser-text"])
            got = await wait_for_text(otto, c["browser-text"])
            seen.append(got.text)
            await otto.send_text(user, c["sdk-text"])
            await step("wait_message", text=c["sdk-text"], outgoing=False)
            seen.append(c["sdk-text"])

            await step("attach", name=c["browser-file-name"] + ".txt", mime="text/plain",
                       data=base64.b64encode(browser_file).decode())
            message = await wait_for_event(otto, lambda e: isinstance(e, events.Message)
                                           and len(e.attachments) == 1)
            assert isinstance(message, events.Message)
            pointer = message.attachments[0]
            seen.append(pointer.file_name)
            seen.append((await otto.download(pointer)).decode())
            sent = await otto.upload_attachment(sdk_file,
                                                file_name=c["sdk-file-name"] + ".txt",
                                                content_type="text/plain")
            await otto.send_text(user, "a file", attachments=[sent])
            await step("wait_message", text="a file", outgoing=False)
            fetched = await step("download", name=c["sdk-file-name"] + ".txt")
            assert fetched["sha256"] == hashlib.sha256(sdk_file).hexdigest()
            seen.extend([fetched["filename"], sdk_file.decode()])

            await step("create_group", title=c["group-title"], members="otto")
            await step("send", text=c["group-text"])
            # The group's creation and its message may come in one receive: keep both.
            deadline = asyncio.get_running_loop().time() + 30
            while not {c["group-title"], c["group-text"]} <= set(seen):
                assert asyncio.get_running_loop().time() < deadline, "group not received"
                for event in await otto.receive():
                    if isinstance(event, events.GroupUpdated) and event.title:
                        seen.append(event.title)
                    elif isinstance(event, events.Message):
                        seen.append(event.text)
                await asyncio.sleep(0.2)
            assert real_problems((await step("problems"))["problems"]) == []

            # While the relay runs (its -wal exists) and the page holds its store.
            async with httpx.AsyncClient() as http:
                live.text("GET /metrics", (await http.get(f"{relay.url}/metrics")).text)
            live.path(relay_dir)
            return await step("dump_store")
        finally:
            await devices.close()

    relay.start()
    try:
        dump = asyncio.run(scenario())
    finally:
        relay.stop()
    missing = [p for p, text in c.items() if not any(text in s for s in seen)]
    assert not missing, f"never delivered: {missing}"

    store = Scan({k: v.encode() for k, v in c.items()})
    for i, value in enumerate(dump["binary"]):
        store.data(f"indexeddb binary value {i}", base64.b64decode(value))
    for i, text in enumerate(dump["text"]):
        store.text(f"indexeddb store {i}", text)
    # The store really holds the conversation: its records and their sealed values.
    assert dump["records"] > 20 and len(dump["binary"]) > 20, dump["records"]

    at_rest = Scan({k: v.encode() for k, v in c.items()})
    at_rest.path(relay_dir)  # stopped: database, blobs, the DEBUG log
    assert any("/blobs/" in f for f in at_rest.files), at_rest.files
    assert any(f.endswith("-wal") for f in live.files), live.files
    hits = live.hits + store.hits + at_rest.hits
    summary = {
        "name": "browser", "canaries": len(c), "hits": len(hits),
        "bytes_scanned": live.bytes_scanned + store.bytes_scanned + at_rest.bytes_scanned,
        "files_scanned": len(live.files) + len(at_rest.files),
        "indexeddb_records": dump["records"], "indexeddb_binary_values": len(dump["binary"]),
        "hit_list": [list(h) for h in hits[:20]],
        "scanned": ["relay database with -wal/-shm (running and stopped)", "blobs",
                    "relay log output (DEBUG)", "GET /metrics",
                    "every IndexedDB record of the browser user (keys and values)"],
    }
    results.write("canaries", "browser", summary)
    assert not hits, summary["hit_list"]
