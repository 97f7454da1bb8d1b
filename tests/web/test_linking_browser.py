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

from cipherpost.client import Client, ClientError, recovery
from cipherpost.client.devices import request_link, request_link_by_code
from cipherpost.client.proto.app_pb2 import DataMessage
from cipherpost.client.store.crypto import TEST_PARAMS
from cipherpost.protocol.fingerprint import Fingerprint

from ..client.conftest import Devices, ThreadedRelay, logged_events
from .browsing import (
    ARTIFACTS,
    PASSWORD,
    Browser,
    needs_browser,
    real_problems,
    sign_up_and_write,
    wait_for_text,
)

pytestmark = needs_browser


async def logged(client: Client) -> list[str]:
    """The texts of the messages in the account's server-stored history log, opened with
    ``client``'s keys (a deleted entry or another kind of event as "")."""
    return [event.message.data.text if event is not None
            and event.WhichOneof("body") == "message" else ""
            for event in await logged_events(client)]


def test_the_link_code_and_the_safety_number_are_drawn_as_qr_codes(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
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
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """The account keeps its history on the relay (docs/spec/history.md): a browser linked
    later replays the log with a progress indicator, then seals what it sends and receives
    into it, in the SDK's format: an SDK device the browser links after that restores
    those messages although no other device of the account received them."""
    user = "wren-browser"
    step = browser.step(user)

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

            deadline = time.monotonic() + 30
            while {"sent from the browser", "received by the browser"} - set(await logged(wren)):
                assert time.monotonic() < deadline, "the browser uploaded no history"
                await asyncio.sleep(0.3)

            # the browser links that SDK device itself: the history keys go along
            pending = await request_link(relay.url)
            await step("click", testid="open-devices")
            await step("fill", testid="link-code", text=pending.uri)
            await step("click", testid="link-submit")
            restored = await pending.complete(tmp_path / "wren-restored.db",
                                              passphrase="correct horse", device_name="restored",
                                              argon2=TEST_PARAMS, options=devices.options,
                                              timeout=30)
            devices.clients.append(restored)
            assert restored.server_history
            texts = {DataMessage.FromString(m.body).text
                     for m in restored.store.messages(xavi.account_id, limit=100)}
            assert {"sent from the browser", "received by the browser", "wren 0",
                    "xavi 2"} <= texts
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_fresh_browser_recovers_an_sdk_account_by_key_and_by_passphrase(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """An account made by the SDK, with server history, a recovery key and a recovery
    passphrase: one fresh browser gets it back with the key, another with the username
    and passphrase; each has the identity (the contact's safety number is unchanged),
    the conversation from the relay's history, and takes part from then on."""
    passphrase = "quiet lantern orbits the paper harbor"

    async def step(user: str, cmd: str, **args: Any) -> dict[str, Any]:
        return await asyncio.to_thread(browser.do, cmd, user=user, **args)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        devices.history = True
        yara = await devices.register("yara")
        devices.history = False
        zeke = await devices.register("zeke")
        try:
            await yara.send_text("zeke", "before the loss")
            await wait_for_text(zeke, "before the loss")
            await zeke.send_text(yara.account_id, "zeke was here")
            await wait_for_text(yara, "zeke was here")
            key = await recovery.create_key(yara)
            await recovery.set_passphrase(yara, passphrase)
            recovered: list[str] = []

            for user, how in (("yara-by-key", "key"), ("yara-by-passphrase", "passphrase")):
                await step(user, "open", url=relay.url + "/")
                await step(user, "click", testid="start-recover")
                if how == "key":
                    wrong = key[:-1] + ("0" if key[-1] != "0" else "1")
                    await step(user, "fill", testid="recover-key", text=wrong)
                else:
                    await step(user, "select", testid="recover-how", value="passphrase")
                    await step(user, "fill", testid="recover-username", text="yara")
                    await step(user, "fill", testid="recover-passphrase", text=passphrase + "!")
                await step(user, "fill", testid="recover-password", text=PASSWORD)
                await step(user, "fill", testid="recover-confirm", text=PASSWORD)
                await step(user, "click", testid="recover-submit")
                refused = ("The recovery key has a typo (its check does not match)."
                           if how == "key" else "Wrong username or recovery passphrase.")
                await step(user, "wait_text", testid="error", text=refused)
                await step(user, "fill", testid="recover-key" if how == "key"
                           else "recover-passphrase", text=key if how == "key" else passphrase)
                if how == "key":
                    await step(user, "screenshot", path=str(ARTIFACTS / "21-recover.png"))
                await step(user, "watch_progress")
                await step(user, "click", testid="recover-submit")
                await step(user, "wait_inbox")
                # everything in the log was read (for the second browser, the first one's
                # message too)
                in_log = await logged(yara)
                assert (await step(user, "progress_seen"))["seen"][-1] \
                    == f"{len(in_log)} from the server", in_log
                assert (await step(user, "text", testid="me"))["text"] == "yara"
                await step(user, "open_conversation", account=zeke.account_id)
                shown = (await step(user, "messages"))["messages"]
                # the second browser also reads what the first one recorded
                assert [(m["text"], m["outgoing"]) for m in shown] == [
                    ("before the loss", "true"), ("zeke was here", "false"),
                    *((f"back by {earlier}", "true") for earlier in recovered)]
                recovered.append(how)
                assert (await step(user, "safety"))["digits"] \
                    == zeke.safety_number(yara.account_id).displayable
                await step(user, "screenshot", path=str(ARTIFACTS / f"21-recovered-{how}.png"))
                await step(user, "click", testid="close-safety")
                await step(user, "send", text=f"back by {how}")
                got = await wait_for_text(zeke, f"back by {how}")
                assert got.author == yara.account_id
                deadline = time.monotonic() + 30
                while f"back by {how}" not in await logged(yara):
                    assert time.monotonic() < deadline, "the browser recorded nothing"
                    await asyncio.sleep(0.3)
                # chromium logs the relay's refusal of the wrong passphrase, nothing else
                refusals = ["Failed to load resource: the server responded with a status of 403 "
                            "(Forbidden)"] if how == "passphrase" else []
                assert real_problems((await step(user, "problems"))["problems"]) == refusals
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_browser_links_by_a_typed_code_that_an_sdk_device_approves(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """Typed-code linking (docs/spec/linking.md): the browser shows a short code, the
    SDK device claims it, both derive the same 6-digit number; declined in the browser the
    first time (the SDK device stops, nothing is linked), confirmed the second time: the
    browser becomes a device of the account with its conversation."""
    user = "abby-browser"
    step = browser.step(user)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        abby, bert = await devices.register("abby"), await devices.register("bert")
        try:
            await abby.send_text("bert", "before the typed code")
            await wait_for_text(bert, "before the typed code")
            await step("open", url=relay.url + "/")
            await step("click", testid="start-link")
            await step("fill", testid="link-password", text=PASSWORD)
            await step("fill", testid="link-confirm", text=PASSWORD)
            for attempt in ("declined", "confirmed"):
                await step("click", testid="link-start-code")
                code = (await step("text", testid="link-typed-code"))["text"]
                assert len(code) == 9 and code[4] == "-"
                if attempt == "confirmed":
                    await step("screenshot", path=str(ARTIFACTS / "22-typed-code.png"))
                numbers: list[str] = []

                async def same_number(sas: str) -> bool:
                    numbers.append(sas)
                    return sas == (await step("text", testid="link-sas"))["text"]

                approving = asyncio.create_task(
                    abby.provision_by_code(code, confirm=same_number, timeout=60))
                await step("wait_selector", selector="[data-testid=link-sas]")
                while not numbers:
                    await asyncio.sleep(0.1)
                shown = (await step("text", testid="link-sas"))["text"]
                assert shown == numbers[0] and len(shown) == 7, (shown, numbers)
                if attempt == "declined":
                    await step("click", testid="link-sas-differ")
                    with pytest.raises(ClientError, match="cancelled"):
                        await approving
                    await step("wait_text", testid="error",
                               text="The numbers differ: nothing was linked; start again.")
                    continue
                await step("screenshot", path=str(ARTIFACTS / "23-typed-code-sas.png"))
                await step("click", testid="link-sas-same")
                await approving
                await step("wait_inbox")
            assert (await step("text", testid="me"))["text"] == "abby"
            await step("open_conversation", account=bert.account_id)
            shown_messages = (await step("messages"))["messages"]
            assert [m["text"] for m in shown_messages] == ["before the typed code"]
            await bert.send_text(abby.account_id, "to abby's browser too")
            await step("wait_message", text="to abby's browser too", outgoing=False)
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_the_browser_approves_a_typed_code_shown_by_a_new_sdk_device(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """The other way round: an SDK device being linked shows a typed code, the browser
    (Devices page) types it and both show the same number; once both sides confirmed the
    SDK device joins the browser's account with its contacts."""
    user = "cleo-browser"
    step = browser.step(user)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        dana = await devices.register("dana")
        try:
            cleo_id = (await sign_up_and_write(step, relay.url, "cleo", dana, "dana",
                                               "hello dana")).author
            await step("click", testid="open-devices")
            await step("fill", testid="approve-code", text="AAAA-AAAA")
            await step("click", testid="approve-submit")
            await step("wait_text", testid="approve-error", text=(
                "No new device is waiting with that code: check it, or start again on the new "
                "device (a code works once, for 10 minutes)."))

            pending = await request_link_by_code(relay.url)
            await step("fill", testid="approve-code", text=pending.code.lower())
            await step("click", testid="approve-submit")
            sas = await pending.sas(timeout=60)
            assert (await step("text", testid="approve-sas"))["text"] == sas
            await step("screenshot", path=str(ARTIFACTS / "24-approve-typed-code.png"))
            await pending.confirm()
            await step("click", testid="approve-sas-same")
            linked = await pending.complete(tmp_path / "cleo-laptop.db", passphrase="correct horse",
                                            device_name="laptop", argon2=TEST_PARAMS,
                                            options=devices.options, timeout=60)
            devices.clients.append(linked)
            assert linked.account_id == cleo_id and linked.device_id == 2
            assert linked.safety_number(dana.account_id).displayable \
                == dana.safety_number(cleo_id).displayable
            await step("wait_text", testid="approve-done",
                       text="Sent. The new device finishes joining by itself.")
            await dana.send_text(cleo_id, "to both of cleo's devices")
            await wait_for_text(linked, "to both of cleo's devices")
            assert real_problems((await step("problems"))["problems"]) == [
                "Failed to load resource: the server responded with a status of 404 (Not Found)"]
        finally:
            await devices.close()

    asyncio.run(scenario())
