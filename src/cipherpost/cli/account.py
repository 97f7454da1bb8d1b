"""``cipherpost 2fa``, ``cipherpost privacy`` and ``cipherpost account``: the account's
second factor, what the server holds about it, its export and its deletion.

Commands that need the second factor take the global ``--2fa CODE`` (or
``CIPHERPOST_2FA``), or ask for it in a terminal.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import segno
from rich.table import Table

from cipherpost.client import Client
from cipherpost.client import account_security as security

from .main import (
    Context,
    _choose_history,
    _emit_recovery_key,
    _open,
    _with_client,
    clean_line,
    cli,
    out,
    run,
)


def _code(ctx: Context, prompt: str = "Code from your authenticator (or a recovery code)"
          ) -> str | None:
    """The second-factor code: --2fa, else asked in a terminal, else None."""
    if ctx.second_factor:
        return ctx.second_factor
    if not sys.stdin.isatty():
        return None
    value: str = click.prompt(prompt)
    return value.strip()


@cli.group("2fa")
def two_factor() -> None:
    """A second factor (an authenticator app, TOTP) for linking devices, changing the
    recovery secrets, resetting the identity and deleting the account."""


@two_factor.command("enable")
@click.option("--code", default=None, help="The first code (else asked for).")
@_with_client
async def two_factor_enable(ctx: Context, client: Client, code: str | None) -> None:
    """Enrol an authenticator: scan the QR code, then type the code it shows. Prints the
    recovery codes once (each works once, for a lost authenticator)."""
    enrolment = await security.begin_two_factor(client)
    if not ctx.as_json:
        out.print("Scan this with your authenticator app (or type the secret):", markup=False)
        qr = segno.make(enrolment.uri, error="m")
        qr.terminal(compact=True)
        out.print(f"  {enrolment.uri}\n  secret: {enrolment.secret}", markup=False)
    if code is None:
        if not sys.stdin.isatty():
            ctx.emit({"uri": enrolment.uri, "secret": enrolment.secret, "confirmed": False},
                     "Confirm with `cipherpost 2fa enable --code CODE`... after scanning.")
            return
        code = click.prompt("Code shown by the authenticator")
    codes = await security.confirm_two_factor(client, code)
    ctx.emit({"uri": enrolment.uri, "secret": enrolment.secret, "confirmed": True,
              "recovery_codes": codes},
             "Second factor on. Recovery codes (shown once; each works once):\n  "
             + "\n  ".join(codes))


@two_factor.command("confirm")
@click.argument("code")
@_with_client
async def two_factor_confirm(ctx: Context, client: Client, code: str) -> None:
    """Confirm an enrolment started without a terminal (`2fa enable` printed the URI)."""
    codes = await security.confirm_two_factor(client, code)
    ctx.emit({"confirmed": True, "recovery_codes": codes},
             "Second factor on. Recovery codes (shown once; each works once):\n  "
             + "\n  ".join(codes))


@two_factor.command("status")
@_with_client
async def two_factor_status(ctx: Context, client: Client) -> None:
    """Whether the second factor is on, and how many recovery codes are left."""
    status = await security.two_factor_status(client)
    text = ("on, {} recovery codes left".format(status["recovery_codes_left"])
            if status["enabled"] else "enrolment not confirmed" if status["pending"]
            else "off")
    ctx.emit(status, f"Second factor: {text}.")


@two_factor.command("disable")
@_with_client
async def two_factor_disable(ctx: Context, client: Client) -> None:
    """Turn the second factor off (needs a code)."""
    await security.disable_two_factor(client, _code(ctx))
    ctx.emit({"enabled": False}, "Second factor off.")


@two_factor.command("recovery-codes")
@_with_client
async def two_factor_codes(ctx: Context, client: Client) -> None:
    """New recovery codes (needs a code); the old ones stop working."""
    codes = await security.new_recovery_codes(client, _code(ctx) or "")
    ctx.emit({"recovery_codes": codes},
             "New recovery codes (shown once):\n  " + "\n  ".join(codes))


def _day(day: int | None) -> str:
    if day is None:
        return "-"
    return datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%d")


@cli.command("privacy")
@_with_client
async def privacy(ctx: Context, client: Client) -> None:
    """What the server holds about your account, its retention, and this device's
    settings. Act on it with `history off`, `devices remove`, `account delete`."""
    held = await security.privacy_dashboard(client)
    if ctx.as_json:
        ctx.emit(held, "")
        return
    _print_dashboard(held)


def _print_dashboard(held: dict[str, Any]) -> None:
    devices = Table(title="Devices the server knows", title_justify="left")
    for column in ("id", "name", "added", "last seen", "queued", "queued bytes",
                   "prekeys", "sealed"):
        devices.add_column(column)
    for d in held["devices"]:
        devices.add_row(str(d["device_id"]), clean_line(str(d.get("name") or "-")),
                        _day(d["created_day"]), _day(d["last_seen_day"]),
                        str(d["queued_messages"]), str(d["queued_bytes"]),
                        str(d["one_time_prekeys"]), _on(bool(d.get("opens_sealed"))))
    out.print(devices)
    stored = Table(title="Stored for the account", title_justify="left", show_header=False)
    stored.add_column("what")
    stored.add_column("value")
    retention = held["retention"]
    local = held["this_device"]
    rows = [
        ("account", f"{held['account_id']} ({clean_line(str(held.get('username') or '-'))}), "
                    f"since {_day(held['created_day'])}"),
        ("history entries", f"{held['history_entries']} ({held['history_bytes']} bytes, "
                            f"{held['history_tombstones']} deletion marks)"),
        ("recovery key blob", _day(held["recovery_key_day"])),
        ("recovery passphrase blob", _day(held["recovery_passphrase_day"])),
        ("second factor", ("on, " + str(held["two_factor_recovery_codes"])
                           + " recovery codes left") if held["two_factor_enabled"]
         else "off"),
        ("link archives", f"{held['archive_parts']} parts, {held['archive_bytes']} bytes"),
        ("open link codes", str(held["link_codes"])),
        ("sealed-sender access key (SHA-256)", _day(held.get("access_key_day"))),
        ("audit-log salt", "held (deleted with the account)" if held.get("audit_salt")
         else "none"),
        ("invite code (SHA-256)", "held (returned if the account is deleted within "
         "minutes of sign-up)" if held.get("invite_code") else "none"),
        ("attachments", held["attachments"]),
        ("rate limits", ", ".join(f"{r['limit']} {r['remaining']}/{r['capacity']}"
                                  for r in held["rate_limits"])),
        ("waits", ", ".join(f"{k} until {v}" for k, v in held["waits_until"].items())
         or "none"),
        ("queued messages kept", f"{retention['queued_message_days']} days"),
        ("attachments kept", f"{retention['attachment_days']} days"),
        ("idle devices removed after", f"{retention['idle_device_days']} days"),
        ("history kept", "until deleted" if retention["history_days"] is None
         else f"{retention['history_days']} days"),
        ("server history (this device)", "on" if local["server_history"] else "off"),
        ("receipts (this device)", "delivery " + _on(local["delivery_receipts"])
         + ", read " + _on(local["read_receipts"])),
        ("typing indicators (this device)", _on(local["typing_indicators"])),
        ("disappearing messages in new chats", f"{local['disappearing_default']} s"
         if local["disappearing_default"] else "off"),
        ("disappearing messages", ", ".join(f"{clean_line(k)}: {v} s" for k, v in
                                            local["disappearing_timers"].items()) or "off"),
    ]
    for name, value in rows:
        stored.add_row(name, value)
    out.print(stored)
    events = Table(title="Recent account events", title_justify="left")
    events.add_column("when (UTC)")
    events.add_column("device")
    events.add_column("event")
    for e in held["audit"][:20]:
        when = datetime.fromtimestamp(e["at"] / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        events.add_row(when, str(e["device_id"] or "-"), clean_line(e["event"]))
    out.print(events)


def _on(value: bool) -> str:
    return "on" if value else "off"


@cli.command("default-timer")
@click.argument("seconds", required=False, type=click.IntRange(0, 0xFFFFFFFF))
@_with_client
async def default_timer(ctx: Context, client: Client, seconds: int | None) -> None:
    """Disappearing messages in conversations you start from now on: SECONDS after
    reading (0 turns the default off; without SECONDS, show it). Existing conversations
    and groups keep their timers (`cipherpost timer`)."""
    if seconds is not None:
        client.set_default_expire_timer(seconds)
    current = client.default_expire_timer()
    ctx.emit({"default_expire_timer": current},
             f"New conversations: messages disappear {current} s after reading."
             if current else "New conversations: disappearing messages off.")


_SETTING_NAMES = {"delivery-receipts": "delivery_receipts",
                  "read-receipts": "read_receipts", "typing": "typing_indicators"}


@cli.command("settings")
@click.argument("name", required=False, type=click.Choice(sorted(_SETTING_NAMES)))
@click.argument("value", required=False, type=click.Choice(["on", "off"]))
@_with_client
async def settings(ctx: Context, client: Client, name: str | None,
                   value: str | None) -> None:
    """This device's receipts and typing indicators: with NAME and on/off, change one
    (kept on this device, never sent to the server); without, show them. Off, this
    device sends none of that kind, and shows others' read receipts or typing no more
    (delivery receipts of others are always shown)."""
    if name is not None:
        if value is None:
            raise click.UsageError("say on or off")
        security.remember_setting(client, _SETTING_NAMES[name], value == "on")
    local = security.local_settings(client)
    shown = {flag: local[field] for flag, field in _SETTING_NAMES.items()}
    ctx.emit(shown, "\n".join(f"{flag}: {_on(on)}" for flag, on in shown.items()))


@cli.group("account")
def account() -> None:
    """The account on the server: export what it holds, delete it."""


@account.command("export-server-data")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_with_client
async def account_export(ctx: Context, client: Client, file: Path) -> None:
    """Write what the server holds about the account to FILE (JSON)."""
    if file.exists():
        raise click.UsageError(f"{file} exists; choose another name")
    data = await security.export_server_data(client)
    file.write_bytes(data)
    ctx.emit({"file": str(file), "bytes": len(data)}, f"Wrote {len(data)} bytes to {file}.")


@account.command("delete")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--keep-local", is_flag=True, help="Keep this device's local store.")
@click.pass_obj
@run
async def account_delete(ctx: Context, yes: bool, keep_local: bool) -> None:
    """Delete the account and everything the server holds of it (every device stops
    working; contacts can no longer reach it). Then this device's local store is removed."""
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("add --yes to delete the account without a terminal")
        click.confirm("Delete the account and all it has on the server? This cannot be "
                      "undone", abort=True)
    client = await _open(ctx)
    try:
        await security.delete_account(client, _code(ctx))
    finally:
        await client.close()
    path = ctx.store_path
    if not keep_local:
        for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            leftover.unlink(missing_ok=True)
    ctx.emit({"deleted": True, "local_store_removed": not keep_local},
             "The account is deleted." + ("" if keep_local else
                                          " This device's local store is removed."))


@account.command("reregister")
@click.option("--server", required=True, envvar="CIPHERPOST_SERVER",
              help="The server's URL (https, or http to localhost).")
@click.option("--username", required=True, help="The username to register again.")
@click.option("--recovery-key", default=None, envvar="CIPHERPOST_RECOVERY_KEY",
              help="The account's recovery key (asked for when not given).")
@click.option("--device-name", default=None)
@click.option("--history/--no-history", "keep_history", default=None,
              help="Keep an encrypted copy of the conversations on the server.")
@click.pass_obj
@run
async def account_reregister(ctx: Context, server: str, username: str,
                             recovery_key: str | None, device_name: str | None,
                             keep_history: bool | None) -> None:
    """Register USERNAME again with a new identity, proving its recovery key (the
    registration lock): for when every device and the identity are lost. Every old device
    is removed and contacts see a new safety number; with the second factor on, add
    --2fa CODE. Shows the new recovery key once."""
    key = recovery_key or click.prompt("Recovery key", hide_input=True)
    keep = _choose_history(keep_history)
    client = await security.reregister(ctx.store_path, server, username, recovery_key=key,
                                       history=keep, code=ctx.second_factor,
                                       passphrase=ctx.passphrase(new=True),
                                       device_name=device_name)
    try:
        new_key = await client.create_recovery_key()
        ctx.emit({"account_id": client.account_id, "device_id": client.device_id},
                 f"Registered {username} again: this is device {client.device_id} of "
                 f"account {client.account_id}, with a new identity.")
        _emit_recovery_key(ctx, new_key)
    finally:
        await client.close()
