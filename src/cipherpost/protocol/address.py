"""Protocol addresses (libsignal's ``ProtocolAddress``, digest §9)."""

from __future__ import annotations

from dataclasses import dataclass

MAX_DEVICE_ID = 127


@dataclass(frozen=True, slots=True)
class ProtocolAddress:
    """One device of one account: an opaque account name and a device id 1..127."""

    name: str
    device_id: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("address name must be a non-empty string")
        if (not isinstance(self.device_id, int) or isinstance(self.device_id, bool)
                or not 1 <= self.device_id <= MAX_DEVICE_ID):
            raise ValueError("device id must be an integer 1..127")

    def __str__(self) -> str:
        return f"{self.name}.{self.device_id}"
