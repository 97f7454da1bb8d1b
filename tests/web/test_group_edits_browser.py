"""Group edits between the browser client and Python SDK users, in chromium: the browser
adds a member, renames the group and removes a member with signed group changes the SDK
accepts (the removed member gets no later message: the browser's sender key rotated);
an SDK admin's rename and removal show in the browser, and the browser leaves an SDK
user's group (the SDK sees it go, and the browser then shows it cannot write there)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from cipherpost.client import Client, events
from cipherpost.client.groups import ADMIN

from ..client.conftest import Devices, ThreadedRelay
from .browsing import (
    ARTIFACTS,
    Browser,
    needs_browser,
    real_problems,
    sign_up,
    wait_for_event,
)

pytestmark = needs_browser


def _updated(group_id: bytes, *, title: str | None = None, members: int | None = None,
             removed: bool | None = None) -> Callable[[object], bool]:
    def match(e: object) -> bool:
        return isinstance(e, events.GroupUpdated) and e.group_id == group_id \
            and (title is None or e.title == title) \
            and (members is None or len(e.members) == members) \
            and (removed is None or e.removed == removed)
    return match


def _text(text: str, conversation: str) -> Callable[[object], bool]:
    return lambda e: isinstance(e, events.Message) and e.text == text \
        and e.conversation == conversation


async def _messages(client: Client) -> list[str]:
    """Texts of the messages a receive returns (twice, so nothing still in flight is missed)."""
    texts = []
    for _ in range(2):
        texts += [e.text for e in await client.receive() if isinstance(e, events.Message)]
        await asyncio.sleep(0.5)
    return texts


def test_browser_adds_renames_removes_and_leaves_and_sees_an_sdk_admins_changes(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    user = "gwen"
    step = browser.step(user)

    async def members_shown() -> dict[str, bool]:
        shown = (await step("elements", testid="group-member"))["elements"]
        return {e["data"]["account"]: e["data"]["admin"] == "true" for e in shown}

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        hal, ida, jon = [await devices.register(n) for n in ("hal", "ida", "jon")]
        try:
            await sign_up(step, relay.url, user)
            made = (await step("create_group", title="crew", members="hal, ida"))["conversation"]
            group_id = bytes.fromhex(made[6:])
            for member in (hal, ida):
                await wait_for_event(member, _updated(group_id, title="crew", members=3))

            # the browser (admin) adds jon
            await step("click", testid="group-members")
            await step("fill", testid="group-add-input", text="jon")
            await step("click", testid="group-add")
            await step("wait_text", testid="group-members", text="4 members")
            for member in (hal, ida, jon):
                await wait_for_event(member, _updated(group_id, members=4))
            assert jon.group(group_id) is not None

            # renames it
            await step("fill", testid="group-title-input", text="crew two")
            await step("click", testid="group-rename")
            await step("wait_text", testid="chat-title", text="crew two")
            for member in (hal, ida, jon):
                await wait_for_event(member, _updated(group_id, title="crew two", members=4))
            # sets the group's disappearing timer: a signed change every member applies,
            # and the next message carries it
            await step("select", testid="expire-timer", value="3600")
            await step("wait_selector", selector="[data-testid=timer-notice][data-seconds='3600']")
            await step("send", text="four of us")
            for member in (hal, ida, jon):
                message = await wait_for_event(member, _text("four of us", made))
                assert isinstance(message, events.Message) and message.expire_timer == 3600
                held = member.group(group_id)
                assert held is not None and held.expire_timer == 3600

            # removes ida: she learns it, and the next message does not reach her
            await step("click_selector",
                       selector=f'[data-testid=group-remove][data-account="{ida.account_id}"]')
            await step("wait_text", testid="group-members", text="3 members")
            await wait_for_event(ida, _updated(group_id, members=3, removed=True))
            for member in (hal, jon):
                await wait_for_event(member, _updated(group_id, members=3, removed=False))
            held = hal.group(group_id)
            assert held is not None and ida.account_id not in held.members
            assert await members_shown() == dict.fromkeys(held.members, False) | {
                a: True for a in held.members if held.members[a] == ADMIN}
            await step("send", text="after ida left")
            for member in (hal, jon):
                await wait_for_event(member, _text("after ida left", made))
            await step("wait_message", text="after ida left", status="delivered")
            assert "after ida left" not in await _messages(ida)
            # makes hal an admin too
            await step("click_selector",
                       selector=f'[data-testid=group-admin][data-account="{hal.account_id}"]')
            await step("wait_selector", selector=f'[data-testid=group-member][data-account='
                       f'"{hal.account_id}"][data-admin=true]')
            promoted = await wait_for_event(hal, _updated(group_id, members=3))
            held = hal.group(group_id)
            assert isinstance(promoted, events.GroupUpdated) and held is not None \
                and held.is_admin(hal.account_id)
            await step("screenshot", path=str(ARTIFACTS / "group-edits.png"))

            # an SDK admin's group: its rename and removal show in the browser
            theirs = await hal.create_group("hal's", ["gwen", "jon"])
            conversation = "group:" + theirs.id.hex()
            await hal.send_group_text(theirs.id, "hello from hal")
            await step("wait_unread", account=conversation, count=1)
            await step("open_conversation", account=conversation)
            await step("wait_message", text="hello from hal", outgoing=False)
            await hal.set_group_title(theirs.id, "hal's place")
            await step("wait_text", testid="chat-title", text="hal's place")
            await hal.remove_members(theirs.id, ["jon"])
            await step("wait_text", testid="group-members", text="2 members")
            await step("click", testid="group-members")
            assert (await members_shown()) == {hal.account_id: True,
                                               next(a for a in theirs.members
                                                    if a not in (hal.account_id,
                                                                 jon.account_id)): False}
            # not an admin there: no add or remove, only rename and leave
            assert (await step("count", selector="[data-testid=group-add]"))["count"] == 0
            assert (await step("count", selector="[data-testid=group-remove]"))["count"] == 0

            # the browser leaves it
            await step("click", testid="group-leave")
            await step("click", testid="group-leave-confirm")
            await step("wait_selector", selector="[data-testid=group-left]")
            left = await wait_for_event(hal, _updated(theirs.id, members=1))
            assert isinstance(left, events.GroupUpdated) and hal.account_id in left.members
            await hal.send_group_text(theirs.id, "only me now")
            await step("send", text="still here?")
            await step("wait_text", testid="send-error", text="You are not in this group.")
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()

    asyncio.run(scenario())
