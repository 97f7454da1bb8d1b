"""Fuzz targets of the protocol core's newer parsers: SPQR (the field-5 bytes of a
SignalMessage, the braid that consumes them, its stored state, and 1:1 sessions running
it) and sealed sender (envelopes, certificates, the sealed content).

Registered in ``targets.TARGETS`` (``targets.py`` imports this module); the contract is
the same: return, or raise only the documented error type, and a refused input changes
no state. The seeds are built once, deterministically, when the module is imported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random

from cipherpost.protocol import (
    InMemoryProtocolStore,
    ProtocolError,
    decrypt,
    encrypt,
    process_prekey_bundle,
    xeddsa,
)
from cipherpost.protocol import protobuf as pb
from cipherpost.protocol import sealed_sender as ss
from cipherpost.protocol.keys import PrivateKey
from cipherpost.protocol.spqr import storage
from cipherpost.protocol.spqr.chain import Direction
from cipherpost.protocol.spqr.errors import MalformedSpqrMessage, SpqrError
from cipherpost.protocol.spqr.ratchet import (
    PqRatchetState,
    SpqrSettings,
    initial_state,
    recv,
    send,
)
from cipherpost.protocol.spqr.wire import SpqrMessage
from tests.protocol.parties import NOW, make_party

from .targets import _capture, _restore, _split, target

_rng = random.Random(91).randbytes

# -- SPQR: a conversation's states, each with the message it received next -------------------

_AUTH = bytes(range(32, 64))


def _conversation(seed: int, steps: int) -> list[tuple[PqRatchetState, bytes]]:
    """(state, the next message it accepted) at many points of a lossless conversation in
    bursts, a few of each braid state of both sides."""
    rnd = random.Random(seed)
    state = {"A": initial_state(_AUTH, Direction.A2B), "B": initial_state(_AUTH, Direction.B2A)}
    flight: dict[str, list[bytes]] = {"A": [], "B": []}
    seen: dict[tuple[str, str], int] = {}
    pairs: list[tuple[PqRatchetState, bytes]] = []
    for _ in range(steps):
        name = rnd.choice("AB")
        other = "B" if name == "A" else "A"
        for _ in range(rnd.randint(1, 4)):
            sent = send(state[name], rnd.randbytes)
            state[name] = sent.state
            flight[other].append(sent.message)
        while flight[other]:
            data = flight[other].pop(0)
            kind = (other, type(state[other].braid).__name__)
            if seen.get(kind, 0) < 2:
                seen[kind] = seen.get(kind, 0) + 1
                pairs.append((state[other], data))
            state[other], _key = recv(state[other], data)
    return pairs


SPQR_PAIRS = _conversation(7, 160)
SPQR_STATES = [s for s, _m in SPQR_PAIRS]
SPQR_MESSAGES = [m for _s, m in SPQR_PAIRS]


@target("spqr_message", "spqr.wire.SpqrMessage.decode (SignalMessage field 5)",
        "MalformedSpqrMessage", lambda: SPQR_MESSAGES[:12])
def spqr_message(data: bytes) -> None:
    try:
        message = SpqrMessage.decode(data)
    except MalformedSpqrMessage:
        return
    encoded = message.encode()
    assert SpqrMessage.decode(encoded) == message, "decode(encode(m)) != m"
    assert data.startswith(encoded[:1])


@target("spqr_recv", "spqr.ratchet.recv: the braid and chain taking field-5 bytes, at "
        "every braid state of both sides (a selector byte picks the state)",
        "SpqrError (an InvalidMessage); the state (an immutable value) unchanged",
        lambda: [bytes((i,)) + m for i, m in enumerate(SPQR_MESSAGES)])
def spqr_recv(data: bytes) -> None:
    selector, message = _split(data)
    state = SPQR_STATES[selector % len(SPQR_STATES)]
    before = storage.serialize(state)
    try:
        _new, key = recv(state, message)
    except SpqrError:
        return
    finally:
        assert storage.serialize(state) == before, "recv changed the state it was given"
    assert key is None or len(key) == 32


@target("spqr_state", "spqr.storage.deserialize (a stored SPQR state), then send and recv "
        "with the loaded state", "InvalidSpqrState at load; SpqrError after",
        lambda: [storage.serialize(s) for s in SPQR_STATES[::2]])
def spqr_state(data: bytes) -> None:
    try:
        state = storage.deserialize(data)
    except SpqrError:  # InvalidSpqrState, the documented one, is a SpqrError
        return
    once = storage.serialize(state)
    assert storage.serialize(storage.deserialize(once)) == once, "no fixpoint after a load"
    with contextlib.suppress(SpqrError):
        send(state, _rng)
    with contextlib.suppress(SpqrError):
        recv(state, SPQR_MESSAGES[0])


# -- 1:1 sessions running SPQR, and sealed sender over them ------------------------------------

REQUIRED = SpqrSettings.REQUIRED
PQ_ALICE = make_party("pq-alice", _rng, 41)
PQ_BOB = make_party("pq-bob", _rng, 42)
process_prekey_bundle(PQ_ALICE.store, PQ_BOB.address, PQ_BOB.bundle(), rng=_rng, now=NOW,
                      spqr=REQUIRED)
_pq_first = encrypt(PQ_ALICE.store, PQ_BOB.address, b"pq first", now=NOW, rng=_rng)
decrypt(PQ_BOB.store, PQ_ALICE.address, 3, _pq_first.serialized, rng=_rng, spqr=REQUIRED)
_pq_reply = encrypt(PQ_BOB.store, PQ_ALICE.address, b"pq reply", now=NOW, rng=_rng)
decrypt(PQ_ALICE.store, PQ_BOB.address, 2, _pq_reply.serialized, rng=_rng)
#: Whisper messages Bob has not decrypted yet (SPQR field 5 filled).
PQ_WHISPERS = [encrypt(PQ_ALICE.store, PQ_BOB.address, text, now=NOW, rng=_rng).serialized
               for text in (b"pq one", b"pq two", b"pq three")]
PQ_PLAINTEXTS = {b"pq first", b"pq one", b"pq two", b"pq three", b"sealed"}


@target("spqr_session_decrypt", "decrypt of whisper and PreKey messages on a session "
        "running SPQR (field 5 feeds the braid before the MAC is checked)",
        "ProtocolError; Bob's stores unchanged when refused",
        lambda: [b"\x00" + m for m in PQ_WHISPERS] + [b"\x01" + _pq_first.serialized])
def spqr_session_decrypt(data: bytes) -> None:
    selector, message = _split(data)
    message_type = 3 if selector & 1 else 2
    before = _capture(PQ_BOB.store)
    try:
        plaintext = decrypt(PQ_BOB.store, PQ_ALICE.address, message_type, message, rng=_rng,
                            spqr=REQUIRED)
    except ProtocolError:
        assert _capture(PQ_BOB.store) == before, "a refused message changed Bob's stores"
        return
    _restore(PQ_BOB.store, before)
    assert plaintext in PQ_PLAINTEXTS, "a mutated message decrypted to something new"


# Sealed sender: a trust root, a server certificate, Alice's sender certificate.
TRUST_ROOT = PrivateKey(_rng(32))
SERVER_KEY = PrivateKey(_rng(32))
SERVER_CERT = ss.ServerCertificate.create(7, SERVER_KEY.public_key(), TRUST_ROOT, rng=_rng)
UUID_ALICE = "0b8d7a3e-58b4-4c47-9a0e-4f5f6a1b2c3d"
UUID_BOB = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b"
NOW_MS = NOW * 1000
SS_ALICE = make_party(UUID_ALICE, _rng, 51)
SS_BOB = make_party(UUID_BOB, _rng, 52)
SS_SENDER_CERT = ss.SenderCertificate.create(
    sender_uuid=UUID_ALICE, sender_e164=None, sender_device_id=1,
    identity_key=SS_ALICE.store.get_identity_key_pair().public, expires=NOW_MS + 86_400_000,
    signer=SERVER_CERT, signer_key=SERVER_KEY, rng=_rng)
process_prekey_bundle(SS_ALICE.store, SS_BOB.address, SS_BOB.bundle(), rng=_rng, now=NOW)
#: A sealed PreKey message (Bob decrypts it while building the seeds) and a sealed whisper.
_SEALED_FIRST = ss.encrypt_message(SS_ALICE.store, SS_BOB.address, SS_SENDER_CERT,
                                   b"sealed", now=NOW, rng=_rng)
ss.decrypt(SS_BOB.store, _SEALED_FIRST, trust_roots=[TRUST_ROOT.public_key()], now_ms=NOW_MS,
           local_uuid=UUID_BOB, local_device_id=1, rng=_rng)
_reply = encrypt(SS_BOB.store, SS_ALICE.address, b"r", now=NOW, rng=_rng)
decrypt(SS_ALICE.store, SS_BOB.address, 2, _reply.serialized, rng=_rng)
SEALED_WHISPERS = [ss.encrypt_message(SS_ALICE.store, SS_BOB.address, SS_SENDER_CERT, text,
                                      now=NOW, rng=_rng) for text in (b"pq one", b"pq two")]
_SEALED_CONTENT = ss.open_sealed(SS_BOB.store.get_identity_key_pair(), SEALED_WHISPERS[0])
USMC = _SEALED_CONTENT.serialized


@target("sealed_certificate", "ServerCertificate, SenderCertificate and sealed content "
        "(USMC) .deserialize, then SenderCertificate.validate; also a certificate body "
        "validly signed by the server key (what a relay could issue)",
        "ProtocolError (InvalidMessage, InvalidKey, InvalidCertificate)",
        lambda: [b"\x00" + SERVER_CERT.serialized, b"\x00" + SS_SENDER_CERT.serialized,
                 b"\x00" + USMC, b"\x01" + SS_SENDER_CERT.certificate])
def sealed_certificate(data: bytes) -> None:
    selector, payload = _split(data)
    roots = [TRUST_ROOT.public_key()]
    if selector & 1:
        payload = pb.field_bytes(1, payload) + pb.field_bytes(
            2, xeddsa.sign(SERVER_KEY, payload, _rng))
    with contextlib.suppress(ProtocolError):
        ss.ServerCertificate.deserialize(payload).is_signed_by(roots[0])
    try:
        sender = ss.SenderCertificate.deserialize(payload)
    except ProtocolError:
        sender = None
    if sender is not None:
        try:
            sender.validate(roots, NOW_MS)
        except ProtocolError:
            pass
        else:
            assert 1 <= sender.sender_device_id <= 127 and sender.expires >= NOW_MS
            if not selector & 1:  # as received: only what the server really signed
                assert sender.certificate == SS_SENDER_CERT.certificate
    with contextlib.suppress(ProtocolError):
        ss.UnidentifiedSenderMessageContent.deserialize(payload)


def _sealed_by_alice(usmc: bytes) -> bytes:
    content = dataclasses.replace(_SEALED_CONTENT, serialized=usmc)
    return ss.seal(SS_ALICE.store.get_identity_key_pair(),
                   SS_BOB.store.get_identity_key_pair().public, content, rng=_rng)


@target("sealed_decrypt", "sealed_sender.decrypt at the recipient: an envelope as "
        "received, and sealed content chosen by a sender who holds the keys (it reaches "
        "the content and certificate parsers through both encryption layers)",
        "ProtocolError; the recipient's stores unchanged when refused",
        lambda: [b"\x00" + m for m in SEALED_WHISPERS] + [b"\x00" + _SEALED_FIRST,
                                                          b"\x01" + USMC])
def sealed_decrypt(data: bytes) -> None:
    selector, payload = _split(data)
    if selector & 1:
        payload = _sealed_by_alice(payload)
    store: InMemoryProtocolStore = SS_BOB.store
    before = _capture(store)
    try:
        result = ss.decrypt(store, payload, trust_roots=[TRUST_ROOT.public_key()],
                            now_ms=NOW_MS, local_uuid=UUID_BOB, local_device_id=1, rng=_rng)
    except ProtocolError:
        assert _capture(store) == before, "a refused sealed message changed Bob's stores"
        return
    _restore(store, before)
    assert result.sender_uuid == UUID_ALICE and result.device_id == 1
    assert result.plaintext in PQ_PLAINTEXTS, "a mutated message decrypted to something new"
