"""Post-quantum KEM keys and backends (digest §1.2).

Two key types travel on the wire, each prefixed by its type byte:

* ``0x08`` Kyber1024, round 3 — the default everywhere, the only one libsignal accepts;
* ``0x0A`` ML-KEM-1024 (FIPS 203) — optional.

Both run on ``cryptography``'s ML-KEM-1024. Round-3 Kyber differs from ML-KEM only in how
the shared secret is finalised, which the bridge below reproduces exactly:
``K = SHAKE256(K_mlkem || SHA3-256(c), 32)`` on both sides (encapsulating a uniform
``m`` equals encapsulating ``H(m0)``, and any ML-KEM key pair is a valid Kyber pair).

Backends are injected: a :class:`KemBackend` per type byte. The library draws its own
encapsulation randomness; key generation takes ``rng`` so that seeds are explicit.
Private keys are kept as the 64-byte ML-KEM seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.mlkem import (
    MLKEM1024PrivateKey,
    MLKEM1024PublicKey,
)

from .errors import InvalidKey
from .keys import Random

KYBER1024 = 0x08
MLKEM1024 = 0x0A

PUBLIC_KEY_LENGTH = 1568
CIPHERTEXT_LENGTH = 1568
SHARED_SECRET_LENGTH = 32


class KemBackend(Protocol):
    """One KEM algorithm. Raw keys and ciphertexts, without type bytes."""

    key_type: int

    def generate(self, rng: Random) -> tuple[bytes, bytes, Any]:
        """Return ``(public, secret, loaded secret)`` from fresh randomness."""
        ...

    def load(self, secret: bytes) -> Any:
        """The backend's ready-to-use form of ``secret`` (key expansion done once)."""
        ...

    def public_from_secret(self, secret: bytes) -> bytes:
        """Recompute the public key of ``secret``."""
        ...

    def encapsulate(self, public: bytes) -> tuple[bytes, bytes]:
        """Return ``(shared_secret, ciphertext)`` for ``public``."""
        ...

    def decapsulate(self, loaded: Any, ciphertext: bytes) -> bytes:
        """Return the shared secret of ``ciphertext`` for a key from :meth:`load`."""
        ...


class MLKem1024Backend:
    """FIPS 203 ML-KEM-1024 from ``cryptography``; secrets are 64-byte seeds."""

    key_type = MLKEM1024

    def generate(self, rng: Random) -> tuple[bytes, bytes, MLKEM1024PrivateKey]:
        seed = rng(64)
        key = self.load(seed)
        return key.public_key().public_bytes_raw(), seed, key

    def load(self, secret: bytes) -> MLKEM1024PrivateKey:
        try:
            return MLKEM1024PrivateKey.from_seed_bytes(secret)
        except ValueError as exc:
            raise InvalidKey("invalid ML-KEM-1024 seed") from exc

    def public_from_secret(self, secret: bytes) -> bytes:
        return self.load(secret).public_key().public_bytes_raw()

    def encapsulate(self, public: bytes) -> tuple[bytes, bytes]:
        try:
            key = MLKEM1024PublicKey.from_public_bytes(public)
        except ValueError as exc:
            raise InvalidKey("invalid ML-KEM-1024 public key") from exc
        shared, ciphertext = key.encapsulate()
        return shared, ciphertext

    def decapsulate(self, loaded: MLKEM1024PrivateKey, ciphertext: bytes) -> bytes:
        try:
            return loaded.decapsulate(ciphertext)
        except ValueError as exc:
            raise InvalidKey("invalid ML-KEM-1024 ciphertext") from exc


def _round3_finish(shared: bytes, ciphertext: bytes) -> bytes:
    return hashlib.shake_256(shared + hashlib.sha3_256(ciphertext).digest()).digest(32)


class Kyber1024Backend(MLKem1024Backend):
    """Round-3 Kyber1024 bridged onto ML-KEM-1024 (digest §1.2)."""

    key_type = KYBER1024

    def encapsulate(self, public: bytes) -> tuple[bytes, bytes]:
        shared, ciphertext = super().encapsulate(public)
        return _round3_finish(shared, ciphertext), ciphertext

    def decapsulate(self, loaded: MLKEM1024PrivateKey, ciphertext: bytes) -> bytes:
        return _round3_finish(super().decapsulate(loaded, ciphertext), ciphertext)


KemRegistry = Mapping[int, KemBackend]

DEFAULT_KEMS: KemRegistry = {KYBER1024: Kyber1024Backend(), MLKEM1024: MLKem1024Backend()}


@dataclass(frozen=True, slots=True)
class KemPublicKey:
    """A KEM public key with its type byte."""

    key_type: int
    raw: bytes

    @classmethod
    def deserialize(cls, data: bytes, kems: KemRegistry = DEFAULT_KEMS) -> KemPublicKey:
        """Parse ``type || key``; the length is checked exactly.

        Raises:
            InvalidKey: unknown or unsupported type byte, or wrong length.
        """
        if not data:
            raise InvalidKey("empty KEM key")
        key_type = data[0]
        if key_type not in kems:
            raise InvalidKey(f"bad KEM key type {key_type:#04x}")
        if len(data) != 1 + PUBLIC_KEY_LENGTH:
            raise InvalidKey("bad KEM public key length")
        return cls(key_type, bytes(data[1:]))

    def serialize(self) -> bytes:
        """``type || key`` (1569 bytes)."""
        return bytes((self.key_type,)) + self.raw

    def encapsulate(self, kems: KemRegistry = DEFAULT_KEMS) -> tuple[bytes, bytes]:
        """Return ``(shared_secret, serialized ciphertext with type byte)``."""
        shared, ciphertext = kems[self.key_type].encapsulate(self.raw)
        return shared, bytes((self.key_type,)) + ciphertext

    def __repr__(self) -> str:
        return f"KemPublicKey(type={self.key_type:#04x}, {self.raw[:8].hex()}...)"


class KemKeyPair:
    """A KEM key pair; ``secret`` is the backend's private form (an ML-KEM seed).

    The expanded private key is made once, on first use, and kept with the pair.
    """

    __slots__ = ("_loaded", "public", "secret")

    def __init__(self, public: KemPublicKey, secret: bytes, loaded: Any = None) -> None:
        self.public = public
        self.secret = secret
        self._loaded = loaded

    @classmethod
    def generate(cls, rng: Random, key_type: int = KYBER1024,
                 kems: KemRegistry = DEFAULT_KEMS) -> KemKeyPair:
        """A fresh key pair of ``key_type``."""
        backend = kems.get(key_type)
        if backend is None:
            raise ValueError(f"unsupported KEM type {key_type:#04x}")
        public, secret, loaded = backend.generate(rng)
        return cls(KemPublicKey(key_type, public), secret, loaded)

    def decapsulate(self, ciphertext: bytes, kems: KemRegistry = DEFAULT_KEMS) -> bytes:
        """Decapsulate a serialized (type-prefixed) ciphertext.

        Raises:
            InvalidKey: the type byte differs from this key's, or the length is wrong.
        """
        if not ciphertext or ciphertext[0] != self.public.key_type:
            raise InvalidKey("KEM ciphertext type does not match the key")
        if len(ciphertext) != 1 + CIPHERTEXT_LENGTH:
            raise InvalidKey("bad KEM ciphertext length")
        backend = kems[self.public.key_type]
        if self._loaded is None:
            self._loaded = backend.load(self.secret)
        return backend.decapsulate(self._loaded, ciphertext[1:])

    def __repr__(self) -> str:
        return f"KemKeyPair(public={self.public!r}, secret=<redacted>)"
