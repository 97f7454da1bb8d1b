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


_PNI_PREFIX = "PNI:"
_HEX = frozenset("0123456789abcdefABCDEF")
#: Kind bytes of the fixed-width service-id form (libsignal's ``ServiceIdKind``).
_ACI, _PNI = 0, 1


def service_id_fixed_width(name: str) -> bytes | None:
    """The 17-byte fixed-width binary of a service-id name, or ``None`` if it is not one.

    A service id is an ACI, written as a hyphenated UUID (any case), or a PNI, written
    ``PNI:`` and a hyphenated UUID; the binary is a kind byte (0 ACI, 1 PNI) and the
    UUID's 16 bytes.
    """
    kind = _ACI
    if name.startswith(_PNI_PREFIX):
        kind, name = _PNI, name[len(_PNI_PREFIX):]
    if (len(name) != 36 or name[8] != "-" or name[13] != "-" or name[18] != "-"
            or name[23] != "-"):
        return None
    digits = name[:8] + name[9:13] + name[14:18] + name[19:23] + name[24:]
    if not _HEX.issuperset(digits):
        return None
    return bytes((kind,)) + bytes.fromhex(digits)


def addresses_field(sender: ProtocolAddress, recipient: ProtocolAddress) -> bytes | None:
    """SignalMessage field 6 (libsignal 0.91+): ``sender id || sender device || recipient
    id || recipient device`` (36 bytes), or ``None`` unless both names are service ids."""
    sender_id = service_id_fixed_width(sender.name)
    recipient_id = service_id_fixed_width(recipient.name)
    if sender_id is None or recipient_id is None:
        return None
    return sender_id + bytes((sender.device_id,)) + recipient_id + bytes((recipient.device_id,))
