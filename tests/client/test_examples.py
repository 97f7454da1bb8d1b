"""The example bots do what they say, against a real relay."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx

from cipherpost.client import events as ev

from .conftest import Devices, ThreadedRelay

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import echo_bot
import webhook_bot


def test_echo_bot(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            bot, alice = await devices.register("echo"), await devices.register("alice")
            await alice.send_text("echo", "ping 1")
            await alice.send_text("echo", "ping 2")
            assert await asyncio.wait_for(echo_bot.echo(bot, limit=2), timeout=60) == 2
            got = [e.text for e in await alice.receive() if isinstance(e, ev.Message)]
            assert got == ["ping 1", "ping 2"]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_webhook_bot(tmp_path: Path, relay: ThreadedRelay) -> None:
    posted: list[dict[str, object]] = []

    def hook(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return httpx.Response(204)

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        real_client = httpx.AsyncClient
        try:
            bot, alice = await devices.register("hookbot"), await devices.register("alice")
            await alice.send_text("hookbot", "to the webhook")
            # webhook_bot.httpx is the httpx module: the SDK's own clients (which bring
            # their transport) go on as they are; only the bot's webhook client is mocked.
            webhook_bot.httpx.AsyncClient = (  # type: ignore[misc]
                lambda **kw: real_client(**kw) if "transport" in kw
                else real_client(transport=httpx.MockTransport(hook), **kw))
            forwarded = await asyncio.wait_for(
                webhook_bot.forward(bot, "http://127.0.0.1:9/hook", limit=1), timeout=60)
            assert forwarded == 1
            assert posted == [{"from": alice.account_id, "device": 1,
                               "timestamp": posted[0]["timestamp"], "text": "to the webhook",
                               "conversation": alice.account_id}]
        finally:
            webhook_bot.httpx.AsyncClient = real_client  # type: ignore[misc]
            await devices.close()

    asyncio.run(scenario())
