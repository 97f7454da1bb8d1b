"""The TOTP second factor: enrolment, recovery codes, and the check that sensitive
account actions make (docs/server.md, "Account security").

A protected request carries the code in the ``X-Second-Factor`` header: six digits from
the authenticator, or one of the recovery codes. Without it an account that has a second
factor gets **403 `second_factor_required`**; a wrong, replayed or used-up code gets
**403 `second_factor_invalid`**, and too many of those **429** with Retry-After.
"""

from __future__ import annotations

import base64

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from .. import notices, totp
from ..errors import ApiError, not_found, rate_limited
from ..relay import Relay
from ..storage import two_factor as store
from .deps import DeviceDep, RelayDep
from .schemas import Strict

router = APIRouter(prefix="/v1/accounts/me/2fa", tags=["account security"])

HEADER = "x-second-factor"
ISSUER = "Cipherpost"


def required() -> ApiError:
    return ApiError(403, "second_factor_required", "this action needs a code from your "
                    f"authenticator (or a recovery code) in the {HEADER} header")


async def require_second_factor(relay: Relay, request: Request, account_id: str) -> None:
    """Let the request through when the account has no second factor, or when its
    ``X-Second-Factor`` header holds a valid code (used up by this call).

    Raises:
        ApiError: 403 ``second_factor_required`` / ``second_factor_invalid``, 429 while
        wrong codes make the account wait.
    """
    code = request.headers.get(HEADER)
    if code is None:
        state = await store.get_state(relay.storage, account_id)
        if state is not None and state.enabled:
            raise required()
        return
    await _check(relay, account_id, code.strip()[:64])


async def _check(relay: Relay, account_id: str, code: str) -> None:
    try:
        outcome = await store.check(relay.storage, account_id, code, relay.now_ms())
    except store.SecondFactorWait as wait:
        raise rate_limited(wait.retry_after_ms / 1000) from None
    if outcome is store.Check.WRONG:
        raise ApiError(403, "second_factor_invalid", "wrong, reused or expired code")


class TwoFactorOut(BaseModel):
    enabled: bool
    pending: bool = Field(description="enrolment started, not confirmed yet")
    recovery_codes_left: int


class EnrolmentOut(BaseModel):
    secret: str = Field(description="base32, for authenticators that take it typed")
    uri: str = Field(description="otpauth://totp/... (show it as a QR code)")


class ConfirmIn(Strict):
    code: str = Field(min_length=6, max_length=6)


class RecoveryCodesOut(BaseModel):
    recovery_codes: list[str] = Field(description="shown once; each works once")


def _new_codes(account_id: str) -> tuple[list[str], list[bytes]]:
    codes = totp.new_recovery_codes()
    hashes = [totp.hash_recovery_code(account_id, c)
              for c in (totp.normalize_recovery_code(code) for code in codes) if c]
    return codes, hashes


@router.get("", summary="Whether the account has a second factor")
async def status(relay: RelayDep, device: DeviceDep) -> TwoFactorOut:
    state = await store.get_state(relay.storage, device.account_id)
    if state is None:
        return TwoFactorOut(enabled=False, pending=False, recovery_codes_left=0)
    return TwoFactorOut(enabled=state.enabled, pending=not state.enabled,
                        recovery_codes_left=state.recovery_codes_left)


@router.post("", status_code=201, summary="Start enrolling an authenticator (TOTP)")
async def begin(relay: RelayDep, device: DeviceDep) -> EnrolmentOut:
    secret = totp.new_secret()
    if not await store.begin(relay.storage, device.account_id, secret, relay.now_ms()):
        raise ApiError(409, "second_factor_enabled", "a second factor is on already; "
                       "turn it off first")
    account = await relay.storage.get_account(device.account_id)
    if account is None:
        raise not_found("account")
    name = account.username or account.id
    return EnrolmentOut(secret=base64.b32encode(secret).decode().rstrip("="),
                        uri=totp.provisioning_uri(secret, name, ISSUER))


@router.post("/confirm", summary="Confirm enrolment with a first code; get recovery codes")
async def confirm(body: ConfirmIn, relay: RelayDep, device: DeviceDep) -> RecoveryCodesOut:
    codes, hashes = _new_codes(device.account_id)
    try:
        outcome = await store.confirm(relay.storage, device.account_id, body.code, hashes,
                                      relay.now_ms())
    except store.SecondFactorWait as wait:
        raise rate_limited(wait.retry_after_ms / 1000) from None
    if outcome is store.Check.NOT_ENABLED:
        raise ApiError(409, "no_enrolment", "no enrolment to confirm; start one first")
    if outcome is store.Check.WRONG:
        raise ApiError(403, "second_factor_invalid", "wrong or expired code")
    await notices.notify(relay, device.account_id, notices.TWO_FACTOR_ENABLED,
                         exclude_device=device.device_id, device_id=device.device_id)
    return RecoveryCodesOut(recovery_codes=codes)


@router.post("/recovery-codes", summary="New recovery codes (the old ones stop working)")
async def replace_codes(request: Request, relay: RelayDep,
                        device: DeviceDep) -> RecoveryCodesOut:
    await _require_enabled(relay, request, device.account_id)
    codes, hashes = _new_codes(device.account_id)
    if not await store.new_recovery_codes(relay.storage, device.account_id, hashes,
                                          relay.now_ms()):
        raise ApiError(409, "second_factor_disabled", "the account has no second factor")
    return RecoveryCodesOut(recovery_codes=codes)


@router.delete("", status_code=204, summary="Turn the second factor off (needs a code)")
async def disable(request: Request, relay: RelayDep, device: DeviceDep) -> None:
    state = await store.get_state(relay.storage, device.account_id)
    if state is not None and state.enabled:
        await _require_enabled(relay, request, device.account_id)
    await store.disable(relay.storage, device.account_id, relay.now_ms())
    if state is not None and state.enabled:
        await notices.notify(relay, device.account_id, notices.TWO_FACTOR_DISABLED,
                             exclude_device=device.device_id, device_id=device.device_id)


async def _require_enabled(relay: Relay, request: Request, account_id: str) -> None:
    code = request.headers.get(HEADER)
    if code is None:
        raise required()
    await _check(relay, account_id, code.strip()[:64])
