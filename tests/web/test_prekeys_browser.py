"""The browser client keeps its one-time prekeys stocked on the relay, in chromium: others
use them up (bundle fetches, a PreKey message), the browser checks the relay's counts
after the PreKey message and uploads new EC and Kyber batches (web/src/app/keys.ts, the
SDK's KeyPolicy); a session started on a Kyber key of the new batch (the old ones are
all gone) decrypts in the browser."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from ..client.conftest import Devices, ThreadedRelay
from .browsing import (
    Browser,
    needs_browser,
    real_problems,
    sign_up,
)

pytestmark = needs_browser
LOW_WATER, EC_BATCH, KYBER_BATCH = 20, 100, 40  # cipherpost.client.keys.KeyPolicy


def _counts(tmp_path: Path, account: str) -> tuple[int, int]:
    """(one-time EC, one-time Kyber) prekeys the relay holds for the account's device 1."""
    with sqlite3.connect(tmp_path / "relay" / "relay.db") as db:
        ec = db.execute("SELECT count(*) FROM one_time_prekeys WHERE account_id = ?",
                        (account,)).fetchone()[0]
        kyber = db.execute("SELECT count(*) FROM kyber_prekeys WHERE account_id = ? "
                           "AND NOT last_resort", (account,)).fetchone()[0]
    return int(ec), int(kyber)


def test_the_browser_replenishes_its_one_time_prekeys_after_others_use_them(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    user = "pia"
    step = browser.step(user)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        quin, rex = await devices.register("quin"), await devices.register("rex")
        try:
            await sign_up(step, relay.url, user)
            signed_up = time.monotonic()
            account = await quin.resolve(user)
            assert _counts(tmp_path, account) == (EC_BATCH, KYBER_BATCH)

            # someone takes bundles until fewer than the low-water mark are left
            for _ in range(EC_BATCH - LOW_WATER + 1):
                await quin.api.bundles(account, 1)
            assert _counts(tmp_path, account) == (LOW_WATER - 1, 0)

            # a PreKey message (after the connection's own check has aged 10 s)
            await asyncio.sleep(max(0.0, 11 - (time.monotonic() - signed_up)))
            await quin.send_text(user, "on one of your last keys")
            await step("wait_unread", account=quin.account_id, count=1)
            deadline = time.monotonic() + 30
            while _counts(tmp_path, account) != (LOW_WATER - 2 + EC_BATCH, KYBER_BATCH):
                assert time.monotonic() < deadline, _counts(tmp_path, account)
                await asyncio.sleep(0.2)

            # a Kyber key of the new batch works: its private half is in the browser
            await rex.send_text(user, "on a new key")
            await step("wait_unread", account=rex.account_id, count=1)
            await step("open_conversation", account=rex.account_id)
            await step("wait_message", text="on a new key", outgoing=False)
            assert _counts(tmp_path, account) == (LOW_WATER - 3 + EC_BATCH, KYBER_BATCH - 1)
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()

    asyncio.run(scenario())
