"""Device credentials.

A device's token is ``<account id>.<device id>.<secret>``; the secret is 32 random bytes
(base64url), so a plain SHA-256 is a sufficient stored hash. Tokens travel in the
``Authorization: Bearer`` header (HTTP and the WebSocket handshake), never in a URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from .errors import account_suspended, unauthorized
from .storage.sql import Storage


@dataclass(frozen=True)
class DeviceIdentity:
    """An authenticated device."""

    account_id: str
    device_id: int


def new_secret() -> tuple[str, bytes]:
    """A fresh secret and its stored hash."""
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return secret, hash_secret(secret)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def make_token(account_id: str, device_id: int, secret: str) -> str:
    return f"{account_id}.{device_id}.{secret}"


async def authenticate(storage: Storage, header: str | None) -> DeviceIdentity:
    """Check an ``Authorization`` header.

    Raises:
        ApiError: 401 for anything but a valid token of an existing device; 403
            ``account_suspended`` for a valid token of a suspended account.
    """
    if not header or not header.startswith("Bearer "):
        raise unauthorized()
    parts = header[7:].strip().split(".")
    if len(parts) != 3 or not parts[1].isdigit() or len(parts[0]) != 36 or len(parts[1]) > 3:
        raise unauthorized()
    account_id, device_text, secret = parts
    device_id = int(device_text)
    stored = await storage.device_credentials(account_id, device_id)
    if stored is None or not hmac.compare_digest(stored[0], hash_secret(secret)):
        raise unauthorized()
    if stored[1]:
        raise account_suspended()
    return DeviceIdentity(account_id, device_id)
