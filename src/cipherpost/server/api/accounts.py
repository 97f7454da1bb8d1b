"""Accounts and devices: register, link a device, list and remove devices, usernames."""

from __future__ import annotations

import secrets
import uuid

from fastapi import APIRouter, Request

from .. import notices
from ..auth import hash_secret, make_token, new_secret
from ..codec import b64
from ..errors import ApiError, bad_request, not_found
from ..relay import Relay
from ..storage.models import (
    DeviceMismatch,
    InvalidInvite,
    NewDevice,
    TooManyDevices,
    UsernameTaken,
)
from .deps import DeviceDep, RelayDep, client_ip
from .keys import parse_identity, parse_keys
from .schemas import (
    AccountIdOut,
    AccountOut,
    CredentialsOut,
    DeviceKeysIn,
    DeviceOut,
    IdentityResetIn,
    LinkCodeOut,
    LinkDeviceIn,
    RegisterIn,
    UsernameIn,
)
from .two_factor import require_second_factor

router = APIRouter(tags=["accounts"])


def _new_device(body: DeviceKeysIn) -> tuple[NewDevice, str]:
    identity = parse_identity(body.identity_key)
    keys = parse_keys(identity, body)
    secret, token_hash = new_secret()
    return NewDevice(body.registration_id, token_hash, body.name, keys), secret


@router.post("/v1/accounts", status_code=201, summary="Register an account and its first device")
async def register(body: RegisterIn, request: Request, relay: RelayDep) -> CredentialsOut:
    await relay.limit("register", client_ip(request, relay))
    invite_hash = None
    if relay.settings.registration == "invite":
        if body.invite is None:
            raise ApiError(403, "invite_required",
                           "this server registers new accounts by invitation only")
        invite_hash = hash_secret(body.invite)
    device, secret = _new_device(body)
    account_id = str(uuid.uuid4())
    identity = parse_identity(body.identity_key).serialize()
    try:
        await relay.storage.create_account(account_id, body.username, identity, device,
                                           relay.now_ms(), invite_hash=invite_hash)
    except UsernameTaken:
        raise ApiError(409, "username_taken", "that username is taken") from None
    except InvalidInvite:
        raise ApiError(403, "invalid_invite",
                       "the invite code is unknown, used or expired") from None
    return CredentialsOut(account_id=account_id, device_id=1,
                          token=make_token(account_id, 1, secret))


@router.get("/v1/accounts/me", summary="The calling account and its devices")
async def whoami(relay: RelayDep, device: DeviceDep) -> AccountOut:
    account = await relay.storage.get_account(device.account_id)
    if account is None:
        raise not_found("account")
    devices = await relay.storage.list_devices(device.account_id)
    return AccountOut(account_id=account.id, username=account.username,
                      identity_key=b64(account.identity_key),
                      devices=[DeviceOut(**d.__dict__) for d in devices])


@router.put("/v1/accounts/me/username", status_code=204, summary="Set or clear the username")
async def set_username(body: UsernameIn, relay: RelayDep, device: DeviceDep) -> None:
    try:
        await relay.storage.set_username(device.account_id, body.username, relay.now_ms())
    except UsernameTaken:
        raise ApiError(409, "username_taken", "that username is taken") from None


@router.put("/v1/accounts/me/identity", status_code=204,
            summary="Reset the account's identity key (after a compromise)",
            responses={409: {"description": "registration_ids must name every device"}})
async def reset_identity(body: IdentityResetIn, request: Request, relay: RelayDep,
                         device: DeviceDep) -> None:
    await relay.limit("prekeys", device.account_id)
    identity = parse_identity(body.identity_key)
    keys = parse_keys(identity, body)
    await require_second_factor(relay, request, device.account_id)
    registration_ids = {r.device_id: r.registration_id for r in body.registration_ids}
    if len(registration_ids) != len(body.registration_ids):
        raise bad_request("one registration id per device")
    try:
        await relay.storage.reset_identity(device.account_id, device.device_id,
                                           identity.serialize(), registration_ids, keys,
                                           relay.now_ms())
    except DeviceMismatch as exc:
        raise ApiError(409, "device_mismatch", "registration_ids must name every device",
                       missing_devices=exc.missing, extra_devices=exc.extra) from None
    await notices.notify(relay, device.account_id, notices.IDENTITY_RESET,
                         exclude_device=device.device_id, device_id=device.device_id)


@router.get("/v1/usernames/{username}", summary="Find an account by username")
async def lookup_username(username: str, relay: RelayDep, device: DeviceDep) -> AccountIdOut:
    await relay.limit("prekeys", device.account_id)
    account_id = await relay.storage.find_username(username) if len(username) <= 32 else None
    if account_id is None:
        raise not_found("username")
    return AccountIdOut(account_id=account_id)


@router.post("/v1/devices/link-codes", status_code=201,
             summary="A one-time code with which a new device joins this account")
async def create_link_code(request: Request, relay: RelayDep,
                           device: DeviceDep) -> LinkCodeOut:
    await require_second_factor(relay, request, device.account_id)
    return await new_link_code(relay, device.account_id)


async def new_link_code(relay: Relay, account_id: str) -> LinkCodeOut:
    """A one-time link code for ``account_id`` (the caller checked it may have one)."""
    code = secrets.token_urlsafe(24)
    now = relay.now_ms()
    expires_at = now + relay.settings.link_code_ttl * 1000
    await relay.storage.create_link_code(hash_secret(code), account_id, expires_at, now)
    return LinkCodeOut(link_code=code, expires_at=expires_at)


@router.post("/v1/devices", status_code=201, summary="Join an account with a link code")
async def link_device(body: LinkDeviceIn, request: Request, relay: RelayDep) -> CredentialsOut:
    await relay.limit("register", client_ip(request, relay))
    account_id = await relay.storage.consume_link_code(hash_secret(body.link_code),
                                                       relay.now_ms())
    if account_id is None:
        raise ApiError(403, "invalid_link_code", "the link code is unknown or expired")
    return await join_account(relay, account_id, body)


async def join_account(relay: Relay, account_id: str, body: DeviceKeysIn, *,
                       via: str = "link_code") -> CredentialsOut:
    """Add a device to ``account_id`` (the caller checked it may: a link code or a
    recovery secret); it must hold the account's identity key. The account's other
    devices are told (a notice saying ``via`` what it joined)."""
    device, secret = _new_device(body)
    now = relay.now_ms()
    account = await relay.storage.get_account(account_id)
    if account is None:
        raise not_found("account")
    if parse_identity(body.identity_key).serialize() != account.identity_key:
        raise ApiError(409, "identity_mismatch",
                       "a device must use the account's identity key")
    try:
        device_id = await relay.storage.add_device(
            account_id, device, relay.settings.max_devices_per_account, now)
    except TooManyDevices:
        raise ApiError(409, "too_many_devices", "the account has its maximum of devices") \
            from None
    await notices.notify(relay, account_id, notices.DEVICE_ADDED, exclude_device=device_id,
                         device_id=device_id, name=body.name, via=via)
    return CredentialsOut(account_id=account_id, device_id=device_id,
                          token=make_token(account_id, device_id, secret))


@router.get("/v1/devices", summary="The calling account's devices")
async def list_devices(relay: RelayDep, device: DeviceDep) -> list[DeviceOut]:
    return [DeviceOut(**d.__dict__) for d in await relay.storage.list_devices(device.account_id)]


@router.delete("/v1/devices/{device_id}", status_code=204,
               summary="Remove a device: its token dies, its queue and keys are deleted")
async def remove_device(device_id: int, relay: RelayDep, device: DeviceDep) -> None:
    devices = await relay.storage.list_devices(device.account_id)
    if device_id not in {d.device_id for d in devices}:
        raise not_found("device")
    if len(devices) == 1:
        raise bad_request("the last device of an account cannot be removed",
                          code="last_device")
    await relay.storage.remove_device(device.account_id, device_id, relay.now_ms())
    relay.hub.disconnect(device.account_id, device_id, 4401)
