"""Account security and privacy from the SDK (docs/client.md, "Account security"): the
TOTP second factor, what the relay holds about the account, its export, deleting the
account, and re-registering a username with its recovery secret.

Actions the relay protects with the second factor take the code in the
``X-Second-Factor`` header: :func:`second_factor` puts it on a client's requests for the
duration of a ``with`` block (a code is spent by the first protected request).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cipherpost.protocol import IdentityKeyPair

from . import history as history_keys
from .api import Credentials, RelayApi
from .client import Client
from .errors import ClientError
from .options import ClientOptions
from .recovery import Secrets, parse_key
from .store.crypto import Argon2Params

SECOND_FACTOR_HEADER = "X-Second-Factor"


@dataclass(frozen=True)
class Enrolment:
    """An authenticator being enrolled: show ``uri`` as a QR code (``secret`` for typing)."""

    secret: str
    uri: str

    def __repr__(self) -> str:
        return "Enrolment(<secret>)"


@contextlib.contextmanager
def second_factor(api: RelayApi, code: str | None) -> Iterator[None]:
    """Send ``code`` with every request of ``api`` inside the block (nothing when None)."""
    if code is None:
        yield
        return
    api.extra_headers[SECOND_FACTOR_HEADER] = code
    try:
        yield
    finally:
        api.extra_headers.pop(SECOND_FACTOR_HEADER, None)


async def two_factor_status(client: Client) -> dict[str, Any]:
    """``{"enabled", "pending", "recovery_codes_left"}``."""
    status: dict[str, Any] = await client.api.request("GET", "/v1/accounts/me/2fa")
    return status


async def begin_two_factor(client: Client) -> Enrolment:
    """Start enrolling an authenticator (a new secret replaces an unconfirmed one).

    Raises:
        RelayError: 409 when a second factor is on already.
    """
    data = await client.api.request("POST", "/v1/accounts/me/2fa")
    return Enrolment(str(data["secret"]), str(data["uri"]))


async def confirm_two_factor(client: Client, code: str) -> list[str]:
    """Turn the second factor on with a first code; the recovery codes, to show once.

    Raises:
        RelayError: 403 for a wrong code.
    """
    data = await client.api.request("POST", "/v1/accounts/me/2fa/confirm",
                                    json={"code": code.strip()})
    return [str(c) for c in data["recovery_codes"]]


async def new_recovery_codes(client: Client, code: str) -> list[str]:
    """Replace the recovery codes (the old ones stop working)."""
    with second_factor(client.api, code):
        data = await client.api.request("POST", "/v1/accounts/me/2fa/recovery-codes")
    return [str(c) for c in data["recovery_codes"]]


async def disable_two_factor(client: Client, code: str | None) -> None:
    """Turn the second factor off (needs a code once it is on)."""
    with second_factor(client.api, code):
        await client.api.request("DELETE", "/v1/accounts/me/2fa")


async def privacy_dashboard(client: Client) -> dict[str, Any]:
    """What the relay holds about the account (``GET /v1/accounts/me/privacy``), with
    this device's own settings beside it under ``"this_device"``: receipts, typing, the
    server history choice and the disappearing-message timers it keeps."""
    held: dict[str, Any] = await client.api.request("GET", "/v1/accounts/me/privacy")
    held["this_device"] = local_settings(client)
    return held


#: The receipt and typing settings a device may keep (``ClientOptions`` fields): they
#: never reach the relay; :func:`remember_setting` stores them, :func:`apply_settings`
#: puts the stored ones on a client's options.
SETTINGS = ("delivery_receipts", "read_receipts", "typing_indicators")
_SETTING = "setting:"


def remember_setting(client: Client, name: str, on: bool) -> None:
    """Keep ``name`` (one of :data:`SETTINGS`) on or off on this device, from now on.

    Raises:
        ValueError: an unknown setting.
    """
    if name not in SETTINGS:
        raise ValueError(f"no setting {name!r} (one of {', '.join(SETTINGS)})")
    with client.store.transaction():
        client.store.set_meta(_SETTING + name, "1" if on else "0")
    setattr(client.options, name, on)


def apply_settings(client: Client) -> None:
    """Put the settings this device stored (:func:`remember_setting`) on its options;
    the others keep the options' values."""
    for name in SETTINGS:
        value = client.store.get_meta(_SETTING + name)
        if value in ("0", "1"):
            setattr(client.options, name, value == "1")


def local_settings(client: Client) -> dict[str, Any]:
    """The settings this device keeps (they never reach the relay)."""
    options = client.options
    return {"delivery_receipts": options.delivery_receipts,
            "read_receipts": options.read_receipts,
            "typing_indicators": options.typing_indicators,
            "server_history": history_keys.enabled(client.store),
            "disappearing_default": client.default_expire_timer(),
            "disappearing_timers": client.store.expire_timers()}


async def export_server_data(client: Client) -> bytes:
    """The account's server-side data as the relay exports it (a JSON document)."""
    data = await client.api.request("GET", "/v1/accounts/me/export")
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    import json
    return json.dumps(data, indent=2, sort_keys=True).encode()


async def delete_account(client: Client, code: str | None = None) -> None:
    """Delete the account and everything the relay holds of it. Every device's token
    stops working; the local store stays until the caller removes it."""
    with second_factor(client.api, code):
        await client.api.request("DELETE", "/v1/accounts/me")


async def reregister(path: Path, server: str, username: str, *,
                     recovery_key: str | None = None, history: bool = False,
                     code: str | None = None, passphrase: str | None = None,
                     device_name: str | None = None, argon2: Argon2Params | None = None,
                     proxy: str | None = None,
                     options: ClientOptions | None = None) -> Client:
    """Register ``username`` again with a new identity (every old device is removed),
    proving the account's recovery key (the registration lock). Contacts see a changed
    safety number. ``code`` is the second factor when the account has one.

    Raises:
        RecoveryKeyError: not a recovery key. RelayError: 403 (wrong key, or locked),
        404 (no such username), 429 after wrong keys.
    """
    if recovery_key is None:
        raise ClientError("re-registering needs the account's recovery key")
    release = Secrets.derive(parse_key(recovery_key)).release()

    async def send(api: RelayApi, body: dict[str, Any]) -> Credentials:
        with second_factor(api, code):
            data = await api.request("POST", "/v1/accounts/reregister", json=body,
                                     auth=False)
        return Credentials(data["account_id"], int(data["device_id"]), data["token"])

    client = await Client._set_up(path, server, IdentityKeyPair.generate(os.urandom),
                                  {"username": username, **release}, send, passphrase,
                                  device_name, argon2, proxy, options)
    history_keys.set_keys(client.store, history_keys.Keys.new(client._now())
                          if history else None, on=history)
    return client
