"""The stored form of a :class:`~.ratchet.PqRatchetState` (Cipherpost's own, versioned).

A session record keeps one of these per session state (see :mod:`..state`). Empty bytes
are V0, a session without SPQR, which is also what every record written before SPQR
means. Otherwise the bytes start with a format byte; format 1, little-endian::

    state       = u8 format(1) | u8 flags (1 braid, 2 chain, 4 negotiation)
                  | [negotiation] | [chain] | [braid]
    negotiation = 32s auth key | u8 direction | u8 min version | params
    params      = u32 max_jump | u32 max_ooo_keys
    chain       = u8 direction | u64 current epoch | u64 send epoch | 32s next root | params
                  | u16 n | n * (half send | half recv)
    half        = u32 ctr | u8 len (0 wiped, or 32) + next key | u32 n | n * (u32 index | 32s key)
    braid       = u8 tag (1..11, the state numbers of :mod:`.braid`) | u64 epoch
                  | 32s root key | 32s mac key | the state's own fields in declaration order:
    bytes       = u16 len + bytes (exact sizes checked per field name)
    encoder     = u32 next index | u16 len + value
    decoder     = u16 value length | u16 n | n * (u16 index | 32s chunk)
    key pair    = 64s header | 1152s ek | u16 len + dk (64 or 2400)
    encaps      = 64s header | 32s m

This is not libsignal's ``PqRatchetState`` protobuf: interop needs only the wire
format, and a struct layout loads and stores on every message at a fraction of the
cost. Everything is checked on load (sizes, tags, epochs, limits), so that a corrupt
record fails there, as :class:`InvalidSpqrState`, and never later as some other error.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from . import braid as b
from .authenticator import Authenticator
from .chain import Chain, ChainHalf, ChainParams, Direction, Link
from .erasure import Decoder, Encoder
from .errors import InvalidSpqrState
from .incremental import (
    CT1_SIZE,
    CT2_SIZE,
    EK_SIZE,
    EXPANDED_DK_SIZE,
    HEADER_SIZE,
    SEED_SIZE,
    EncapsState,
    KeyPair,
)
from .ratchet import Negotiation, PqRatchetState
from .wire import V0, V1

STORAGE_FORMAT = 1

_HAS_BRAID, _HAS_CHAIN, _HAS_NEGOTIATION = 1, 2, 4
_MAC = 32

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_NEGOTIATION = struct.Struct("<32sBBII")
_CHAIN = struct.Struct("<BQQ32sIIH")
_HALF = struct.Struct("<IB")
_SKIPPED = struct.Struct("<I32s")
_BRAID = struct.Struct("<BQ32s32s")
_CHUNK = struct.Struct("<H32s")
_U64_MAX = (1 << 64) - 1

#: Braid states by stored tag, in the order (and with the numbers) of :mod:`.braid`.
_TAGS: tuple[type[Any], ...] = (
    b.KeysUnsampled, b.KeysSampled, b.HeaderSent, b.Ct1Received, b.EkSentCt1Received,
    b.NoHeaderReceived, b.HeaderReceived, b.Ct1Sampled, b.EkReceivedCt1Sampled,
    b.Ct1Acknowledged, b.Ct2Sampled,
)
_TAG_OF = {cls: tag for tag, cls in enumerate(_TAGS, 1)}
#: Each state's own fields after ``epoch`` and ``auth``.
_FIELDS: dict[type[Any], tuple[str, ...]] = {
    b.KeysUnsampled: (),
    b.KeysSampled: ("keys", "sending_hdr"),
    b.HeaderSent: ("dk", "sending_ek", "receiving_ct1"),
    b.Ct1Received: ("dk", "ct1", "sending_ek"),
    b.EkSentCt1Received: ("dk", "ct1", "receiving_ct2"),
    b.NoHeaderReceived: ("receiving_hdr",),
    b.HeaderReceived: ("header",),
    b.Ct1Sampled: ("encaps", "ct1", "sending_ct1", "receiving_ek"),
    b.EkReceivedCt1Sampled: ("encaps", "ek", "ct1", "sending_ct1"),
    b.Ct1Acknowledged: ("encaps", "ct1", "receiving_ek"),
    b.Ct2Sampled: ("sending_ct2",),
}
#: The only sizes each byte string, encoder value and decoder value may have.
_SIZES: dict[str, tuple[int, ...]] = {
    "dk": (SEED_SIZE, EXPANDED_DK_SIZE), "ct1": (CT1_SIZE,), "header": (HEADER_SIZE,),
    "ek": (EK_SIZE,),
    "sending_hdr": (HEADER_SIZE + _MAC,), "receiving_hdr": (HEADER_SIZE + _MAC,),
    "sending_ek": (EK_SIZE,), "receiving_ek": (EK_SIZE,),
    "sending_ct1": (CT1_SIZE,), "receiving_ct1": (CT1_SIZE,),
    "sending_ct2": (CT2_SIZE + _MAC,), "receiving_ct2": (CT2_SIZE + _MAC,),
}


# -- writing ---------------------------------------------------------------------------------

def serialize(state: PqRatchetState) -> bytes:
    """The stored bytes of ``state``; empty for V0."""
    if state.braid is None:
        return b""
    flags = _HAS_BRAID
    parts: list[bytes] = []
    if state.negotiation is not None:
        flags |= _HAS_NEGOTIATION
        n = state.negotiation
        parts.append(_NEGOTIATION.pack(n.auth_key, n.direction, n.min_version,
                                       n.params.max_jump, n.params.max_ooo_keys))
    if state.chain is not None:
        flags |= _HAS_CHAIN
        _write_chain(state.chain, parts)
    _write_braid(state.braid, parts)
    return bytes((STORAGE_FORMAT, flags)) + b"".join(parts)


def _write_half(half: ChainHalf, parts: list[bytes]) -> None:
    parts.append(_HALF.pack(half.ctr, len(half.next_key)))
    parts.append(half.next_key)
    parts.append(_U32.pack(len(half.skipped)))
    parts.extend(_SKIPPED.pack(i, k) for i, k in half.skipped.items())


def _write_chain(chain: Chain, parts: list[bytes]) -> None:
    parts.append(_CHAIN.pack(chain.direction, chain.current_epoch, chain.send_epoch,
                             chain.next_root, chain.params.max_jump, chain.params.max_ooo_keys,
                             len(chain.links)))
    for link in chain.links:
        _write_half(link.send, parts)
        _write_half(link.recv, parts)


def _short(data: bytes) -> bytes:
    return _U16.pack(len(data)) + data


def _write_field(value: object, parts: list[bytes]) -> None:
    if isinstance(value, bytes):
        parts.append(_short(value))
    elif isinstance(value, Encoder):
        parts.append(_U32.pack(value.next_index) + _short(value.message))
    elif isinstance(value, Decoder):
        parts.append(_U16.pack(value.length) + _U16.pack(len(value.chunks)))
        parts.extend(_CHUNK.pack(i, c) for i, c in sorted(value.chunks.items()))
    elif isinstance(value, KeyPair):
        parts.append(value.header + value.ek + _short(value.dk))
    elif isinstance(value, EncapsState):
        parts.append(value.header + value.m)
    else:  # pragma: no cover - every braid field is one of the above
        raise TypeError(f"cannot store {type(value).__name__}")


def _write_braid(state: b.BraidState, parts: list[bytes]) -> None:
    cls = type(state)
    parts.append(_BRAID.pack(_TAG_OF[cls], state.epoch, state.auth.root_key,
                             state.auth.mac_key))
    for name in _FIELDS[cls]:
        _write_field(getattr(state, name), parts)


# -- reading ---------------------------------------------------------------------------------

class _Reader:
    __slots__ = ("at", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        values = fmt.unpack_from(self.data, self.at)  # struct.error past the end
        self.at += fmt.size
        return values

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise ValueError("truncated")
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def short(self) -> bytes:
        (n,) = self.unpack(_U16)
        return self.take(n)


def deserialize(data: bytes) -> PqRatchetState:
    """Load what :func:`serialize` wrote (empty bytes: V0).

    Raises:
        InvalidSpqrState: malformed, an unknown format, or values no state can hold.
    """
    if not data:
        return PqRatchetState()
    try:
        return _read_state(_Reader(bytes(data)))
    except (struct.error, ValueError, KeyError, IndexError) as exc:
        raise InvalidSpqrState("malformed stored SPQR state") from exc


def _read_state(r: _Reader) -> PqRatchetState:
    fmt, flags = r.unpack(_U8)[0], r.unpack(_U8)[0]
    if fmt != STORAGE_FORMAT:
        raise InvalidSpqrState("unknown stored SPQR state format")
    if flags & ~(_HAS_BRAID | _HAS_CHAIN | _HAS_NEGOTIATION) or not flags & _HAS_BRAID \
            or not flags & (_HAS_CHAIN | _HAS_NEGOTIATION):
        raise ValueError("bad flags")
    negotiation = chain = None
    if flags & _HAS_NEGOTIATION:
        auth_key, direction, min_version, jump, ooo = r.unpack(_NEGOTIATION)
        if min_version not in (V0, V1):
            raise ValueError("bad minimum version")
        negotiation = Negotiation(auth_key, Direction(direction), min_version,
                                  ChainParams(jump, ooo))
    if flags & _HAS_CHAIN:
        chain = _read_chain(r)
    state = _read_braid(r)
    if r.at != len(r.data):
        raise ValueError("trailing bytes")
    return PqRatchetState(state, chain, negotiation)


def _read_half(r: _Reader) -> ChainHalf:
    ctr, length = r.unpack(_HALF)
    if length not in (0, 32):
        raise ValueError("bad chain key")
    next_key = r.take(length)
    (count,) = r.unpack(_U32)
    if count > len(r.data):  # cheap bound before allocating
        raise ValueError("bad skipped count")
    size = count * _SKIPPED.size
    skipped = dict(_SKIPPED.iter_unpack(r.take(size)))
    if len(skipped) != count or any(i >= ctr for i in skipped):
        raise ValueError("bad skipped keys")
    return ChainHalf(ctr, next_key, MappingProxyType(skipped))


def _read_chain(r: _Reader) -> Chain:
    direction, current, send_epoch, next_root, jump, ooo, count = r.unpack(_CHAIN)
    if not 0 < count <= current + 1 or send_epoch > current:
        raise ValueError("bad chain epochs")
    links = tuple(Link(_read_half(r), _read_half(r)) for _ in range(count))
    return Chain(Direction(direction), current, send_epoch, links, next_root,
                 ChainParams(jump, ooo))


def _read_bytes(r: _Reader, name: str) -> bytes:
    value = r.short()
    if len(value) not in _SIZES[name]:
        raise ValueError(f"bad {name} size")
    return value


def _read_encoder(r: _Reader, name: str) -> Encoder:
    (next_index,) = r.unpack(_U32)
    return Encoder(_read_bytes(r, name), next_index)


def _read_decoder(r: _Reader, name: str) -> Decoder:
    length, count = r.unpack(_U16), r.unpack(_U16)
    if length[0] not in _SIZES[name]:
        raise ValueError(f"bad {name} size")
    chunks = dict(_CHUNK.iter_unpack(r.take(count[0] * _CHUNK.size)))
    if len(chunks) != count[0]:
        raise ValueError("repeated chunk index")
    return Decoder(length[0], MappingProxyType(chunks))


def _read_key_pair(r: _Reader, _name: str) -> KeyPair:
    header, ek = r.take(HEADER_SIZE), r.take(EK_SIZE)
    return KeyPair(header, ek, _read_bytes(r, "dk"))


def _read_encaps(r: _Reader, _name: str) -> EncapsState:
    return EncapsState(r.take(HEADER_SIZE), r.take(32))


def _reader_for(name: str) -> Callable[[_Reader, str], object]:
    if name.startswith("sending_"):
        return _read_encoder
    if name.startswith("receiving_"):
        return _read_decoder
    return {"keys": _read_key_pair, "encaps": _read_encaps}.get(name, _read_bytes)


_READERS: Mapping[str, Callable[[_Reader, str], object]] = {
    name: _reader_for(name) for fields in _FIELDS.values() for name in fields}


def _read_braid(r: _Reader) -> b.BraidState:
    tag, epoch, root_key, mac_key = r.unpack(_BRAID)
    if not 1 <= tag <= len(_TAGS) or not 1 <= epoch < _U64_MAX:
        raise ValueError("bad braid state")
    cls = _TAGS[tag - 1]
    values = {name: _READERS[name](r, name) for name in _FIELDS[cls]}
    state: b.BraidState = cls(epoch=epoch, auth=Authenticator(root_key, mac_key), **values)
    return state


__all__ = ["STORAGE_FORMAT", "deserialize", "serialize"]
