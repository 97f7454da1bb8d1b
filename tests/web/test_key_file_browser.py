"""The encrypted key file between the SDK and the browser (web/src/app/key_file.ts, the
SDK's cipherpost.client.export; docs/spec/history.md, "Export"): a file the SDK writes
makes a fresh browser a device of the account, with the conversation it holds, that
then chats with the SDK contact; a file the browser writes makes a new SDK device with
``import_account``. The browser's writer is also read by ``read_export`` under Node."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cipherpost.client import Client, recovery
from cipherpost.client.export import ExportError, export_account, import_account, read_export
from cipherpost.client.proto.app_pb2 import (
    DataMessage,
    ExportRecord,
    HistoryEvent,
    HistoryMessage,
    RecoveryBlob,
)
from cipherpost.client.store.crypto import TEST_PARAMS

from ..client.conftest import Devices, ThreadedRelay
from .browsing import (
    ARTIFACTS,
    PASSWORD,
    WEB,
    Browser,
    needs_browser,
    real_problems,
    wait_for_text,
)

pytestmark = needs_browser

EXPORT_PASSPHRASE = "a key file passphrase, kept apart"


def _texts(client: Client) -> list[tuple[str, bool]]:
    return [(DataMessage.FromString(m.body).text, m.outgoing)
            for m in client.store.all_messages()]


def test_sdk_reads_a_key_file_the_browser_code_writes(tmp_path: Path) -> None:
    """writeKeyFile under Node, read_export in Python: the same records; a cut or
    lengthened file and a wrong passphrase are refused by the SDK too."""
    records = [
        ExportRecord(account=RecoveryBlob(account_id="0f8e2c5a-7d1b-4c3e-9a6f-2b4d8e1c7a90",
                                          identity_key_pair=b"\x01" * 69, username="nina")),
        ExportRecord(recovery_secrets=bytes(range(80))),
        ExportRecord(event=HistoryEvent(message=HistoryMessage(
            conversation="5c1d9e7b-3a2f-4e8d-b6c0-9f1a2e3d4c5b", author="x", author_device=1,
            received_at=5, outgoing=False, data=DataMessage(timestamp=4, text="hi")))),
    ]
    request = {"passphrase": EXPORT_PASSPHRASE, "params": [1, 8, 1],
               "records": [base64.b64encode(r.SerializeToString()).decode() for r in records]}
    written = subprocess.run(["node", "--import", "tsx", "test/key_file_write.ts"], cwd=WEB,
                             input=json.dumps(request), capture_output=True, text=True,
                             check=True, timeout=60)
    data = base64.b64decode(written.stdout)
    path = tmp_path / "browser.cpexport"
    path.write_bytes(data)
    assert read_export(path, EXPORT_PASSPHRASE) == records
    for name, damaged, passphrase in (("cut", data[:-20], EXPORT_PASSPHRASE),
                                      ("longer", data + data[-40:], EXPORT_PASSPHRASE),
                                      ("wrong", data, EXPORT_PASSPHRASE + "!")):
        bad = tmp_path / f"{name}.cpexport"
        bad.write_bytes(damaged)
        with pytest.raises(ExportError):
            read_export(bad, passphrase)


def test_a_key_file_moves_an_account_between_the_sdk_and_a_browser(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """The SDK exports (with its messages); a fresh browser refuses a wrong passphrase
    and a cut file, storing nothing, then imports it: it is a device of the account with
    the username, the contact and the conversation from the file, and chats with the SDK
    contact. It then writes a key file itself, from which the SDK makes another device
    with the whole conversation."""
    user = "kira-browser"

    async def step(cmd: str, **args: Any) -> dict[str, Any]:
        return await asyncio.to_thread(browser.do, cmd, user=user, **args)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        kira, lars = await devices.register("kira"), await devices.register("lars")
        imported: Client | None = None
        try:
            await kira.send_text("lars", "written before the export")
            await wait_for_text(lars, "written before the export")
            await lars.send_text(kira.account_id, "lars answered")
            await wait_for_text(kira, "lars answered")
            await recovery.create_key(kira)
            sdk_file = tmp_path / "kira.cpexport"
            export_account(kira, sdk_file, EXPORT_PASSPHRASE, with_history=True,
                           params=TEST_PARAMS)
            data = sdk_file.read_bytes()

            await step("open", url=relay.url + "/")
            await step("click", testid="start-import")
            wrong = "Wrong passphrase, or the key file is damaged."
            costly = data[:9] + (13).to_bytes(4, "big") + data[13:]  # past MAX_PARAMS' 12 passes
            for file, passphrase, refused in (
                    (data, EXPORT_PASSPHRASE + "!", wrong),
                    (data[:-1], EXPORT_PASSPHRASE, "The key file is truncated."),
                    (costly, EXPORT_PASSPHRASE, "The key file's key parameters are refused: Argon2 "
                     "parameters 13 passes, 8 KiB, 1 lanes cost more than this client derives keys "
                     "with (at most 12 passes, 262144 KiB, 8 lanes).")):
                await step("set_file", testid="keyfile-file", name="kira.cpexport",
                           data=base64.b64encode(file).decode())
                await step("fill", testid="keyfile-passphrase", text=passphrase)
                await step("fill", testid="keyfile-password", text=PASSWORD)
                await step("fill", testid="keyfile-confirm", text=PASSWORD)
                await step("click", testid="keyfile-submit")
                await step("wait_text", testid="error", text=refused)
                assert (await step("dump_store"))["records"] == 0
            await step("set_file", testid="keyfile-file", name="kira.cpexport",
                       data=base64.b64encode(data).decode())
            await step("fill", testid="keyfile-passphrase", text=EXPORT_PASSPHRASE)
            await step("screenshot", path=str(ARTIFACTS / "22-key-file-import.png"))
            await step("click", testid="keyfile-submit")
            await step("wait_inbox")
            assert (await step("text", testid="me"))["text"] == "kira"
            await step("open_conversation", account=lars.account_id)
            shown = (await step("messages"))["messages"]
            assert [(m["text"], m["outgoing"]) for m in shown] == [
                ("written before the export", "true"), ("lars answered", "false")]

            await step("send", text="from the imported browser")
            got = await wait_for_text(lars, "from the imported browser")
            assert got.author == kira.account_id

            # the devices page is drawn again when a message arrives: what is typed stays
            await step("click", testid="open-devices")
            await step("fill", testid="keyfile-export-passphrase", text=EXPORT_PASSPHRASE)
            await step("fill", testid="keyfile-export-confirm", text=EXPORT_PASSPHRASE)
            await lars.send_text(kira.account_id, "to every device of kira")
            await step("wait_selector", selector=f'[data-testid=conversation][data-account="'
                       f'{lars.account_id}"] .preview:text-is("to every device of kira")')
            for testid in ("keyfile-export-passphrase", "keyfile-export-confirm"):
                assert (await step("value", testid=testid))["value"] == EXPORT_PASSPHRASE, testid
            await step("screenshot", path=str(ARTIFACTS / "22-key-file-export.png"))
            saved = await step("download_click", testid="keyfile-export")
            assert saved["filename"].startswith("cipherpost-kira-")
            browser_file = tmp_path / "from-browser.cpexport"
            browser_file.write_bytes(base64.b64decode(saved["base64"]))
            records = read_export(browser_file, EXPORT_PASSPHRASE)
            assert records[0].account.account_id == kira.account_id
            assert records[0].account.username == "kira"
            imported = await import_account(browser_file, tmp_path / "kira-again.db", relay.url,
                                            EXPORT_PASSPHRASE, passphrase="correct horse",
                                            argon2=TEST_PARAMS, options=devices.options)
            assert imported.account_id == kira.account_id
            assert sorted(_texts(imported)) == sorted([
                ("written before the export", True), ("lars answered", False),
                ("from the imported browser", True), ("to every device of kira", False)])
            await imported.send_text(lars.account_id, "and from the SDK device made from it")
            await wait_for_text(lars, "and from the SDK device made from it")
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            if imported is not None:
                await imported.close()
            await devices.close()

    asyncio.run(scenario())


def test_an_import_that_fails_after_the_join_leaves_no_device_and_a_retry_works(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """The relay takes the browser's device but the page cannot set it up (its answer
    names another account than the file's): the page removes the device again with its
    own token, keeps nothing and says so; the relay lists no orphan. The retry joins while
    the server-stored history is unreachable: the account is kept and usable, and the
    conversation comes from the server once it is reachable again (after a reload)."""
    user = "kira-retry"

    async def step(cmd: str, **args: Any) -> dict[str, Any]:
        return await asyncio.to_thread(browser.do, cmd, user=user, **args)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        kira, lars = await devices.register("kira"), await devices.register("lars")
        try:
            await lars.send_text(kira.account_id, "kept on the server")
            await wait_for_text(kira, "kept on the server")
            await kira.set_server_history(True)
            await recovery.create_key(kira)
            sdk_file = tmp_path / "kira.cpexport"
            export_account(kira, sdk_file, EXPORT_PASSPHRASE, with_history=False,
                           params=TEST_PARAMS)

            await step("open", url=relay.url + "/")
            await step("click", testid="start-import")
            await step("set_file", testid="keyfile-file", name="kira.cpexport",
                       data=base64.b64encode(sdk_file.read_bytes()).decode())
            await step("fill", testid="keyfile-passphrase", text=EXPORT_PASSPHRASE)
            await step("fill", testid="keyfile-password", text=PASSWORD)
            await step("fill", testid="keyfile-confirm", text=PASSWORD)
            await step("route", path="/v1/recovery/devices", method="POST", action="patch",
                       patch={"account_id": "00000000-0000-4000-8000-00000000abcd"})
            await step("click", testid="keyfile-submit")
            await step("wait_text", testid="error", text=(
                "This browser could not be set up (the link code joined another account than "
                "announced); the server forgot it again and nothing was kept: try again."))
            assert [d["device_id"] for d in await kira.api.devices()] == [kira.device_id]
            assert (await step("dump_store"))["records"] == 0

            await step("unroute_all")
            await step("route", path="/v1/history", prefix=True, action="abort")
            await step("click", testid="keyfile-submit")
            await step("wait_inbox")
            assert len(await kira.api.devices()) == 2
            await step("unroute_all")
            await step("reload")
            await step("unlock", password=PASSWORD)
            await step("wait_selector", selector=f'[data-testid=conversation][data-account="'
                       f'{lars.account_id}"] .preview:text-is("kept on the server")')
            problems = [p for p in real_problems((await step("problems"))["problems"])
                        if "ERR_FAILED" not in p]  # the aborted history requests
            assert problems == []
        finally:
            await devices.close()

    asyncio.run(scenario())
