"""The symmetric chains that turn epoch secrets into per-message keys (spqr-digest §5).

Theory of operation. Epoch 0 comes from the SPQR auth key, every later epoch e from the
epoch secret S_e and the previous ``next_root``; each epoch has one hash chain per
direction. A message whose SCKA epoch is E takes a key from chain epoch E-1: the sender
the next key of its send chain, the receiver the key of the index the message names,
stepping forward and keeping skipped keys (at most ``max_ooo`` behind, at most
``max_jump`` ahead) for messages that arrive out of order. When the send epoch moves on,
epochs older than one before it are dropped and older send halves wiped, so late
messages of the previous epoch still decrypt.

A :class:`Chain` is an immutable value: every operation returns a new chain, sharing
whatever did not change, so a tentative receive costs no copying on the in-order path.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from .errors import (
    InvalidSpqrState,
    SpqrEpochOutOfRange,
    SpqrKeyAlreadyRequested,
    SpqrKeyJump,
    SpqrKeyTrimmed,
)
from .kdf import CHAIN_ADD_EPOCH, CHAIN_NEXT, CHAIN_START, ZERO_SALT, hkdf, hkdf64_halves

DEFAULT_MAX_JUMP = 25_000
DEFAULT_MAX_OOO_KEYS = 2_000
#: Epochs kept before the current send epoch (their receive halves stay usable).
EPOCHS_KEPT_BEFORE_SEND_EPOCH = 1
_U32 = 0xFFFFFFFF

#: ``tuple.__new__``: makes a named tuple from a tuple of its fields without the generated
#: constructor (or ``_make``, slower still), for the per-message paths.
_new = tuple.__new__


class Direction(enum.IntEnum):
    """Which way this party sends: Alice (the initiator) A2B, Bob B2A."""

    A2B = 0
    B2A = 1

    def other(self) -> Direction:
        return Direction.B2A if self is Direction.A2B else Direction.A2B


@dataclass(frozen=True, slots=True)
class ChainParams:
    """Receive limits; libsignal uses the defaults, and max_jump = 2^32-1 with oneself."""

    max_jump: int = DEFAULT_MAX_JUMP
    max_ooo_keys: int = DEFAULT_MAX_OOO_KEYS
    #: Stored skipped keys from which on old ones are dropped (made from max_ooo_keys,
    #: kept since every received message checks it).
    trim_size: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (0 < self.max_jump <= _U32 and 0 < self.max_ooo_keys <= _U32):
            raise ValueError("chain limits must be in 1..2^32-1")
        object.__setattr__(self, "trim_size", self.max_ooo_keys * 11 // 10 + 1)


#: libsignal's limits for a session with someone else.
DEFAULT_PARAMS = ChainParams()

_NO_KEYS: Mapping[int, bytes] = MappingProxyType({})


def _step(next_key: bytes, ctr: int) -> tuple[bytes, bytes]:
    """One chain step to counter ``ctr``: ``(new next, key(ctr))``."""
    return hkdf64_halves(next_key, ctr.to_bytes(4, "big") + CHAIN_NEXT)


class ChainHalf(NamedTuple):
    """One direction of one epoch: the counter, the next chain key, skipped keys.

    Named tuples (here, :class:`Link` and :class:`Chain`): immutable like the frozen
    dataclasses elsewhere, and about half the cost to make, which counts since each
    message makes one of each; their reprs leave the keys out.
    """

    ctr: int
    next_key: bytes  # empty once wiped
    skipped: Mapping[int, bytes] = _NO_KEYS

    def __repr__(self) -> str:
        return f"ChainHalf(ctr={self.ctr}, {len(self.skipped)} skipped, <keys redacted>)"

    def send(self) -> tuple[ChainHalf, int, bytes]:
        """``(half after, index, key)`` of the next key."""
        if len(self.next_key) != 32 or self.ctr >= _U32:
            raise InvalidSpqrState("SPQR send chain exhausted or wiped")
        ctr = self.ctr + 1
        next_key, key = _step(self.next_key, ctr)
        return ChainHalf(ctr, next_key, self.skipped), ctr, key

    def recv(self, at: int, params: ChainParams) -> tuple[ChainHalf, bytes]:
        """``(half after, key(at))``; each key is handed out once.

        Raises:
            SpqrKeyJump: ``at`` is more than ``max_jump`` ahead.
            SpqrKeyTrimmed: ``at`` is more than ``max_ooo_keys`` behind.
            SpqrKeyAlreadyRequested: the key of ``at`` was used already.
        """
        max_ooo = params.max_ooo_keys
        if at < self.ctr:
            if at + max_ooo < self.ctr:
                raise SpqrKeyTrimmed(f"SPQR key {at} was trimmed")
            key = self.skipped.get(at)
            if key is None:
                raise SpqrKeyAlreadyRequested(f"SPQR key {at} already requested")
            rest = dict(self.skipped)
            del rest[at]
            return ChainHalf(self.ctr, self.next_key, MappingProxyType(rest)), key
        if at == self.ctr:
            raise SpqrKeyAlreadyRequested(f"SPQR key {at} already requested")
        if at - self.ctr > params.max_jump:
            raise SpqrKeyJump(f"SPQR key {at} is too far ahead of {self.ctr}")
        if len(self.next_key) != 32:
            raise InvalidSpqrState("SPQR receive chain wiped")
        ctr, next_key = self.ctr, self.next_key
        skipped: Mapping[int, bytes] = self.skipped
        if at > ctr + 1 or len(skipped) >= params.trim_size:
            kept = {} if at > ctr + max_ooo else dict(skipped)
            while at > ctr + 1:
                ctr += 1
                next_key, key = _step(next_key, ctr)
                if ctr + max_ooo >= at:
                    kept[ctr] = key
            if len(kept) >= params.trim_size:
                horizon = ctr - max_ooo
                kept = {i: k for i, k in kept.items() if i >= horizon}
            skipped = MappingProxyType(kept)
        ctr += 1
        next_key, key = _step(next_key, ctr)
        return ChainHalf(ctr, next_key, skipped), key

    def wiped(self) -> ChainHalf:
        """This half with its next key cleared (no more keys can come from it)."""
        return ChainHalf(self.ctr, b"", self.skipped)


class Link(NamedTuple):
    """One chain epoch: the send half and the receive half."""

    send: ChainHalf
    recv: ChainHalf


def _link(okm: bytes, direction: Direction) -> Link:
    seeds = {Direction.A2B: okm[32:64], Direction.B2A: okm[64:96]}
    return Link(ChainHalf(0, seeds[direction]), ChainHalf(0, seeds[direction.other()]))


class Chain(NamedTuple):
    """All kept chain epochs; ``links[-1]`` is ``current_epoch``."""

    direction: Direction
    current_epoch: int
    send_epoch: int
    links: tuple[Link, ...]
    next_root: bytes
    params: ChainParams = DEFAULT_PARAMS

    def __repr__(self) -> str:
        return (f"Chain({self.direction.name}, current_epoch={self.current_epoch}, "
                f"send_epoch={self.send_epoch}, links={self.links!r}, <root redacted>)")

    @classmethod
    def start(cls, auth_key: bytes, direction: Direction,
              params: ChainParams = DEFAULT_PARAMS) -> Chain:
        """Chain epoch 0 from the SPQR auth key."""
        okm = hkdf(ZERO_SALT, auth_key, CHAIN_START, 96)
        return cls(direction, 0, 0, (_link(okm, direction),), okm[:32], params)

    def add_epoch(self, epoch: int, secret: bytes) -> Chain:
        """The chain with epoch ``epoch`` (which must be the next one) added."""
        if epoch != self.current_epoch + 1:
            raise InvalidSpqrState("SPQR epoch secret out of order")
        okm = hkdf(self.next_root, secret, CHAIN_ADD_EPOCH, 96)
        return Chain(self.direction, epoch, self.send_epoch,
                     (*self.links, _link(okm, self.direction)), okm[:32], self.params)

    def _position(self, epoch: int) -> int:
        back = self.current_epoch - epoch
        if back < 0 or back >= len(self.links):
            raise SpqrEpochOutOfRange(f"SPQR chain epoch {epoch} not available")
        return len(self.links) - 1 - back

    def send_key(self, epoch: int) -> tuple[Chain, int, bytes]:
        """``(chain after, index, key)`` for a message sent in chain epoch ``epoch``.

        Raises:
            InvalidSpqrState: ``epoch`` is before the send epoch or not available.
        """
        if epoch == self.send_epoch and epoch == self.current_epoch:
            # The usual case: the newest epoch, already the send epoch. No cleanup, and
            # ChainHalf.send inlined (once per message sent).
            links = self.links
            last = links[-1]
            half = last.send
            ctr = half.ctr + 1
            if len(half.next_key) != 32 or ctr > _U32:
                raise InvalidSpqrState("SPQR send chain exhausted or wiped")
            next_key, key = hkdf64_halves(half.next_key, ctr.to_bytes(4, "big") + CHAIN_NEXT)
            link = _new(Link, (_new(ChainHalf, (ctr, next_key, half.skipped)), last.recv))
            return (_new(Chain, (self.direction, self.current_epoch, epoch,
                                 (link,) if len(links) == 1 else (*links[:-1], link),
                                 self.next_root, self.params)), ctr, key)
        if epoch < self.send_epoch:
            raise InvalidSpqrState("SPQR send epoch decreased")
        try:
            position = self._position(epoch)
        except SpqrEpochOutOfRange as exc:
            raise InvalidSpqrState(str(exc)) from None
        kept = list(self.links)
        if epoch != self.send_epoch:
            drop = max(0, position - EPOCHS_KEPT_BEFORE_SEND_EPOCH)
            kept = kept[drop:]
            position -= drop
            for i in range(position):
                kept[i] = Link(kept[i].send.wiped(), kept[i].recv)
        half, index, key = kept[position].send.send()
        kept[position] = Link(half, kept[position].recv)
        return (Chain(self.direction, self.current_epoch, epoch, tuple(kept), self.next_root,
                      self.params), index, key)

    def recv_key(self, epoch: int, index: int) -> tuple[Chain, bytes]:
        """``(chain after, key)`` for a received message of chain epoch ``epoch``.

        Raises:
            SpqrEpochOutOfRange: the epoch is ahead of the chain or already dropped.
            SpqrKeyJump, SpqrKeyTrimmed, SpqrKeyAlreadyRequested: see :meth:`ChainHalf.recv`.
        """
        links = self.links
        back = self.current_epoch - epoch
        if back < 0 or back >= len(links):
            raise SpqrEpochOutOfRange(f"SPQR chain epoch {epoch} not available")
        position = len(links) - 1 - back
        link = links[position]
        half = link.recv
        params = self.params
        if index == half.ctr + 1 and len(half.skipped) < params.trim_size \
                and len(half.next_key) == 32:
            # The next key in order, the usual case: ChainHalf.recv's last step inlined.
            next_key, key = hkdf64_halves(half.next_key, index.to_bytes(4, "big") + CHAIN_NEXT)
            half = _new(ChainHalf, (index, next_key, half.skipped))
        else:
            half, key = half.recv(index, params)
        link = _new(Link, (link.send, half))
        if len(links) == 1:
            links = (link,)
        elif position == len(links) - 1:
            links = (*links[:-1], link)
        else:
            links = (*links[:position], link, *links[position + 1:])
        return (_new(Chain, (self.direction, self.current_epoch, self.send_epoch, links,
                             self.next_root, params)), key)
