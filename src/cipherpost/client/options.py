"""What the user can turn off, and the SDK's policies with their safe defaults."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cipherpost.protocol import DEFAULT_SPQR, SpqrSettings

from .keys import KeyPolicy


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class ClientOptions:
    """What the user can turn off, and policies with safe defaults."""

    delivery_receipts: bool = True
    read_receipts: bool = True
    typing_indicators: bool = True
    #: Accept a contact's changed identity key for sending without asking (bots); a
    #: contact the user had verified is always blocked until re-verified.
    accept_changed_identities: bool = False
    keys: KeyPolicy = field(default_factory=KeyPolicy)
    #: SPQR (the post-quantum ratchet) on the 1:1 sessions this device starts or accepts.
    #: REQUIRED by default, as libsignal 0.92+ (and Cipherpost's browser client): a peer
    #: without SPQR is refused, and a session without it (made by an older client) is
    #: replaced before the next send. OFFERED also talks to libsignal 0.90/0.91 and
    #: pre-SPQR Cipherpost, keeping SPQR with peers that answer with it; OFF never runs it
    #: (docs/protocol.md).
    spqr: SpqrSettings = DEFAULT_SPQR
    #: Sealed sender (docs/spec/sealed-sender.md): messages to a contact whose profile key
    #: this device holds go without sender credentials, so the relay does not learn who
    #: sent them; off, every send is identified.
    sealed_sender: bool = True
    #: Milliseconds since the epoch (tests move it to simulate days passing).
    clock: Callable[[], int] = field(default=now_ms)

    #: Times a send is retried after the relay says the device list changed.
    max_send_attempts: int = 4
