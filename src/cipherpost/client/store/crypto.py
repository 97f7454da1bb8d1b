"""Encryption at rest for the local store.

Every secret value (keys, session records, message bodies) is sealed with AES-256-GCM
under the store's local key, with the table and row key as associated data so that a
value cannot be moved to another row. The local key comes from the OS keyring where one
exists, or from a passphrase through Argon2id; the parameters and a check value live in
the store's ``meta`` table, never the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
_CHECK_AAD = b"cipherpost local key check"


class WrongKey(Exception):
    """The passphrase or keyring key does not open this store."""


class CorruptValue(Exception):
    """A sealed value failed authentication: the store was tampered with or damaged."""


@dataclass(frozen=True)
class Argon2Params:
    """Argon2id cost; stored with the salt so a store always reopens with its own."""

    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 2

    def encode(self) -> str:
        return f"{self.time_cost},{self.memory_kib},{self.parallelism}"

    @classmethod
    def decode(cls, text: str) -> Argon2Params:
        t, m, p = (int(x) for x in text.split(","))
        return cls(t, m, p)


#: Cheap parameters for tests only (a store made with them is easy to brute-force).
TEST_PARAMS = Argon2Params(time_cost=1, memory_kib=8, parallelism=1)

#: The costliest Argon2id this client derives a key with: four times each default
#: (12 passes, 256 MiB, 8 lanes). Parameters are read from outside (an export file's
#: header, a relay's answer for a recovery passphrase, a store's meta table); past this
#: cap a hostile one would make the reader spend gigabytes and minutes before the
#: passphrase is even tried. Nothing is written above it either, so all we write reads back.
MAX_PARAMS = Argon2Params(time_cost=12, memory_kib=256 * 1024, parallelism=8)


class UnusableParams(ValueError):
    """Argon2id parameters past :data:`MAX_PARAMS`, or ones Argon2 itself refuses."""


def check_params(params: Argon2Params) -> Argon2Params:
    """``params`` when Argon2 takes them (a pass, a lane, 8 KiB per lane) and they cost
    no more than :data:`MAX_PARAMS`; checked before any key derivation.

    Raises:
        UnusableParams: naming which bound was crossed.
    """
    t, m, p = params.time_cost, params.memory_kib, params.parallelism
    if t < 1 or p < 1 or m < 8 * p:
        raise UnusableParams(f"Argon2id parameters {t} passes, {m} KiB, {p} lanes are "
                             "invalid (at least 1 pass, 1 lane and 8 KiB per lane)")
    if t > MAX_PARAMS.time_cost or m > MAX_PARAMS.memory_kib or p > MAX_PARAMS.parallelism:
        raise UnusableParams(
            f"Argon2id parameters {t} passes, {m} KiB, {p} lanes cost more than this "
            f"client derives keys with (at most {MAX_PARAMS.time_cost} passes, "
            f"{MAX_PARAMS.memory_kib} KiB, {MAX_PARAMS.parallelism} lanes)")
    return params


def derive_key(passphrase: str, salt: bytes, params: Argon2Params) -> bytes:
    """Argon2id of the passphrase: the 32-byte local key.

    Raises:
        UnusableParams: see :func:`check_params`.
    """
    if not passphrase:
        raise ValueError("the passphrase must not be empty")
    check_params(params)
    return hash_secret_raw(passphrase.encode(), salt, time_cost=params.time_cost,
                           memory_cost=params.memory_kib, parallelism=params.parallelism,
                           hash_len=KEY_BYTES, type=Type.ID)


class LocalKey:
    """Seals and opens values; never shows its key."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("a local key is 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, value: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, value, aad)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        """Raises: CorruptValue when the value does not authenticate."""
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
        except (InvalidTag, ValueError):
            raise CorruptValue("a stored value failed authentication") from None

    def check_value(self) -> bytes:
        """A sealed constant stored with the store to recognise the right key."""
        return self.seal(b"ok", _CHECK_AAD)

    def verify(self, check: bytes) -> None:
        """Raises: WrongKey when ``check`` was made with another key."""
        try:
            self.open(check, _CHECK_AAD)
        except CorruptValue:
            raise WrongKey("wrong passphrase or key for this store") from None

    def __repr__(self) -> str:
        return "LocalKey(<redacted>)"


def keyring_key(service: str, name: str, *, create: bool) -> bytes | None:
    """The local key kept in the OS keyring, made there if ``create``; None when no
    usable keyring backend exists (headless machines: use a passphrase)."""
    try:
        import keyring
        from keyring.errors import KeyringError, NoKeyringError
    except ImportError:  # pragma: no cover - keyring is a dependency
        return None
    try:
        backend = keyring.get_keyring()
        if getattr(backend, "priority", 0) <= 0:
            return None
        stored = keyring.get_password(service, name)
        if stored is not None:
            return bytes.fromhex(stored)
        if not create:
            return None
        key = os.urandom(KEY_BYTES)
        keyring.set_password(service, name, key.hex())
        return key
    except (NoKeyringError, KeyringError, ValueError):
        return None
