"""Attachment encryption (docs/spec/attachments.md): Padmé-padded plaintext, AES-256-CBC,
HMAC-SHA256 over iv and ciphertext (encrypt-then-MAC), SHA-256 digest of the whole blob.

Work is done in chunks so a progress callback can follow large files; the receiver
checks the digest and the MAC over the whole blob (in constant time) before it decrypts
anything.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import padding as pkcs7
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .padding import padme

KEY_BYTES = 64
IV_BYTES = 16
MAC_BYTES = 32
CHUNK = 256 * 1024

#: ``progress(done, total)`` in bytes.
Progress = Callable[[int, int], None]


class AttachmentError(Exception):
    """A downloaded attachment that does not match its pointer (digest, MAC or size)."""


@dataclass(frozen=True)
class EncryptedAttachment:
    blob: bytes
    key: bytes
    digest: bytes
    size: int

    def __repr__(self) -> str:
        return f"EncryptedAttachment(size={self.size}, blob={len(self.blob)} bytes)"


def _noop(done: int, total: int) -> None:
    return None


def encrypt(plaintext: bytes, progress: Progress = _noop,
            key: bytes | None = None, iv: bytes | None = None) -> EncryptedAttachment:
    """Encrypt a file's bytes (``key`` and ``iv`` only for known-answer tests)."""
    key = key if key is not None else os.urandom(KEY_BYTES)
    iv = iv if iv is not None else os.urandom(IV_BYTES)
    if len(key) != KEY_BYTES or len(iv) != IV_BYTES:
        raise ValueError("an attachment key is 64 bytes and its iv 16")
    encryptor = Cipher(algorithms.AES(key[:32]), modes.CBC(iv)).encryptor()
    padder = pkcs7.PKCS7(128).padder()
    mac = hmac.new(key[32:], iv, hashlib.sha256)
    parts = [iv]
    padded_size = padme(len(plaintext))
    total = len(plaintext)
    for start in range(0, total, CHUNK):
        chunk = encryptor.update(padder.update(plaintext[start:start + CHUNK]))
        mac.update(chunk)
        parts.append(chunk)
        progress(min(start + CHUNK, total), total)
    tail = encryptor.update(padder.update(bytes(padded_size - total)) + padder.finalize())
    tail += encryptor.finalize()
    mac.update(tail)
    parts += [tail, mac.digest()]
    blob = b"".join(parts)
    progress(total, total)
    return EncryptedAttachment(blob, key, hashlib.sha256(blob).digest(), total)


def decrypt(blob: bytes, key: bytes, digest: bytes, size: int,
            progress: Progress = _noop) -> bytes:
    """Check and decrypt a downloaded blob.

    Raises:
        AttachmentError: wrong digest, MAC, padding or size.
    """
    if len(key) != KEY_BYTES:
        raise AttachmentError("the attachment key is malformed")
    if not hmac.compare_digest(hashlib.sha256(blob).digest(), digest):
        raise AttachmentError("the attachment does not match its digest")
    if len(blob) < IV_BYTES + 16 + MAC_BYTES or (len(blob) - IV_BYTES - MAC_BYTES) % 16:
        raise AttachmentError("the attachment is truncated")
    iv, body, tag = blob[:IV_BYTES], blob[IV_BYTES:-MAC_BYTES], blob[-MAC_BYTES:]
    mac = hmac.new(key[32:], iv, hashlib.sha256)
    mac.update(body)
    if not hmac.compare_digest(mac.digest(), tag):
        raise AttachmentError("the attachment's MAC does not verify")
    decryptor = Cipher(algorithms.AES(key[:32]), modes.CBC(iv)).decryptor()
    unpadder = pkcs7.PKCS7(128).unpadder()
    parts = []
    for start in range(0, len(body), CHUNK):
        parts.append(unpadder.update(decryptor.update(body[start:start + CHUNK])))
        progress(min(start + CHUNK, len(body)), len(body))
    try:
        parts.append(unpadder.update(decryptor.finalize()) + unpadder.finalize())
    except ValueError:
        raise AttachmentError("the attachment's padding is malformed") from None
    padded = b"".join(parts)
    if size > len(padded):
        raise AttachmentError("the attachment is shorter than its stated size")
    return padded[:size]
