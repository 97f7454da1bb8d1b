"""An echo bot on the Cipherpost SDK: answers every text message with the same text.

    cipherpost --profile echo register --server http://127.0.0.1:8080 --username echo
    CIPHERPOST_PASSPHRASE=... python examples/echo_bot.py --profile echo

It uses the store the CLI made for the profile, so the bot is one device like any other.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from cipherpost.cli.main import default_home
from cipherpost.client import Client, ClientOptions
from cipherpost.client import events as ev


async def echo(client: Client, *, limit: int | None = None) -> int:
    """Answer text messages from others until ``limit`` answers were sent (forever when
    None); return how many were sent."""
    answered = 0
    async for event in client.listen():
        if isinstance(event, ev.Message) and not event.outgoing and event.text:
            await client.send_text(event.author, event.text)
            answered += 1
            if limit is not None and answered >= limit:
                break
    return answered


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    args = parser.parse_args()
    path = default_home() / args.profile / "device.db"
    # A bot cannot stop to ask about a contact's changed key: accept changes, as a
    # documented policy (verified contacts still block until re-verified).
    options = ClientOptions(accept_changed_identities=True)
    async with await Client.open(path, passphrase=os.environ.get("CIPHERPOST_PASSPHRASE"),
                                 options=options) as client:
        await echo(client)


if __name__ == "__main__":
    asyncio.run(main())
