"""Build protocol parties for unit tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cipherpost.protocol import (
    IdentityKeyPair,
    InMemoryProtocolStore,
    PreKeyBundle,
    ProtocolAddress,
)
from cipherpost.protocol.bundles import generate_prekey_bundle
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
        return generate_prekey_bundle(self.store, device_id=self.address.device_id,
                                      signed_pre_key_id=base, kyber_pre_key_id=base + 1,
                                      pre_key_id=base + 2 if one_time else None,
                                      rng=self.rng, now_ms=NOW * 1000, kem_type=kem,
                                      kyber_last_resort=last_resort)


def make_party(name: str, rng: Callable[[int], bytes], registration_id: int = 1,
               sessions: SessionStore | None = None) -> Party:
    store = InMemoryProtocolStore(IdentityKeyPair.generate(rng), registration_id, sessions)
    return Party(ProtocolAddress(name, 1), store, rng)
