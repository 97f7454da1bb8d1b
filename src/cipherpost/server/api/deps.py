"""Request dependencies: the relay, the authenticated device, the client address."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from typing import Annotated

from fastapi import Depends, Request

from ..auth import DeviceIdentity, authenticate
from ..errors import bad_request
from ..relay import Relay


def get_relay(request: Request) -> Relay:
    relay: Relay = request.app.state.relay
    return relay


RelayDep = Annotated[Relay, Depends(get_relay)]


async def get_device(request: Request, relay: RelayDep) -> DeviceIdentity:
    device = await authenticate(relay.storage, request.headers.get("authorization"))
    await relay.seen(device.account_id, device.device_id)
    return device


DeviceDep = Annotated[DeviceIdentity, Depends(get_device)]


def client_ip(request: Request, relay: Relay) -> str:
    """The client's address, believing X-Forwarded-For only from trusted proxies."""
    peer = request.client.host if request.client else "unknown"
    trusted = set(relay.settings.trusted_proxies)
    if peer not in trusted:
        return peer
    forwarded = [p.strip() for p in request.headers.get("x-forwarded-for", "").split(",")]
    for hop in reversed([p for p in forwarded if p]):
        if hop not in trusted:
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return peer


def unb64(value: str, what: str, *, max_bytes: int | None = None) -> bytes:
    """Decode a base64 field; 400 with a clear message otherwise."""
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{what} is not valid base64") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise bad_request(f"{what} is too large", code="too_large")
    return data


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
