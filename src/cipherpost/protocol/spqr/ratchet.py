"""SPQR's per-message interface: version negotiation, ``send`` and ``recv`` (spqr-digest §5, §8).

A session's SPQR state is one :class:`PqRatchetState`: the braid (``None`` once the
session fell back to V0, i.e. no SPQR), the chain (made lazily from the auth key), and,
until the first V1 message arrives, what negotiation needs (auth key, direction, minimum
version, chain limits).

Negotiation is in-band and only on receive (§8.2): a V1 message ends it; an empty field 5
(V0) downgrades the session for good if the minimum version allows, else it is an error;
after negotiation, V0 is an error; an unknown version byte is ignored (no key). Sending
never changes negotiation, and sends a key from the first message on only if the
minimum version is V1 (otherwise the chain starts on the first receive).

Both functions are pure: ``recv`` returns a new state that the caller keeps only once the
whole message verified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

from ..keys import Random
from . import braid, incremental
from .braid import BraidState, KeyGen
from .chain import DEFAULT_PARAMS, Chain, ChainParams, Direction
from .errors import InvalidSpqrState, SpqrMinimumVersion, SpqrVersionMismatch
from .wire import V0, V1, decode_fields, encode_fields, message_version

#: ``tuple.__new__``: makes a named tuple from a tuple of its fields without the generated
#: constructor (or ``_make``, slower still), for the per-message paths.
_new = tuple.__new__


@dataclass(frozen=True, slots=True)
class Negotiation:
    """What a session keeps until its first V1 message: enough to start either version."""

    auth_key: bytes = field(repr=False)
    direction: Direction
    min_version: int
    params: ChainParams = DEFAULT_PARAMS

    def chain(self) -> Chain:
        return Chain.start(self.auth_key, self.direction, self.params)


class PqRatchetState(NamedTuple):
    """A session's SPQR state; ``PqRatchetState()`` is V0 (no SPQR).

    A named tuple (immutable, and cheap to make: each message sent or received makes one);
    its parts' reprs leave their keys out.
    """

    braid: BraidState | None = None
    chain: Chain | None = None
    negotiation: Negotiation | None = None

    @property
    def version(self) -> int:
        """V1 while the braid runs, V0 once (or if) the session has no SPQR."""
        return V0 if self.braid is None else V1

    @property
    def negotiating(self) -> bool:
        """Whether no V1 message has been received yet."""
        return self.negotiation is not None


def initial_state(auth_key: bytes, direction: Direction, *, version: int = V1,
                  min_version: int = V1,
                  params: ChainParams = DEFAULT_PARAMS) -> PqRatchetState:
    """A new session's SPQR state from the 32-byte auth key that PQXDH derived (§8.1).

    libsignal 0.92+ uses ``version = min_version = V1``; 0.90/0.91 used ``min_version =
    V0``; ``version = V0`` gives a session without SPQR.
    """
    if len(auth_key) != 32:
        raise ValueError("the SPQR auth key is 32 bytes")
    if version not in (V0, V1) or min_version not in (V0, V1) or min_version > version:
        raise ValueError("versions must be V0 or V1 with min_version <= version")
    if version == V0:
        return PqRatchetState()
    start = braid.initial_a if direction is Direction.A2B else braid.initial_b
    return PqRatchetState(start(auth_key), None,
                          Negotiation(auth_key, direction, min_version, params))


_U32_MAX = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class SpqrSettings:
    """What a new session offers and requires: SPQR ``version`` and ``min_version``.

    ``OFF`` (V0) is a session without SPQR, as Cipherpost before SPQR and libsignal
    before 0.90; ``OFFERED`` runs SPQR but downgrades for a peer without it (libsignal
    0.90/0.91); ``REQUIRED`` refuses such a peer (libsignal 0.92 and later).
    """

    version: int = V0
    min_version: int = V0

    OFF: ClassVar[SpqrSettings]
    OFFERED: ClassVar[SpqrSettings]
    REQUIRED: ClassVar[SpqrSettings]

    def __post_init__(self) -> None:
        if self.version not in (V0, V1) or self.min_version not in (V0, V1) \
                or self.min_version > self.version:
            raise ValueError("versions must be V0 or V1 with min_version <= version")

    def initial_state(self, auth_key: bytes, direction: Direction, *,
                      self_session: bool = False) -> PqRatchetState:
        """A new session's state (spqr-digest §8.1); with oneself, jumps are unbounded."""
        params = ChainParams(max_jump=_U32_MAX) if self_session else DEFAULT_PARAMS
        return initial_state(auth_key, direction, version=self.version,
                             min_version=self.min_version, params=params)


SpqrSettings.OFF = SpqrSettings(V0, V0)
SpqrSettings.OFFERED = SpqrSettings(V1, V0)
SpqrSettings.REQUIRED = SpqrSettings(V1, V1)

#: What a new session runs unless told otherwise: SPQR required, as libsignal 0.92 and
#: later (spqr-digest §8.1). Pass ``SpqrSettings.OFFERED`` to talk to libsignal 0.90/0.91
#: or older Cipherpost too, ``SpqrSettings.OFF`` for classical sessions only.
DEFAULT_SPQR = SpqrSettings.REQUIRED


class Sent(NamedTuple):
    """The state after sending, field 5's bytes, and the message key (``None`` = no salt).

    A named tuple (cheaper to make than a frozen dataclass: one per message) whose repr
    leaves the key out.
    """

    state: PqRatchetState
    message: bytes
    key: bytes | None

    def __repr__(self) -> str:
        return f"Sent({self.state!r}, {len(self.message)} bytes, key=<redacted>)"


def send(state: PqRatchetState, rng: Random, *,
         keygen: KeyGen = incremental.generate) -> Sent:
    """SPQR's part of encrypting one message.

    Raises:
        InvalidSpqrState: the state cannot send (it has neither chain nor negotiation data).
    """
    return _new(Sent, send_step(state, rng, keygen))


#: What :func:`send_step` returns: :class:`Sent`'s fields as a plain tuple.
SendStep = tuple[PqRatchetState, bytes, bytes | None]


def send_step(state: PqRatchetState, rng: Random,
              keygen: KeyGen = incremental.generate) -> SendStep:
    """:func:`send` as a plain tuple ``(state after, field 5, key)``, without the
    :class:`Sent` object (the per-message path of ``encrypt``)."""
    current, chain, negotiation = state
    if current is None:
        return state, b"", None
    after, epoch, payload, chunk_index, chunk_data, secret = braid.step_send(
        current, rng, keygen)
    if chain is None:
        if negotiation is None:
            raise InvalidSpqrState("SPQR chain not available")
        if negotiation.min_version > V0:
            chain = negotiation.chain()
    index, key = 0, None
    if chain is not None:
        if secret is not None:
            chain = chain.add_epoch(epoch, secret)
        chain, index, key = chain.send_key(epoch - 1)
    elif secret is not None:
        raise InvalidSpqrState("SPQR epoch secret without a chain")
    return (_new(PqRatchetState, (after, chain, negotiation)),
            encode_fields(epoch, index, payload, chunk_index, chunk_data), key)


def recv(state: PqRatchetState, data: bytes) -> tuple[PqRatchetState, bytes | None]:
    """SPQR's part of decrypting a message with field-5 bytes ``data``.

    Returns the new state and the message key (``None``: no salt). The caller must keep
    the new state only if the whole message then verifies.

    Raises:
        SpqrMinimumVersion: ``data`` is V0 while negotiating with minimum version V1.
        SpqrVersionMismatch: ``data`` is V0 after the session negotiated V1.
        MalformedSpqrMessage: the V1 bytes do not parse.
        SpqrError: any braid or chain error (see :func:`braid.recv`, :class:`Chain`).
    """
    current, chain, negotiation = state
    if current is None or not data or data[0] != V1:
        return _recv_not_v1(state, data)
    epoch, index, payload, chunk_index, chunk_data = decode_fields(data)
    new_braid, secret = braid.step_recv(current, epoch, payload, chunk_index, chunk_data)
    if chain is None:
        if negotiation is None:
            raise InvalidSpqrState("SPQR chain not available")
        chain = negotiation.chain()
    if secret is not None:
        chain = chain.add_epoch(epoch, secret)
    key = None
    if not (epoch == 1 and index == 0):
        chain, key = chain.recv_key(epoch - 1, index)
    return _new(PqRatchetState, (new_braid, chain, None)), key


def _recv_not_v1(state: PqRatchetState,
                 data: bytes) -> tuple[PqRatchetState, bytes | None]:
    """:func:`recv` for a V0 state or bytes that are not V1 (§8.2)."""
    version = message_version(data)
    if version is None:
        return state, None
    if version < state.version:
        negotiation = state.negotiation
        if negotiation is None:
            raise SpqrVersionMismatch("SPQR message version below the negotiated one")
        if version < negotiation.min_version:
            raise SpqrMinimumVersion("SPQR message version below the minimum version")
        return PqRatchetState(), None  # downgrade to V0 for good
    return PqRatchetState(), None  # a V0 state stays V0, whatever comes
