"""TOTP (RFC 6238) codes and recovery codes: the pure part of the second factor.

Codes are 6 digits over HMAC-SHA1 with 30-second steps, the parameters every authenticator
app takes from an ``otpauth://`` URI. A code is accepted for the current step and one step
either side (clocks drift); which step matched is returned, so the caller can refuse that
step and every older one afterwards (replay protection, RFC 6238 section 5.2). The HOTP
computation and its constant-time comparison are ``cryptography``'s.

Recovery codes (for a lost authenticator) are 80 random bits shown as four groups of four
base32 characters; only a hash bound to the account is stored, and each works once.
"""

from __future__ import annotations

import base64
import hashlib
import os
from urllib.parse import quote, urlencode

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor import InvalidToken
from cryptography.hazmat.primitives.twofactor.totp import TOTP

DIGITS = 6
STEP_SECONDS = 30
#: Steps accepted either side of the current one.
WINDOW = 1
SECRET_BYTES = 20
RECOVERY_CODES = 10
_RECOVERY_BYTES = 10
_CODE_LABEL = b"cipherpost 2fa recovery code\x00"


def new_secret() -> bytes:
    return os.urandom(SECRET_BYTES)


def _totp(secret: bytes) -> TOTP:
    # HMAC-SHA1 is what RFC 6238 authenticators compute (HMAC, not a bare hash: sound).
    return TOTP(secret, DIGITS, SHA1(), STEP_SECONDS, enforce_key_length=True)  # noqa: S303


def step_of(now_ms: int) -> int:
    """The RFC 6238 time step ``T`` at ``now_ms``."""
    return now_ms // 1000 // STEP_SECONDS


def code_at(secret: bytes, step: int) -> str:
    """The code of ``step`` (tests and the enrolment check use it)."""
    return _totp(secret).generate(step * STEP_SECONDS).decode()


def matching_step(secret: bytes, code: str, now_ms: int, *, after: int) -> int | None:
    """The step within the window whose code is ``code`` and which is newer than
    ``after`` (the last step used), or None. Every candidate is compared in constant
    time."""
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return None
    totp = _totp(secret)
    current = step_of(now_ms)
    found = None
    for step in range(current - WINDOW, current + WINDOW + 1):
        try:
            totp.verify(code.encode(), step * STEP_SECONDS)
        except (InvalidToken, InvalidKey):
            continue
        if step > after and found is None:
            found = step
    return found


def provisioning_uri(secret: bytes, account_name: str, issuer: str) -> str:
    """The ``otpauth://totp/...`` URI authenticator apps scan."""
    label = quote(f"{issuer}:{account_name}", safe=":@")
    query = urlencode({"secret": base64.b32encode(secret).decode().rstrip("="),
                       "issuer": issuer, "algorithm": "SHA1", "digits": DIGITS,
                       "period": STEP_SECONDS})
    return f"otpauth://totp/{label}?{query}"


def new_recovery_codes() -> list[str]:
    """Fresh recovery codes as shown to the user: ``abcd-efgh-ijkl-mnop``."""
    codes = []
    for _ in range(RECOVERY_CODES):
        text = base64.b32encode(os.urandom(_RECOVERY_BYTES)).decode().lower()
        codes.append("-".join(text[i:i + 4] for i in range(0, len(text), 4)))
    return codes


def normalize_recovery_code(text: str) -> str | None:
    """A typed recovery code without dashes, spaces and case; None when it cannot be one."""
    cleaned = "".join(c for c in text.lower() if c not in "- ")
    if len(cleaned) != 16 or not all(c in "abcdefghijklmnopqrstuvwxyz234567"
                                     for c in cleaned):
        return None
    return cleaned


def hash_recovery_code(account_id: str, normalized: str) -> bytes:
    return hashlib.sha256(_CODE_LABEL + account_id.encode() + b"\x00"
                          + normalized.encode()).digest()
