"""HKDF/HMAC-SHA256 and the labels of SPQR V1 (spqr-digest §3).

HKDF here always has a salt (32 zero bytes unless stated, identical to "no salt" for
SHA-256); integers inside ``info`` are big-endian. Implemented on the standard library's
one-shot HMAC, which is several times cheaper per call than a KDF object, because the
chain step runs once per message.
"""

from __future__ import annotations

import hmac

ZERO_SALT = bytes(32)

CHAIN_START = b"Signal PQ Ratchet V1 Chain  Start"  # two spaces, as in libsignal
CHAIN_ADD_EPOCH = b"Signal PQ Ratchet V1 Chain Add Epoch"
CHAIN_NEXT = b"Signal PQ Ratchet V1 Chain Next"
AUTH_UPDATE = b"Signal_PQCKA_V1_MLKEM768:Authenticator Update"
HDR_MAC = b"Signal_PQCKA_V1_MLKEM768:ekheader"
CT_MAC = b"Signal_PQCKA_V1_MLKEM768:ciphertext"
SCKA_KEY = b"Signal_PQCKA_V1_MLKEM768:SCKA Key"


def hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF-SHA256 (extract with ``salt``, expand to ``length`` <= 8160 bytes)."""
    prk = hmac.digest(salt, ikm, "sha256")
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes((counter,)), "sha256")
        out += block
        counter += 1
    return out[:length]


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 with the full 32-byte tag."""
    return hmac.digest(key, data, "sha256")


def be64(value: int) -> bytes:
    """An epoch as 8 big-endian bytes."""
    return value.to_bytes(8, "big")


def scka_key(shared_secret: bytes, epoch: int) -> bytes:
    """The epoch secret S_e from the ML-KEM shared secret of epoch ``epoch`` (§4.1)."""
    return hkdf(ZERO_SALT, shared_secret, SCKA_KEY + be64(epoch), 32)
