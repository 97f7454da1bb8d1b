"""The ML-KEM braid: SPQR V1's eleven SCKA states (spqr-digest §4).

Theory of operation. Epochs start at 1 and alternate roles: in odd epochs Alice is the
*EK sender* (she samples an ML-KEM-768 key pair and trickles out its header, then its
ek), Bob the *CT sender* (he encapsulates as soon as the header is complete, trickles
out ct1, and ct2 once he has ek and knows ct1 arrived). Every message carries at most
one 32-byte chunk. The CT sender learns the epoch secret S_e when it sends its first
ct1 chunk; the EK sender when ct2 is complete and its MAC, keyed by S_e, verifies. The
CT sender of epoch e becomes the EK sender of e+1 on the first message of e+1.

Receive rules common to all states: a message of a later epoch is an error (except
exactly e+1 in ``Ct2Sampled``), one of an earlier epoch leaves the state as it is, and
payloads a state does not expect are ignored.

States are immutable values; :func:`send` and :func:`recv` return the next state.
Randomness comes in as ``rng``; ``keygen`` exists so that tests can replay recorded
key pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from ..keys import Random
from . import incremental
from .authenticator import MAC_SIZE, Authenticator
from .erasure import Decoder, Encoder
from .errors import SpqrEpochOutOfRange, SpqrErroneousData
from .incremental import CT1_SIZE, CT2_SIZE, EK_SIZE, HEADER_SIZE, EncapsState, KeyPair
from .kdf import scka_key
from .wire import Chunk, PayloadType, SpqrMessage

KeyGen = Callable[[Random], KeyPair]

#: ``tuple.__new__``: makes a named tuple from a tuple of its fields without the generated
#: constructor (or ``_make``, slower still), for the per-message paths.
_new = tuple.__new__


# States are named tuples: immutable like frozen dataclasses and about half the cost to
# make, which counts since every message sent (and every chunk received) makes one. Their
# reprs show the class and epoch only: most fields are keys or key material. As tuples,
# two states compare equal only with the same fields in the same order, and no two
# classes share their field types.

def _state_repr(state: tuple[object, ...]) -> str:
    return f"{type(state).__name__}(epoch={state[0]}, <keys redacted>)"


# -- EK-sender states ------------------------------------------------------------------------

class KeysUnsampled(NamedTuple):
    """1: no key pair yet; the next send samples one."""

    epoch: int
    auth: Authenticator

    def __repr__(self) -> str:
        return _state_repr(self)


class KeysSampled(NamedTuple):
    """2: sending header chunks, waiting for the first ct1 chunk."""

    epoch: int
    auth: Authenticator
    keys: KeyPair
    sending_hdr: Encoder

    def __repr__(self) -> str:
        return _state_repr(self)


class HeaderSent(NamedTuple):
    """3: sending ek chunks, collecting ct1."""

    epoch: int
    auth: Authenticator
    dk: bytes
    sending_ek: Encoder
    receiving_ct1: Decoder

    def __repr__(self) -> str:
        return _state_repr(self)


class Ct1Received(NamedTuple):
    """4: has ct1; sending ek chunks that also acknowledge ct1."""

    epoch: int
    auth: Authenticator
    dk: bytes
    ct1: bytes
    sending_ek: Encoder

    def __repr__(self) -> str:
        return _state_repr(self)


class EkSentCt1Received(NamedTuple):
    """5: ct2 started arriving (so ek arrived); acknowledging ct1, collecting ct2."""

    epoch: int
    auth: Authenticator
    dk: bytes
    ct1: bytes
    receiving_ct2: Decoder

    def __repr__(self) -> str:
        return _state_repr(self)


# -- CT-sender states ------------------------------------------------------------------------

_HEADER_DECODER = Decoder(HEADER_SIZE + MAC_SIZE)


class NoHeaderReceived(NamedTuple):
    """6: collecting the header."""

    epoch: int
    auth: Authenticator
    receiving_hdr: Decoder = _HEADER_DECODER

    def __repr__(self) -> str:
        return _state_repr(self)


class HeaderReceived(NamedTuple):
    """7: has an authenticated header; the next send encapsulates."""

    epoch: int
    auth: Authenticator
    header: bytes

    def __repr__(self) -> str:
        return _state_repr(self)


class Ct1Sampled(NamedTuple):
    """8: sending ct1 chunks, collecting ek."""

    epoch: int
    auth: Authenticator
    encaps: EncapsState
    ct1: bytes
    sending_ct1: Encoder
    receiving_ek: Decoder

    def __repr__(self) -> str:
        return _state_repr(self)


class EkReceivedCt1Sampled(NamedTuple):
    """9: has ek, still sending ct1 until the peer acknowledges it."""

    epoch: int
    auth: Authenticator
    encaps: EncapsState
    ek: bytes
    ct1: bytes
    sending_ct1: Encoder

    def __repr__(self) -> str:
        return _state_repr(self)


class Ct1Acknowledged(NamedTuple):
    """10: the peer has ct1; collecting the rest of ek."""

    epoch: int
    auth: Authenticator
    encaps: EncapsState
    ct1: bytes
    receiving_ek: Decoder

    def __repr__(self) -> str:
        return _state_repr(self)


class Ct2Sampled(NamedTuple):
    """11: sending ct2 chunks until the peer's first message of the next epoch."""

    epoch: int
    auth: Authenticator
    sending_ct2: Encoder

    def __repr__(self) -> str:
        return _state_repr(self)


BraidState = (KeysUnsampled | KeysSampled | HeaderSent | Ct1Received | EkSentCt1Received
              | NoHeaderReceived | HeaderReceived | Ct1Sampled | EkReceivedCt1Sampled
              | Ct1Acknowledged | Ct2Sampled)


def initial_a(auth_key: bytes) -> KeysUnsampled:
    """Alice's (A2B) first state."""
    return KeysUnsampled(1, Authenticator.initial(auth_key))


def initial_b(auth_key: bytes) -> NoHeaderReceived:
    """Bob's (B2A) first state."""
    return NoHeaderReceived(1, Authenticator.initial(auth_key))


@dataclass(frozen=True, slots=True)
class Sent:
    """What :func:`send` produced: the next state, the payload, maybe an epoch secret."""

    state: BraidState
    epoch: int
    payload: PayloadType
    chunk: Chunk | None = None
    secret: bytes | None = field(default=None, repr=False)


# -- transitions ---------------------------------------------------------------------------

def sample_keys(state: KeysUnsampled, keys: KeyPair) -> tuple[KeysSampled, Chunk]:
    """KeysUnsampled -> KeysSampled with ``keys``: authenticate the header, emit chunk 0."""
    mac = state.auth.mac_header(state.epoch, keys.header)
    encoder, chunk = Encoder(keys.header + mac).next()
    return KeysSampled(state.epoch, state.auth, keys, encoder), chunk


def send(state: BraidState, rng: Random, *, keygen: KeyGen = incremental.generate) -> Sent:
    """One message's worth of braid: the payload to send and the state after.

    ``rng`` is drawn from only in ``KeysUnsampled`` (through ``keygen``, 64 bytes) and in
    ``HeaderReceived`` (the 32-byte encapsulation message).
    """
    after, epoch, payload, chunk_index, chunk_data, secret = step_send(state, rng, keygen)
    chunk = None if chunk_data is None else Chunk(chunk_index, chunk_data)
    return Sent(after, epoch, PayloadType(payload), chunk, secret)


# Payload types as plain ints for the per-message path (PayloadType members compare equal).
_NONE, _HDR, _EK, _EK_CT1_ACK, _CT1_ACK, _CT1, _CT2 = range(7)

#: What :func:`step_send` returns: the state after, the epoch, the payload type, the
#: chunk's index and data (``0, None`` without a chunk), and the epoch secret if one was
#: made here.
Step = tuple[BraidState, int, int, int, bytes | None, bytes | None]


def step_send(state: BraidState, rng: Random, keygen: KeyGen = incremental.generate) -> Step:
    """:func:`send` as a plain tuple, without the :class:`Sent` and :class:`Chunk` objects
    (the per-message path)."""
    e = state.epoch
    # Most messages of an epoch only emit the next chunk of an encoder: these first, the
    # state after made with _new (no field-by-field constructor).
    if isinstance(state, KeysSampled):
        encoder, index, data = state.sending_hdr.advance()
        return (_new(KeysSampled, (e, state.auth, state.keys, encoder)), e, _HDR, index, data,
                None)
    if isinstance(state, HeaderSent):
        encoder, index, data = state.sending_ek.advance()
        return (_new(HeaderSent, (e, state.auth, state.dk, encoder, state.receiving_ct1)), e,
                _EK, index, data, None)
    if isinstance(state, Ct1Received):
        encoder, index, data = state.sending_ek.advance()
        return (_new(Ct1Received, (e, state.auth, state.dk, state.ct1, encoder)), e,
                _EK_CT1_ACK, index, data, None)
    if isinstance(state, Ct1Sampled):
        encoder, index, data = state.sending_ct1.advance()
        return (_new(Ct1Sampled, (e, state.auth, state.encaps, state.ct1, encoder,
                                  state.receiving_ek)), e, _CT1, index, data, None)
    if isinstance(state, EkReceivedCt1Sampled):
        encoder, index, data = state.sending_ct1.advance()
        return (_new(EkReceivedCt1Sampled, (e, state.auth, state.encaps, state.ek, state.ct1,
                                            encoder)), e, _CT1, index, data, None)
    if isinstance(state, Ct2Sampled):
        encoder, index, data = state.sending_ct2.advance()
        return _new(Ct2Sampled, (e, state.auth, encoder)), e, _CT2, index, data, None
    if isinstance(state, EkSentCt1Received):
        return state, e, _CT1_ACK, 0, None, None
    if isinstance(state, NoHeaderReceived | Ct1Acknowledged):
        return state, e, _NONE, 0, None, None
    if isinstance(state, KeysUnsampled):
        sampled, chunk = sample_keys(state, keygen(rng))
        return sampled, e, _HDR, chunk.index, chunk.data, None
    if isinstance(state, HeaderReceived):
        ct1, encaps, shared = incremental.encaps1(state.header, rng)
        secret = scka_key(shared, e)
        auth = state.auth.update(e, secret)
        encoder, index, data = Encoder(ct1).advance()
        return (Ct1Sampled(e, auth, encaps, ct1, encoder, Decoder(EK_SIZE)), e, _CT1, index,
                data, secret)
    raise TypeError(f"not a braid state: {type(state).__name__}")


def _send_ct2(epoch: int, auth: Authenticator, encaps: EncapsState, ek: bytes,
              ct1: bytes) -> Ct2Sampled:
    ct2 = incremental.encaps2(ek, encaps)
    mac = auth.mac_ciphertext(epoch, ct1 + ct2)
    return Ct2Sampled(epoch, auth, Encoder(ct2 + mac))


def _check_ek(encaps: EncapsState, ek: bytes) -> None:
    if not incremental.ek_matches_header(ek, encaps.header):
        raise SpqrErroneousData("SPQR encapsulation key does not match its header")


def recv(state: BraidState, msg: SpqrMessage) -> tuple[BraidState, bytes | None]:
    """The state after receiving ``msg``, and the epoch secret if one completed here.

    Raises:
        SpqrEpochOutOfRange: ``msg.epoch`` is ahead of this state.
        SpqrAuthenticationFailed: a completed header or ciphertext fails its MAC.
        SpqrErroneousData: a completed ek does not match the authenticated header.
    """
    chunk = msg.chunk
    if chunk is None:
        return step_recv(state, msg.epoch, msg.payload, 0, None)
    return step_recv(state, msg.epoch, msg.payload, chunk.index, chunk.data)


#: The payload types each state takes in (see :func:`step_recv`); others leave it as is.
_CONSUMES: dict[type, frozenset[int]] = {
    KeysUnsampled: frozenset(), KeysSampled: frozenset({_CT1}), HeaderSent: frozenset({_CT1}),
    Ct1Received: frozenset({_CT2}), EkSentCt1Received: frozenset({_CT2}),
    NoHeaderReceived: frozenset({_HDR}), HeaderReceived: frozenset(),
    Ct1Sampled: frozenset({_EK, _EK_CT1_ACK}),
    EkReceivedCt1Sampled: frozenset({_CT1_ACK, _EK_CT1_ACK}),
    Ct1Acknowledged: frozenset({_EK, _EK_CT1_ACK}), Ct2Sampled: frozenset(),
}


def step_recv(state: BraidState, epoch: int, payload: int, chunk_index: int,
              chunk: bytes | None) -> tuple[BraidState, bytes | None]:
    """:func:`recv` on a message's decoded fields (see :func:`.wire.decode_fields`)."""
    e = state.epoch
    if epoch != e:
        if isinstance(state, Ct2Sampled) and epoch == e + 1:
            return KeysUnsampled(e + 1, state.auth), None
        if epoch > e:
            raise SpqrEpochOutOfRange(f"SPQR message epoch {epoch} ahead of {e}")
        return state, None
    if payload not in _CONSUMES[type(state)]:
        return state, None  # most messages: nothing this state takes in
    return _consume(state, payload, chunk_index, chunk)


def _consume(state: BraidState, payload: int, chunk_index: int,
             chunk: bytes | None) -> tuple[BraidState, bytes | None]:
    """The transitions on a payload of the state's own epoch."""
    e = state.epoch
    match state:
        case KeysSampled() if payload == _CT1 and chunk is not None:
            return HeaderSent(e, state.auth, state.keys.dk, Encoder(state.keys.ek),
                              Decoder(CT1_SIZE).add_data(chunk_index, chunk)), None
        case HeaderSent() if payload == _CT1 and chunk is not None:
            decoder = state.receiving_ct1.add_data(chunk_index, chunk)
            ct1 = decoder.decoded()
            if ct1 is None:
                return HeaderSent(e, state.auth, state.dk, state.sending_ek, decoder), None
            return Ct1Received(e, state.auth, state.dk, ct1, state.sending_ek), None
        case Ct1Received() if payload == _CT2 and chunk is not None:
            decoder = Decoder(CT2_SIZE + MAC_SIZE).add_data(chunk_index, chunk)
            return EkSentCt1Received(e, state.auth, state.dk, state.ct1, decoder), None
        case EkSentCt1Received() if payload == _CT2 and chunk is not None:
            decoder = state.receiving_ct2.add_data(chunk_index, chunk)
            value = decoder.decoded()
            if value is None:
                return EkSentCt1Received(e, state.auth, state.dk, state.ct1, decoder), None
            ct2, mac = value[:CT2_SIZE], value[CT2_SIZE:]
            secret = scka_key(incremental.decapsulate(state.dk, state.ct1, ct2), e)
            auth = state.auth.update(e, secret)
            auth.verify_ciphertext(e, state.ct1 + ct2, mac)
            return NoHeaderReceived(e + 1, auth), secret
        case NoHeaderReceived() if payload == _HDR and chunk is not None:
            decoder = state.receiving_hdr.add_data(chunk_index, chunk)
            value = decoder.decoded()
            if value is None:
                return NoHeaderReceived(e, state.auth, decoder), None
            header, mac = value[:HEADER_SIZE], value[HEADER_SIZE:]
            state.auth.verify_header(e, header, mac)
            return HeaderReceived(e, state.auth, header), None
        case Ct1Sampled() if payload in (_EK, _EK_CT1_ACK) and chunk is not None:
            acked = payload == _EK_CT1_ACK
            decoder = state.receiving_ek.add_data(chunk_index, chunk)
            ek = decoder.decoded()
            if ek is None:
                if acked:
                    return Ct1Acknowledged(e, state.auth, state.encaps, state.ct1,
                                           decoder), None
                return Ct1Sampled(e, state.auth, state.encaps, state.ct1, state.sending_ct1,
                                  decoder), None
            _check_ek(state.encaps, ek)
            if acked:
                return _send_ct2(e, state.auth, state.encaps, ek, state.ct1), None
            return EkReceivedCt1Sampled(e, state.auth, state.encaps, ek, state.ct1,
                                        state.sending_ct1), None
        case EkReceivedCt1Sampled() if payload in (_CT1_ACK, _EK_CT1_ACK):
            return _send_ct2(e, state.auth, state.encaps, state.ek, state.ct1), None
        case Ct1Acknowledged() if payload in (_EK, _EK_CT1_ACK) and chunk is not None:
            decoder = state.receiving_ek.add_data(chunk_index, chunk)
            ek = decoder.decoded()
            if ek is None:
                return Ct1Acknowledged(e, state.auth, state.encaps, state.ct1, decoder), None
            _check_ek(state.encaps, ek)
            return _send_ct2(e, state.auth, state.encaps, ek, state.ct1), None
    return state, None
