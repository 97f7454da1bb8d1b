"""Sealed sender (docs/server.md, "Sealed sender"): the key chain's trust root, sender
certificates, unidentified-access keys, and sends that carry no sender.

A sealed send names only its recipient. It carries no device token (a request with an
``Authorization`` header is refused, so a client cannot leak one by mistake) and is
authorised by the recipient's unidentified-access key (UAK), compared in constant time
with the hash the account registered. Its envelopes are stored with no sender, no client
timestamp and the receive time rounded down to the hour; they are limited per recipient
(requests and bytes) and per client address, since there is no sender to count.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from cipherpost.protocol.keys import PublicKey

from ..codec import b64, unb64
from ..errors import ApiError, unauthorized
from ..key_chain import KeyChain
from ..relay import Relay
from ..sending import deliver, refusal
from ..storage import sealed as sealed_store
from ..storage.models import OutgoingMessage
from .deps import DeviceDep, RelayDep, client_ip
from .provisioning import _address_key
from .schemas import SendOut, Strict

router = APIRouter(tags=["sealed sender"])

#: The envelope type of a sealed message (Signal's UNIDENTIFIED_SENDER).
SEALED_TYPE = 6
#: Stored receive times of sealed envelopes are rounded down to this (ms).
COARSE_MS = 3600 * 1000
#: The header that carries the recipient's UAK (base64 of 16 bytes).
ACCESS_KEY_HEADER = "unidentified-access-key"
ACCESS_KEY_BYTES = 16
#: Compared against when an account has no UAK, so that the work is the same.
_NO_KEY = hashlib.sha256(b"cipherpost: no unidentified-access key").digest()


class TrustRootOut(BaseModel):
    trust_root: str = Field(description="base64 serialized Curve25519 public key (33 "
                                        "bytes) that signs the server certificates")
    server_key_id: int
    revoked_server_key_ids: list[int] = Field(
        description="server key ids whose certificates clients must refuse (leaked keys)")


class SenderCertificateOut(BaseModel):
    certificate: str = Field(description="base64 SenderCertificate (libsignal's encoding)")
    expires: int = Field(description="ms since the epoch; valid up to and including it")


class AccessKeyIn(Strict):
    key: str = Field(max_length=64, description="base64 of the 16-byte unidentified-access "
                                                "key; the relay keeps only its SHA-256")


class AccessKeyStateOut(BaseModel):
    key_sha256: str | None = Field(description="base64 SHA-256 of the account's "
                                               "registered unidentified-access key, or "
                                               "null when it has none")
    device_opens_sealed: bool = Field(description="whether the calling device is marked "
                                                  "as one that opens sealed envelopes")


class SealedOutgoingIn(Strict):
    device_id: int = Field(ge=1, le=127)
    registration_id: int = Field(ge=0, le=16380)
    content: str = Field(description="base64 sealed-sender v1 message")


class SealedSendIn(Strict):
    messages: list[SealedOutgoingIn] = Field(min_length=1, max_length=127)


def _chain(relay: Relay) -> KeyChain:
    if relay.key_chain is None:
        raise ApiError(503, "unavailable", "sealed sender is not set up")
    return relay.key_chain


@router.get("/v1/certificates/trust-root",
            summary="The trust root clients pin to check sender certificates")
async def trust_root(relay: RelayDep) -> TrustRootOut:
    chain = _chain(relay)
    return TrustRootOut(trust_root=b64(chain.trust_root.serialize()),
                        server_key_id=chain.server_certificate.key_id,
                        revoked_server_key_ids=sorted(chain.revoked_key_ids))


@router.get("/v1/certificates/sender",
            summary="A short-lived sender certificate for the calling device")
async def sender_certificate(relay: RelayDep, device: DeviceDep) -> SenderCertificateOut:
    chain = _chain(relay)
    account = await relay.storage.get_account(device.account_id)
    if account is None:
        raise unauthorized()
    expires = relay.now_ms() + relay.settings.sender_certificate_ttl * 1000
    certificate = chain.issue(account.id, device.device_id,
                              PublicKey.deserialize(account.identity_key), expires)
    return SenderCertificateOut(certificate=b64(certificate.serialized), expires=expires)


@router.put("/v1/accounts/me/unidentified-access", status_code=204,
            summary="Register the account's unidentified-access key; the calling device "
                    "opens sealed envelopes")
async def set_access_key(body: AccessKeyIn, relay: RelayDep, device: DeviceDep) -> None:
    key = unb64(body.key, "key")
    if len(key) != ACCESS_KEY_BYTES:
        raise ApiError(400, "invalid_request", f"the key must be {ACCESS_KEY_BYTES} bytes")
    await sealed_store.set_access_key(relay.storage, device.account_id, device.device_id,
                                      hashlib.sha256(key).digest(), relay.now_ms())


@router.get("/v1/accounts/me/unidentified-access",
            summary="What the relay holds of the account's unidentified-access key (its "
                    "SHA-256), so a device can tell that the relay lost it and register "
                    "it again")
async def access_key_state(relay: RelayDep, device: DeviceDep) -> AccessKeyStateOut:
    key_hash, opens = await sealed_store.registration(relay.storage, device.account_id,
                                                      device.device_id)
    return AccessKeyStateOut(key_sha256=None if key_hash is None else b64(key_hash),
                             device_opens_sealed=opens)


@router.delete("/v1/accounts/me/unidentified-access", status_code=204,
               summary="Refuse sealed sends to this account from now on")
async def remove_access_key(relay: RelayDep, device: DeviceDep) -> None:
    await sealed_store.set_access_key(relay.storage, device.account_id, device.device_id,
                                      None, relay.now_ms())


@router.put("/v1/sealed/{account_id}",
            summary="Send one sealed ciphertext to each device of an account, without "
                    "sender credentials",
            responses={401: {"description": "no or wrong unidentified-access key (also "
                                             "for an unknown account)"},
                       403: {"description": "sealed_sender_unsupported: a device cannot "
                                            "open sealed envelopes (send identified)"},
                       409: {"description": "missing_devices / extra_devices"},
                       410: {"description": "stale_devices (re-installed)"},
                       507: {"description": "a destination queue is full"}})
async def send_sealed(account_id: str, body: SealedSendIn, request: Request,
                      relay: RelayDep) -> SendOut:
    if "authorization" in request.headers:
        raise ApiError(400, "invalid_request", "a sealed send carries no credentials: "
                                               "leave out the Authorization header")
    # The address limit comes first: it bounds guessing at keys. The recipient's comes
    # after the key check, so that only holders of the key (contacts) can spend it:
    # anyone else could otherwise stop sealed delivery to an account by naming it.
    await relay.limit("sealed_ip", _address_key(client_ip(request, relay)))
    presented = _access_key(request.headers.get(ACCESS_KEY_HEADER))
    recipient = await sealed_store.recipient(relay.storage, account_id)
    stored = recipient.key_hash or _NO_KEY
    if not hmac.compare_digest(hashlib.sha256(presented).digest(), stored) \
            or recipient.key_hash is None:
        raise unauthorized()
    await relay.limit("sealed_recipient", account_id)
    unsupported = sorted(m.device_id for m in body.messages
                         if m.device_id in recipient.devices
                         and m.device_id not in recipient.capable_devices)
    if unsupported:
        raise ApiError(403, "sealed_sender_unsupported",
                       "a device of the recipient cannot open sealed envelopes",
                       unsupported_devices=unsupported)
    limit = relay.settings.max_message_bytes
    outgoing = [OutgoingMessage(m.device_id, m.registration_id, SEALED_TYPE,
                                unb64(m.content, "content", max_bytes=limit))
                for m in body.messages]
    if len({m.device_id for m in outgoing}) != len(outgoing):
        raise ApiError(400, "invalid_request", "one message per destination device")
    # Bytes too (R6 of review 2026-11-29-sealed-ops): an unnamed key holder must not fill
    # the recipient's queues at the request rate. Each device's queue gets one of the
    # ciphertexts, so the largest bounds what any queue gains.
    await relay.limit("sealed_recipient_bytes", account_id,
                      max(len(m.content) for m in outgoing))
    now = relay.now_ms()
    future = relay.storage.enqueue(
        account_id, outgoing, sender=None, exclude_device=None, client_timestamp=0,
        now=now - now % COARSE_MS, ttl=relay.settings.message_ttl,
        byte_budget=relay.settings.queue_byte_budget,
        on_commit=functools.partial(deliver, relay, account_id))
    try:
        return SendOut(queued=len(await future))
    except Exception as exc:
        error = refusal(exc)
        if error is None:
            raise
        raise error from None


def _access_key(header: str | None) -> bytes:
    """The UAK of the header.

    Raises:
        ApiError: 401 when it is absent or malformed.
    """
    if header is None or len(header) > 64:
        raise unauthorized()
    try:
        key = base64.b64decode(header, validate=True)
    except (binascii.Error, ValueError):
        raise unauthorized() from None
    if len(key) != ACCESS_KEY_BYTES:
        raise unauthorized()
    return key
