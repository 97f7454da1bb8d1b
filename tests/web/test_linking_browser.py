"""Linking, server-stored history and the safety number's QR codes in the browser client,
in chromium, with Python SDK devices of the same account: the codes the page draws are
read back by a QR decoder and hold what the SDK reads (the link URI it provisions from,
the scannable fingerprint its ``Fingerprint.compare`` accepts); a linked browser replays
the account's server-stored history and adds to it in the SDK's format."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from cipherpost.client import history
from cipherpost.client.devices import request_link
from cipherpost.client.proto.app_pb2 import DataMessage
from cipherpost.client.store.crypto import TEST_PARAMS
from cipherpost.protocol.fingerprint import Fingerprint

from ..client.conftest import Devices, ThreadedRelay
from .test_browser import (  # noqa: F401 - fixtures
    ARTIFACTS,
    PASSWORD,
    Browser,
    browser,
    built,
    real_problems,
    relay,
    wait_for_text,
)

pytestmark = pytest.mark.usefixtures("built")


def test_the_link_code_and_the_safety_number_are_drawn_as_qr_codes(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:  # noqa: F811
    linker, talker = "quinn-new-browser", "quinn-browser"

    async def step(user: str, cmd: str, **args: Any) -> dict[str, Any]:
        return await asyncio.to_thread(browser.do, cmd, user=user, **args)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        rex = await devices.register("rex")
        try:
            # The safety number: the browser's scannable form is the one the SDK accepts.
            await step(talker, "open", url=relay.url + "/")
            await step(talker, "signup", username="quinn", password=PASSWORD)
            await step(talker, "chat", username="rex")
            await step(talker, "send", text="hello rex")
            quinn_id = (await wait_for_text(rex, "hello rex")).author
            await step(talker, "safety")
            qr = await step(talker, "qr", testid="safety-qr")
            scanned = bytes.fromhex(qr["payload"])
            ours = rex.safety_number(quinn_id)
            quinn_key = rex.store.identity_record(quinn_id)
            assert quinn_key is not None
            theirs = Fingerprint.create(quinn_id.encode(), quinn_key.identity_key,
                                        rex.account_id.encode(),
                                        rex.store.get_identity_key_pair().public)
            assert scanned == theirs.scannable
            assert ours.compare(scanned)
            assert qr["same"], "the decoder read other bytes than the payload"
            await step(talker, "screenshot", path=str(ARTIFACTS / "18-safety-qr.png"))

            # The link code: what the decoder reads is the URI the SDK provisions from.
            await step(linker, "open", url=relay.url + "/")
            await step(linker, "click", testid="start-link")
            await step(linker, "fill", testid="link-password", text=PASSWORD)
            await step(linker, "fill", testid="link-confirm", text=PASSWORD)
            await step(linker, "click", testid="link-start")
            qr = await step(linker, "qr", testid="link-qr")
            uri = (await step(linker, "text", testid="link-uri"))["text"]
            assert qr["decoded"] == qr["payload"] == uri
            assert uri.startswith("cipherpost://link?")
            await step(linker, "screenshot", path=str(ARTIFACTS / "19-link-qr.png"))
            await rex.provision(qr["decoded"])
            await step(linker, "wait_inbox")
            assert (await step(linker, "text", testid="me"))["text"] == "rex"
            for user in (talker, linker):
                assert real_problems((await step(user, "problems"))["problems"]) == []
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_browser_linked_to_an_account_with_server_history_reads_and_writes_it(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:  # noqa: F811
    """The account keeps its history on the relay (docs/spec/history.md): a browser linked
    later replays the log with a progress indicator, then seals what it sends and receives
    into it, in the SDK's format: an SDK device linked after that restores those messages
    although no other device of the account received them."""
    user = "wren-browser"

    async def step(cmd: str, **args: Any) -> dict[str, Any]:
        return await asyncio.to_thread(browser.do, cmd, user=user, **args)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        devices.history = True
        wren = await devices.register("wren")
        devices.history = False
        xavi = await devices.register("xavi")
        try:
            assert wren.server_history
            for i in range(3):
                await wren.send_text("xavi", f"wren {i}")
                await wait_for_text(xavi, f"wren {i}")
                await xavi.send_text(wren.account_id, f"xavi {i}")
                await wait_for_text(wren, f"xavi {i}")

            await step("open", url=relay.url + "/")
            await step("click", testid="start-link")
            await step("fill", testid="link-password", text=PASSWORD)
            await step("fill", testid="link-confirm", text=PASSWORD)
            await step("click", testid="link-start")
            uri = (await step("text", testid="link-uri"))["text"]
            await step("watch_progress")
            await wren.provision(uri)
            await step("wait_inbox")
            # the log had the six messages (no archive travels with server history)
            assert (await step("progress_seen"))["seen"][-1] == "6 from the server"
            await step("open_conversation", account=xavi.account_id)
            shown = (await step("messages"))["messages"]
            assert [(m["text"], m["outgoing"]) for m in shown] == [
                (text, out) for i in range(3)
                for text, out in ((f"wren {i}", "true"), (f"xavi {i}", "false"))]
            await step("screenshot", path=str(ARTIFACTS / "20-server-history.png"))

            # the browser records what it sends and receives; wren's SDK device receives
            # nothing from here on, so whatever of this is in the log the browser put there
            await step("send", text="sent from the browser")
            await wait_for_text(xavi, "sent from the browser")
            await xavi.send_text(wren.account_id, "received by the browser")
            await step("wait_message", text="received by the browser", outgoing=False)

            async def logged() -> set[str]:
                texts = set()
                after = 0
                while True:
                    entries, more = history.parse_page(
                        await wren.api.request("GET", f"/v1/history?after={after}"))
                    keys = history.keys(wren.store)
                    assert keys is not None
                    for seq, name, blob in entries:
                        after = seq
                        if blob is not None:
                            texts.add(history.open_blob(keys, name, blob).message.data.text)
                    if not more:
                        return texts

            deadline = time.monotonic() + 30
            while {"sent from the browser", "received by the browser"} - await logged():
                assert time.monotonic() < deadline, "the browser uploaded no history"
                await asyncio.sleep(0.3)

            pending = await request_link(relay.url)
            await wren.provision(pending.uri)
            restored = await pending.complete(tmp_path / "wren-restored.db",
                                              passphrase="correct horse", device_name="restored",
                                              argon2=TEST_PARAMS, options=devices.options,
                                              timeout=30)
            devices.clients.append(restored)
            texts = {DataMessage.FromString(m.body).text
                     for m in restored.store.messages(xavi.account_id, limit=100)}
            assert {"sent from the browser", "received by the browser", "wren 0",
                    "xavi 2"} <= texts
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()

    asyncio.run(scenario())
