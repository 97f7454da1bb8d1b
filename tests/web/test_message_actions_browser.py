"""Reactions, edits and deletions for everyone from the browser's conversation view, in
chromium, against an SDK user (web/src/app/message_actions.ts, web/src/ui/messages.ts):
the browser reacts to the SDK user's message, changes and takes back its reaction, edits
its own message and deletes it for everyone, and the SDK user holds each as its own
client would have made it; the browser's own linked SDK device gets each as a sync copy,
and the account's server-stored history holds the edit and the reaction until the
deletion takes them out with the message. The SDK user's reaction shows under the
browser's message, with its count and who reacted."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from cipherpost.client import Client, events
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
    wait_for_text,
)

pytestmark = needs_browser

THUMBS = "\N{THUMBS UP SIGN}"
LAUGH = "\N{FACE WITH TEARS OF JOY}"


def _message(text: str) -> str:
    """The browser's bubble holding ``text``."""
    return f'[data-testid=message]:has-text("{text}")'


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.3)


def _texts(client: Client, conversation: str) -> list[str]:
    return [DataMessage.FromString(m.body).text
            for m in client.store.messages(conversation, limit=100)]


def test_the_browser_reacts_edits_and_deletes_and_shows_reactions(
        tmp_path: Path, relay: ThreadedRelay, browser: Browser) -> None:
    user = "lena"
    step = browser.step(user)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            kim = await devices.register("kim")
            await sign_up(step, relay.url, user)
            await turn_server_history_on(step)
            laptop = await link_sdk_device(step, tmp_path, relay, devices, "laptop")
            await step("click", testid="close-page")
            lena = laptop.account_id

            await step("chat", username="kim")
            await step("send", text="see you at nine")
            mine = await wait_for_text(kim, "see you at nine")
            await kim.send_text(lena, "bring snacks")
            await step("wait_message", text="bring snacks", outgoing=False)
            theirs = kim.store.messages(lena, limit=100)[-1]
            assert DataMessage.FromString(theirs.body).text == "bring snacks"

            # the SDK user's reaction shows under the browser's message: emoji, count, who
            await kim.react(lena, (lena, mine.timestamp), THUMBS)
            shown = f'{_message("see you at nine")} [data-testid=reaction]' \
                    f'[data-emoji="{THUMBS}"][data-count="1"][data-mine=false][title=kim]'
            await step("wait_selector", selector=shown)
            found = await step("elements", selector=shown)
            assert [e["text"] for e in found["elements"]] == [f"{THUMBS} 1"]

            # the browser reacts to kim's message, changes its reaction, takes it back
            async def react(testid: str, emoji: str | None = None) -> None:
                await step("click_selector",
                           selector=f'{_message("bring snacks")} [data-testid=message-actions]')
                extra = "" if emoji is None else f'[data-emoji="{emoji}"]'
                await step("click_selector",
                           selector=f'{_message("bring snacks")} [data-testid={testid}]{extra}')

            def reaction_of(emoji: str, removed: bool) -> Callable[[object], bool]:
                return lambda e: isinstance(e, events.Reaction) and e.reactor == lena \
                    and e.target_timestamp == theirs.timestamp and e.emoji == emoji \
                    and e.removed is removed

            await react("react", THUMBS)
            await step("wait_selector", selector=f'{_message("bring snacks")} '
                       f'[data-testid=reaction][data-emoji="{THUMBS}"][data-mine=true]')
            await wait_for_event(kim, reaction_of(THUMBS, False))
            assert kim.store.reactions(kim.account_id, theirs.timestamp) == {lena: THUMBS}
            await react("react", LAUGH)
            await wait_for_event(kim, reaction_of(LAUGH, False))
            assert kim.store.reactions(kim.account_id, theirs.timestamp) == {lena: LAUGH}
            await step("wait_selector", selector=f'{_message("bring snacks")} '
                       f'[data-testid=reaction][data-emoji="{LAUGH}"][data-mine=true]')
            count = await step("count",
                               selector=f'{_message("bring snacks")} [data-testid=reaction]')
            assert count["count"] == 1, "one reaction per person: the new one replaced the old"
            await wait_for_event(laptop, reaction_of(LAUGH, False))
            assert laptop.store.reactions(kim.account_id, theirs.timestamp) == {lena: LAUGH}
            await react("unreact")
            await wait_for_event(kim, reaction_of(LAUGH, True))
            assert kim.store.reactions(kim.account_id, theirs.timestamp) == {}
            async def no_reaction() -> bool:
                found = await step("count",
                                   selector=f'{_message("bring snacks")} [data-testid=reaction]')
                return bool(found["count"] == 0)

            await _until(no_reaction, "the reaction taken back is still shown")

            # only the browser's own message can be edited or deleted
            await step("click_selector",
                       selector=f'{_message("bring snacks")} [data-testid=message-actions]')
            for testid in ("edit-message", "delete-message"):
                none = await step("count", selector=f'{_message("bring snacks")} '
                                  f"[data-testid={testid}]")
                assert none["count"] == 0, testid

            # an edit: an empty text is refused with a message, a new one goes everywhere
            actions = f'{_message("see you at nine")} [data-testid=message-actions]'
            await step("click_selector", selector=actions)
            await step("click_selector", selector=f'{_message("see you at nine")} '
                       "[data-testid=edit-message]")
            await step("fill", testid="edit-input", text="   ")
            await step("click", testid="edit-save")
            await step("wait_selector", selector="[data-testid=send-error]:has-text('empty')")
            await step("fill", testid="edit-input", text="see you at ten")
            await step("click", testid="edit-save")
            await step("wait_message", text="see you at ten", outgoing=True)
            await step("wait_selector", selector=f'{_message("see you at ten")}[data-edited=true] '
                       '.meta:has-text("edited")')
            edited = await wait_for_event(kim, lambda e: isinstance(e, events.MessageEdited)
                                          and e.timestamp == mine.timestamp)
            assert isinstance(edited, events.MessageEdited) and edited.text == "see you at ten"
            assert _texts(kim, lena) == ["see you at ten", "bring snacks"]
            await wait_for_event(laptop, lambda e: isinstance(e, events.MessageEdited)
                                 and e.text == "see you at ten")

            # the history holds the edit and the browser's reactions as change entries
            async def changes() -> list[DataMessage]:
                return [e.change.data for e in await logged_events(laptop)
                        if e is not None and e.WhichOneof("body") == "change"]

            async def edit_logged() -> bool:
                return any(d.HasField("edit") and d.edit.timestamp == mine.timestamp
                           and d.text == "see you at ten" for d in await changes())

            await _until(edit_logged, "the edit's history entry")
            assert any(d.HasField("reaction") and d.reaction.emoji == LAUGH
                       for d in await changes())

            # a deletion for everyone: gone here, at kim's, on the linked device and in the
            # history, with the edit's and the reaction's entries
            await kim.react(lena, (lena, mine.timestamp), LAUGH)
            await step("wait_selector", selector=f'{_message("see you at ten")} '
                       f'[data-testid=reaction][data-emoji="{LAUGH}"]')
            delete = f'{_message("see you at ten")} [data-testid=delete-message]'
            await step("click_selector", selector=f'{_message("see you at ten")} '
                       "[data-testid=message-actions]")
            await step("click_selector", selector=delete)
            await step("wait_selector", selector=f"{delete}[data-confirm=yes]")
            await step("click_selector", selector=delete)
            await step("wait_message_gone", text="see you at ten")
            await wait_for_event(kim, lambda e: isinstance(e, events.MessageDeleted)
                                 and e.timestamp == mine.timestamp)
            assert _texts(kim, lena) == ["bring snacks"]
            await wait_for_event(laptop, lambda e: isinstance(e, events.MessageDeleted)
                                 and e.timestamp == mine.timestamp)
            assert "see you at ten" not in _texts(laptop, kim.account_id)

            async def history_forgot() -> bool:
                live = [e for e in await logged_events(laptop) if e is not None]
                names_it = [e for e in live
                            if (e.WhichOneof("body") == "message"
                                and e.message.data.timestamp == mine.timestamp)
                            or (e.WhichOneof("body") == "change"
                                and (e.change.data.edit.timestamp == mine.timestamp
                                     or e.change.data.reaction.target.timestamp
                                     == mine.timestamp))]
                return names_it == []

            await _until(history_forgot, "the message's entries left the history")
            assert real_problems((await step("problems"))["problems"]) == []
        finally:
            await devices.close()

    asyncio.run(scenario())
