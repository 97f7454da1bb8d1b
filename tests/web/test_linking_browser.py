"""Linking and the safety number's QR codes in the browser client, in chromium: the codes
the page draws are read back by a QR decoder and hold what the Python SDK reads (the link
URI it provisions from, the scannable fingerprint its ``Fingerprint.compare`` accepts)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

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
