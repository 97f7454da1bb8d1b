"""Server settings: defaults, then a TOML file, then ``CIPHERPOST_*`` environment variables."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DAY = 24 * 3600


@dataclass(frozen=True)
class Settings:
    """Everything the relay can be told. Each field is ``CIPHERPOST_<NAME>`` in the env."""

    #: SQLAlchemy URL of the database.
    database_url: str = "sqlite:///data/cipherpost.db"
    #: Redis (``redis://HOST:PORT/DB``) shared by several relay processes for fan-out and
    #: rate limits; empty: one process, everything in memory.
    redis_url: str = ""
    #: SQLite ``synchronous`` level: NORMAL survives a process crash (SIGKILL) in WAL mode;
    #: FULL also survives power loss, at a cost per commit.
    sqlite_synchronous: str = "NORMAL"
    host: str = "127.0.0.1"
    port: int = 8080
    #: Serve TLS directly when both are set (else put a reverse proxy in front).
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    max_devices_per_account: int = 10
    #: Unacknowledged messages expire after this many seconds.
    message_ttl: int = 30 * DAY
    #: Bytes of queued ciphertext a device may hold before sends to it are refused.
    queue_byte_budget: int = 64 * 1024 * 1024
    max_message_bytes: int = 256 * 1024
    max_request_bytes: int = 4 * 1024 * 1024
    max_attachment_bytes: int = 100 * 1024 * 1024
    attachment_ttl: int = 30 * DAY
    attachment_dir: str = "data/attachments"
    max_one_time_prekeys_per_upload: int = 200
    link_code_ttl: int = 600
    #: Token buckets, as "capacity/refill-per-second".
    rate_register_per_ip: str = "5/0.01"
    rate_prekey_fetch_per_account: str = "100/1"
    rate_messages_per_pair: str = "300/10"
    #: Opening provisioning mailboxes (device linking), per client address (an IPv6
    #: address counts by its /64), and leaving messages in them, per account.
    rate_provisioning_per_ip: str = "5/0.01"
    rate_provisioning_put_per_account: str = "10/0.01"
    #: Claiming a typed link code, per account and (separately) per client address: a
    #: wrong code costs as much as a right one (docs/spec/linking.md, "Typed code").
    rate_provisioning_claim: str = "5/0.01"
    #: Provisioning mailboxes held in memory at once, and the bytes of their messages.
    max_provisioning_mailboxes: int = 10_000
    provisioning_byte_budget: int = 32 * 1024 * 1024
    #: Server-stored history (docs/spec/history.md): the largest entry, and what one
    #: account may store in all; uploads per account, recovery attempts per address.
    max_history_entry_bytes: int = 64 * 1024
    max_history_bytes_per_account: int = 1024 * 1024 * 1024
    rate_history_put_per_account: str = "2000/100"
    rate_recovery_per_ip: str = "10/0.01"
    #: ``open``: anyone may register; ``invite``: registering takes an invite code from
    #: an operator (``cipherpost-admin invites create``).
    registration: str = "open"
    #: Sealed sender (docs/server.md): the key chain's file (created at the first start;
    #: clients pin its trust root; empty: ``sealed-sender-keys.json`` in the directory
    #: that holds ``attachment_dir``), how long a sender certificate lasts (seconds), and
    #: sealed sends per recipient account and per client address (an IPv6 address counts
    #: by its /64): they carry no sender, so no per-sender limit can apply.
    sealed_sender_keys: str = ""
    sender_certificate_ttl: int = DAY
    rate_sealed_per_recipient: str = "600/10"
    rate_sealed_per_ip: str = "1200/20"
    #: Bytes sealed sends may queue for one recipient, as "capacity/refill-per-second",
    #: counting the largest ciphertext of each send (each device's queue gets one):
    #: whoever holds an account's access key is not named, so this bounds how fast it
    #: can fill the account's queues (review 2026-11-29-sealed-ops, R6). Empty: a
    #: quarter of ``queue_byte_budget``, refilled over an hour.
    rate_sealed_bytes_per_recipient: str = ""
    #: Linked devices unused this many days are removed (0: never).
    device_idle_days: int = 180
    #: Client addresses of proxies whose X-Forwarded-For is believed.
    trusted_proxies: tuple[str, ...] = field(default_factory=tuple)
    log_level: str = "INFO"
    #: The built browser client served at ``/`` (``make run`` builds ``web/dist``); empty
    #: means that directory of a source checkout, and nothing is served where it is absent.
    web_dir: str = ""
    #: Origins of separately hosted copies of the browser client (``https://chat.example``)
    #: that may call this relay's API from the browser (CORS); empty: only the copy served
    #: here at ``/``.
    web_origins: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None,
             environ: dict[str, str] | None = None) -> Settings:
        """Defaults, overridden by a TOML file (``path`` or ``CIPHERPOST_CONFIG``), then env.

        Raises:
            ValueError: an unknown key or a value of the wrong type.
        """
        env = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        config = path or env.get("CIPHERPOST_CONFIG")
        if config:
            data = tomllib.loads(Path(config).read_text())
            section = data.get("server", data)
            values.update(section)
        known = {f.name: f for f in fields(cls)}
        for name in known:
            key = f"CIPHERPOST_{name.upper()}"
            if key in env:
                values[name] = env[key]
        unknown = set(values) - set(known)
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        return replace(cls(), **{k: _coerce(known[k].type, k, v) for k, v in values.items()})


def sealed_sender_key_file(settings: Settings) -> Path:
    """Where the sealed-sender key chain is kept (see ``Settings.sealed_sender_keys``)."""
    if settings.sealed_sender_keys:
        return Path(settings.sealed_sender_keys)
    return Path(settings.attachment_dir).resolve().parent / "sealed-sender-keys.json"


def _coerce(kind: Any, name: str, value: Any) -> Any:
    text = str(kind)
    try:
        if text == "int":
            return int(value)
        if text.startswith("tuple"):
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(str(v) for v in value)
        if value is None or text == "str":
            return value if value is None else str(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"setting {name}: {exc}") from None


def sealed_byte_rate(settings: Settings) -> str:
    """The bucket of ``Settings.rate_sealed_bytes_per_recipient`` (its default derived
    from ``queue_byte_budget``)."""
    if settings.rate_sealed_bytes_per_recipient:
        return settings.rate_sealed_bytes_per_recipient
    capacity = settings.queue_byte_budget // 4
    return f"{capacity}/{capacity / 3600}"


def parse_rate(spec: str) -> tuple[float, float]:
    """``"capacity/refill"`` -> (capacity, tokens per second)."""
    capacity, _, refill = spec.partition("/")
    return float(capacity), float(refill or 0)
