"""Registration lock: a taken username is registered again only with its account's
recovery secret (docs/server.md, "Registration lock").

``POST /v1/accounts`` with a taken username is refused (409) as always. Re-registering
(``POST /v1/accounts/reregister``) gives the same account id and username a new identity
and a first device, and removes every old device: what someone who lost every device and
wants a fresh identity does. It takes proof of the recovery key (its release secret) or
of the recovery passphrase (its verifier), which only the owner can derive, checked
against the hashes the relay already keeps for the recovery blobs, with the same waits
after wrong ones; and the second factor when the account has one. An account without a
recovery secret cannot be re-registered at all, so a username is never silently given a
new identity by someone else.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import Field

from ..auth import make_token
from ..errors import ApiError
from ..storage import account_data
from .accounts import _new_device
from .deps import RelayDep, client_ip
from .history import _open, _open_by_passphrase
from .keys import parse_identity
from .schemas import CredentialsOut, DeviceKeysIn
from .two_factor import require_second_factor

router = APIRouter(tags=["accounts"])


class ReregisterIn(DeviceKeysIn):
    """A new first device for a taken username, with proof of its recovery secret: the
    recovery key's ``lookup_id`` and ``auth``, or the passphrase's ``verifier``."""

    username: str = Field(min_length=3, max_length=32, pattern=r"^[a-z0-9_][a-z0-9_.]*$")
    lookup_id: str | None = Field(default=None, max_length=32)
    auth: str | None = Field(default=None, max_length=64)
    verifier: str | None = Field(default=None, max_length=64)


def locked() -> ApiError:
    return ApiError(403, "registration_locked", "that username is registered; only its "
                    "recovery key or recovery passphrase can register it again")


@router.post("/v1/accounts/reregister", status_code=201,
             summary="Register a taken username again, with its account's recovery secret")
async def reregister(body: ReregisterIn, request: Request,
                     relay: RelayDep) -> CredentialsOut:
    await relay.limit("register", client_ip(request, relay))
    account_id = await relay.storage.find_username(body.username)
    if account_id is None:
        raise ApiError(404, "not_found", "no account has that username; register it")
    if body.verifier is not None:
        proven, _blob = await _open_by_passphrase(relay, request, body.username,
                                                  body.verifier)
    elif body.lookup_id is not None and body.auth is not None:
        proven, _blob = await _open(relay, request, body.lookup_id, body.auth)
    else:
        raise locked()
    if proven != account_id:
        raise locked()
    await require_second_factor(relay, request, account_id)
    device, secret = _new_device(body)
    identity = parse_identity(body.identity_key).serialize()
    old = await account_data.reregister(relay.storage, account_id, identity, device,
                                        relay.now_ms())
    for device_id in old:
        relay.hub.disconnect(account_id, device_id, 4401)
    return CredentialsOut(account_id=account_id, device_id=1,
                          token=make_token(account_id, 1, secret))
