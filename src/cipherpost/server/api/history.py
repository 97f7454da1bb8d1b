"""Server-stored encrypted history and recovery blobs (docs/spec/history.md).

The relay cannot read either: history entries are sealed under epoch keys only the
account's devices hold, the recovery blob under a key derived from a recovery key that
never leaves the user. What it sees: entry sizes (padded), their day, their count.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from .. import notices
from ..codec import b64, unb64
from ..errors import ApiError, bad_request, rate_limited
from ..storage import account_data, two_factor
from ..storage import history as store
from .accounts import join_account, new_link_code
from .deps import DeviceDep, RelayDep, client_ip
from .schemas import CredentialsOut, DeviceKeysIn, Strict
from .two_factor import require_second_factor

router = APIRouter(tags=["history"])

_EVENT_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_RECOVERY_BLOB = 64 * 1024


def _event_id(text: str) -> bytes:
    if not _EVENT_ID.match(text):
        raise bad_request("an event id is 32 lowercase hex digits")
    return bytes.fromhex(text)


class HistoryEntryOut(BaseModel):
    seq: int
    event_id: str
    day: int = Field(description="days since 1970-01-01 (UTC) when the relay stored it")
    blob: str | None = Field(description="base64; null when the event was deleted")


class HistoryPageOut(BaseModel):
    entries: list[HistoryEntryOut]
    more: bool


class StoredOut(BaseModel):
    stored: bool = Field(description="false when the event was stored (or deleted) before")


class HistorySettingsIn(Strict):
    retention_days: int | None = Field(ge=1, le=36500,
                                       description="delete entries older than this")


class HistorySettingsOut(BaseModel):
    retention_days: int | None
    stored_bytes: int


@router.get("/v1/history/settings", summary="Retention and stored size")
async def get_settings(relay: RelayDep, device: DeviceDep) -> HistorySettingsOut:
    days, stored = await store.history_retention(relay.storage, device.account_id)
    return HistorySettingsOut(retention_days=days, stored_bytes=stored)


@router.put("/v1/history/settings", status_code=204,
            summary="Set how long entries are kept (null: until deleted)")
async def put_settings(body: HistorySettingsIn, relay: RelayDep, device: DeviceDep) -> None:
    await store.set_history_retention(relay.storage, device.account_id, body.retention_days)


@router.put("/v1/history/{event_id}", summary="Upload a sealed history entry (idempotent)")
async def put_entry(event_id: str, request: Request, relay: RelayDep,
                    device: DeviceDep) -> StoredOut:
    name = _event_id(event_id)
    await relay.limit("history_put", device.account_id)
    limit = relay.settings.max_history_entry_bytes
    body = await request.body()
    if not body:
        raise bad_request("the entry is empty")
    if len(body) > limit:
        raise ApiError(413, "too_large", f"history entries are limited to {limit} bytes")
    try:
        seq = await store.put_history(relay.storage, device.account_id, name, body,
                                      relay.now_ms(),
                                      relay.settings.max_history_bytes_per_account)
    except store.HistoryFull:
        raise ApiError(507, "history_full", "the account's history holds its maximum "
                       "size; set a shorter retention or delete some") from None
    return StoredOut(stored=seq is not None)


@router.get("/v1/history", summary="Page through the account's history log")
async def list_entries(relay: RelayDep, device: DeviceDep,
                       after: int = Query(0, ge=0, le=2**62),
                       limit: int = Query(200, ge=1, le=1000)) -> HistoryPageOut:
    rows = await store.list_history(relay.storage, device.account_id, after, limit + 1)
    return HistoryPageOut(
        entries=[HistoryEntryOut(seq=r.seq, event_id=r.event_id.hex(), day=r.day,
                                 blob=None if r.blob is None else b64(r.blob))
                 for r in rows[:limit]],
        more=len(rows) > limit)


@router.delete("/v1/history/{event_id}", status_code=204,
               summary="Delete an entry (a tombstone stays so it is not uploaded again)")
async def delete_entry(event_id: str, relay: RelayDep, device: DeviceDep) -> None:
    await store.delete_history_entry(relay.storage, device.account_id, _event_id(event_id),
                                     relay.now_ms())


@router.delete("/v1/history", status_code=204,
               summary="Turn server history off: delete everything stored")
async def clear(relay: RelayDep, device: DeviceDep) -> None:
    await store.clear_history(relay.storage, device.account_id)
    await relay.storage.record_event(device.account_id, device.device_id, "history_cleared",
                                     relay.now_ms())


# -- recovery ---------------------------------------------------------------------------


class RecoveryIn(Strict):
    lookup_id: str = Field(max_length=32, description="base64, 16 bytes")
    auth: str = Field(max_length=64, description="base64, 32 bytes: the release secret")
    blob: str = Field(max_length=MAX_RECOVERY_BLOB * 4 // 3 + 4, description="base64")
    reseal: bool = Field(False, description=(
        "only seal the blob again under the secret the relay holds now: 409 "
        "`recovery_changed` when it holds another one or none, never a new secret"))


class RecoveryOpenIn(Strict):
    lookup_id: str = Field(max_length=32)
    auth: str = Field(max_length=64)


class RecoveryOut(BaseModel):
    account_id: str
    blob: str
    link_code: str | None = Field(
        default=None, description="when the account has a second factor: a one-time link "
        "code for joining it (POST /v1/devices), so that one code from the authenticator "
        "does for both steps")


class RecoveryDeviceIn(DeviceKeysIn):
    """A new device of an account restored from its recovery blob."""

    lookup_id: str = Field(max_length=32)
    auth: str = Field(max_length=64)


def _secrets(lookup_id: str, auth: str) -> tuple[bytes, bytes]:
    lookup = unb64(lookup_id, "lookup_id")
    secret = unb64(auth, "auth")
    if len(lookup) != 16 or len(secret) != 32:
        raise bad_request("lookup_id is 16 bytes and auth 32")
    return lookup, hashlib.sha256(b"cipherpost recovery auth\x00" + secret).digest()


async def _released(relay: RelayDep, request: Request,
                    opening: Callable[[], Awaitable[tuple[str, bytes] | None]],
                    refused: str) -> tuple[str, bytes]:
    """(account id, blob) from ``opening``, rate-limited per address; 429 while the
    blob's wrong-secret wait runs, 403 for a wrong or unknown secret."""
    await relay.limit("recovery", client_ip(request, relay))
    try:
        found = await opening()
    except store.RecoveryWait as wait:
        raise rate_limited(wait.retry_after_ms / 1000) from None
    if found is None:
        raise ApiError(403, "invalid_recovery", refused)
    return found


async def _open(relay: RelayDep, request: Request, lookup_id: str,
                auth: str) -> tuple[str, bytes]:
    lookup, auth_hash = _secrets(lookup_id, auth)
    return await _released(relay, request, lambda: store.open_recovery(
        relay.storage, lookup, auth_hash, relay.now_ms()), "no recovery blob for that key")


def _stale(what: str) -> ApiError:
    """A device sealing the blob again holds secrets the account no longer uses (another
    device made a new one, or deleted it): installing them would bring back a replaced
    secret, so nothing changes."""
    return ApiError(409, "recovery_changed",
                    f"the account's {what} changed since this device stored it: "
                    "nothing was replaced")


@router.put("/v1/recovery", status_code=204,
            summary="Store (replace) the account's sealed recovery blob")
async def put_recovery(body: RecoveryIn, request: Request, relay: RelayDep,
                       device: DeviceDep) -> None:
    lookup, auth_hash = _secrets(body.lookup_id, body.auth)
    blob = unb64(body.blob, "blob", max_bytes=MAX_RECOVERY_BLOB)
    # Sealing the blob again under the same key (new history keys) changes no secret.
    changed = not await account_data.recovery_unchanged(relay.storage, device.account_id,
                                                        lookup, auth_hash)
    if changed and body.reseal:
        raise _stale("recovery key")
    if changed:
        await require_second_factor(relay, request, device.account_id)
    try:
        stored = await store.put_recovery(relay.storage, device.account_id, lookup,
                                          auth_hash, blob, relay.now_ms(),
                                          same_secret=not changed)
    except store.SecretChanged:
        raise _stale("recovery key") from None
    if not stored:
        raise ApiError(409, "lookup_id_taken", "make a new recovery key")
    if changed:
        await notices.notify(relay, device.account_id, notices.RECOVERY_CHANGED,
                             exclude_device=device.device_id, what="recovery_key")


@router.delete("/v1/recovery", status_code=204, summary="Delete the account's recovery blob")
async def delete_recovery(request: Request, relay: RelayDep, device: DeviceDep) -> None:
    await require_second_factor(relay, request, device.account_id)
    await store.delete_recovery(relay.storage, device.account_id)
    await notices.notify(relay, device.account_id, notices.RECOVERY_CHANGED,
                         exclude_device=device.device_id, what="recovery_key_deleted")


@router.post("/v1/recovery/open", summary="The sealed recovery blob, for its release secret",
             response_model_exclude_none=True)
async def open_recovery(body: RecoveryOpenIn, request: Request,
                        relay: RelayDep) -> RecoveryOut:
    account_id, blob = await _open(relay, request, body.lookup_id, body.auth)
    return await _release(relay, request, account_id, blob, "recovery_key")


async def _release(relay: RelayDep, request: Request, account_id: str, blob: bytes,
                   via: str) -> RecoveryOut:
    """The blob for a right secret, once the second factor (if any) is checked too; the
    account's devices are told."""
    await require_second_factor(relay, request, account_id)
    state = await two_factor.get_state(relay.storage, account_id)
    link_code = None
    if state is not None and state.enabled:
        link_code = (await new_link_code(relay, account_id)).link_code
    await notices.notify(relay, account_id, notices.RECOVERY, via=via)
    return RecoveryOut(account_id=account_id, blob=b64(blob), link_code=link_code)


@router.post("/v1/recovery/devices", status_code=201,
             summary="Join the account of a recovery blob as a new device")
async def recovery_device(body: RecoveryDeviceIn, request: Request,
                          relay: RelayDep) -> CredentialsOut:
    account_id, _blob = await _open(relay, request, body.lookup_id, body.auth)
    await require_second_factor(relay, request, account_id)
    return await join_account(relay, account_id, body, via="recovery_key")


# -- recovery by passphrase -------------------------------------------------------------


class PassphraseRecoveryIn(Strict):
    salt: str = Field(max_length=64, description="base64, 16 to 32 bytes")
    params: str = Field(max_length=64, description="the Argon2id parameters, as the client "
                                                   "encodes them")
    verifier: str = Field(max_length=64, description="base64, 32 bytes")
    blob: str = Field(max_length=MAX_RECOVERY_BLOB * 4 // 3 + 4, description="base64")
    reseal: bool = Field(False, description=(
        "only seal the blob again under the secret the relay holds now: 409 "
        "`recovery_changed` when it holds another one or none, never a new secret"))


class PassphraseSaltOut(BaseModel):
    salt: str
    params: str


class PassphraseOpenIn(Strict):
    username: str = Field(min_length=3, max_length=32)
    verifier: str = Field(max_length=64)


class PassphraseDeviceIn(DeviceKeysIn):
    username: str = Field(min_length=3, max_length=32)
    verifier: str = Field(max_length=64)


def _verifier_hash(verifier: str) -> bytes:
    raw = unb64(verifier, "verifier")
    if len(raw) != 32:
        raise bad_request("the verifier is 32 bytes")
    return hashlib.sha256(b"cipherpost recovery verifier\x00" + raw).digest()


async def _open_by_passphrase(relay: RelayDep, request: Request, username: str,
                              verifier: str) -> tuple[str, bytes]:
    verifier_hash = _verifier_hash(verifier)
    return await _released(relay, request, lambda: store.open_passphrase_recovery(
        relay.storage, username, verifier_hash, relay.now_ms()),
        "wrong username or recovery passphrase")


@router.put("/v1/recovery/passphrase", status_code=204,
            summary="Store (replace) the recovery blob sealed under a passphrase")
async def put_passphrase(body: PassphraseRecoveryIn, request: Request, relay: RelayDep,
                         device: DeviceDep) -> None:
    salt = unb64(body.salt, "salt")
    if not 16 <= len(salt) <= 32:
        raise bad_request("the salt is 16 to 32 bytes")
    blob = unb64(body.blob, "blob", max_bytes=MAX_RECOVERY_BLOB)
    verifier_hash = _verifier_hash(body.verifier)
    changed = not await account_data.passphrase_unchanged(
        relay.storage, device.account_id, salt, body.params, verifier_hash)
    if changed and body.reseal:
        raise _stale("recovery passphrase")
    if changed:
        await require_second_factor(relay, request, device.account_id)
    try:
        await store.put_passphrase_recovery(relay.storage, device.account_id, salt,
                                            body.params, verifier_hash, blob,
                                            relay.now_ms(), same_secret=not changed)
    except store.SecretChanged:
        raise _stale("recovery passphrase") from None
    if changed:
        await notices.notify(relay, device.account_id, notices.RECOVERY_CHANGED,
                             exclude_device=device.device_id, what="recovery_passphrase")


@router.delete("/v1/recovery/passphrase", status_code=204,
               summary="Delete the passphrase-sealed recovery blob")
async def delete_passphrase(request: Request, relay: RelayDep, device: DeviceDep) -> None:
    await require_second_factor(relay, request, device.account_id)
    await store.delete_passphrase_recovery(relay.storage, device.account_id)
    await notices.notify(relay, device.account_id, notices.RECOVERY_CHANGED,
                         exclude_device=device.device_id, what="recovery_passphrase_deleted")


@router.get("/v1/recovery/passphrase/{username}",
            summary="The salt and Argon2id parameters to derive the passphrase keys with")
async def passphrase_salt(username: str, request: Request, relay: RelayDep) -> PassphraseSaltOut:
    await relay.limit("recovery", client_ip(request, relay))
    found = await store.passphrase_salt(relay.storage, username)
    if found is None:
        raise ApiError(404, "not_found", "no recovery passphrase for that username")
    return PassphraseSaltOut(salt=b64(found[0]), params=found[1])


@router.post("/v1/recovery/passphrase/open",
             summary="The passphrase-sealed recovery blob, for the passphrase's verifier",
             response_model_exclude_none=True)
async def open_passphrase(body: PassphraseOpenIn, request: Request,
                          relay: RelayDep) -> RecoveryOut:
    account_id, blob = await _open_by_passphrase(relay, request, body.username,
                                                 body.verifier)
    return await _release(relay, request, account_id, blob, "recovery_passphrase")


@router.post("/v1/recovery/passphrase/devices", status_code=201,
             summary="Join the account as a new device with the passphrase's verifier")
async def passphrase_device(body: PassphraseDeviceIn, request: Request,
                            relay: RelayDep) -> CredentialsOut:
    account_id, _blob = await _open_by_passphrase(relay, request, body.username,
                                                  body.verifier)
    await require_second_factor(relay, request, account_id)
    return await join_account(relay, account_id, body, via="recovery_passphrase")
