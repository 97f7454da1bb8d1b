"""Forward every message this device receives to a local webhook as JSON.

    CIPHERPOST_PASSPHRASE=... python examples/webhook_bot.py --profile bot \
        --webhook http://127.0.0.1:9000/hook

Each POST carries {"from", "device", "timestamp", "text", "conversation"}. A message is
acknowledged to the relay once it is stored locally, whether or not the webhook took it;
failed deliveries are retried a few times and then reported on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import httpx

from cipherpost.cli.main import default_home
from cipherpost.client import Client, ClientOptions
from cipherpost.client import events as ev


async def forward(client: Client, webhook: str, *, limit: int | None = None,
                  attempts: int = 3) -> int:
    """POST each received message to ``webhook``; return how many were forwarded."""
    forwarded = 0
    async with httpx.AsyncClient(timeout=10) as http:
        async for event in client.listen():
            if not isinstance(event, ev.Message):
                continue
            body = {"from": event.author, "device": event.author_device,
                    "timestamp": event.timestamp, "text": event.text,
                    "conversation": event.conversation}
            for attempt in range(attempts):
                try:
                    (await http.post(webhook, json=body)).raise_for_status()
                    forwarded += 1
                    break
                except httpx.HTTPError as exc:
                    if attempt == attempts - 1:
                        print(f"webhook failed for a message: {exc}", file=sys.stderr)
                    await asyncio.sleep(0.5 * 2 ** attempt)
            if limit is not None and forwarded >= limit:
                break
    return forwarded


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--webhook", required=True)
    args = parser.parse_args()
    path = default_home() / args.profile / "device.db"
    options = ClientOptions(accept_changed_identities=True)
    async with await Client.open(path, passphrase=os.environ.get("CIPHERPOST_PASSPHRASE"),
                                 options=options) as client:
        await forward(client, args.webhook)


if __name__ == "__main__":
    asyncio.run(main())
