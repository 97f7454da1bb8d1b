"""Session state and session records (digest §4.5, §4.9).

A :class:`SessionRecord` holds the current :class:`SessionState` and up to 40 archived
ones, newest first. States are plain mutable objects; the session cipher never mutates
one until a message has fully verified, so a rejected message changes nothing.

Records serialize as ``format byte || RecordStructure`` using libsignal's field numbers,
so later formats can keep loading every earlier one (``tests/golden/`` pins samples).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import protobuf as pb
from .constants import ARCHIVED_STATES_MAX_LENGTH, MAX_MESSAGE_KEYS, MAX_RECEIVER_CHAINS
from .errors import InvalidMessage, ProtocolError
from .keys import IdentityKey, KeyPair, PrivateKey, PublicKey

RECORD_FORMAT = 1


@dataclass(slots=True, repr=False)
class ReceiverChain:
    """A receiving chain: their ratchet key, our chain key, and skipped message-key seeds."""

    ratchet_key: PublicKey
    chain_key: bytes
    index: int
    #: counter -> message-key seed; insertion order is counter order (oldest first).
    skipped: dict[int, bytes] = field(default_factory=dict)

    def add_skipped(self, seeds: list[tuple[int, bytes]]) -> None:
        """Store skipped seeds, keeping only the newest ``MAX_MESSAGE_KEYS``."""
        skipped = self.skipped
        for counter, seed in seeds[-MAX_MESSAGE_KEYS:]:
            skipped[counter] = seed
        excess = len(skipped) - MAX_MESSAGE_KEYS
        if excess > 0:
            for counter in list(skipped)[:excess]:
                del skipped[counter]


@dataclass(slots=True, repr=False)
class SenderChain:
    """Our sending chain: our ratchet key pair and the chain key at ``index``."""

    ratchet: KeyPair
    chain_key: bytes
    index: int


@dataclass(slots=True, repr=False)
class PendingPreKey:
    """What an initiator repeats in every PreKey message until the responder answers."""

    pre_key_id: int | None
    signed_pre_key_id: int
    base_key: PublicKey
    kyber_pre_key_id: int
    kyber_ciphertext: bytes
    timestamp: int  # seconds


@dataclass(slots=True, repr=False)
class SessionState:
    """One Double Ratchet session with a remote device."""

    version: int
    local_identity: IdentityKey
    remote_identity: IdentityKey
    root_key: bytes
    sender_chain: SenderChain | None
    receiver_chains: list[ReceiverChain]
    alice_base_key: bytes
    local_registration_id: int = 0
    remote_registration_id: int = 0
    previous_counter: int = 0
    pending_pre_key: PendingPreKey | None = None

    def receiver_chain(self, ratchet_key: PublicKey) -> ReceiverChain | None:
        """The receiving chain for ``ratchet_key``, if we still hold it."""
        for chain in self.receiver_chains:
            if chain.ratchet_key == ratchet_key:
                return chain
        return None

    def add_receiver_chain(self, chain: ReceiverChain) -> None:
        """Append a chain, dropping the oldest beyond ``MAX_RECEIVER_CHAINS``."""
        self.receiver_chains.append(chain)
        if len(self.receiver_chains) > MAX_RECEIVER_CHAINS:
            del self.receiver_chains[0]

    def __repr__(self) -> str:
        return (f"SessionState(version={self.version}, remote={self.remote_identity!r}, "
                f"<keys redacted>)")


class SessionRecord:
    """The current session with a device plus archived ones (newest first)."""

    __slots__ = ("current", "previous")

    def __init__(self, current: SessionState | None = None,
                 previous: list[SessionState] | None = None) -> None:
        self.current = current
        self.previous: list[SessionState] = previous if previous is not None else []

    def promote_state(self, state: SessionState) -> None:
        """Make ``state`` current, archiving the old current state."""
        self.archive_current_state()
        self.current = state

    def promote_previous(self, index: int) -> None:
        """Make archived state ``index`` current again."""
        state = self.previous.pop(index)
        self.promote_state(state)

    def archive_current_state(self) -> None:
        """Move the current state to the archive (it never sends PreKey messages again)."""
        if self.current is None:
            return
        self.current.pending_pre_key = None
        self.previous.insert(0, self.current)
        del self.previous[ARCHIVED_STATES_MAX_LENGTH:]
        self.current = None

    def states(self) -> list[SessionState]:
        """Current (if any) then archived states."""
        return ([self.current] if self.current is not None else []) + self.previous

    def __repr__(self) -> str:
        return f"SessionRecord(current={self.current!r}, archived={len(self.previous)})"

    # -- storage ---------------------------------------------------------------------------

    def serialize(self) -> bytes:
        """``format byte || RecordStructure`` (libsignal field numbers)."""
        parts = []
        if self.current is not None:
            parts.append(pb.field_bytes(1, _encode_state(self.current)))
        parts.extend(pb.field_bytes(2, _encode_state(s)) for s in self.previous)
        return bytes((RECORD_FORMAT,)) + b"".join(parts)

    @classmethod
    def deserialize(cls, data: bytes) -> SessionRecord:
        """Load a stored record.

        Raises:
            InvalidMessage: the bytes are not a record of a known format.
        """
        if not data or data[0] != RECORD_FORMAT:
            raise InvalidMessage("unknown session record format")
        try:
            fields = pb.decode(data[1:])
            current = pb.get_bytes(fields, 1)
            return cls(
                _decode_state(current) if current is not None else None,
                [_decode_state(s) for s in pb.get_repeated_bytes(fields, 2)],
            )
        except (pb.DecodeError, ValueError, ProtocolError) as exc:
            raise InvalidMessage("malformed session record") from exc


def _encode_chain_key(index: int, key: bytes) -> bytes:
    return pb.field_varint(1, index) + pb.field_bytes(2, key)


def _encode_state(s: SessionState) -> bytes:
    parts = [
        pb.field_varint(1, s.version),
        pb.field_bytes(2, s.local_identity.serialize()),
        pb.field_bytes(3, s.remote_identity.serialize()),
        pb.field_bytes(4, s.root_key),
        pb.field_varint(5, s.previous_counter),
    ]
    if s.sender_chain is not None:
        c = s.sender_chain
        parts.append(pb.field_bytes(6, pb.join((
            pb.field_bytes(1, c.ratchet.public.serialize()),
            pb.field_bytes(2, c.ratchet.private.serialize()),
            pb.field_bytes(3, _encode_chain_key(c.index, c.chain_key)),
        ))))
    for r in s.receiver_chains:
        keys = b"".join(
            pb.field_bytes(4, pb.field_varint(1, i) + pb.field_bytes(5, seed))
            for i, seed in r.skipped.items()
        )
        parts.append(pb.field_bytes(7, pb.join((
            pb.field_bytes(1, r.ratchet_key.serialize()),
            pb.field_bytes(3, _encode_chain_key(r.index, r.chain_key)),
            keys,
        ))))
    p = s.pending_pre_key
    if p is not None:
        pending = [pb.field_varint(1, p.pre_key_id)] if p.pre_key_id is not None else []
        pending += [
            pb.field_bytes(2, p.base_key.serialize()),
            pb.field_varint(3, p.signed_pre_key_id),
            pb.field_varint(4, p.timestamp),
        ]
        parts.append(pb.field_bytes(9, b"".join(pending)))
        parts.append(pb.field_bytes(14, pb.field_varint(1, p.kyber_pre_key_id)
                                    + pb.field_bytes(2, p.kyber_ciphertext)))
    parts += [
        pb.field_varint(10, s.remote_registration_id),
        pb.field_varint(11, s.local_registration_id),
        pb.field_bytes(13, s.alice_base_key),
    ]
    return b"".join(parts)


def _req_bytes(f: pb.Fields, n: int) -> bytes:
    v = pb.get_bytes(f, n)
    if v is None:
        raise pb.DecodeError(f"missing field {n}")
    return v


def _req_int(f: pb.Fields, n: int) -> int:
    v = pb.get_int(f, n)
    if v is None:
        raise pb.DecodeError(f"missing field {n}")
    return v


def _decode_chain_key(data: bytes) -> tuple[int, bytes]:
    f = pb.decode(data)
    return pb.get_int(f, 1) or 0, _req_bytes(f, 2)


def _decode_state(data: bytes) -> SessionState:
    f = pb.decode(data)
    sender = None
    sender_bytes = pb.get_bytes(f, 6)
    if sender_bytes is not None:
        sf = pb.decode(sender_bytes)
        index, key = _decode_chain_key(_req_bytes(sf, 3))
        pair = KeyPair(PublicKey.deserialize(_req_bytes(sf, 1)), PrivateKey(_req_bytes(sf, 2)))
        sender = SenderChain(pair, key, index)
    receivers = []
    for chain_bytes in pb.get_repeated_bytes(f, 7):
        cf = pb.decode(chain_bytes)
        index, key = _decode_chain_key(_req_bytes(cf, 3))
        skipped = {}
        for mk in pb.get_repeated_bytes(cf, 4):
            mf = pb.decode(mk)
            skipped[pb.get_int(mf, 1) or 0] = _req_bytes(mf, 5)
        receivers.append(ReceiverChain(PublicKey.deserialize(_req_bytes(cf, 1)), key, index,
                                       skipped))
    pending = None
    pending_bytes = pb.get_bytes(f, 9)
    kyber_bytes = pb.get_bytes(f, 14)
    if pending_bytes is not None and kyber_bytes is not None:
        pf = pb.decode(pending_bytes)
        kf = pb.decode(kyber_bytes)
        pending = PendingPreKey(
            pb.get_int(pf, 1), pb.get_int(pf, 3) or 0, PublicKey.deserialize(_req_bytes(pf, 2)),
            pb.get_int(kf, 1) or 0, _req_bytes(kf, 2), pb.get_int(pf, 4) or 0,
        )
    return SessionState(
        version=pb.get_int(f, 1) or 2,
        local_identity=PublicKey.deserialize(_req_bytes(f, 2)),
        remote_identity=PublicKey.deserialize(_req_bytes(f, 3)),
        root_key=_req_bytes(f, 4),
        sender_chain=sender,
        receiver_chains=receivers,
        alice_base_key=pb.get_bytes(f, 13) or b"",
        local_registration_id=pb.get_int(f, 11) or 0,
        remote_registration_id=pb.get_int(f, 10) or 0,
        previous_counter=pb.get_int(f, 5) or 0,
        pending_pre_key=pending,
    )
