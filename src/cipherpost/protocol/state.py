"""Session state and session records (digest §4.5, §4.9).

A :class:`SessionRecord` holds the current :class:`SessionState` and up to 40 archived
ones, newest first. States are plain mutable objects; the session cipher never mutates
one until a message has fully verified, so a rejected message changes nothing.

Records serialize as a format byte and a compact struct layout (format 3, below), fast
enough to write on every message as a database-backed client does. Format 3 is format 2
plus each state's SPQR state (:mod:`.spqr.storage`); a format-2 state has none, which is
V0 (no SPQR). Format 1 (libsignal's protobuf field numbers) still loads through
:mod:`.state_v1`; ``tests/golden/`` pins a sample of every format.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .constants import (
    ARCHIVED_STATES_MAX_LENGTH,
    CURRENT_VERSION,
    MAX_MESSAGE_KEYS,
    MAX_RECEIVER_CHAINS,
)
from .errors import InvalidMessage, ProtocolError
from .keys import IdentityKey, KeyPair, PrivateKey, PublicKey
from .spqr import storage as pq_storage
from .spqr.ratchet import PqRatchetState

RECORD_FORMAT = 3
_NO_PQ = PqRatchetState()


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


class SenderChain:
    """Our sending chain: our ratchet key pair and the chain key at ``index``.

    A chain loaded from storage keeps its key pair as the stored bytes until the pair is
    asked for (a DH ratchet step needs the private key); sending needs only ``public``.
    """

    __slots__ = ("_pair", "_private", "chain_key", "header", "index", "public")

    def __init__(self, ratchet: KeyPair, chain_key: bytes, index: int) -> None:
        self._pair: KeyPair | None = ratchet
        self._private = b""
        #: The ratchet public key, serialized (33 bytes).
        self.public = ratchet.public.serialize()
        self.chain_key = chain_key
        self.index = index
        #: The message header up to the counter (:func:`.messages.header_prefix`), kept
        #: by the session cipher once made; never stored.
        self.header: bytes | None = None

    @classmethod
    def _stored(cls, public: bytes, private: bytes, chain_key: bytes,
                index: int) -> SenderChain:
        """A chain from checked stored bytes (see :func:`_decode_state`)."""
        chain = cls.__new__(cls)
        chain._pair = None
        chain._private = private
        chain.public = public
        chain.chain_key = chain_key
        chain.index = index
        chain.header = None
        return chain

    @property
    def ratchet(self) -> KeyPair:
        """Our ratchet key pair."""
        pair = self._pair
        if pair is None:
            pair = self._pair = KeyPair(PublicKey.from_stored(self.public),
                                        PrivateKey.from_stored(self._private))
        return pair

    def private_bytes(self) -> bytes:
        """The ratchet private key's 32 stored bytes."""
        pair = self._pair
        return self._private if pair is None else pair.private.serialize()


@dataclass(slots=True, repr=False)
class PendingPreKey:
    """What an initiator repeats in every PreKey message until the responder answers."""

    pre_key_id: int | None
    signed_pre_key_id: int
    base_key: PublicKey
    kyber_pre_key_id: int
    kyber_ciphertext: bytes
    timestamp: int  # seconds


class SessionState:
    """One Double Ratchet session with a remote device.

    The two identity keys are held as their serialized bytes, in both orders (the MACs'
    prefixes), and made into :class:`PublicKey` objects only when asked for. A state
    loaded from storage decodes its receiving chains only when they are first used
    (sending needs none of them), and writes them back verbatim if they never were.
    """

    __slots__ = ("_local", "_pq", "_pq_raw", "_raw_receivers", "_receiver_chains", "_remote",
                 "alice_base_key",
                 "local_registration_id", "mac_receiving", "mac_sending", "pending_pre_key",
                 "previous_counter", "remote_registration_id", "root_key", "sender_chain",
                 "version")

    def __init__(self, *, version: int, local_identity: IdentityKey,
                 remote_identity: IdentityKey, root_key: bytes,
                 sender_chain: SenderChain | None,
                 receiver_chains: list[ReceiverChain] | None, alice_base_key: bytes,
                 local_registration_id: int = 0, remote_registration_id: int = 0,
                 previous_counter: int = 0, pending_pre_key: PendingPreKey | None = None,
                 raw_receivers: tuple[int, bytes] | None = None,
                 pq_ratchet: PqRatchetState = _NO_PQ) -> None:
        self.version = version
        self._pq = pq_ratchet
        self._pq_raw: bytes | None = None
        self._local: IdentityKey | None = local_identity
        self._remote: IdentityKey | None = remote_identity
        local, remote = local_identity.serialize(), remote_identity.serialize()
        #: ``local || remote`` and ``remote || local`` serialized identities: the MAC's
        #: prefix on the messages we send and on those we receive.
        self.mac_sending = local + remote
        self.mac_receiving = remote + local
        self.root_key = root_key
        self.sender_chain = sender_chain
        self.alice_base_key = alice_base_key
        self.local_registration_id = local_registration_id
        self.remote_registration_id = remote_registration_id
        self.previous_counter = previous_counter
        self.pending_pre_key = pending_pre_key
        self._receiver_chains = receiver_chains
        #: ``(count, encoded chains)`` not decoded yet (see :func:`_decode_receivers`).
        self._raw_receivers = raw_receivers if receiver_chains is None else None

    @classmethod
    def _stored(cls, version: int, identities: bytes, root_key: bytes,
                sender_chain: SenderChain | None, alice_base_key: bytes,
                local_registration_id: int, remote_registration_id: int,
                previous_counter: int, pending_pre_key: PendingPreKey | None,
                raw_receivers: tuple[int, bytes], pq_raw: bytes) -> SessionState:
        """A state from checked stored fields (see :func:`_decode_state`)."""
        state = cls.__new__(cls)
        state.version = version
        state._pq = pq_storage.deserialize(pq_raw) if pq_raw else _NO_PQ
        state._pq_raw = pq_raw
        state._local = state._remote = None
        state.mac_sending = identities
        state.mac_receiving = identities[33:] + identities[:33]
        state.root_key = root_key
        state.sender_chain = sender_chain
        state.alice_base_key = alice_base_key
        state.local_registration_id = local_registration_id
        state.remote_registration_id = remote_registration_id
        state.previous_counter = previous_counter
        state.pending_pre_key = pending_pre_key
        state._receiver_chains = None
        state._raw_receivers = raw_receivers
        return state

    @property
    def pq_ratchet(self) -> PqRatchetState:
        """The SPQR state (an immutable value; ``PqRatchetState()`` is V0, no SPQR)."""
        return self._pq

    @pq_ratchet.setter
    def pq_ratchet(self, value: PqRatchetState) -> None:
        if value is not self._pq:
            self._pq = value
            self._pq_raw = None

    def pq_ratchet_bytes(self) -> bytes:
        """The stored form of :attr:`pq_ratchet` (empty for V0), reusing loaded bytes."""
        raw = self._pq_raw
        if raw is None:
            raw = self._pq_raw = pq_storage.serialize(self._pq)
        return raw

    @property
    def local_identity(self) -> IdentityKey:
        """Our identity key."""
        key = self._local
        if key is None:
            key = self._local = PublicKey.from_stored(self.mac_sending[:33])
        return key

    @property
    def remote_identity(self) -> IdentityKey:
        """Their identity key."""
        key = self._remote
        if key is None:
            key = self._remote = PublicKey.from_stored(self.mac_sending[33:])
        return key

    def is_self_session(self) -> bool:
        """True when both identities are the same key (a session with our own device)."""
        return self.mac_sending[:33] == self.mac_sending[33:]

    @property
    def receiver_chains(self) -> list[ReceiverChain]:
        """Receiving chains, oldest first."""
        chains = self._receiver_chains
        if chains is None:
            count, raw = self._raw_receivers or (0, b"")
            chains = self._receiver_chains = _decode_receivers(count, raw)
            self._raw_receivers = None
        return chains

    def receiver_chain(self, ratchet_key: bytes) -> ReceiverChain | None:
        """The receiving chain for a serialized ratchet key, if we still hold it."""
        for chain in self.receiver_chains:
            if chain.ratchet_key.serialize() == ratchet_key:
                return chain
        return None

    def mac_identities(self, *, sending: bool) -> bytes:
        """``sender || receiver`` serialized identity keys, the MAC's prefix."""
        return self.mac_sending if sending else self.mac_receiving

    def add_receiver_chain(self, chain: ReceiverChain) -> None:
        """Append a chain, dropping the oldest beyond ``MAX_RECEIVER_CHAINS``."""
        chains = self.receiver_chains
        chains.append(chain)
        if len(chains) > MAX_RECEIVER_CHAINS:
            del chains[0]

    def __repr__(self) -> str:
        return (f"SessionState(version={self.version}, remote={self.remote_identity!r}, "
                f"spqr=V{self._pq.version}, <keys redacted>)")


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
        """The current storage format (3): a compact struct layout, see :mod:`.state`."""
        current = self.current
        parts = [_RECORD_HEADER.pack(RECORD_FORMAT, current is not None, len(self.previous))]
        if current is not None:
            encoded = _encode_state(current)
            parts.append(_U32.pack(len(encoded)))
            parts.append(encoded)
        for state in self.previous:
            encoded = _encode_state(state)
            parts.append(_U32.pack(len(encoded)))
            parts.append(encoded)
        return b"".join(parts)

    @classmethod
    def deserialize(cls, data: bytes) -> SessionRecord:
        """Load a stored record of any format this version knows (1, 2 or 3).

        Raises:
            InvalidMessage: the bytes are not a record of a known format.
        """
        if not data:
            raise InvalidMessage("empty session record")
        if data[0] == 1:
            from .state_v1 import deserialize_v1
            return deserialize_v1(data)
        fmt = data[0]
        if fmt not in (2, RECORD_FORMAT):
            raise InvalidMessage("unknown session record format")
        try:
            _, has_current, previous = _RECORD_HEADER.unpack_from(data, 0)
            if has_current > 1:
                raise ValueError("bad record header")
            if has_current and not previous:  # the usual record: one state
                (length,) = _U32.unpack_from(data, 4)
                if 8 + length != len(data):
                    raise ValueError("record length mismatch")
                return cls(_decode_state(data[8:], fmt), [])
            pos = _RECORD_HEADER.size
            states = []
            for _ in range(has_current + previous):
                (length,) = _U32.unpack_from(data, pos)
                pos += 4
                if pos + length > len(data):
                    raise ValueError("truncated state")
                states.append(_decode_state(data[pos:pos + length], fmt))
                pos += length
            if pos != len(data):
                raise ValueError("trailing bytes")
        except (struct.error, ValueError, ProtocolError) as exc:
            raise InvalidMessage("malformed session record") from exc
        if has_current:
            return cls(states[0], states[1:])
        return cls(None, states)


# Format 3 (format 2 where noted), little-endian throughout:
#   record  = u8 format(2) | u8 has_current | u16 archived | (u32 length | state)*
#   state   = u8 version | u8 flags | 33s local identity | 33s remote identity | 32s root key
#             | u32 previous counter | u32 local reg id | u32 remote reg id | u8 receivers
#             | u8 len + alice base key
#             | [sender: 33s public | 32s private | 32s chain key | u32 index]
#             | [pending: u32 prekey id | u32 signed id | 33s base key | u32 kyber id
#                | u64 timestamp | u16 len + kyber ciphertext]
#             | [pq (format 3 only): u32 len + SPQR state, see .spqr.storage]
#             | receivers * (33s ratchet key | 32s chain key | u32 index | u16 n
#                            | n * (u32 counter | 32s seed))
# The two identities are packed as one 66-byte field: the state keeps them that way.
_RECORD_HEADER = struct.Struct("<BBH")
_U32 = struct.Struct("<I")
_STATE = struct.Struct("<BB66s32sIIIB")
_SENDER = struct.Struct("<33s32s32sI")
_PENDING = struct.Struct("<II33sIQH")
_RECEIVER = struct.Struct("<33s32sIH")
_SKIPPED = struct.Struct("<I32s")
_HAS_SENDER, _HAS_PENDING, _HAS_PREKEY_ID, _HAS_PQ = 1, 2, 4, 8
_DJB = 0x05


def _encode_state(s: SessionState) -> bytes:
    flags = 0
    raw = s._raw_receivers
    sender = s.sender_chain
    pending = s.pending_pre_key
    if sender is not None:
        flags |= _HAS_SENDER
    if pending is not None:
        flags |= _HAS_PENDING
        if pending.pre_key_id is not None:
            flags |= _HAS_PREKEY_ID
    pq = s.pq_ratchet_bytes()
    if pq:
        flags |= _HAS_PQ
    base = s.alice_base_key
    parts = [
        _STATE.pack(s.version, flags, s.mac_sending, s.root_key, s.previous_counter,
                    s.local_registration_id, s.remote_registration_id,
                    raw[0] if raw is not None else len(s.receiver_chains)),
        _ONE_BYTE[len(base)], base,
    ]
    if sender is not None:
        parts.append(_SENDER.pack(sender.public, sender.private_bytes(), sender.chain_key,
                                  sender.index))
    if pending is not None:
        parts.append(_PENDING.pack(pending.pre_key_id or 0, pending.signed_pre_key_id,
                                   pending.base_key.serialize(), pending.kyber_pre_key_id,
                                   pending.timestamp, len(pending.kyber_ciphertext)))
        parts.append(pending.kyber_ciphertext)
    if pq:
        parts.append(_U32.pack(len(pq)))
        parts.append(pq)
    if raw is not None:
        parts.append(raw[1])
        return b"".join(parts)
    for chain in s.receiver_chains:
        parts.append(_RECEIVER.pack(chain.ratchet_key.serialize(), chain.chain_key,
                                    chain.index, len(chain.skipped)))
        if chain.skipped:
            parts.extend(_SKIPPED.pack(i, seed) for i, seed in chain.skipped.items())
    return b"".join(parts)


_ONE_BYTE = tuple(bytes((i,)) for i in range(256))
_key = PublicKey.from_stored


def _decode_state(data: bytes, fmt: int = RECORD_FORMAT) -> SessionState:
    """Decode one state; every read past its end fails (struct.error or ValueError).

    Everything is checked here, so that a malformed record fails at load and not on later
    use: key type bytes, the private key's clamping, and the receiving chains' sizes and
    key types (their contents are decoded when first needed).
    """
    end = len(data)
    (version, flags, identities, root, previous, local_reg, remote_reg,
     receivers) = _STATE.unpack_from(data, 0)
    if version != CURRENT_VERSION:
        raise ValueError(f"unsupported session version {version}")
    known = _HAS_SENDER | _HAS_PENDING | _HAS_PREKEY_ID | (_HAS_PQ if fmt >= 3 else 0)
    if flags & ~known:
        raise ValueError("unknown state flags")
    if identities[0] != _DJB or identities[33] != _DJB:
        raise ValueError("bad key type in record")
    pos = _STATE.size
    if pos >= end:
        raise ValueError("truncated state")
    base_end = pos + 1 + data[pos]
    alice_base_key = data[pos + 1:base_end]
    pos = base_end
    sender = None
    if flags & _HAS_SENDER:
        public, private, chain_key, index = _SENDER.unpack_from(data, pos)
        pos += _SENDER.size
        if public[0] != _DJB or private[0] & 7 or private[31] & 0x80 or not private[31] & 0x40:
            raise ValueError("bad sender key in record")
        sender = SenderChain._stored(public, private, chain_key, index)
    pending = None
    if flags & _HAS_PENDING:
        pre_key_id, signed_id, base, kyber_id, timestamp, ct_length = _PENDING.unpack_from(
            data, pos)
        pos += _PENDING.size
        ciphertext = data[pos:pos + ct_length]
        pos += ct_length
        pending = PendingPreKey(pre_key_id if flags & _HAS_PREKEY_ID else None, signed_id,
                                _key(base), kyber_id, ciphertext, timestamp)
    pq_raw = b""
    if flags & _HAS_PQ:
        (pq_length,) = _U32.unpack_from(data, pos)
        pos += 4
        pq_raw = data[pos:pos + pq_length]
        pos += pq_length
        if len(pq_raw) != pq_length or not pq_raw:
            raise ValueError("truncated SPQR state")
    start = pos
    for _ in range(receivers):
        key, _chain_key, _index, skipped_count = _RECEIVER.unpack_from(data, pos)
        if key[0] != _DJB:
            raise ValueError("bad key type in record")
        pos += _RECEIVER.size + skipped_count * _SKIPPED.size
    if pos != end:
        raise ValueError("state length mismatch")
    return SessionState._stored(version, identities, root, sender, alice_base_key, local_reg,
                                remote_reg, previous, pending,
                                (receivers, data[start:] if receivers else b""), pq_raw)


def _decode_receivers(count: int, data: bytes) -> list[ReceiverChain]:
    chains = []
    pos = 0
    for _ in range(count):
        key, chain_key, index, skipped_count = _RECEIVER.unpack_from(data, pos)
        pos += _RECEIVER.size
        if skipped_count:
            size = skipped_count * _SKIPPED.size
            skipped = dict(_SKIPPED.iter_unpack(data[pos:pos + size]))
            pos += size
        else:
            skipped = {}
        chains.append(ReceiverChain(_key(key), chain_key, index, skipped))
    return chains
