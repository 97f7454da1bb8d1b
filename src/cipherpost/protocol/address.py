"""Protocol addresses (libsignal's ``ProtocolAddress``, digest §9)."""

from __future__ import annotations

MAX_DEVICE_ID = 127


class ProtocolAddress:
    """One device of one account: an opaque account name and a device id 1..127.

    Immutable and hashable; the hash is computed once, since addresses key every store
    lookup on the per-message path.
    """

    __slots__ = ("_hash", "device_id", "name")

    name: str
    device_id: int
    _hash: int

    def __init__(self, name: str, device_id: int) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("address name must be a non-empty string")
        if (not isinstance(device_id, int) or isinstance(device_id, bool)
                or not 1 <= device_id <= MAX_DEVICE_ID):
            raise ValueError("device id must be an integer 1..127")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "device_id", device_id)
        object.__setattr__(self, "_hash", hash((name, device_id)))

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("ProtocolAddress is immutable")

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ProtocolAddress) and other.name == self.name
                and other.device_id == self.device_id)

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"ProtocolAddress(name={self.name!r}, device_id={self.device_id})"

    def __str__(self) -> str:
        return f"{self.name}.{self.device_id}"
