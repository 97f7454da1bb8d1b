"""XEdDSA signatures over Curve25519 keys, exactly as libsignal makes and checks them.

Theory of operation (digest §2): a Curve25519 private scalar ``k`` is used directly as an
Ed25519 secret scalar ``a = k mod L`` (no negation). Instead of forcing the public
Edwards point's sign bit to zero as the XEdDSA paper does, libsignal keeps ``a`` and
stores the sign bit of ``A = aB`` in the otherwise unused top bit of ``s``. A verifier
rebuilds the Edwards point from the Montgomery ``u`` and that bit, and then runs a
standard Ed25519 verification.

Point and scalar arithmetic comes from libsodium (PyNaCl); verification from
``cryptography``'s Ed25519.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.bindings import (
    crypto_core_ed25519_scalar_add,
    crypto_core_ed25519_scalar_mul,
    crypto_core_ed25519_scalar_reduce,
    crypto_scalarmult_ed25519_base_noclamp,
)

from .keys import PrivateKey, PublicKey, Random

_P = 2**255 - 19
_HASH1_PREFIX = b"\xfe" + b"\xff" * 31
SIGNATURE_LENGTH = 64


def _reduce(digest64: bytes) -> bytes:
    return bytes(crypto_core_ed25519_scalar_reduce(digest64))


def sign(private: PrivateKey, message: bytes, rng: Random) -> bytes:
    """Sign ``message`` with a Curve25519 private key; 64 bytes, randomized by ``rng``."""
    k = private.serialize()
    a = _reduce(k + bytes(32))
    big_a = bytes(crypto_scalarmult_ed25519_base_noclamp(a))
    sign_bit = big_a[31] & 0x80
    z = rng(64)
    r = _reduce(hashlib.sha512(_HASH1_PREFIX + k + message + z).digest())
    big_r = bytes(crypto_scalarmult_ed25519_base_noclamp(r))
    h = _reduce(hashlib.sha512(big_r + big_a + message).digest())
    s = bytearray(crypto_core_ed25519_scalar_add(crypto_core_ed25519_scalar_mul(h, a), r))
    s[31] = (s[31] & 0x7F) | sign_bit
    return big_r + bytes(s)


def verify(public: PublicKey, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid XEdDSA signature of ``message`` by ``public``.

    Never raises on malformed input: anything that is not a valid signature is False.
    """
    if len(signature) != SIGNATURE_LENGTH:
        return False
    u = int.from_bytes(public.raw, "little") & ((1 << 255) - 1)
    u %= _P
    if u == _P - 1:
        return False
    y = (u - 1) * pow(u + 1, -1, _P) % _P
    a_bytes = bytearray(y.to_bytes(32, "little"))
    a_bytes[31] |= signature[63] & 0x80
    s = bytearray(signature[32:])
    s[31] &= 0x7F
    if s[31] & 0xE0:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes(a_bytes)).verify(
            signature[:32] + bytes(s), message
        )
    except (_CryptoInvalidSignature, ValueError):
        return False
    return True
