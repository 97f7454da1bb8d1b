"""Request dependencies: the relay, the authenticated device, the client address."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import Depends, Request

from ..auth import DeviceIdentity, authenticate
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
