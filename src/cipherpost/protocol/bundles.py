"""Make a device's prekeys, keep their private halves in its stores, publish the bundle."""

from __future__ import annotations

from typing import Protocol

from .kem import DEFAULT_KEMS, KYBER1024, KemRegistry
from .keys import Random
from .prekeys import KyberPreKeyRecord, PreKeyBundle, PreKeyRecord, SignedPreKeyRecord
from .stores import IdentityKeyStore, KyberPreKeyStore, PreKeyStore, SignedPreKeyStore


class PreKeyStores(IdentityKeyStore, PreKeyStore, SignedPreKeyStore, KyberPreKeyStore,
                   Protocol):
    """The stores a device's prekeys live in."""


def generate_prekey_bundle(store: PreKeyStores, *, device_id: int, signed_pre_key_id: int,
                           kyber_pre_key_id: int, pre_key_id: int | None, rng: Random,
                           now_ms: int, kem_type: int = KYBER1024,
                           kyber_last_resort: bool = True,
                           kems: KemRegistry = DEFAULT_KEMS) -> PreKeyBundle:
    """Generate a signed prekey, a Kyber prekey and (if ``pre_key_id`` is given) a one-time
    prekey; save them in ``store``; return the bundle that advertises them.

    The Kyber prekey is last-resort by default (kept after use, reuse of a base key
    refused); pass ``kyber_last_resort=False`` for a one-time Kyber prekey.
    """
    identity = store.get_identity_key_pair()
    signed = SignedPreKeyRecord.generate(signed_pre_key_id, identity, now_ms, rng)
    kyber = KyberPreKeyRecord.generate(kyber_pre_key_id, identity, now_ms, rng,
                                       key_type=kem_type, last_resort=kyber_last_resort,
                                       kems=kems)
    one_time = PreKeyRecord.generate(pre_key_id, rng) if pre_key_id is not None else None
    store.save_signed_pre_key(signed)
    store.save_kyber_pre_key(kyber)
    if one_time is not None:
        store.save_pre_key(one_time)
    return PreKeyBundle(
        registration_id=store.get_local_registration_id(),
        device_id=device_id,
        identity_key=identity.public,
        signed_pre_key_id=signed.id,
        signed_pre_key=signed.key_pair.public,
        signed_pre_key_signature=signed.signature,
        kyber_pre_key_id=kyber.id,
        kyber_pre_key=kyber.key_pair.public,
        kyber_pre_key_signature=kyber.signature,
        pre_key_id=one_time.id if one_time else None,
        pre_key=one_time.key_pair.public if one_time else None,
    )
