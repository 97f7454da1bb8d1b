"""Plain records that cross the storage interface."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeVar


@dataclass(frozen=True)
class SignedKey:
    """A public prekey with its id and XEdDSA signature (signed or Kyber prekey)."""

    key_id: int
    public_key: bytes
    signature: bytes


@dataclass(frozen=True)
class OneTimeKey:
    """A public one-time EC prekey."""

    key_id: int
    public_key: bytes


@dataclass(frozen=True)
class KeyUpload:
    """Keys a device uploads; absent parts are left as they are."""

    signed_prekey: SignedKey | None = None
    last_resort_kyber: SignedKey | None = None
    one_time_prekeys: tuple[OneTimeKey, ...] = ()
    kyber_prekeys: tuple[SignedKey, ...] = ()
    #: Drop the device's remaining one-time keys (EC and Kyber) before adding these: a
    #: device that lost its private halves repairs the directory this way.
    replace_one_time: bool = False


@dataclass(frozen=True)
class NewDevice:
    """A device being registered."""

    registration_id: int
    token_hash: bytes
    name: str | None
    keys: KeyUpload


@dataclass(frozen=True)
class Account:
    """An account: stable id, changeable username, the one identity key."""

    id: str
    username: str | None
    identity_key: bytes


@dataclass(frozen=True)
class Device:
    """A device of an account."""

    device_id: int
    registration_id: int
    name: str | None
    created_at: int
    last_seen: int


@dataclass(frozen=True)
class Bundle:
    """What the directory hands out for one device."""

    device_id: int
    registration_id: int
    signed_prekey: SignedKey
    kyber_prekey: SignedKey
    one_time_prekey: OneTimeKey | None


_T = TypeVar("_T", bound=tuple[Any, ...])


class _TupleNew(Protocol):
    def __call__(self, cls: type[_T], fields: tuple[Any, ...], /) -> _T: ...


#: Makes a named tuple from a tuple of its fields, as ``tuple.__new__(Envelope, fields)``:
#: without the Python-level ``__new__`` a named tuple's constructor runs (a third of the
#: cost), for the compiled per-message code, which makes one or two per message.
new_tuple: _TupleNew = tuple.__new__


class OutgoingMessage(NamedTuple):
    """One ciphertext for one destination device (a named tuple, as :class:`Envelope`:
    one is made per message, and a frozen dataclass's ``__init__`` cost several times a
    tuple's)."""

    device_id: int
    registration_id: int
    type: int
    content: bytes


class Envelope(NamedTuple):
    """A queued message as delivered to its device.

    A named tuple, immutable as the frozen dataclasses here, and made once per message
    queued and per row read: about a third of a frozen dataclass's cost to make (eight
    ``object.__setattr__`` calls), which showed at saturation (3 % of the relay's CPU).
    """

    seq: int
    guid: str
    sender_account_id: str | None
    sender_device_id: int | None
    type: int
    content: bytes
    client_timestamp: int
    server_timestamp: int


class Refusal(Exception):
    """A write refused before anything was written (so a group commit goes on)."""


def envelope_of(row: Sequence[Any]) -> Envelope:
    """An envelope from a row of (seq, guid, sender_account_id, sender_device_id, type,
    content, client_timestamp, server_timestamp), as the queue reads select them."""
    return Envelope(row[0], row[1], row[2], row[3], row[4], bytes(row[5]), row[6], row[7])


class UnknownAccount(Refusal, LookupError):
    """The destination account does not exist (HTTP 404)."""


@dataclass
class DeviceMismatch(Refusal):
    """The sender's device list for the recipient is out of date (HTTP 409)."""

    missing: list[int] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)


@dataclass
class StaleDevices(Refusal):
    """Devices were re-installed: registration ids differ (HTTP 410)."""

    stale: list[int] = field(default_factory=list)


@dataclass
class QueueFull(Refusal):
    """A destination device's queue is over its byte budget."""

    devices: list[int] = field(default_factory=list)


class RecipientSuspended(Refusal):
    """The destination account is suspended by the operators (HTTP 403)."""


class InvalidInvite(Exception):
    """The invite code is unknown, used or expired."""


class UsernameTaken(Exception):
    """The username belongs to another account."""


class TooManyDevices(Exception):
    """The account is at its device cap."""
