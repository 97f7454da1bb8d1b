"""``cipherpost-admin``: run a relay (docs/operations.md).

It works on the relay's database directly, with the relay's settings (``--config`` or
``CIPHERPOST_CONFIG``, then ``CIPHERPOST_*``), so it runs where the relay runs. Every
command but ``operators bootstrap`` needs an operator token (``CIPHERPOST_ADMIN_TOKEN``,
``--token-file``, or typed at a prompt; never on the command line, where other local
users see it in the process list): an **auditor** may read (accounts, devices, metrics,
the audit log, the transparency report), an **admin** may also change (suspend, invite,
operators, retention, backup, restore, release a reserved username). Every change is
written to the tamper-evident audit log with the operator's name.

The roles are enforced by this command. Whoever holds the database's own credentials (the
SQLite file, PostgreSQL's password) can bypass them; give auditors a read-only database
role (docs/operations.md).

Exit codes: 0 success, 1 an error explained on stderr, 2 bad usage, 3 the audit log does
not verify, 4 not allowed (no, a wrong or a revoked token, or the wrong role).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import os
import re
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import httpx
import sqlalchemy.exc
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import backup as backups
from . import key_chain, retention, transparency, trust_root
from .settings import Settings, sealed_sender_key_file
from .storage import admin, audit
from .storage.engine import Database
from .storage.sql import Storage

EXIT_ERROR, EXIT_UNVERIFIED, EXIT_DENIED = 1, 3, 4
TOKEN_PREFIX = "cpa_"  # noqa: S105 - marks an operator token, not a secret
T = TypeVar("T")



class _Console:
    """A rich Console made anew for each use, so that it writes to the sys.stdout/stderr
    and honours the COLUMNS of that moment (a Console reads COLUMNS once, when made: one
    made at import time cut tables at 80 columns whatever the caller set)."""

    def __init__(self, **options: Any) -> None:
        self._options = options

    def __getattr__(self, name: str) -> Any:
        return getattr(Console(**self._options), name)


out = _Console(highlight=False, soft_wrap=True, emoji=False)
err = _Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


class Context:
    """What every command gets: settings, the database, the operator."""

    def __init__(self, settings: Settings, token: str | None, as_json: bool) -> None:
        self.settings = settings
        self.token = token
        self.as_json = as_json
        self._db: Database | None = None

    @property
    def db(self) -> Database:
        """The relay's database. Only admins' commands migrate it (``operators
        bootstrap`` and ``operator("admin")``): an auditor's may run on a read-only copy."""
        if self._db is None:
            self._db = Database(self.settings.database_url,
                                sqlite_synchronous=self.settings.sqlite_synchronous)
        return self._db

    def migrate(self) -> None:
        self.db.migrate()

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()

    def operator(self, role: str) -> str:
        """The calling operator's name; exits 4 unless the token is valid for ``role``.

        The token is checked before anything is written: only then, and only for an
        admin, is the database migrated (a wrong token or an auditor changes nothing)."""
        if not self.token and sys.stdin.isatty():
            self.token = click.prompt("Operator token", hide_input=True, default="",
                                      show_default=False, err=True)
        if not self.token:
            _fail("an operator token is needed: set CIPHERPOST_ADMIN_TOKEN, use "
                  "--token-file, or run at a terminal to be asked", EXIT_DENIED)
        with self.db.reader.connect() as conn:
            found = admin.operator_for_token(conn, hash_token(self.token))
        if found is None:
            _fail("the operator token is unknown or revoked", EXIT_DENIED)
        if role == "admin" and found.role != "admin":
            _fail(f"operator {found.name!r} is an {found.role}; this needs an admin",
                  EXIT_DENIED)
        if role == "admin":
            self.migrate()
        return found.name

    def emit(self, data: Any, text: str | Table) -> None:
        """JSON with --json, else the human form."""
        if self.as_json:
            out.print(json.dumps(data, sort_keys=True, default=str), markup=False)
        elif isinstance(text, str):
            out.print(text, markup=False)
        else:
            out.print(text)


#: C0 and C1 controls, DEL, bidirectional overrides and isolates: what users chose (device
#: names) must not move the operator's cursor or reorder what the terminal shows.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def cell(value: object, limit: int = 80) -> Text:
    """A table cell from any text, shown as written (never as rich markup), controls
    replaced, cut at ``limit`` characters."""
    text = _CONTROL.sub("\ufffd", "" if value is None else str(value))
    return Text(text if len(text) <= limit else text[:limit] + "…")


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    err.print(f"cipherpost-admin: {message}", markup=False)
    sys.exit(code)


def now_ms() -> int:
    return int(time.time() * 1000)


def new_token() -> tuple[str, bytes]:
    token = TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(
        b"=").decode()
    return token, hash_token(token)


def hash_token(token: str) -> bytes:
    """Operator tokens and invite codes carry 256 and 120 bits: a plain SHA-256 is enough
    (as for device tokens)."""
    return hashlib.sha256(token.strip().encode()).digest()


def _day(ms: int | None) -> str:
    return "" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def _parse_since(value: str | None) -> int:
    if not value:
        return 0
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("use a date like 2026-01-01") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def handled(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn expected errors into a message and exit 1; close the database."""
    @functools.wraps(fn)
    def run(ctx: Context, *args: Any, **kwargs: Any) -> T:
        try:
            return fn(ctx, *args, **kwargs)
        except (admin.AdminError, backups.BackupError, key_chain.KeyChainError, ValueError,
                OSError) as exc:
            _fail(str(exc))
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError) as exc:
            _fail(f"the database cannot be read as a relay's ({type(exc.orig).__name__}): "
                  "is database_url right, and has the relay (or an admin command) set it up?")
        finally:
            ctx.close()
    return run


@click.group()
@click.option("--config", type=click.Path(dir_okay=False), default=None,
              help="The relay's TOML settings (else CIPHERPOST_CONFIG).")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="Read the operator token from this file (else CIPHERPOST_ADMIN_TOKEN, "
                   "else asked at a terminal).")
@click.option("--token", "token_argument", default=None, hidden=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def cli(click_ctx: click.Context, config: str | None, token_file: str | None,
        token_argument: str | None, as_json: bool) -> None:
    """Run a Cipherpost relay: operators, accounts, invites, audit log, reports,
    backups. Works on the relay's database with the relay's settings."""
    if token_argument is not None:
        # Refused, not honoured: a command line is visible to every local user (ps,
        # /proc) and lands in shell history. Saying why beats "no such option".
        _fail("--token is not accepted (the process list shows it to other users): set "
              "CIPHERPOST_ADMIN_TOKEN, use --token-file, or run at a terminal to be "
              "asked; then replace this token (operators add, operators revoke)", 2)
    try:
        settings = Settings.load(config)
        token = _read_token_file(Path(token_file)) if token_file else None
    except (OSError, ValueError) as exc:
        _fail(str(exc), 2)
    if token is None:
        token = os.environ.get("CIPHERPOST_ADMIN_TOKEN") or None
    click_ctx.obj = Context(settings, token, as_json)


def _read_token_file(path: Path) -> str:
    """The operator token in ``path`` (its first line); a warning if others may read it."""
    if path.stat().st_mode & 0o077:
        err.print(f"cipherpost-admin: warning: {path} is readable by other users "
                  "(chmod 600 it)", markup=False)
    lines = path.read_text(encoding="utf-8").splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise ValueError(f"{path} holds no operator token")
    return token


# -- operators --------------------------------------------------------------------------


@cli.group()
def operators() -> None:
    """Who may run this command, and with which role."""


@operators.command("bootstrap")
@click.argument("name")
@click.pass_obj
@handled
def operators_bootstrap(ctx: Context, name: str) -> None:
    """Create the first admin (only while there is no active operator; needs the
    database itself, i.e. the relay's host). Prints its token once."""
    token, token_hash = new_token()
    ctx.migrate()
    with ctx.db.writer.begin() as conn:
        if admin.active_operators(conn):
            _fail("operators exist: an admin adds more with `operators add`", EXIT_DENIED)
        admin.add_operator(conn, name, "admin", token_hash, now_ms(), actor=name)
    ctx.emit({"operator": name, "role": "admin", "token": token},
             f"Admin {name!r} created. Its token (shown once; keep it secret):\n  {token}")


@operators.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(admin.ROLES), required=True)
@click.pass_obj
@handled
def operators_add(ctx: Context, name: str, role: str) -> None:
    """Add an operator; prints its token once."""
    actor = ctx.operator("admin")
    if not 1 <= len(name) <= 64:
        raise ValueError("an operator name has 1 to 64 characters")
    token, token_hash = new_token()
    with ctx.db.writer.begin() as conn:
        admin.add_operator(conn, name, role, token_hash, now_ms(), actor)
    ctx.emit({"operator": name, "role": role, "token": token},
             f"Operator {name!r} ({role}) added. Its token (shown once):\n  {token}")


@operators.command("revoke")
@click.argument("name")
@click.pass_obj
@handled
def operators_revoke(ctx: Context, name: str) -> None:
    """Revoke an operator's token."""
    actor = ctx.operator("admin")
    with ctx.db.writer.begin() as conn:
        admin.revoke_operator(conn, name, now_ms(), actor)
    ctx.emit({"revoked": name}, f"Operator {name!r} revoked.")


@operators.command("list")
@click.pass_obj
@handled
def operators_list(ctx: Context) -> None:
    """Operators and their roles (never their tokens)."""
    ctx.operator("auditor")
    with ctx.db.reader.connect() as conn:
        found = admin.list_operators(conn)
    table = Table("name", "role", "created", "revoked")
    for o in found:
        table.add_row(*map(cell, (o.name, o.role, _day(o.created_at), _day(o.revoked_at))))
    ctx.emit([asdict(o) for o in found], table)


# -- accounts ---------------------------------------------------------------------------


@cli.group()
def accounts() -> None:
    """Accounts and devices: counts and fingerprints, never content or keys."""


@accounts.command("list")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100)
@click.option("--offset", type=click.IntRange(0), default=0)
@click.option("--suspended", is_flag=True, help="Only suspended accounts.")
@click.option("--reserved", is_flag=True,
              help="Only accounts without a device (usernames a restore kept reserved).")
@click.pass_obj
@handled
def accounts_list(ctx: Context, limit: int, offset: int, suspended: bool,
                  reserved: bool) -> None:
    """Accounts, oldest first."""
    ctx.operator("auditor")
    with ctx.db.reader.connect() as conn:
        found = admin.list_accounts(conn, limit=limit, offset=offset,
                                    suspended_only=suspended, reserved_only=reserved)
    table = Table("account", "username", "created", "devices", "queued", "suspended",
                  "identity fingerprint")
    for a in found:
        table.add_row(*map(cell, (a.account_id, a.username or "", _day(a.created_at),
                                  a.devices, f"{a.queued_messages} ({a.queued_bytes} B)",
                                  _day(a.suspended_at), a.identity_fingerprint)))
    ctx.emit([asdict(a) for a in found], table)


@accounts.command("show")
@click.argument("account")
@click.pass_obj
@handled
def accounts_show(ctx: Context, account: str) -> None:
    """One account (id or username) and its devices."""
    ctx.operator("auditor")
    with ctx.db.reader.connect() as conn:
        account_id = admin.resolve_account(conn, account)
        summary = admin.account_summary(conn, account_id)
        found = admin.list_devices(conn, account_id)
    table = Table("device", "name", "created", "last seen", "queued", "one-time keys")
    for d in found:
        table.add_row(*map(cell, (d.device_id, d.name or "", _day(d.created_at),
                                  _day(d.last_seen), f"{d.queued_messages} ({d.queued_bytes} B)",
                                  f"{d.one_time_prekeys} EC, {d.kyber_prekeys} Kyber")))
    if not ctx.as_json:
        out.print(f"Account {summary.account_id}"
                  + (f" (@{summary.username})" if summary.username else "")
                  + f", created {_day(summary.created_at)}, identity fingerprint "
                  f"{summary.identity_fingerprint}"
                  + (f", SUSPENDED since {_day(summary.suspended_at)}"
                     if summary.suspended_at else ""), markup=False)
    ctx.emit({**asdict(summary), "devices": [asdict(d) for d in found]}, table)


def _suspension(ctx: Context, account: str, suspend: bool, reason: str | None) -> None:
    actor = ctx.operator("admin")
    with ctx.db.writer.begin() as conn:
        account_id = admin.resolve_account(conn, account)
        changed = admin.set_suspended(conn, account_id, suspend, now_ms(), actor, reason)
    state = "suspended" if suspend else "not suspended"
    ctx.emit({"account_id": account_id, "suspended": suspend, "changed": changed},
             f"Account {account_id} is {state}"
             + ("." if changed else " (it already was)."))


@accounts.command("suspend")
@click.argument("account")
@click.option("--reason", default=None, help="Recorded in the audit log (no personal data).")
@click.pass_obj
@handled
def accounts_suspend(ctx: Context, account: str, reason: str | None) -> None:
    """Suspend an account: its devices are refused (403 account_suspended), its
    WebSockets closed (4403), and sends to it refused (403 recipient_suspended)."""
    _suspension(ctx, account, True, reason)


@accounts.command("unsuspend")
@click.argument("account")
@click.pass_obj
@handled
def accounts_unsuspend(ctx: Context, account: str) -> None:
    """Lift a suspension."""
    _suspension(ctx, account, False, None)


@accounts.command("release-username")
@click.argument("account")
@click.option("--reason", default=None, help="Recorded in the audit log (no personal data).")
@click.option("--yes", is_flag=True, help="Do not ask.")
@click.pass_obj
@handled
def accounts_release_username(ctx: Context, account: str, reason: str | None,
                              yes: bool) -> None:
    """Free the username of an account without devices (one a restore kept reserved,
    `accounts list --reserved`) by deleting that account: anyone may then register the
    name. Its owner could otherwise re-register it with the recovery secret; do this
    when the owner has none, or asked for it."""
    actor = ctx.operator("admin")
    with ctx.db.reader.connect() as conn:
        account_id = admin.resolve_account(conn, account)
    if not yes and not click.confirm(f"Delete account {account_id} (no devices) and "
                                     "free its username for anyone to register?"):
        _fail("nothing released", EXIT_ERROR)
    with ctx.db.writer.begin() as conn:
        username = admin.release_username(conn, account_id, now_ms(), actor, reason)
    ctx.emit({"account_id": account_id, "username": username, "released": True},
             f"Account {account_id} deleted; "
             + (f"the username {username!r} is free." if username else
                "it held no username."))


# -- invites ----------------------------------------------------------------------------


@cli.group()
def invites() -> None:
    """Invite codes for `registration = "invite"`."""


@invites.command("create")
@click.option("--count", type=click.IntRange(1, 1000), default=1)
@click.option("--days", type=click.IntRange(1, 365), default=7, help="Valid this long.")
@click.pass_obj
@handled
def invites_create(ctx: Context, count: int, days: int) -> None:
    """Make single-use invite codes (shown once; stored hashed)."""
    actor = ctx.operator("admin")
    codes = [secrets.token_urlsafe(15) for _ in range(count)]
    now = now_ms()
    expires_at = now + days * 86_400_000
    with ctx.db.writer.begin() as conn:
        admin.create_invites(conn, [hash_token(c) for c in codes], expires_at, now, actor)
    note = "" if ctx.settings.registration == "invite" else (
        "\n(registration is 'open': set registration = \"invite\" for codes to be needed)")
    ctx.emit({"codes": codes, "expires_at": expires_at},
             "\n".join(codes) + f"\nValid until {_day(expires_at)}, once each." + note)


@invites.command("list")
@click.pass_obj
@handled
def invites_list(ctx: Context) -> None:
    """How many codes are unused, used, expired."""
    ctx.operator("auditor")
    with ctx.db.reader.connect() as conn:
        counts = admin.invite_counts(conn, now_ms())
    ctx.emit(asdict(counts), f"{counts.unused} unused, {counts.used} used, "
                             f"{counts.expired} expired (registration: "
                             f"{ctx.settings.registration})")


# -- retention, metrics -----------------------------------------------------------------


@cli.group("retention")
def retention_group() -> None:
    """Expiry of messages, attachments, history and idle devices."""


@retention_group.command("apply")
@click.pass_obj
@handled
def retention_apply(ctx: Context) -> None:
    """Run the expiry the relay runs every minute, now."""
    actor = ctx.operator("admin")
    now = now_ms()

    async def run() -> retention.Applied:
        # Not the relay's storage: the running relay's queue log is its own.
        storage = Storage(ctx.db, relay=False)
        try:
            return await retention.apply(storage, ctx.settings, now)
        finally:
            storage.close()

    applied = asyncio.run(run())
    details = {"messages": applied.messages_expired,
               "attachments": applied.attachments_expired,
               "history_entries": applied.history_entries_expired,
               "idle_devices": len(applied.idle_devices)}
    with ctx.db.writer.begin() as conn:
        audit.append(conn, now, audit.SERVER, None, "retention_applied", actor=actor,
                     details=details)
    ctx.emit(details, f"Expired {details['messages']} messages, {details['attachments']} "
                      f"attachments, {details['history_entries']} history entries; "
                      f"removed {details['idle_devices']} idle devices.")


@cli.command()
@click.option("--url", default=None,
              help="Also read the running relay's /metrics (default: its host and port).")
@click.option("--no-live", is_flag=True, help="Only what the database holds.")
@click.pass_obj
@handled
def metrics(ctx: Context, url: str | None, no_live: bool) -> None:
    """What the database holds, and the relay's own counters (no content, no ids)."""
    ctx.operator("auditor")
    with ctx.db.reader.connect() as conn:
        held = asdict(admin.holdings(conn))
        held["epoch"] = backups.epoch(conn)
        held["audit_entries"] = audit.head(conn)[0]
    live: dict[str, float] = {}
    if not no_live:
        scheme = "https" if ctx.settings.tls_certfile else "http"
        target = url or f"{scheme}://{ctx.settings.host}:{ctx.settings.port}/metrics"
        try:
            live = _scrape(target)
        except httpx.HTTPError as exc:
            err.print(f"(the relay's /metrics was not read: {type(exc).__name__})",
                      markup=False)
    table = Table("metric", "value")
    for name, value in {**held, **live}.items():
        table.add_row(cell(name), cell(f"{value:g}" if isinstance(value, float) else value))
    ctx.emit({"database": held, "relay": live}, table)


def _scrape(url: str) -> dict[str, float]:
    """Prometheus text format: the cipherpost_ samples, summed over labels."""
    response = httpx.get(url, timeout=5)
    response.raise_for_status()
    totals: dict[str, float] = {}
    for line in response.text.splitlines():
        if not line.startswith("cipherpost_") or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0]
        if name.endswith("_created"):
            continue
        try:
            totals[name] = totals.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return totals


# -- audit log --------------------------------------------------------------------------


@cli.group("audit")
def audit_group() -> None:
    """The tamper-evident audit log."""


@audit_group.command("verify")
@click.option("--head", "published", default=None,
              help="A chain head published earlier (hex): check the log still extends it.")
@click.pass_obj
@handled
def audit_verify(ctx: Context, published: str | None) -> None:
    """Walk the hash chain; report the first entry that breaks it (exit 3)."""
    ctx.operator("auditor")
    with ctx.db.reader.connect() as conn:
        verdict = audit.verify(conn)
        position = None
        if published is not None:
            try:
                position = audit.position_of(conn, bytes.fromhex(published))
            except ValueError:
                raise ValueError("--head takes the hex of a chain hash") from None
    data = {"ok": verdict.ok, "entries": verdict.entries, "head": verdict.head.hex(),
            "broken_at": verdict.broken_at, "reason": verdict.reason}
    if published is not None:
        data["published_head_at"] = position
    if verdict.ok:
        text = f"The audit log verifies: {verdict.entries} entries, head {verdict.head.hex()}."
        if published is not None:
            text += (f"\nThe published head is entry {position}." if position else
                     "\nThe published head is NOT in this log.")
    else:
        text = (f"The audit log does NOT verify: entry {verdict.broken_at}: "
                f"{verdict.reason}.")
    ctx.emit(data, text)
    if not verdict.ok or (published is not None and position is None):
        sys.exit(EXIT_UNVERIFIED)


@audit_group.command("show")
@click.option("--since", default=None, help="A date (ISO 8601).")
@click.option("--account", default=None, help="Only this account (id or username).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=200)
@click.pass_obj
@handled
def audit_show(ctx: Context, since: str | None, account: str | None, limit: int) -> None:
    """Audit entries, oldest first."""
    ctx.operator("auditor")
    with ctx.db.reader.connect() as conn:
        account_id = admin.resolve_account(conn, account) if account else None
        found = audit.entries(conn, since=_parse_since(since), account_id=account_id,
                              limit=limit)
    table = Table("#", "time", "event", "account", "device", "by", "details")
    for e in found:
        table.add_row(*map(cell, (
            e.seq, datetime.fromtimestamp(e.at / 1000, UTC).strftime("%Y-%m-%d %H:%M"),
            e.event, "(redacted)" if e.redacted else e.account_id,
            "" if e.device_id is None else e.device_id, e.actor or "", e.details or "")))
    ctx.emit([asdict(e) for e in found], table)


# -- sealed-sender trust root -----------------------------------------------------------


@cli.group("trust-root")
def trust_root_group() -> None:
    """The sealed-sender trust root this database's relays serve (clients pin it)."""


def _key_file_root(ctx: Context) -> tuple[Path, str | None]:
    """The configured key file and its root (None: no such file yet), never creating one."""
    path = sealed_sender_key_file(ctx.settings)
    if not path.exists():
        return path, None
    return path, trust_root.text(key_chain.load(path).trust_root.serialize())


@trust_root_group.command("show")
@click.pass_obj
@handled
def trust_root_show(ctx: Context) -> None:
    """The stored trust root and the key file's: relays start only when they match."""
    ctx.operator("auditor")
    with ctx.db.reader.connect() as conn:
        found = trust_root.stored(conn)
    path, in_file = _key_file_root(ctx)
    stored = None if found is None else trust_root.text(found.trust_root)
    data = {"stored": stored, "stored_at": None if found is None else found.stored_at,
            "key_file": str(path), "key_file_root": in_file,
            "match": stored is not None and stored == in_file}
    ctx.emit(data, f"Stored (served by this database's relays): {stored or '(none yet)'}\n"
                   f"Key file {path}: {in_file or '(no file)'}\n"
                   + ("They match." if data["match"] else
                      "The next relay to start stores its key file's root." if stored is None
                      else "They do NOT match: a relay with this key file refuses to start."))


@trust_root_group.command("replace")
@click.option("--yes", is_flag=True, help="Do not ask.")
@click.pass_obj
@handled
def trust_root_replace(ctx: Context, yes: bool) -> None:
    """Make the configured key file's root the one this database's relays serve: only
    when replacing the root on purpose (a leaked root). Every client must then re-pin
    (`cipherpost trust-root --repin`); until then it drops sealed messages."""
    actor = ctx.operator("admin")
    path, in_file = _key_file_root(ctx)
    if in_file is None:
        raise ValueError(f"no key file at {path} (a relay makes one at its first start, "
                         "or python -m cipherpost.server.key_chain)")
    if not yes and not click.confirm(f"Serve trust root {in_file} from {path}? Clients "
                                     "that pinned the old one refuse sealed messages "
                                     "until they re-pin."):
        _fail("nothing replaced", EXIT_ERROR)
    chain = key_chain.load(path)
    now = now_ms()
    with ctx.db.writer.begin() as conn:
        old = trust_root.replace(conn, chain, now)
        old_text = None if old is None else trust_root.text(old.trust_root)
        audit.append(conn, now, audit.SERVER, None, "trust_root_replaced", actor=actor,
                     details={"old": old_text, "new": in_file})
    ctx.emit({"old": old_text, "new": in_file},
             f"This database's relays now serve trust root {in_file} (was {old_text}). "
             "Restart them; tell users to re-pin (docs/operations.md).")


# -- reports, backups -------------------------------------------------------------------


@cli.command("transparency-report")
@click.option("--since", default=None, help="Start of the period (ISO 8601 date).")
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown")
@click.option("--output", type=click.Path(dir_okay=False, writable=True), default=None)
@click.pass_obj
@handled
def transparency_report(ctx: Context, since: str | None, fmt: str,
                        output: str | None) -> None:
    """What the server holds and what was requested, as a document to publish."""
    ctx.operator("auditor")
    with ctx.db.reader.connect() as conn:
        report = transparency.build(conn, since=_parse_since(since), now=now_ms())
    document = (transparency.to_json(report) if fmt == "json" or ctx.as_json
                else transparency.to_markdown(report))
    if output:
        Path(output).write_text(document + "\n")
        err.print(f"Written to {output}.", markup=False)
    else:
        out.print(document, markup=False)


@cli.command("backup")
@click.argument("path", type=click.Path(dir_okay=False))
@click.pass_obj
@handled
def backup_command(ctx: Context, path: str) -> None:
    """Write a consistent copy of the database to PATH (a new SQLite file), while the
    relay runs. Copy the attachment directory separately."""
    actor = ctx.operator("admin")
    target = Path(path)
    backups.backup(ctx.db, target, now_ms(), actor)
    info = backups.manifest(target)
    ctx.emit({"path": str(target), **info},
             f"Backup written to {target} (schema {info['schema']}, epoch {info['epoch']}, "
             f"{info['audit_entries']} audit entries, head {info['audit_head']}).")


@cli.command("restore")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--yes", is_flag=True, help="Do not ask (the relay must be stopped).")
@click.option("--force", is_flag=True,
              help="Restore even though a relay process seems to use the database.")
@click.pass_obj
@handled
def restore_command(ctx: Context, path: str, yes: bool, force: bool) -> None:
    """Replace the database's contents by the backup at PATH and start a new epoch
    (removed devices stay removed, no one-time prekey is handed out twice). Stop the
    relay first."""
    actor = ctx.operator("admin")
    if not yes and not click.confirm("Every row of the relay's database is replaced by "
                                     "the backup's. Is the relay stopped?"):
        _fail("nothing restored", EXIT_ERROR)
    done = backups.restore(ctx.db, Path(path), now_ms(), actor, force=force)
    ctx.emit(asdict(done),
             f"Restored; epoch {done.epoch}. Deleted {done.devices_removed} devices "
             f"removed since the backup and {done.accounts_removed} accounts left without "
             f"devices; dropped {done.one_time_prekeys_dropped} one-time prekeys (devices "
             f"upload fresh ones) and {done.messages_expired} expired messages; carried "
             f"{done.audit_entries_carried} audit entries over from the live log; kept "
             f"{done.accounts_reserved} live accounts without devices, holding their "
             f"usernames for their owners (accounts list --reserved).")


def main() -> None:
    cli(prog_name="cipherpost-admin")


if __name__ == "__main__":
    main()
