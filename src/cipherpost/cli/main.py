"""``cipherpost``: chat from a terminal, script with ``--json``.

Each profile is one device with its own encrypted store under the XDG data directory
(``$XDG_DATA_HOME/cipherpost/<profile>/device.db``; ``--home`` or ``CIPHERPOST_HOME``
moves it). The store's passphrase comes from ``CIPHERPOST_PASSPHRASE`` or a prompt, unless
the store's key is in the OS keyring.

Exit codes: 0 success, 1 an error explained on stderr, 2 bad usage, 3 the store is locked
or missing, 4 the server is unreachable, 5 the server refused, 6 a contact's identity
changed and is not trusted yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import mimetypes
import os
import re
import sys
import unicodedata
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import segno
from rich.console import Console
from rich.text import Text

from cipherpost.client import (
    Client,
    ClientError,
    IdentityNotTrusted,
    RelayError,
    RelayUnavailable,
    StoreError,
    WrongKey,
)
from cipherpost.client import events as ev
from cipherpost.client.account_security import SECOND_FACTOR_HEADER, apply_settings
from cipherpost.client.devices import request_link, request_link_by_code
from cipherpost.client.export import export_account, import_account
from cipherpost.client.linking import LinkError
from cipherpost.client.notices import describe as describe_notice
from cipherpost.client.recovery import check_passphrase, restore_with_passphrase, set_passphrase
from cipherpost.client.recovery import restore as restore_account
from cipherpost.client.store.crypto import CorruptValue

EXIT_ERROR, EXIT_LOCKED, EXIT_UNREACHABLE, EXIT_REFUSED, EXIT_UNTRUSTED = 1, 3, 4, 5, 6
T = TypeVar("T")

# No emoji codes (":smile:") and no highlighting: what a peer wrote is shown as written.
out = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


# -- text from others: peers, the relay ------------------------------------------------------
#
# Everything a peer or the relay controls (message bodies, usernames, device names, group
# titles, file names, error messages) reaches the terminal only through ``clean``/
# ``clean_line`` and never as rich markup: a "[link=...]" or "[/]" is shown as typed, and an
# escape sequence, carriage return or backspace cannot move the cursor, recolour the
# terminal or overwrite what was printed before.

#: C0 and C1 control characters, DEL, and the bidirectional overrides and isolates that
#: reorder what is displayed ("Trojan source").
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                      "\u2066-\u2069]")
_REPLACEMENT = "\ufffd"


def clean(text: str) -> str:
    """Text from others, safe to print: control characters replaced (tabs and newlines
    kept), lines after the first indented so that they cannot pass for lines of ours."""
    text = text.replace("\r\n", "\n")
    text = _CONTROL.sub(lambda m: m.group() if m.group() in "\n\t" else _REPLACEMENT, text)
    return text.replace("\n", "\n  ")


def clean_line(text: str, limit: int = 200) -> str:
    """A name, title or file name from others, safe to print on one line."""
    text = _CONTROL.sub(_REPLACEMENT, text)
    return text if len(text) <= limit else text[:limit] + "…"


#: Names Windows reserves whatever the extension.
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)),
             *(f"LPT{i}" for i in range(10))}
MAX_FILE_NAME_BYTES = 200


def safe_file_name(name: str, fallback: str) -> str:
    """A received attachment's name as a plain file name of the save directory: the last
    path component only, no control or format characters, no leading dots (no hidden or
    special files), no characters that other systems reserve, at most 200 bytes.
    ``fallback`` when nothing is left."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable() and c not in '<>:"|?*')
    name = name.strip().lstrip(".").rstrip(". ")
    if not name:
        name = fallback
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > 16:
        stem, dot, ext = name, "", ""
    if stem.split(".")[0].upper() in _RESERVED:
        stem = "_" + stem
    budget = MAX_FILE_NAME_BYTES - len((dot + ext).encode())
    while len(stem.encode()) > budget:
        stem = stem[:-1]
    return stem + dot + ext


def save_new_file(directory: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to a new file of ``directory`` named ``name``, or ``name (1)``...
    when that exists: an existing file (or symlink) is never overwritten or followed."""
    stem, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
    for n in range(1000):
        candidate = directory / (name if n == 0 else f"{stem} ({n}){dot}{ext}")
        try:
            with candidate.open("xb") as file:  # O_CREAT | O_EXCL
                file.write(data)
        except FileExistsError:
            continue
        return candidate
    raise ClientError(f"too many files named like {name} in {directory}")


class Context:
    """Options shared by every command."""

    def __init__(self, home: Path, profile: str, as_json: bool) -> None:
        self.home = home
        self.profile = profile
        self.as_json = as_json
        #: A code from the authenticator (or a recovery code) for protected actions.
        self.second_factor: str | None = None

    @property
    def store_path(self) -> Path:
        return self.home / self.profile / "device.db"

    def passphrase(self, *, new: bool = False) -> str | None:
        from_env = os.environ.get("CIPHERPOST_PASSPHRASE")
        if from_env:
            return from_env
        if not new and not _store_uses_passphrase(self.store_path):
            return None
        if not sys.stdin.isatty():
            raise click.UsageError("set CIPHERPOST_PASSPHRASE or run in a terminal")
        value: str = click.prompt("Passphrase for the local store", hide_input=True,
                                  confirmation_prompt=new)
        return value

    def emit(self, data: dict[str, Any], text: str) -> None:
        """One result: a JSON line with --json, else a sentence."""
        if self.as_json:
            click.echo(json.dumps(data, separators=(",", ":")))
        else:
            out.print(clean(text), markup=False)


def _store_uses_passphrase(path: Path) -> bool:
    import sqlite3
    if not path.exists():
        return True
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        row = db.execute("SELECT value FROM meta WHERE name = 'key_source'").fetchone()
    return row is None or row[0] == "passphrase"


def default_home() -> Path:
    if "CIPHERPOST_HOME" in os.environ:
        return Path(os.environ["CIPHERPOST_HOME"])
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "cipherpost"


def run(func: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async command and turn every expected failure into a sentence and an exit
    code (never a traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            asyncio.run(func(*args, **kwargs))
        except WrongKey:
            _fail("wrong passphrase for this device's store", EXIT_LOCKED)
        except StoreError as exc:
            _fail(str(exc), EXIT_LOCKED)
        except RelayUnavailable as exc:
            _fail(str(exc), EXIT_UNREACHABLE)
        except IdentityNotTrusted as exc:
            _fail(f"{exc}; see `cipherpost safety-number` and `cipherpost trust`",
                  EXIT_UNTRUSTED)
        except RelayError as exc:
            _fail(f"the server refused: {exc}", EXIT_REFUSED)
        except (ClientError, CorruptValue, LinkError, ValueError) as exc:
            _fail(str(exc), EXIT_ERROR)
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper


def _fail(message: str, code: int) -> None:
    err.print(f"cipherpost: {clean(message)}", markup=False)  # may quote the relay
    sys.exit(code)


async def _open(ctx: Context) -> Client:
    client = await Client.open(ctx.store_path, passphrase=ctx.passphrase())
    apply_settings(client)  # receipts and typing as `cipherpost settings` left them
    if ctx.second_factor:
        client.api.extra_headers[SECOND_FACTOR_HEADER] = ctx.second_factor
    return client


def _with_client(func: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Open the profile's device for the command and close it afterwards."""

    @click.pass_obj
    @functools.wraps(func)
    @run
    async def wrapper(ctx: Context, *args: Any, **kwargs: Any) -> None:
        client = await _open(ctx)
        try:
            await func(ctx, client, *args, **kwargs)
        finally:
            await client.close()

    return wrapper


@click.group()
@click.option("--home", type=click.Path(path_type=Path), default=None,
              help="Where device stores live (default: XDG data dir, or CIPHERPOST_HOME).")
@click.option("--profile", default="default", show_default=True,
              help="Which device (one store each) to use.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON lines.")
@click.option("--2fa", "second_factor", default=None, envvar="CIPHERPOST_2FA",
              metavar="CODE", help="A code from your authenticator (or a recovery code) "
              "for an action that needs it (linking a device, recovery secrets, identity "
              "reset, deleting the account).")
@click.version_option(package_name="cipherpost")
@click.pass_context
def cli(click_ctx: click.Context, home: Path | None, profile: str, as_json: bool,
        second_factor: str | None) -> None:
    """Cipherpost: end-to-end encrypted messages through a server you control."""
    click_ctx.obj = Context(home or default_home(), profile, as_json)
    click_ctx.obj.second_factor = second_factor


HISTORY_QUESTION = ("Keep an encrypted copy of your conversations on the server, so that "
                    "new and restored devices show them? (Whoever later obtains a history "
                    "key could read that part of it.)")


def _choose_history(choice: bool | None) -> bool:
    if choice is not None:
        return choice
    if not sys.stdin.isatty():
        _fail("choose whether the server keeps your history: --history or --no-history", 2)
    return click.confirm(HISTORY_QUESTION, default=False)


_RECOVERY_NOTE = ("Your recovery key (shown once; write it down and keep it safe: it gets "
                  "your account back on a new machine, and anyone holding it can too):\n  ")


def _emit_recovery_key(ctx: Context, key: str) -> None:
    ctx.emit({"recovery_key": key}, _RECOVERY_NOTE + key)


@cli.command()
@click.option("--server", required=True, envvar="CIPHERPOST_SERVER",
              help="The relay's URL (https, or http to a loopback address).")
@click.option("--username", default=None, help="How others find you (3-32 of a-z 0-9 _ .).")
@click.option("--device-name", default=None)
@click.option("--history/--no-history", "keep_history", default=None,
              help="Whether the server keeps an encrypted copy of your conversations "
                   "(asked when not given).")
@click.option("--invite", default=None, envvar="CIPHERPOST_INVITE",
              help="An invite code, for a server that registers by invitation.")
@click.option("--trust-root", "trust_root", default=None, metavar="KEY",
              envvar="CIPHERPOST_TRUST_ROOT",
              help="The server's sealed-sender trust root as its operators publish it "
                   "(base64): registering stops if the server shows another.")
@click.pass_obj
@run
async def register(ctx: Context, server: str, username: str | None,
                   device_name: str | None, keep_history: bool | None,
                   invite: str | None, trust_root: str | None) -> None:
    """Create an account with this device as its first, and show its recovery key."""
    keep = _choose_history(keep_history)
    root = _sealed_sender.parse_key(trust_root, "--trust-root") if trust_root else None
    client = await Client.register(ctx.store_path, server, username=username,
                                   passphrase=ctx.passphrase(new=True),
                                   device_name=device_name, history=keep, invite=invite,
                                   trust_root=root)
    try:
        key = await client.create_recovery_key()
        ctx.emit({"account_id": client.account_id, "device_id": client.device_id,
                  "username": username, "history": keep, "recovery_key": key},
                 f"Registered account {client.account_id}"
                 + (f" as @{username}" if username else "") + f", device {client.device_id}"
                 + (", history kept on the server." if keep else ".") + "\n"
                 + _RECOVERY_NOTE + key)
    finally:
        await client.close()


@cli.command()
@click.option("--server", required=True, envvar="CIPHERPOST_SERVER",
              help="The relay's URL (the one your account is on).")
@click.option("--device-name", default=None)
@click.option("--recovery-key", default=None, envvar="CIPHERPOST_RECOVERY_KEY",
              help="The recovery key (asked for when not given).")
@click.option("--username", default=None,
              help="Restore with your username and recovery passphrase instead.")
@click.pass_obj
@run
async def restore(ctx: Context, server: str, device_name: str | None,
                  recovery_key: str | None, username: str | None) -> None:
    """Get your account back on this machine with its recovery key (or, with --username,
    its recovery passphrase): same identity, your contacts and groups, and your history
    if the server keeps it."""
    if ctx.store_path.exists():
        raise StoreError(f"a device already exists in {ctx.store_path.parent}")
    progress = None if ctx.as_json else _progress
    if username:
        secret = os.environ.get("CIPHERPOST_RECOVERY_PASSPHRASE") or click.prompt(
            "Recovery passphrase", hide_input=True)
        passphrase = ctx.passphrase(new=True)
        client = await restore_with_passphrase(ctx.store_path, server, username, secret,
                                               passphrase=passphrase,
                                               device_name=device_name, progress=progress,
                                               second_factor=ctx.second_factor)
    else:
        key = recovery_key or click.prompt("Recovery key", hide_input=True)
        passphrase = ctx.passphrase(new=True)
        client = await restore_account(ctx.store_path, server, key, passphrase=passphrase,
                                       device_name=device_name, progress=progress,
                                       second_factor=ctx.second_factor)
    try:
        ctx.emit({"account_id": client.account_id, "device_id": client.device_id},
                 f"Restored: this is device {client.device_id} of account "
                 f"{client.account_id}.")
    finally:
        await client.close()


def _progress(entries: int) -> None:
    err.print(f"history: {entries} entries read", markup=False)


@cli.command("recovery-key")
@_with_client
async def recovery_key(ctx: Context, client: Client) -> None:
    """Make a new recovery key (the old one stops working) and show it once."""
    _emit_recovery_key(ctx, await client.create_recovery_key())


@cli.command("recovery-passphrase")
@_with_client
async def recovery_passphrase(ctx: Context, client: Client) -> None:
    """Let a passphrase recover the account too (with your username). It must be strong:
    whoever runs the server could try to guess it offline."""
    secret = os.environ.get("CIPHERPOST_RECOVERY_PASSPHRASE") or click.prompt(
        "New recovery passphrase", hide_input=True, confirmation_prompt=True)
    await set_passphrase(client, secret)
    ctx.emit({"recovery_passphrase": True},
             "Set: `cipherpost restore --username` with this passphrase gets the account "
             "back.")


def _export_passphrase(new: bool, usernames: list[str] | None = None) -> str:
    """The export file's passphrase; a new one must be strong (the file holds the
    identity key, and whoever gets it can guess offline for as long as they like), and
    not built on the account's ``usernames`` (a guesser starts with those)."""
    value = str(os.environ.get("CIPHERPOST_EXPORT_PASSPHRASE") or click.prompt(
        "Passphrase for the export file", hide_input=True, confirmation_prompt=new))
    if new:
        check_passphrase(value, user_inputs=["export", *(usernames or [])],
                         what="export passphrase")
    return value


async def _own_usernames(client: Client) -> list[str]:
    """The account's username, as this device last set or saw it (kept in the store
    since registration or a change; also an entry for our own account among the
    contacts) and as the relay has it now (it may have been set or changed on another
    device). Without the relay, the store's alone: an export needs no relay."""
    names = {name for account, name in client.store.contacts()
             if account == client.account_id and name}
    if (kept := client.own_username()) is not None:
        names.add(kept)
    try:
        me = await asyncio.wait_for(client.api.whoami(), 5)
    except (RelayError, RelayUnavailable, ClientError, TimeoutError):
        return sorted(names)
    name = me.get("username") if isinstance(me, dict) else None
    if isinstance(name, str) and 0 < len(name) <= 64:  # the relay's: checked
        names.add(name)
        if name != kept:
            client.remember_own_username(name)
    return sorted(names)


@cli.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--with-history/--keys-only", default=True, show_default=True,
              help="Include the stored conversations, or only what the account needs.")
@_with_client
async def export_command(ctx: Context, client: Client, file: Path, with_history: bool) -> None:
    """Write this account to FILE, encrypted under a passphrase (an offline backup, or to
    move to another machine with `cipherpost import`)."""
    count = export_account(client, file,
                           _export_passphrase(new=True, usernames=await _own_usernames(client)),
                           with_history=with_history,
                           progress=None if ctx.as_json else _export_progress)
    ctx.emit({"exported": str(file), "records": count},
             f"Exported {count} records to {file}. Keep the file and its passphrase apart.")


def _export_progress(done: int, total: int) -> None:
    if done == total or done % 500 == 0:
        err.print(f"{done}/{total}", markup=False)


@cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--server", required=True, envvar="CIPHERPOST_SERVER",
              help="The relay's URL (the one the account is on).")
@click.option("--device-name", default=None)
@click.pass_obj
@run
async def import_command(ctx: Context, file: Path, server: str,
                         device_name: str | None) -> None:
    """Make this machine a device of the account exported to FILE, with what it holds."""
    if ctx.store_path.exists():
        raise StoreError(f"a device already exists in {ctx.store_path.parent}")
    secret = _export_passphrase(new=False)
    client = await import_account(file, ctx.store_path, server, secret,
                                  passphrase=ctx.passphrase(new=True), device_name=device_name,
                                  progress=None if ctx.as_json else _export_progress)
    try:
        ctx.emit({"account_id": client.account_id, "device_id": client.device_id},
                 f"Imported: this is device {client.device_id} of account "
                 f"{client.account_id}.")
    finally:
        await client.close()


@cli.group("history")
def history_group() -> None:
    """Whether the server keeps your (encrypted) history, and reading it."""


@history_group.command("status")
@_with_client
async def history_status(ctx: Context, client: Client) -> None:
    """Whether the server keeps your history, and how much."""
    if not client.server_history:
        ctx.emit({"history": False}, "The server keeps no history of this account.")
        return
    stored = await client.api.request("GET", "/v1/history/settings")
    ctx.emit({"history": True, **stored},
             f"The server keeps this account's history: {stored['stored_bytes']} bytes"
             + (f", entries deleted after {stored['retention_days']} days."
                if stored.get("retention_days") else "."))


@history_group.command("on")
@_with_client
async def history_on(ctx: Context, client: Client) -> None:
    """Keep an encrypted copy of your conversations on the server (uploads this device's)."""
    await client.set_server_history(True)
    ctx.emit({"history": True}, "The server now keeps your encrypted history.")


@history_group.command("off")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_with_client
async def history_off(ctx: Context, client: Client, yes: bool) -> None:
    """Stop keeping history on the server and delete what it stores."""
    if not yes and not click.confirm("Delete your history from the server?"):
        raise click.Abort()
    await client.set_server_history(False)
    ctx.emit({"history": False}, "The server's copy of your history was deleted.")


@history_group.command("retention")
@click.argument("days")
@_with_client
async def history_retention(ctx: Context, client: Client, days: str) -> None:
    """Have the server delete history entries older than DAYS days ("off": keep them)."""
    value = None if days == "off" else int(days) if days.isdigit() else -1
    if value == -1:
        raise click.BadParameter("a number of days, or off", param_hint="DAYS")
    await client.set_history_retention(value)
    ctx.emit({"retention_days": value},
             "History entries are kept until deleted." if value is None
             else f"History entries older than {value} days are deleted.")


@history_group.command("sync")
@_with_client
async def history_sync(ctx: Context, client: Client) -> None:
    """Read what your other devices stored on the server since this one last did."""
    done = await client.sync_history(progress=None if ctx.as_json else _progress)
    ctx.emit(done.__dict__, f"{done.messages} messages, {done.changes} changes, "
             f"{done.groups} group states, {done.deleted} deletions read.")


@cli.command()
@click.option("--server", required=True, envvar="CIPHERPOST_SERVER",
              help="The relay's URL (the one your account is on).")
@click.option("--device-name", default=None)
@click.option("--code", "by_code", is_flag=True,
              help="No camera: show a short code to type on the other device, then compare "
                   "a number shown on both.")
@click.option("--timeout", default=600, show_default=True, help="Seconds to wait.")
@click.pass_obj
@run
async def link(ctx: Context, server: str, device_name: str | None, by_code: bool,
               timeout: int) -> None:
    """Make this machine a new device of an existing account: scan the code shown here with
    `cipherpost devices add` on a device already linked (or, with --code, type it there:
    `cipherpost devices add --code CODE`)."""
    if ctx.store_path.exists():
        raise StoreError(f"a device already exists in {ctx.store_path.parent}")
    passphrase = ctx.passphrase(new=True)
    if by_code:
        client = await _link_by_code(ctx, server, passphrase, device_name, timeout)
    else:
        pending = await request_link(server)
        if ctx.as_json:
            ctx.emit({"link_uri": pending.uri}, "")
        else:
            out.print("On a device of your account, run `cipherpost devices add` with this "
                      "code (or scan it):", markup=False)
            out.print(pending.uri, markup=False, soft_wrap=True)
            segno.make(pending.uri, error="m").terminal(compact=True)
        sys.stdout.flush()
        client = await pending.complete(ctx.store_path, passphrase=passphrase,
                                        device_name=device_name, timeout=timeout,
                                        progress=None if ctx.as_json else _progress)
    try:
        ctx.emit({"account_id": client.account_id, "device_id": client.device_id},
                 f"Linked: this is device {client.device_id} of account {client.account_id}.")
    finally:
        await client.close()


async def _same_number(ctx: Context, sas: str) -> bool:
    """Show the number and ask whether the other screen shows the same (always asked:
    the comparison is what keeps the relay out of the middle, so nothing skips it)."""
    ctx.emit({"sas": sas}, f"Both devices now show a number. This one shows:  {sas}")
    sys.stdout.flush()
    same: bool = await asyncio.to_thread(
        click.confirm, "Does the other device show exactly the same number?", default=False,
        err=True)
    return same


async def _link_by_code(ctx: Context, server: str, passphrase: str | None,
                        device_name: str | None, timeout: int) -> Client:
    pending = await request_link_by_code(server)
    try:
        ctx.emit({"code": pending.code}, "On a device of your account, run:\n"
                 f"  cipherpost devices add --code {pending.code}")
        sys.stdout.flush()
        sas = await pending.sas(timeout=timeout)
        if not await _same_number(ctx, sas):
            raise ClientError("the numbers differ: nothing was linked (someone may be in the "
                              "middle; start again)")
        await pending.confirm()
    except BaseException:
        await pending.cancel()
        raise
    return await pending.complete(ctx.store_path, passphrase=passphrase,
                                  device_name=device_name, timeout=timeout,
                                  progress=None if ctx.as_json else _progress)


@cli.command()
@_with_client
async def whoami(ctx: Context, client: Client) -> None:
    """This device's account, username and devices."""
    me = await client.api.whoami()
    ctx.emit(me, f"Account {clean_line(str(me['account_id']))}"
             + (f" (@{clean_line(str(me['username']))})" if me.get("username") else "")
             + f", this is device {client.device_id}; devices: "
             + ", ".join(clean_line(str(d["device_id"]))
                         + (f" {clean_line(str(d['name']))}" if d.get("name") else "")
                         for d in me["devices"]))


@cli.group()
def devices() -> None:
    """List or remove this account's devices."""


@devices.command("list")
@_with_client
async def devices_list(ctx: Context, client: Client) -> None:
    """The account's devices."""
    listed = await client.api.devices()
    if ctx.as_json:
        for device in listed:
            ctx.emit(device, "")
        return
    for d in listed:
        mark = " (this device)" if d["device_id"] == client.device_id else ""
        out.print(f"{clean_line(str(d['device_id'])):>3}  "
                  f"{clean_line(str(d.get('name') or '-'))}{mark}", markup=False)


@devices.command("add")
@click.argument("link_code", required=False)
@click.option("--code", "typed_code", default=None, metavar="CODE",
              help="The short code shown by `cipherpost link --code` (no camera).")
@_with_client
async def devices_add(ctx: Context, client: Client, link_code: str | None,
                      typed_code: str | None) -> None:
    """Link the new device that shows LINK_CODE (from `cipherpost link`) to this account,
    or the one that shows a short --code (then compare the number both devices show).
    It receives your identity key, contacts and groups, encrypted to it."""
    if (link_code is None) == (typed_code is None):
        raise click.UsageError("give the link code from `cipherpost link`, or --code CODE")
    if typed_code is not None:
        await client.provision_by_code(typed_code, confirm=lambda sas: _same_number(ctx, sas))
    elif link_code is not None:
        await client.provision(link_code)
    ctx.emit({"provisioned": True}, "Sent. The new device finishes linking on its own.")


@devices.command("remove")
@click.argument("device_id", type=int)
@_with_client
async def devices_remove(ctx: Context, client: Client, device_id: int) -> None:
    """Remove a device: its credentials stop working and its queue is deleted."""
    await client.remove_device(device_id)
    ctx.emit({"removed": device_id}, f"Removed device {device_id}.")


@devices.command("link-code")
@_with_client
async def devices_link_code(ctx: Context, client: Client) -> None:
    """A one-time code with which a new device joins this account."""
    code = await client.create_link_code()
    ctx.emit({"link_code": code}, code)


@cli.command()
@click.argument("recipient")
@click.argument("text", default="")
@click.option("--file", "files", multiple=True, type=click.Path(exists=True, dir_okay=False,
                                                                 path_type=Path),
              help="Attach a file (repeatable).")
@_with_client
async def send(ctx: Context, client: Client, recipient: str, text: str,
               files: tuple[Path, ...]) -> None:
    """Send TEXT (and files) to RECIPIENT: a username, an account id, or group:<id>."""
    if not text and not files:
        raise click.UsageError("give a text, a file, or both")
    conversation = await client.conversation_for(recipient)
    pointers = [await client.upload_attachment(
        f.read_bytes(), file_name=f.name,
        content_type=mimetypes.guess_type(f.name)[0] or "application/octet-stream")
        for f in files]
    timestamp = await client.send_text(conversation, text, attachments=pointers)
    ctx.emit({"to": conversation, "timestamp": timestamp}, f"Sent to {recipient}.")


@cli.command()
@click.argument("recipient")
@click.argument("seconds", type=click.IntRange(0, 0xFFFFFFFF))
@_with_client
async def timer(ctx: Context, client: Client, recipient: str, seconds: int) -> None:
    """Disappearing messages with RECIPIENT: SECONDS after reading (0 turns them off)."""
    await client.set_expire_timer(recipient, seconds)
    ctx.emit({"conversation": recipient, "expire_timer": seconds},
             f"Messages with {recipient} now disappear {seconds} s after reading."
             if seconds else f"Disappearing messages with {recipient} are off.")


@cli.group()
def groups() -> None:
    """Create and manage groups (their state lives only on members' devices)."""


def _group_arg(value: str) -> bytes:
    try:
        group_id = bytes.fromhex(value.removeprefix("group:"))
    except ValueError:
        raise click.BadParameter("a group id is 64 hex digits (see `groups list`)") from None
    if len(group_id) != 32:
        raise click.BadParameter("a group id is 64 hex digits (see `groups list`)")
    return group_id


@groups.command("create")
@click.argument("title")
@click.argument("members", nargs=-1, required=True)
@_with_client
async def groups_create(ctx: Context, client: Client, title: str,
                        members: tuple[str, ...]) -> None:
    """A new group TITLE with MEMBERS (usernames or account ids); you are its admin."""
    group = await client.create_group(title, members)
    ctx.emit({"group_id": group.id.hex(), "title": title, "members": sorted(group.members)},
             f"Created group:{group.id.hex()} ({title}).")


@groups.command("list")
@_with_client
async def groups_list(ctx: Context, client: Client) -> None:
    """Groups this device knows."""
    for group in client.groups():
        me = client.account_id
        role = "admin" if group.is_admin(me) else "member" if group.is_member(me) else "left"
        ctx.emit({"group_id": group.id.hex(), "title": group.title, "revision": group.revision,
                  "members": sorted(group.members), "role": role},
                 f"group:{group.id.hex()}  {clean_line(group.title)}  "
                 f"({len(group.members)} members, "
                 f"you: {role})")


@groups.command("add")
@click.argument("group_id", type=_group_arg)
@click.argument("members", nargs=-1, required=True)
@_with_client
async def groups_add(ctx: Context, client: Client, group_id: bytes,
                     members: tuple[str, ...]) -> None:
    """Add MEMBERS to a group (admins only)."""
    group = await client.add_members(group_id, members)
    ctx.emit({"group_id": group.id.hex(), "members": sorted(group.members)}, "Added.")


@groups.command("remove")
@click.argument("group_id", type=_group_arg)
@click.argument("members", nargs=-1, required=True)
@_with_client
async def groups_remove(ctx: Context, client: Client, group_id: bytes,
                        members: tuple[str, ...]) -> None:
    """Remove MEMBERS from a group (admins only); the group's keys rotate."""
    group = await client.remove_members(group_id, members)
    ctx.emit({"group_id": group.id.hex(), "members": sorted(group.members)}, "Removed.")


@groups.command("leave")
@click.argument("group_id", type=_group_arg)
@_with_client
async def groups_leave(ctx: Context, client: Client, group_id: bytes) -> None:
    """Leave a group."""
    await client.leave_group(group_id)
    ctx.emit({"group_id": group_id.hex(), "left": True}, "You left the group.")


@cli.command()
@click.option("--save-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Download attachments into this directory.")
@_with_client
async def receive(ctx: Context, client: Client, save_dir: Path | None) -> None:
    """Fetch everything waiting for this device, print it, and exit."""
    for event in await client.receive():
        _show(ctx, client, event)
        if save_dir is not None and isinstance(event, ev.Message):
            for attachment in event.attachments:
                data = await client.download(attachment)
                save_dir.mkdir(parents=True, exist_ok=True)
                fallback = "attachment-" + "".join(
                    c for c in attachment.id[:16] if c.isascii() and c.isalnum())
                target = save_new_file(save_dir, safe_file_name(attachment.file_name,
                                                                fallback), data)
                ctx.emit({"saved": str(target)}, f"  saved {target}")


@cli.command()
@_with_client
async def listen(ctx: Context, client: Client) -> None:
    """Print messages as they arrive (over a WebSocket) until interrupted."""
    async for event in client.listen():
        _show(ctx, client, event)


@cli.command()
@click.argument("recipient")
@_with_client
async def chat(ctx: Context, client: Client, recipient: str) -> None:
    """Talk with RECIPIENT: type lines to send them; their messages appear as they come."""
    account = await client.conversation_for(recipient)
    for item in client.history(account, limit=20):
        _show_line(ctx, client, item.author, item.timestamp, item.text, item.outgoing,
                   edited=item.edited)

    async def incoming() -> None:
        async for event in client.listen():
            _show(ctx, client, event)

    listener = asyncio.create_task(incoming())
    try:
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                break
            if line.strip():
                await client.send_text(account, line.rstrip("\n"))
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


@cli.command()
@_with_client
async def contacts(ctx: Context, client: Client) -> None:
    """Accounts this device knows, with their trust state."""
    for account, username in client.store.contacts():
        record = client.store.identity_record(account)
        state = "unknown key" if record is None else (
            "verified" if record.verified else
            "changed, not trusted" if record.send_blocked else "unverified")
        ctx.emit({"account_id": account, "username": username, "trust": state},
                 f"{'@' + clean_line(username) if username else account}  {state}")


@cli.command("safety-number")
@click.argument("contact")
@click.option("--qr/--no-qr", default=True, help="Also show the scannable QR code.")
@_with_client
async def safety_number(ctx: Context, client: Client, contact: str, qr: bool) -> None:
    """The safety number to compare with CONTACT (in person or on a call)."""
    account = await client.resolve(contact)
    fingerprint = client.safety_number(account)
    digits = fingerprint.displayable
    groups = " ".join(digits[i:i + 5] for i in range(0, 60, 5))
    if ctx.as_json:
        ctx.emit({"account_id": account, "safety_number": digits,
                  "scannable": fingerprint.scannable.hex()}, "")
        return
    out.print(f"Safety number with {contact}:\n{groups}", markup=False)
    if qr:
        segno.make(fingerprint.scannable, error="m").terminal(compact=True)


@cli.command()
@click.argument("contact")
@click.argument("safety_number", required=False)
@_with_client
async def verify(ctx: Context, client: Client, contact: str,
                 safety_number: str | None) -> None:
    """Mark CONTACT verified after comparing safety numbers (pass the number the other
    side read out to have it checked)."""
    account = await client.resolve(contact)
    expected = client.safety_number(account).displayable
    if safety_number is not None and safety_number.replace(" ", "") != expected:
        raise ClientError("the safety numbers differ: do not trust this contact's key")
    client.trust_identity(account, verified=True)
    ctx.emit({"account_id": account, "verified": True}, f"{contact} is verified.")


@cli.command()
@click.argument("contact")
@_with_client
async def trust(ctx: Context, client: Client, contact: str) -> None:
    """Accept CONTACT's new identity key (after it changed) without verifying it."""
    account = await client.resolve(contact)
    client.trust_identity(account, verified=False)
    ctx.emit({"account_id": account, "trusted": True},
             f"Accepted {contact}'s current key; verify it when you can.")


@cli.command("reset-identity")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_with_client
async def reset_identity(ctx: Context, client: Client, yes: bool) -> None:
    """Replace your identity key on all your devices (after a compromise). Every contact
    will see your safety number change and must accept it."""
    if not yes and not click.confirm("Reset your identity key? Every contact will see a "
                                     "new safety number"):
        raise click.Abort()
    unreached = await client.reset_identity()
    if unreached:
        ctx.emit({"identity_reset": True, "devices_not_reached": unreached},
                 "Your identity key was replaced, but these devices could not be given the "
                 f"new key: {', '.join(map(str, unreached))}. Remove them "
                 "(`cipherpost devices remove N`) and link them again.")
    else:
        ctx.emit({"identity_reset": True, "devices_not_reached": []},
                 "Your identity key was replaced on all your devices.")


def _name(client: Client, account: str) -> str:
    """How to show an account (cleaned: usernames come from the relay)."""
    if account == client.account_id:
        return "you"
    for known, username in client.store.contacts():
        if known == account and username:
            return f"@{clean_line(username, 40)}"
    return clean_line(account[:8])


def _notice(*parts: str | tuple[str, str]) -> None:
    """One line of plain and styled parts; never parsed as markup."""
    out.print(Text.assemble(*parts))


def _show_line(ctx: Context, client: Client, author: str, timestamp: int, text: str,
               outgoing: bool, *, edited: bool = False) -> None:
    try:
        when = datetime.fromtimestamp(timestamp / 1000, UTC).astimezone().strftime("%H:%M")
    except (OverflowError, OSError, ValueError):
        when = "--:--"  # a timestamp no clock shows
    _notice((when, "dim"), " ", (_name(client, author), "bold"), ": ", clean(text),
            *([(" (edited)", "dim")] if edited else []))


def _show(ctx: Context, client: Client, event: ev.Event) -> None:
    if ctx.as_json:
        click.echo(json.dumps({"event": type(event).__name__, **_jsonable(event.__dict__)},
                              separators=(",", ":")))
        return
    if isinstance(event, ev.Message):
        if event.outgoing:
            out.print(Text(f"(from your other device, to {_name(client, event.conversation)}) ",
                           style="dim"), end="")
        _show_line(ctx, client, event.author, event.timestamp, event.text, event.outgoing)
        for attachment in event.attachments:
            _notice("  ", ("attachment:", "dim"), " ",
                    clean_line(attachment.file_name) or "(unnamed)",
                    f" ({attachment.size} bytes)")
    elif isinstance(event, ev.MessageEdited):  # shown again with its new text, at its time
        _show_line(ctx, client, event.author, event.timestamp, event.text,
                   event.author == client.account_id, edited=True)
    elif isinstance(event, ev.GroupUpdated):
        _notice((f"Group \"{clean_line(event.title)}\" is now at revision {event.revision} "
                 f"with {len(event.members)} members", "yellow"),
                (" (you were removed)" if event.removed else "", "yellow"))
    elif isinstance(event, ev.IdentityChanged):
        _notice((f"The safety number with {_name(client, event.account)} changed.", "yellow"),
                " Compare it again (`cipherpost safety-number`).")
    elif isinstance(event, ev.AccountNotice):
        _notice((f"Your account: {clean_line(describe_notice(event))}", "yellow"))
    elif isinstance(event, ev.DeviceAdded):
        _notice((f"A new device joined your account: {event.device_id} "
                 f"{clean_line(event.name)}", "yellow"))
    elif isinstance(event, ev.DecryptionFailed):
        _notice((f"A message from {_name(client, event.sender)} could not be decrypted; it "
                 "was asked to resend.", "yellow"))
    elif isinstance(event, ev.SealedRejected):
        _notice(("A sealed message was dropped: its sender could not be checked "
                 f"({clean_line(event.kind)}).", "yellow"))
    elif isinstance(event, ev.ResendUnavailable):
        _notice((f"{_name(client, event.account)} could not read one of your messages and "
                 "it is too old to resend.", "yellow"))


def _jsonable(value: Any) -> Any:
    """Event fields as JSON: bytes as hex, attachment keys left out."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if k != "key"}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "__dataclass_fields__"):
        return _jsonable(value.__dict__)
    return value


def main() -> None:
    cli(prog_name="cipherpost")


# The sealed-sender trust root command (and its key parsing, used by register).
# The account-security and privacy commands, too.
from . import account as _account  # noqa: E402, F401
from . import sealed_sender as _sealed_sender  # noqa: E402

if __name__ == "__main__":
    main()
