"""Sealed sender between the browser client and a Python SDK user, in chromium: once each
holds the other's profile key (carried in their first messages), both send sealed, and
the relay's stored rows for those envelopes name no sender (checked in its database
before the recipient fetches them)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cipherpost.client import Client, sealed

from ..client.conftest import Devices, ThreadedRelay, relay_queue
from .browsing import (
    ARTIFACTS,
    Browser,
    needs_browser,
    real_problems,
    sign_up,
    wait_for_text,
)
from .browsing import relay_db as _db
from .browsing import wait_until as _wait

__all__ = ["SEALED", "_db", "_queued", "_wait"]  # test_access_key_browser uses them

pytestmark = needs_browser
SEALED = sealed.SEALED_TYPE


def _queued(tmp_path: Path, account: str) -> list[tuple[str | None, int | None, int, int]]:
    """(sender account, sender device, type, client timestamp) of each envelope the relay
    holds for ``account``, as stored."""
    return relay_queue(tmp_path / "relay" / "relay.db", account)


def test_browser_and_sdk_user_send_each_other_sealed_messages(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    user = "sally"
    step = browser.step(user)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        bob: Client = await devices.register("bob")
        try:
            await sign_up(step, relay.url, user)
            # The browser registered its account's access key (so it opens sealed envelopes).
            with _db(tmp_path) as db:
                account = _wait(lambda: db.execute(
                    "SELECT account_id FROM unidentified_access WHERE account_id != ?",
                    (bob.account_id,)).fetchall(), "the browser's access key")
            sally_id = account[0][0]

            # The browser holds no profile key of Bob's yet: identified, carrying its own.
            await step("chat", username="bob")
            await step("send", text="hello bob")
            rows = _wait(lambda: _queued(tmp_path, bob.account_id), "the first message")
            # The message, and the typing indicators typing it sent (f994cf6): all
            # identified PreKey messages from the browser's device.
            assert rows and all(row[:3] == (sally_id, 1, 3) for row in rows), rows
            got = await wait_for_text(bob, "hello bob")
            assert got.author == sally_id
            assert sealed.contact_profile_key(bob.store, sally_id) is not None

            # Bob answers sealed: the browser is offline so the rows stay queued to look at.
            await step("offline", offline=True)
            await bob.send_text(sally_id, "hi sally, sealed")
            rows = _queued(tmp_path, sally_id)
            assert rows and all(row == (None, None, SEALED, 0) for row in rows), rows
            await step("offline", offline=False)
            await step("wait_message", text="hi sally, sealed", outgoing=False)
            await step("wait_message", text="hello bob", status="delivered")

            # The browser learned Bob's profile key from his message: it sends sealed now,
            # its read and delivery receipts included.
            await bob.receive()  # the browser's delivery receipt, already sealed
            await step("send", text="sealed from the browser")
            rows = _wait(lambda: _queued(tmp_path, bob.account_id), "the sealed message")
            assert all(row == (None, None, SEALED, 0) for row in rows), rows
            got = await wait_for_text(bob, "sealed from the browser")
            assert got.author == sally_id and not got.outgoing
            await step("wait_message", text="sealed from the browser", status="delivered")
            await step("screenshot", path=str(ARTIFACTS / "13-sealed-chat.png"))
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()

    asyncio.run(scenario())
