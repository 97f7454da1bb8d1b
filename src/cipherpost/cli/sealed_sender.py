"""``cipherpost trust-root``: the relay's sealed-sender trust root this device pinned
(docs/spec/sealed-sender.md), and re-pinning it after the operator replaced it."""

from __future__ import annotations

import base64
import binascii

import click

from cipherpost.client import Client, sealed
from cipherpost.protocol import ProtocolError, PublicKey

from .main import Context, _with_client, cli


@cli.command("trust-root")
@click.option("--set", "given", default=None, metavar="KEY",
              help="Pin this key (base64, as the operator published it).")
@click.option("--repin", is_flag=True,
              help="Pin the key the relay now shows, after confirming it (when the "
                   "operator announced a new root).")
@_with_client
async def trust_root(ctx: Context, client: Client, given: str | None, repin: bool) -> None:
    """Show the key that signs the sender certificates this device accepts on sealed
    messages. Compare it with the one the operator publishes."""
    if given is not None and repin:
        raise click.UsageError("give --set KEY or --repin, not both")
    new: PublicKey | None = None
    if given is not None:
        new = parse_key(given, "--set")
    elif repin:
        new = await client.api.trust_root()
        current = sealed.trust_root(client.store)
        if current != new and not click.confirm(
                f"The relay now shows the trust root {_text(new)}. Pin it (only if the "
                "operator announced this key)?", default=False):
            raise click.Abort()
    if new is not None:
        with client.store.transaction():
            sealed.pin_trust_root(client.store, new)
            sealed.forget_sender_certificate(client.store)
    pinned = sealed.trust_root(client.store)
    text = _text(pinned) if pinned is not None else "none (pinned at the next connection)"
    ctx.emit({"trust_root": _text(pinned) if pinned is not None else None},
             f"Sealed-sender trust root: {text}")


def parse_key(text: str, option: str) -> PublicKey:
    """A base64 public key given on the command line.

    Raises:
        click.BadParameter: not one.
    """
    try:
        return PublicKey.deserialize(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError, ProtocolError):
        raise click.BadParameter("not a base64 public key", param_hint=option) from None


def _text(key: PublicKey) -> str:
    return base64.b64encode(key.serialize()).decode("ascii")
