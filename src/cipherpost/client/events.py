"""What a client tells its app: received messages and everything else worth knowing."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Attachment:
    """An attachment pointer as received (download it with ``Client.download``)."""

    id: str
    key: bytes = field(repr=False)
    digest: bytes
    size: int
    content_type: str
    file_name: str
    caption: str


@dataclass(frozen=True)
class Message:
    """A data message stored in the history (received, or sent from another own device).

    ``conversation`` is the other account's id for 1:1 messages (for a copy of our own
    message: its recipient), or ``group:<hex id>``.
    """

    conversation: str
    author: str
    author_device: int
    timestamp: int
    text: str
    outgoing: bool
    envelope_id: str
    attachments: tuple[Attachment, ...] = ()
    #: (author, timestamp) of the message this one replies to.
    quote: tuple[str, int] | None = None
    #: Seconds after reading until it disappears (0: never).
    expire_timer: int = 0


@dataclass(frozen=True)
class MessageEdited:
    conversation: str
    author: str
    timestamp: int
    text: str


@dataclass(frozen=True)
class Reaction:
    conversation: str
    reactor: str
    target_author: str
    target_timestamp: int
    emoji: str
    removed: bool


@dataclass(frozen=True)
class ExpireTimerChanged:
    conversation: str
    author: str
    seconds: int


@dataclass(frozen=True)
class MessagesRead:
    """Messages were read on another of our devices."""

    messages: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class MessageDeleted:
    conversation: str
    author: str
    timestamp: int


@dataclass(frozen=True)
class Receipt:
    """The other side received (``kind`` "delivery") or read ("read") our messages."""

    sender: str
    sender_device: int
    kind: str
    timestamps: tuple[int, ...]


@dataclass(frozen=True)
class Typing:
    sender: str
    sender_device: int
    started: bool
    #: Set when typing in a group.
    group_id: bytes | None = None


@dataclass(frozen=True)
class IdentityChanged:
    """A contact's identity key changed: show a notice; sending may be blocked until the
    user accepts it (``Client.trust_identity``)."""

    account: str
    send_blocked: bool


@dataclass(frozen=True)
class DeviceAdded:
    """A device joined our own account."""

    device_id: int
    name: str


@dataclass(frozen=True)
class DecryptionFailed:
    """An envelope could not be decrypted; the sender was asked to resend."""

    sender: str
    sender_device: int
    timestamp: int
    reason: str


@dataclass(frozen=True)
class ResendUnavailable:
    """A contact could not decrypt one of our messages and we no longer hold it."""

    account: str
    device: int
    timestamp: int


@dataclass(frozen=True)
class Unsupported:
    """A message this client does not understand (a newer spec, or not a Content)."""

    sender: str
    sender_device: int
    reason: str


@dataclass(frozen=True)
class SealedRejected:
    """A sealed-sender envelope that did not open, or whose sender certificate failed
    (another trust root than the pinned one, expired, forged, or naming this device). It
    was acknowledged and dropped, and no session changed. No sender is given: an
    unchecked certificate names no one. ``kind`` is the protocol error kind
    (``invalid_certificate``, ``invalid_message``, ``sealed_sender_self_send``...)."""

    kind: str
    reason: str


@dataclass(frozen=True)
class GroupUpdated:
    """A group's state changed (we may have been added to it or removed from it)."""

    group_id: bytes
    revision: int
    title: str
    members: tuple[str, ...]
    author: str
    removed: bool


@dataclass(frozen=True)
class GroupChangeRejected:
    """A group change that did not verify or was not allowed; nothing changed."""

    sender: str
    reason: str


@dataclass(frozen=True)
class ServerHistoryChanged:
    """Another device of the account turned server-stored history on or off."""

    enabled: bool


@dataclass(frozen=True)
class AccountNotice:
    """The relay tells of something done to our own account (docs/server.md, "Login
    notices"): ``device_added``, ``recovery`` (its recovery blob was opened),
    ``identity_reset``, ``recovery_changed``, ``two_factor_enabled``/``_disabled``. ``at``
    is the minute it happened (ms); ``device_id`` and ``name`` the device concerned if
    any; ``via`` how (``link_code``, ``recovery_key``, ``recovery_passphrase``...). The
    relay writes these: one that lies can also stay silent."""

    kind: str
    at: int
    device_id: int | None = None
    name: str = ""
    via: str = ""


Event = (Message | MessageDeleted | MessageEdited | Reaction | ExpireTimerChanged
         | MessagesRead | Receipt | Typing | IdentityChanged | DeviceAdded
         | DecryptionFailed | ResendUnavailable | Unsupported | SealedRejected | GroupUpdated
         | GroupChangeRejected | ServerHistoryChanged
         | AccountNotice)
