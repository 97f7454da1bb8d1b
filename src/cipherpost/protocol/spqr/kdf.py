"""HKDF/HMAC-SHA256 and the labels of SPQR V1 (spqr-digest §3).

HKDF here always has a salt (32 zero bytes unless stated, identical to "no salt" for
SHA-256); integers inside ``info`` are big-endian. Implemented on the standard library's
one-shot HMAC, which is several times cheaper per call than a KDF object. The chain step,
which runs once per message on each side, has its own form, :func:`hkdf64_zero_salt`.
"""

from __future__ import annotations

import hashlib
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


# HMAC (RFC 2104) written out on hashlib for the chain step: K' = key zero-padded to the
# 64-byte block; HMAC = H((K' ^ opad) || H((K' ^ ipad) || data)). The pads of the constant
# zero salt are hashed once here, and the two expand blocks share one pair of pad states,
# which saves OpenSSL's per-call key set-up (about half the cost of a one-shot HMAC on a
# 32-byte key). Checked against :func:`hkdf` and ``cryptography``'s HKDF in the tests.
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))
_BLOCK_PAD = bytes(32)  # a 32-byte key to the 64-byte block
_ZERO_INNER = hashlib.sha256(bytes(64).translate(_IPAD))
_ZERO_OUTER = hashlib.sha256(bytes(64).translate(_OPAD))
_sha256 = hashlib.sha256


def hkdf64_zero_salt(ikm: bytes, info: bytes) -> bytes:
    """``hkdf(ZERO_SALT, ikm, info, 64)``, for the per-message chain step."""
    first, second = hkdf64_halves(ikm, info)
    return first + second


def hkdf64_halves(ikm: bytes, info: bytes) -> tuple[bytes, bytes]:
    """The two 32-byte halves of ``hkdf(ZERO_SALT, ikm, info, 64)``: the chain step's new
    next key and message key, without joining and slicing them."""
    h = _ZERO_INNER.copy()
    h.update(ikm)
    o = _ZERO_OUTER.copy()
    o.update(h.digest())
    key = o.digest() + _BLOCK_PAD  # the PRK, padded to the block
    inner = _sha256(key.translate(_IPAD))
    outer = _sha256(key.translate(_OPAD))
    h = inner.copy()
    h.update(info + b"\x01")
    o = outer.copy()
    o.update(h.digest())
    first = o.digest()
    inner.update(first + info + b"\x02")
    outer.update(inner.digest())
    return first, outer.digest()


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 with the full 32-byte tag."""
    return hmac.digest(key, data, "sha256")


def be64(value: int) -> bytes:
    """An epoch as 8 big-endian bytes."""
    return value.to_bytes(8, "big")


def scka_key(shared_secret: bytes, epoch: int) -> bytes:
    """The epoch secret S_e from the ML-KEM shared secret of epoch ``epoch`` (§4.1)."""
    return hkdf(ZERO_SALT, shared_secret, SCKA_KEY + be64(epoch), 32)
