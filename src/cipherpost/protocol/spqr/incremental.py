"""Incremental ML-KEM-768 as the braid uses it (spqr-digest §3, §4.4).

The EK sender publishes a key in two parts: the 64-byte *header* ``rho || H(ek)`` and the
1152-byte *ek* (t-hat, the standard encapsulation key without its trailing rho). The CT
sender answers in two parts too: ``ct1`` (u, 960 bytes) from the header alone, and
``ct2`` (v, 128 bytes) once ek arrived and was checked against the header. The result is
exactly a standard ML-KEM-768 encapsulation to ``ek || rho``, so decapsulation is
standard.

Key generation and decapsulation of our own keys run on ``cryptography`` (the private
key is kept as its 64-byte seed); the two encapsulation halves, which no library offers,
run on :mod:`.mlkem768`. A 2400-byte expanded key (the form libsignal stores) is
accepted by :func:`decapsulate` too and handled by :mod:`.mlkem768`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey

from ..keys import Random
from . import mlkem768

HEADER_SIZE = 64
EK_SIZE = mlkem768.DK_PKE_BYTES  # 1152
CT1_SIZE = mlkem768.CT_U_BYTES  # 960
CT2_SIZE = mlkem768.CT_V_BYTES  # 128
SEED_SIZE = 64
EXPANDED_DK_SIZE = mlkem768.DK_BYTES  # 2400


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An EK sender's key pair: the header and ek it publishes, and its private key."""

    header: bytes
    ek: bytes = field(repr=False)
    dk: bytes = field(repr=False)  # a 64-byte seed (d || z) or a 2400-byte expanded key

    def __post_init__(self) -> None:
        if (len(self.header), len(self.ek)) != (HEADER_SIZE, EK_SIZE) \
                or len(self.dk) not in (SEED_SIZE, EXPANDED_DK_SIZE):
            raise ValueError("bad ML-KEM-768 key pair sizes")


def generate(rng: Random) -> KeyPair:
    """A fresh key pair from 64 bytes of ``rng`` (FIPS 203 KeyGen_internal(d, z))."""
    seed = rng(SEED_SIZE)
    full = MLKEM768PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()
    return KeyPair(full[EK_SIZE:] + mlkem768.h(full), full[:EK_SIZE], seed)


@dataclass(frozen=True, slots=True)
class EncapsState:
    """What the CT sender keeps between ct1 and ct2: the header and the message ``m``."""

    header: bytes
    m: bytes = field(repr=False)


def encaps1(header: bytes, rng: Random) -> tuple[bytes, EncapsState, bytes]:
    """``(ct1, state, shared secret)`` for a key known only by its header.

    ``m`` is 32 bytes of ``rng``; (K, r) = G(m || H(ek)) and ct1 = u need only rho.
    """
    if len(header) != HEADER_SIZE:
        raise ValueError("an ML-KEM-768 header is 64 bytes")
    m = rng(32)
    shared, r = mlkem768.encaps_secret(m, header[32:])
    return mlkem768.encrypt_u(header[:32], r), EncapsState(header, m), shared


def encaps2(ek: bytes, state: EncapsState) -> bytes:
    """ct2 = v for the full key; ``ek`` must already match the header (see below)."""
    if len(ek) != EK_SIZE:
        raise ValueError("an ML-KEM-768 ek part is 1152 bytes")
    _, r = mlkem768.encaps_secret(state.m, state.header[32:])
    return mlkem768.encrypt_v(ek, state.m, r)


def ek_matches_header(ek: bytes, header: bytes) -> bool:
    """Whether ``ek || rho`` hashes to the header's H(ek) and passes the modulus check."""
    if len(ek) != EK_SIZE or len(header) != HEADER_SIZE:
        return False
    digest = mlkem768.h(ek + header[:32])
    return hmac.compare_digest(digest, header[32:]) and mlkem768.ek_modulus_ok(ek)


def decapsulate(dk: bytes, ct1: bytes, ct2: bytes) -> bytes:
    """The ML-KEM shared secret of ``ct1 || ct2`` (implicit rejection on bad input)."""
    if len(ct1) != CT1_SIZE or len(ct2) != CT2_SIZE:
        raise ValueError("bad ML-KEM-768 ciphertext part length")
    if len(dk) == SEED_SIZE:
        return MLKEM768PrivateKey.from_seed_bytes(dk).decapsulate(ct1 + ct2)
    if len(dk) == EXPANDED_DK_SIZE:
        return mlkem768.decapsulate(dk, ct1 + ct2)
    raise ValueError("an ML-KEM-768 private key is a 64-byte seed or 2400 bytes")
