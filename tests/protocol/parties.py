"""Build protocol parties for unit tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cipherpost.protocol import (
    IdentityKeyPair,
    InMemoryProtocolStore,
    KyberPreKeyRecord,
    PreKeyBundle,
    PreKeyRecord,
    ProtocolAddress,
    SignedPreKeyRecord,
)
from cipherpost.protocol.kem import KYBER1024
from cipherpost.protocol.stores import SessionStore

NOW = 1_790_000_000  # seconds


@dataclass
class Party:
    address: ProtocolAddress
    store: InMemoryProtocolStore
    rng: Callable[[int], bytes]
    _next_id: int = 1

    def bundle(self, *, one_time: bool = True, kem: int = KYBER1024,
               last_resort: bool = False) -> PreKeyBundle:
        base = self._next_id
        self._next_id += 10
        identity = self.store.get_identity_key_pair()
        signed = SignedPreKeyRecord.generate(base, identity, NOW * 1000, self.rng)
        kyber = KyberPreKeyRecord.generate(base + 1, identity, NOW * 1000, self.rng,
                                           key_type=kem, last_resort=last_resort)
        self.store.save_signed_pre_key(signed)
        self.store.save_kyber_pre_key(kyber)
        pre_key = None
        if one_time:
            pre_key = PreKeyRecord.generate(base + 2, self.rng)
            self.store.save_pre_key(pre_key)
        return PreKeyBundle(
            registration_id=self.store.get_local_registration_id(),
            device_id=self.address.device_id,
            identity_key=identity.public,
            signed_pre_key_id=signed.id,
            signed_pre_key=signed.key_pair.public,
            signed_pre_key_signature=signed.signature,
            kyber_pre_key_id=kyber.id,
            kyber_pre_key=kyber.key_pair.public,
            kyber_pre_key_signature=kyber.signature,
            pre_key_id=pre_key.id if pre_key else None,
            pre_key=pre_key.key_pair.public if pre_key else None,
        )


def make_party(name: str, rng: Callable[[int], bytes], registration_id: int = 1,
               sessions: SessionStore | None = None) -> Party:
    store = InMemoryProtocolStore(IdentityKeyPair.generate(rng), registration_id, sessions)
    return Party(ProtocolAddress(name, 1), store, rng)
