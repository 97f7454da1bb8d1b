"""Safety numbers: libsignal's displayable and scannable fingerprints (digest §7)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from . import protobuf as pb
from .keys import IdentityKey

DEFAULT_ITERATIONS = 5200
SCANNABLE_VERSION = 2
_MAX_ITERATIONS = 1_000_000


class FingerprintVersionMismatch(ValueError):
    """A scanned fingerprint has another version than ours."""


class FingerprintParsingError(ValueError):
    """A scanned fingerprint is not a well-formed CombinedFingerprints."""


def _hash(stable_id: bytes, key: IdentityKey, iterations: int) -> bytes:
    serialized = key.serialize()
    digest = hashlib.sha512(b"\x00\x00" + serialized + stable_id + serialized).digest()
    for _ in range(iterations - 1):
        digest = hashlib.sha512(digest + serialized).digest()
    return digest


def _display_half(digest: bytes) -> str:
    return "".join(
        f"{int.from_bytes(digest[i:i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5)
    )


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """Both parties' fingerprint of a conversation, as seen by the local party."""

    displayable: str
    scannable: bytes
    version: int
    local_content: bytes
    remote_content: bytes

    @classmethod
    def create(cls, local_id: bytes, local_key: IdentityKey, remote_id: bytes,
               remote_key: IdentityKey, *, iterations: int = DEFAULT_ITERATIONS,
               version: int = SCANNABLE_VERSION) -> Fingerprint:
        """Compute the 60-digit number and the scannable (QR) bytes.

        Raises:
            ValueError: ``iterations`` outside 2..1,000,000.
        """
        if not 1 < iterations <= _MAX_ITERATIONS:
            raise ValueError("iterations must be in 2..1000000")
        local = _hash(local_id, local_key, iterations)
        remote = _hash(remote_id, remote_key, iterations)
        halves = sorted((_display_half(local), _display_half(remote)))
        scannable = pb.join((
            pb.field_varint(1, version),
            pb.field_bytes(2, pb.field_bytes(1, local[:32])),
            pb.field_bytes(3, pb.field_bytes(1, remote[:32])),
        ))
        return cls("".join(halves), scannable, version, local[:32], remote[:32])

    def compare(self, scanned: bytes) -> bool:
        """True when ``scanned`` (the other side's scannable form) matches ours.

        Raises:
            FingerprintParsingError: ``scanned`` is malformed.
            FingerprintVersionMismatch: ``scanned`` has another version.
        """
        try:
            fields = pb.decode(scanned)
            version = pb.get_int(fields, 1)
            theirs_local = pb.get_bytes(pb.decode(pb.get_bytes(fields, 2) or b""), 1)
            theirs_remote = pb.get_bytes(pb.decode(pb.get_bytes(fields, 3) or b""), 1)
        except pb.DecodeError as exc:
            raise FingerprintParsingError("malformed scannable fingerprint") from exc
        if version is None or theirs_local is None or theirs_remote is None:
            raise FingerprintParsingError("incomplete scannable fingerprint")
        if version != self.version:
            raise FingerprintVersionMismatch(f"version {version}, expected {self.version}")
        same_local = hmac.compare_digest(theirs_local, self.remote_content)
        same_remote = hmac.compare_digest(theirs_remote, self.local_content)
        return same_local and same_remote
