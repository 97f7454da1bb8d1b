"""What the browser puts into the server-stored history besides messages, in chromium: the
states of a group it makes and changes, and the edits, reactions and deletions it receives
(web/src/app/changes.ts). A device of the same account that receives none of it restores
all of it from the log alone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from cipherpost.client import Client, events
from cipherpost.client.groups import Group
from cipherpost.client.proto.app_pb2 import DataMessage

from ..client.conftest import Devices, ThreadedRelay, logged_events
from .browsing import (
    Browser,
    link_sdk_device,
    needs_browser,
    real_problems,
    sign_up,
    turn_server_history_on,
    wait_for_event,
)

pytestmark = needs_browser


def _text(text: str) -> Callable[[object], bool]:
    return lambda e: isinstance(e, events.Message) and e.text == text


async def _logged_groups(client: Client) -> list[Group]:
    """The group states in the account's history log, in log order (opened with
    ``client``'s keys)."""
    return [Group.from_bytes(event.group_state) for event in await logged_events(client)
            if event is not None and event.WhichOneof("body") == "group_state"]


def test_a_device_restores_the_browsers_group_and_the_changes_it_received(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    """The browser user turns server history on and links an SDK device, which then
    receives nothing. The browser makes a group with an SDK user, renames it and sets its
    timer; the SDK user edits one message, deletes another and reacts to the browser's.
    Restoring the log, the SDK device holds the group at its latest revision, the edited
    text, the reaction, and not the deleted message: only the browser can have put them
    there."""
    user = "lena"
    step = browser.step(user)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            kim = await devices.register("kim")
            await sign_up(step, relay.url, user)
            await turn_server_history_on(step)
            laptop = await link_sdk_device(step, tmp_path, relay, devices, "laptop")
            assert laptop.server_history
            await step("click", testid="close-page")

            made = (await step("create_group", title="trip", members="kim"))["conversation"]
            group_id = bytes.fromhex(made[6:])
            await step("click", testid="group-members")
            await step("fill", testid="group-title-input", text="trip north")
            await step("click", testid="group-rename")
            await step("wait_text", testid="chat-title", text="trip north")
            await step("select", testid="expire-timer", value="3600")
            await step("wait_selector",
                       selector="[data-testid=timer-notice][data-seconds='3600']")
            await wait_for_event(kim, lambda e: isinstance(e, events.GroupUpdated)
                                 and e.group_id == group_id and e.revision == 2)
            held = kim.group(group_id)
            assert held is not None and (held.title, held.expire_timer) == ("trip north", 3600)

            await step("send", text="who drives?")
            asked = await wait_for_event(kim, _text("who drives?"))
            assert isinstance(asked, events.Message)
            first = await kim.send_group_text(group_id, "I drive at nine")
            mistake = await kim.send_group_text(group_id, "wrong chat, sorry")
            await step("wait_message", text="wrong chat, sorry", outgoing=False)
            await kim.edit(group_id, first, "I drive at ten")
            await kim.delete_for_everyone(group_id, mistake)
            await kim.react(group_id, (asked.author, asked.timestamp), "\N{THUMBS UP SIGN}")
            await step("wait_message", text="I drive at ten", outgoing=False)
            await step("wait_message_gone", text="wrong chat, sorry")
            await step("wait_message_gone", text="I drive at nine")

            # every revision went up (uploads go in event-id order); the laptop received none
            async def revisions() -> list[int]:
                return sorted(g.revision for g in await _logged_groups(laptop) if g.id == group_id)

            deadline = asyncio.get_running_loop().time() + 30
            while await revisions() != [0, 1, 2]:
                assert asyncio.get_running_loop().time() < deadline, await revisions()
                await asyncio.sleep(0.3)
            assert laptop.group(group_id) is None

            async def restored() -> bool:
                await laptop.sync_history()
                texts = [DataMessage.FromString(m.body).text
                         for m in laptop.store.messages(made, limit=100)]
                return "I drive at ten" in texts and "wrong chat, sorry" not in texts \
                    and bool(laptop.store.reactions(asked.author, asked.timestamp))

            deadline = asyncio.get_running_loop().time() + 30
            while not await restored():
                assert asyncio.get_running_loop().time() < deadline, "no changes in the log"
                await asyncio.sleep(0.3)
            group = laptop.group(group_id)
            assert group is not None
            assert (group.revision, group.title, group.expire_timer) == (2, "trip north", 3600)
            assert set(group.members) == {laptop.account_id, kim.account_id}
            texts = sorted(DataMessage.FromString(m.body).text
                           for m in laptop.store.messages(made, limit=100))
            assert texts == ["I drive at ten", "who drives?"]
            assert laptop.store.reactions(asked.author, asked.timestamp) == {
                kim.account_id: "\N{THUMBS UP SIGN}"}
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()

    asyncio.run(scenario())
