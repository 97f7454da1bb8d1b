"""The prekey directory: upload, count, fetch bundles."""

from __future__ import annotations

from fastapi import APIRouter

from cipherpost.protocol import xeddsa
from cipherpost.protocol.errors import ProtocolError
from cipherpost.protocol.kem import KYBER1024, KemPublicKey
from cipherpost.protocol.keys import PublicKey

from ..codec import b64, unb64
from ..errors import ApiError, bad_request, not_found
from ..storage.models import KeyUpload, OneTimeKey, SignedKey
from .deps import DeviceDep, RelayDep
from .schemas import (
    BundleOut,
    BundlesOut,
    KeyCountsOut,
    KeysIn,
    OneTimeKeyOut,
    SignedKeyOut,
)

router = APIRouter(prefix="/v1/keys", tags=["keys"])

#: The server accepts only the KEM libsignal accepts, so every client can use every bundle.
_KEMS = {KYBER1024: None}


def parse_identity(value: str) -> PublicKey:
    """A base64 33-byte Curve25519 identity key (400 otherwise)."""
    data = unb64(value, "identity_key", max_bytes=33)
    try:
        if len(data) != 33:
            raise ProtocolError()
        return PublicKey.deserialize(data)
    except ProtocolError:
        raise bad_request("identity_key is not a Curve25519 public key",
                          code="invalid_key") from None


def _signed(identity: PublicKey, key: SignedKey, what: str) -> SignedKey:
    if not xeddsa.verify(identity, key.public_key, key.signature):
        raise bad_request(f"{what} signature does not verify", code="invalid_signature")
    return key


def parse_keys(identity: PublicKey, body: KeysIn) -> KeyUpload:
    """Check every key's encoding and signature (400 with a stable code otherwise)."""

    def ec(value: str, what: str) -> bytes:
        data = unb64(value, what, max_bytes=33)
        if len(data) != 33 or data[0] != 0x05:
            raise bad_request(f"{what} is not a Curve25519 public key", code="invalid_key")
        return data

    def kem(value: str, what: str) -> bytes:
        data = unb64(value, what, max_bytes=1569)
        try:
            KemPublicKey.deserialize(data, _KEMS)  # type: ignore[arg-type]
        except ProtocolError:
            raise bad_request(f"{what} is not a Kyber1024 public key",
                              code="invalid_key") from None
        return data

    def sig(value: str, what: str) -> bytes:
        data = unb64(value, what, max_bytes=64)
        if len(data) != 64:
            raise bad_request(f"{what} signature must be 64 bytes", code="invalid_signature")
        return data

    signed = None
    if body.signed_prekey is not None:
        k = body.signed_prekey
        signed = _signed(identity, SignedKey(k.key_id, ec(k.public_key, "signed_prekey"),
                                             sig(k.signature, "signed_prekey")), "signed_prekey")
    last_resort = None
    if body.last_resort_kyber_prekey is not None:
        k = body.last_resort_kyber_prekey
        last_resort = _signed(identity, SignedKey(
            k.key_id, kem(k.public_key, "last_resort_kyber_prekey"),
            sig(k.signature, "last_resort_kyber_prekey")), "last_resort_kyber_prekey")
    one_time = tuple(OneTimeKey(k.key_id, ec(k.public_key, "one_time_prekey"))
                     for k in body.one_time_prekeys)
    kyber = tuple(_signed(identity, SignedKey(k.key_id, kem(k.public_key, "kyber_prekey"),
                                              sig(k.signature, "kyber_prekey")), "kyber_prekey")
                  for k in body.kyber_prekeys)
    if len({k.key_id for k in one_time}) != len(one_time) or \
            len({k.key_id for k in kyber}) != len(kyber):
        raise bad_request("duplicate key ids in one upload")
    return KeyUpload(signed, last_resort, one_time, kyber,
                     replace_one_time=body.replace_one_time)


@router.put("", status_code=204, summary="Upload prekeys of the calling device")
async def upload_keys(body: KeysIn, relay: RelayDep, device: DeviceDep) -> None:
    account = await relay.storage.get_account(device.account_id)
    if account is None:
        raise not_found("account")
    keys = parse_keys(PublicKey.deserialize(account.identity_key), body)
    await relay.storage.store_keys(device.account_id, device.device_id, keys)


@router.get("/count", summary="One-time prekeys left for the calling device")
async def key_counts(relay: RelayDep, device: DeviceDep) -> KeyCountsOut:
    ec, kyber = await relay.storage.key_counts(device.account_id, device.device_id)
    return KeyCountsOut(one_time_prekeys=ec, kyber_prekeys=kyber)


@router.get("/{account_id}/{device}", summary="Fetch bundles: one device, or `*` for all")
async def fetch_bundles(account_id: str, device: str, relay: RelayDep,
                        caller: DeviceDep) -> BundlesOut:
    await relay.limit("prekeys", caller.account_id)
    if device == "*":
        device_ids = None
    elif device.isascii() and device.isdigit() and 1 <= int(device) <= 127:
        device_ids = [int(device)]
    else:
        raise bad_request("device must be 1..127 or *")
    account = await relay.storage.get_account(account_id) if len(account_id) <= 36 else None
    if account is None:
        raise not_found("account")
    bundles = await relay.storage.take_bundles(account_id, device_ids)
    if not bundles:
        raise not_found("device")
    return BundlesOut(
        account_id=account_id,
        identity_key=b64(account.identity_key),
        devices=[BundleOut(
            device_id=b.device_id,
            registration_id=b.registration_id,
            signed_prekey=SignedKeyOut(key_id=b.signed_prekey.key_id,
                                       public_key=b64(b.signed_prekey.public_key),
                                       signature=b64(b.signed_prekey.signature)),
            kyber_prekey=SignedKeyOut(key_id=b.kyber_prekey.key_id,
                                      public_key=b64(b.kyber_prekey.public_key),
                                      signature=b64(b.kyber_prekey.signature)),
            one_time_prekey=OneTimeKeyOut(key_id=b.one_time_prekey.key_id,
                                          public_key=b64(b.one_time_prekey.public_key))
            if b.one_time_prekey else None,
        ) for b in bundles],
    )


__all__ = ["ApiError", "parse_identity", "parse_keys", "router"]
