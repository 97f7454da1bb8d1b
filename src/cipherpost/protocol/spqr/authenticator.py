"""The braid's authenticator: a root key and a MAC key, updated once per epoch.

(spqr-digest §4.1.) Both parties start from a zero root key and update it with the
PQXDH-derived SPQR auth key for epoch 1; each epoch secret then updates it again, so
the header MAC of epoch e+1 and the ciphertext MAC of epoch e are keyed by a key that
only holders of S_e know (key confirmation).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from .errors import SpqrAuthenticationFailed
from .kdf import AUTH_UPDATE, CT_MAC, HDR_MAC, ZERO_SALT, be64, hkdf, hmac_sha256

MAC_SIZE = 32


@dataclass(frozen=True, slots=True)
class Authenticator:
    """``(root_key, mac_key)``; immutable, every update returns a new value."""

    root_key: bytes = field(repr=False)
    mac_key: bytes = field(repr=False)

    @classmethod
    def initial(cls, auth_key: bytes, epoch: int = 1) -> Authenticator:
        """The authenticator both sides start from: zero keys updated with ``auth_key``."""
        return cls(bytes(32), bytes(32)).update(epoch, auth_key)

    def update(self, epoch: int, key: bytes) -> Authenticator:
        """Mix ``key`` (an epoch secret) in for ``epoch``."""
        out = hkdf(ZERO_SALT, self.root_key + key, AUTH_UPDATE + be64(epoch), 64)
        return Authenticator(out[:32], out[32:])

    def mac_header(self, epoch: int, header: bytes) -> bytes:
        """The MAC over an ML-KEM header of ``epoch``."""
        return hmac_sha256(self.mac_key, HDR_MAC + be64(epoch) + header)

    def mac_ciphertext(self, epoch: int, ciphertext: bytes) -> bytes:
        """The MAC over ``ct1 || ct2`` of ``epoch``."""
        return hmac_sha256(self.mac_key, CT_MAC + be64(epoch) + ciphertext)

    def verify_header(self, epoch: int, header: bytes, mac: bytes) -> None:
        """Check a header MAC in constant time.

        Raises:
            SpqrAuthenticationFailed: the MAC does not match.
        """
        if not hmac.compare_digest(mac, self.mac_header(epoch, header)):
            raise SpqrAuthenticationFailed("SPQR MAC verification failed")

    def verify_ciphertext(self, epoch: int, ciphertext: bytes, mac: bytes) -> None:
        """Check a ciphertext MAC in constant time.

        Raises:
            SpqrAuthenticationFailed: the MAC does not match.
        """
        if not hmac.compare_digest(mac, self.mac_ciphertext(epoch, ciphertext)):
            raise SpqrAuthenticationFailed("SPQR MAC verification failed")
