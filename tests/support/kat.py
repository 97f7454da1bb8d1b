"""A fully seeded PQXDH session: the same seed gives the same bytes, every time."""

from __future__ import annotations

import random

from cipherpost.protocol import (
    IdentityKeyPair,
    InMemoryProtocolStore,
    ProtocolAddress,
    SpqrSettings,
    decrypt,
    encrypt,
    process_prekey_bundle,
)
from cipherpost.protocol.bundles import generate_prekey_bundle

from .kem_double import deterministic_kems

NOW = 1_790_000_000
#: The recorded transcripts are of classical sessions (no SPQR field 5).
CLASSIC = SpqrSettings.OFF


def transcript(seed: int) -> dict[str, str]:
    """Run Alice -> Bob -> Alice with all randomness from ``seed``; return the wire bytes."""
    rng = random.Random(seed).randbytes
    kems = deterministic_kems(rng)
    alice_addr, bob_addr = ProtocolAddress("alice", 1), ProtocolAddress("bob", 1)
    alice = InMemoryProtocolStore(IdentityKeyPair.generate(rng), 1111)
    bob = InMemoryProtocolStore(IdentityKeyPair.generate(rng), 2222)
    bundle = generate_prekey_bundle(bob, device_id=1, signed_pre_key_id=1, kyber_pre_key_id=2,
                                    pre_key_id=3, rng=rng, now_ms=NOW * 1000, kems=kems)
    process_prekey_bundle(alice, bob_addr, bundle, rng=rng, now=NOW, kems=kems, spqr=CLASSIC)
    first = encrypt(alice, bob_addr, b"known answer", now=NOW)
    assert decrypt(bob, alice_addr, 3, first.serialized, rng=rng, kems=kems,
                   spqr=CLASSIC) == b"known answer"
    reply = encrypt(bob, alice_addr, b"reply", now=NOW)
    assert decrypt(alice, bob_addr, 2, reply.serialized, rng=rng, kems=kems,
                   spqr=CLASSIC) == b"reply"
    second = encrypt(alice, bob_addr, b"after the ratchet step", now=NOW)
    assert decrypt(bob, alice_addr, 2, second.serialized, rng=rng,
                   spqr=CLASSIC) == b"after the ratchet step"
    return {
        "bundle_signed_prekey_signature": bundle.signed_pre_key_signature.hex(),
        "bundle_kyber_prekey": bundle.kyber_pre_key.serialize().hex(),
        "prekey_message": first.serialized.hex(),
        "reply": reply.serialized.hex(),
        "second": second.serialized.hex(),
    }
