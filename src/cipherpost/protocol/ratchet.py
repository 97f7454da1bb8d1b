"""Double Ratchet key derivation as libsignal does it (digest §4.1).

Pure functions over bytes: the root step, the chain step, message keys, and the body
cipher (AES-256-CBC with PKCS#7). Session state lives in :mod:`.state`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .constants import MESSAGE_KEYS_INFO, ROOT_INFO
from .errors import InvalidMessage

_SHA256 = hashes.SHA256()
_ZERO_SALT = bytes(32)
_MESSAGE_KEY_SEED = b"\x01"
_CHAIN_KEY_SEED = b"\x02"
#: From this ciphertext size on, decryption avoids copying (see messages.LARGE).
_LARGE = 4096


def hkdf(ikm: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF-SHA256; ``salt=None`` means 32 zero bytes."""
    return HKDF(_SHA256, length, _ZERO_SALT if salt is None else salt, info).derive(ikm)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 (OpenSSL through the standard library's one-shot call)."""
    return hmac.digest(key, data, "sha256")


def root_step(root_key: bytes, dh_output: bytes) -> tuple[bytes, bytes]:
    """``KDF_RK``: return ``(new root key, new chain key)``."""
    okm = HKDF(_SHA256, 64, root_key, ROOT_INFO).derive(dh_output)
    return okm[:32], okm[32:]


def message_key_seed(chain_key: bytes) -> bytes:
    """The seed of the message key at this chain position."""
    return hmac.digest(chain_key, _MESSAGE_KEY_SEED, "sha256")


def next_chain_key(chain_key: bytes) -> bytes:
    """The chain key one step on."""
    return hmac.digest(chain_key, _CHAIN_KEY_SEED, "sha256")


def message_keys(seed: bytes, salt: bytes | None = None) -> tuple[bytes, bytes, bytes]:
    """``(cipher_key, mac_key, iv)`` from a message-key seed (the hot-path form)."""
    okm = HKDF(_SHA256, 80, _ZERO_SALT if salt is None else salt,
               MESSAGE_KEYS_INFO).derive(seed)
    return okm[:32], okm[32:64], okm[64:80]


@dataclass(frozen=True, slots=True, repr=False)
class MessageKeys:
    """Cipher key, MAC key and IV of one message."""

    cipher_key: bytes
    mac_key: bytes
    iv: bytes

    @classmethod
    def from_seed(cls, seed: bytes, salt: bytes | None = None) -> MessageKeys:
        """Derive from a chain's message-key seed; ``salt`` is the SPQR key when present."""
        return cls(*message_keys(seed, salt))

    def __repr__(self) -> str:
        return "MessageKeys(<redacted>)"


def aes_cbc_encrypt(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """AES-256-CBC with PKCS#7 padding."""
    pad = 16 - len(plaintext) % 16
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(plaintext + bytes((pad,)) * pad) + encryptor.finalize()


def aes_cbc_encrypt_pieces(key: bytes, iv: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    """:func:`aes_cbc_encrypt` as two pieces that concatenate to its output: the whole
    blocks of ``plaintext``, then the last block with the padding. For a large plaintext
    this saves copying all of it only to append the padding."""
    cut = len(plaintext) - len(plaintext) % 16
    pad = 16 - (len(plaintext) - cut)
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    head = encryptor.update(memoryview(plaintext)[:cut])
    return head, encryptor.update(plaintext[cut:] + bytes((pad,)) * pad) + encryptor.finalize()


def aes_cbc_decrypt(key: bytes, iv: bytes, ciphertext: bytes | memoryview) -> bytes:
    """Inverse of :func:`aes_cbc_encrypt`.

    A large ciphertext whose padding is a whole block (the usual case: applications pad
    their plaintexts to a multiple of 16 bytes or more) is returned without a copy.

    Raises:
        InvalidMessage: bad length or padding (callers check a MAC or signature first).
    """
    length = len(ciphertext)
    if not length or length % 16:
        raise InvalidMessage("invalid ciphertext length")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    if length < _LARGE:
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        pad = padded[-1]
        if not 1 <= pad <= 16 or padded[-pad:] != bytes((pad,)) * pad:
            raise InvalidMessage("invalid padding")
        return padded[:-pad]
    view = memoryview(ciphertext)
    head = decryptor.update(view[:-16])
    last = decryptor.update(view[-16:]) + decryptor.finalize()
    pad = last[-1]
    if not 1 <= pad <= 16 or last[-pad:] != bytes((pad,)) * pad:
        raise InvalidMessage("invalid padding")
    return head if pad == 16 else head + last[:16 - pad]
