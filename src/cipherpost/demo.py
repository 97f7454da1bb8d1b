"""A short, readable demo of the protocol core (``make run`` until the relay exists).

Two local parties, Alice and Bob, publish prekey bundles; Alice starts a PQXDH session
from Bob's bundle; they exchange messages (one out of order), and both print the same
60-digit safety number. Everything stays in memory.
"""

from __future__ import annotations

import os
import time

from cipherpost.protocol import (
    Fingerprint,
    IdentityKeyPair,
    InMemoryProtocolStore,
    PreKeyBundle,
    ProtocolAddress,
    decrypt,
    encrypt,
    process_prekey_bundle,
)
from cipherpost.protocol.bundles import generate_prekey_bundle


def _party(registration_id: int, device_id: int) -> tuple[InMemoryProtocolStore, PreKeyBundle]:
    store = InMemoryProtocolStore(IdentityKeyPair.generate(os.urandom), registration_id)
    bundle = generate_prekey_bundle(store, device_id=device_id, signed_pre_key_id=1,
                                    kyber_pre_key_id=1, pre_key_id=100, rng=os.urandom,
                                    now_ms=int(time.time() * 1000))
    return store, bundle


def main() -> None:
    """Run the demo and print what happens."""
    alice_addr = ProtocolAddress("alice", 1)
    bob_addr = ProtocolAddress("bob", 1)
    alice, _ = _party(1111, 1)
    bob, bob_bundle = _party(2222, 1)
    now = int(time.time())
    print("Bob publishes a prekey bundle (signed prekey, Kyber1024 prekey, one-time prekey).")

    process_prekey_bundle(alice, bob_addr, bob_bundle, rng=os.urandom, now=now)
    print("Alice checked both signatures and ran PQXDH against it; the session runs SPQR.")

    first = encrypt(alice, bob_addr, b"Hi Bob, this is Alice.", now=now, rng=os.urandom)
    second = encrypt(alice, bob_addr, b"(sent second, arrives first)", now=now, rng=os.urandom)
    print(f"Alice -> Bob: PreKey messages of {len(first.serialized)} and "
          f"{len(second.serialized)} bytes")
    for message in (second, first):
        text = decrypt(bob, alice_addr, message.message_type, message.serialized, rng=os.urandom)
        print(f"  Bob reads:   {text.decode()}")

    reply = encrypt(bob, alice_addr, b"Hello Alice! Got both.", now=now, rng=os.urandom)
    text = decrypt(alice, bob_addr, reply.message_type, reply.serialized, rng=os.urandom)
    print(f"Bob -> Alice: a {len(reply.serialized)}-byte ratchet message")
    print(f"  Alice reads: {text.decode()}")

    alice_key = alice.get_identity_key_pair().public
    bob_key = bob.get_identity_key_pair().public
    seen_by_alice = Fingerprint.create(b"alice", alice_key, b"bob", bob_key)
    seen_by_bob = Fingerprint.create(b"bob", bob_key, b"alice", alice_key)
    digits = seen_by_alice.displayable
    print("Safety number (Alice's view):", " ".join(digits[i:i + 5] for i in range(0, 60, 5)))
    print("Safety number (Bob's view):  ",
          " ".join(seen_by_bob.displayable[i:i + 5] for i in range(0, 60, 5)))
    print("They match." if digits == seen_by_bob.displayable else "MISMATCH!")
    print("Bob scans Alice's QR code:", "verified" if seen_by_bob.compare(
        seen_by_alice.scannable) else "does not match")


if __name__ == "__main__":
    main()
