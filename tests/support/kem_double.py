"""A deterministic KEM backend for known-answer tests.

Real backends draw encapsulation randomness inside the ML-KEM library, so a session
transcript can never repeat. This double runs round-3 Kyber1024 in pure Python
(kyber-py) with every random byte taken from the ``rng`` it is given, so a seeded run
reproduces a whole PQXDH session byte for byte. Test use only: it is slow and makes no
constant-time claims.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from kyber_py.kyber import Kyber1024

from cipherpost.protocol.kem import KYBER1024, KemRegistry


class DeterministicKyber1024:
    """Kyber1024 (0x08) whose randomness comes from ``rng``; secrets are kyber-py keys."""

    key_type = KYBER1024

    def __init__(self, rng: Callable[[int], bytes]) -> None:
        self._kyber = copy.copy(Kyber1024)
        self._kyber.random_bytes = rng  # type: ignore[method-assign]

    def generate(self, rng: Callable[[int], bytes]) -> tuple[bytes, bytes, bytes]:
        public, secret = self._kyber.keygen()
        return public, secret, secret

    def load(self, secret: bytes) -> bytes:
        return secret

    def public_from_secret(self, secret: bytes) -> bytes:
        return secret[1536:1536 + 1568]

    def encapsulate(self, public: bytes) -> tuple[bytes, bytes]:
        shared, ciphertext = self._kyber.encaps(public)
        return shared, ciphertext

    def decapsulate(self, loaded: bytes, ciphertext: bytes) -> bytes:
        return bytes(self._kyber.decaps(loaded, ciphertext))


def deterministic_kems(rng: Callable[[int], bytes]) -> KemRegistry:
    return {KYBER1024: DeterministicKyber1024(rng)}
