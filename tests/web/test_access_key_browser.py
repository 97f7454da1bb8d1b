"""The browser client finds out at its next connection that the relay lost its
unidentified-access key (a restore from an older backup, simulated by deleting the rows)
and registers it again, as the SDK does since 5d020a4 (GET
/v1/accounts/me/unidentified-access), not a day later: contacts' sealed sends, refused
with 401 meanwhile (which only they see), go sealed again. A relay that still holds the
key gets no write."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cipherpost.client import Client, sealed

from ..client.conftest import Devices, ThreadedRelay
from .browsing import (
    PASSWORD,
    Browser,
    needs_browser,
    real_problems,
    sign_up,
    wait_for_text,
)
from .test_sealed_browser import SEALED, _db, _queued, _wait

pytestmark = needs_browser


def _stored(tmp_path: Path, account: str) -> tuple[int, int, int | None]:
    """(access keys held, device marked as opening sealed, when the key was written)."""
    with _db(tmp_path) as db:
        row = db.execute(
            "SELECT COUNT(u.key_hash), d.sealed_sender, MAX(u.updated_at) FROM devices d "
            "LEFT JOIN unidentified_access u ON u.account_id = d.account_id "
            "WHERE d.account_id = ? GROUP BY d.device_id", (account,)).fetchone()
    return int(row[0]), int(row[1]), row[2]


def test_the_browser_registers_its_access_key_again_when_the_relay_lost_it(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    user = "tess"
    step = browser.step(user)

    async def reconnect() -> None:
        """A new page load and so a new WebSocket connection (the relay restarted)."""
        await step("reload")
        await step("unlock", password=PASSWORD)
        await step("wait_selector", selector="[data-testid=connection][data-online=true]")

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        uma: Client = await devices.register("uma")
        try:
            await sign_up(step, relay.url, user)
            tess = await uma.resolve(user)
            await step("chat", username="uma")
            await step("send", text="hello uma")
            await wait_for_text(uma, "hello uma")
            assert sealed.contact_profile_key(uma.store, tess) is not None
            held = _wait(lambda: _stored(tmp_path, tess)[:2] == (1, 1) and _stored(tmp_path, tess),
                         "the browser's access key")

            # a relay that holds the key: the connection's check reads and writes nothing
            await reconnect()
            await asyncio.sleep(2)  # the check runs beside the connection's other upkeep
            assert _stored(tmp_path, tess) == held

            with _db(tmp_path) as db:  # "restored" from an older backup
                db.execute("DELETE FROM unidentified_access")
                db.execute("UPDATE devices SET sealed_sender = 0")
            await uma.sealed_sender_upkeep(check_after_ms=0)  # the SDK user finds out at once
            # meanwhile a contact's sealed send is refused (401) and goes identified; the
            # contact drops the browser's profile key until the browser's next message
            await uma.send_text(tess, "while the relay lost it")
            assert sealed.contact_profile_key(uma.store, tess) is None
            await step("open_conversation", account=uma.account_id)
            await step("wait_message", text="while the relay lost it", outgoing=False)

            # the next connection finds out and registers the key again, at once
            await reconnect()
            _wait(lambda: _stored(tmp_path, tess)[:2] == (1, 1), "the key registered again")
            await step("open_conversation", account=uma.account_id)
            await step("send", text="my key again")
            await wait_for_text(uma, "my key again")
            assert sealed.contact_profile_key(uma.store, tess) is not None

            # sealed sends reach the browser again (kept queued while it is offline to look);
            # first what it received is acknowledged (an ack waits up to a second for a send)
            _wait(lambda: _queued(tmp_path, tess) == [], "the browser's acks")
            await step("offline", offline=True)
            await uma.send_text(tess, "sealed again")
            rows = _queued(tmp_path, tess)
            assert rows and all(row == (None, None, SEALED, 0) for row in rows), rows
            await step("offline", offline=False)
            await step("wait_message", text="sealed again", outgoing=False)
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()

    asyncio.run(scenario())
