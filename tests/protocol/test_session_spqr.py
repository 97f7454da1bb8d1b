"""1:1 sessions running SPQR (spqr-digest §7, §8): Python with Python over several SPQR
epochs under loss and reordering, negotiation between settings, and rejected messages
that change nothing, in the current state or an archived one."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from cipherpost.protocol import (
    DuplicatedMessage,
    InvalidMessage,
    ProtocolError,
    decrypt,
    encrypt,
    has_session,
    process_prekey_bundle,
)
from cipherpost.protocol.messages import PREKEY_TYPE, PreKeySignalMessage, SignalMessage
from cipherpost.protocol.session import CiphertextMessage
from cipherpost.protocol.spqr.errors import SpqrMinimumVersion
from cipherpost.protocol.spqr.ratchet import SpqrSettings
from cipherpost.protocol.spqr.wire import PayloadType, SpqrMessage
from cipherpost.protocol.state import SessionRecord
from cipherpost.protocol.stores import SerializingSessionStore

from .parties import NOW, Party, make_party

REQUIRED, OFFERED, OFF = SpqrSettings.REQUIRED, SpqrSettings.OFFERED, SpqrSettings.OFF


def _pq_field(message: CiphertextMessage) -> bytes:
    data = message.serialized
    if message.message_type == PREKEY_TYPE:
        return PreKeySignalMessage.parse(data).message.pq_ratchet
    return SignalMessage.parse(data).pq_ratchet


def _snapshot(party: Party, remote: Party) -> bytes | None:
    record = party.store.load_session(remote.address)
    return record.serialize() if record is not None else None


def _record(party: Party, remote: Party) -> SessionRecord:
    record = party.store.load_session(remote.address)
    assert record is not None
    return record


class Conversation:
    """Alice and Bob with a seeded schedule of bursts, reordering and loss.

    One party's sessions live as bytes (every message goes through the record format),
    the other's as objects (where a change made before the MAC verified would show).
    """

    def __init__(self, seed: int, *, loss: float = 0.05, alice: SpqrSettings = REQUIRED,
                 bob: SpqrSettings = REQUIRED, serializing: str = "B") -> None:
        self.rnd = random.Random(seed)
        rng = self.rnd.randbytes
        self.parties = {
            "A": make_party("alice", rng, 11,
                            SerializingSessionStore() if serializing == "A" else None),
            "B": make_party("bob", rng, 22,
                            SerializingSessionStore() if serializing == "B" else None)}
        self.settings = {"A": alice, "B": bob}
        self.loss = loss
        self.flight: dict[str, list[tuple[CiphertextMessage, bytes]]] = {"A": [], "B": []}
        self.delivered = self.lost = 0
        process_prekey_bundle(self.parties["A"].store, self.parties["B"].address,
                              self.parties["B"].bundle(), rng=rng, now=NOW, spqr=alice)

    def other(self, name: str) -> str:
        return "B" if name == "A" else "A"

    def send(self, name: str) -> CiphertextMessage:
        text = self.rnd.randbytes(self.rnd.randrange(1, 40))
        to = self.other(name)
        message = encrypt(self.parties[name].store, self.parties[to].address, text,
                          now=NOW, rng=self.rnd.randbytes)
        if self.rnd.random() >= self.loss:
            self.flight[to].append((message, text))
        else:
            self.lost += 1
        return message

    def deliver(self, name: str) -> None:
        queue = self.flight[name]
        message, text = queue.pop(self.rnd.randrange(min(3, len(queue))))  # reordering
        frm = self.other(name)
        got = decrypt(self.parties[name].store, self.parties[frm].address,
                      message.message_type, message.serialized, rng=self.rnd.randbytes,
                      spqr=self.settings[name])
        assert got == text
        self.delivered += 1

    def run(self, steps: int) -> None:
        for _ in range(steps):
            name = self.rnd.choice("AB")
            if name == "B" and _record_or_none(self.parties["B"], self.parties["A"]) is None:
                name = "A"  # Bob has no session until a PreKey message reaches him
            for _ in range(self.rnd.randint(1, 5)):
                self.send(name)
            other = self.other(name)
            while self.flight[other] and self.rnd.random() < 0.8:
                self.deliver(other)

    def epochs(self) -> int:
        """The SPQR chain epoch both parties have reached."""
        out = []
        for name in "AB":
            state = _record(self.parties[name], self.parties[self.other(name)]).current
            assert state is not None and state.pq_ratchet.chain is not None
            out.append(state.pq_ratchet.chain.current_epoch)
        return min(out)


def _record_or_none(party: Party, remote: Party) -> SessionRecord | None:
    return party.store.load_session(remote.address)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_long_conversation_over_several_epochs_with_loss_and_reordering(seed: int) -> None:
    c = Conversation(seed)
    c.run(300)
    assert c.lost > 20 and c.delivered > 700
    assert c.epochs() >= 4


def test_every_message_carries_spqr_and_a_salted_key() -> None:
    c = Conversation(5, loss=0)
    c.run(30)
    message = c.send("A")
    field = _pq_field(message)
    assert SpqrMessage.decode(field).index > 0
    # The bytes are covered by the MAC: the same message without field 5 is refused.
    record = _record(c.parties["B"], c.parties["A"]).serialize()
    parsed = SignalMessage.parse(message.serialized) if message.message_type == 2 else None
    if parsed is not None:
        stripped = _without_field5(parsed)
        with pytest.raises(InvalidMessage):
            decrypt(c.parties["B"].store, c.parties["A"].address, 2, stripped, rng=c.rnd.randbytes)
        assert _record(c.parties["B"], c.parties["A"]).serialize() == record


def _without_field5(message: SignalMessage) -> bytes:
    """The message re-encoded without field 5 (the old MAC kept: it cannot verify)."""
    body = SignalMessage.encode_body(message.version, message.ratchet_key_bytes,
                                     message.counter, message.previous_counter,
                                     bytes(message.ciphertext))
    return body + message.serialized[-8:]


# -- negotiation (spqr-digest §8.2) -----------------------------------------------------------

def _exchange(alice: SpqrSettings, bob: SpqrSettings, rounds: int = 4) -> Conversation:
    c = Conversation(3, loss=0, alice=alice, bob=bob)
    for _ in range(rounds):
        c.send("A")
        c.deliver("B")
        c.send("B")
        c.deliver("A")
    return c


@pytest.mark.parametrize(("alice", "bob", "version"), [
    (REQUIRED, REQUIRED, 1), (OFFERED, REQUIRED, 1), (REQUIRED, OFFERED, 1),
    (OFFERED, OFFERED, 1), (OFFERED, OFF, 0), (OFF, OFFERED, 0), (OFF, OFF, 0),
])
def test_settings_that_can_talk_negotiate_the_version(alice: SpqrSettings, bob: SpqrSettings,
                                                     version: int) -> None:
    c = _exchange(alice, bob)
    for name in "AB":
        state = _record(c.parties[name], c.parties[c.other(name)]).current
        assert state is not None and state.pq_ratchet.version == version
        assert not state.pq_ratchet.negotiating
    if version == 0:  # the wire is the pre-SPQR wire once negotiated down
        assert _pq_field(c.send("A")) == b"" and _pq_field(c.send("B")) == b""


@pytest.mark.parametrize(("alice", "bob"), [
    (REQUIRED, REQUIRED), (OFFERED, REQUIRED), (OFFERED, OFF), (OFF, OFFERED), (OFF, OFF)])
def test_has_session_requires_spqr_where_the_setting_does(alice: SpqrSettings,
                                                         bob: SpqrSettings) -> None:
    """As libsignal 0.100+: with SPQR required, a session without it (made without, or
    negotiated down) is not usable for sending; otherwise any current session is."""
    c = _exchange(alice, bob)
    for name in "AB":
        party, remote = c.parties[name], c.parties[c.other(name)]
        runs_spqr = _record(party, remote).current.pq_ratchet.version == 1  # type: ignore[union-attr]
        assert has_session(party.store, remote.address, NOW, spqr=OFF)
        assert has_session(party.store, remote.address, NOW, spqr=OFFERED)
        assert has_session(party.store, remote.address, NOW, spqr=REQUIRED) == runs_spqr
        # The default is REQUIRED, as libsignal 0.92+.
        assert has_session(party.store, remote.address, NOW) == runs_spqr
    # A session still negotiating (nothing received yet) runs SPQR, so it is usable.
    fresh = Conversation(5, loss=0, alice=OFFERED)
    alice, bob = fresh.parties["A"], fresh.parties["B"]
    assert has_session(alice.store, bob.address, NOW, spqr=REQUIRED)


def test_off_is_todays_wire() -> None:
    c = Conversation(4, loss=0, alice=OFF, bob=OFF)
    assert _pq_field(c.send("A")) == b""
    c.deliver("B")
    assert _pq_field(c.send("B")) == b""


def test_required_refuses_a_peer_without_spqr() -> None:
    # Bob requires SPQR; Alice's session has none: her first message is refused.
    c = Conversation(6, loss=0, alice=OFF, bob=REQUIRED)
    message = c.send("A")
    with pytest.raises(InvalidMessage) as info:
        decrypt(c.parties["B"].store, c.parties["A"].address, message.message_type,
                message.serialized, rng=c.rnd.randbytes, spqr=REQUIRED)
    assert isinstance(info.value.__cause__, SpqrMinimumVersion)
    assert _record_or_none(c.parties["B"], c.parties["A"]) is None
    # Alice requires it; Bob without SPQR cannot even verify her salted MAC.
    c = Conversation(7, loss=0, alice=REQUIRED, bob=OFF)
    message = c.send("A")
    with pytest.raises(InvalidMessage):
        decrypt(c.parties["B"].store, c.parties["A"].address, message.message_type,
                message.serialized, rng=c.rnd.randbytes, spqr=OFF)


def test_encrypt_on_an_spqr_session_needs_rng() -> None:
    c = Conversation(8, loss=0)
    with pytest.raises(TypeError):
        encrypt(c.parties["A"].store, c.parties["B"].address, b"x", now=NOW)
    c2 = Conversation(8, loss=0, alice=OFF, bob=OFF)
    encrypt(c2.parties["A"].store, c2.parties["B"].address, b"x", now=NOW)  # no rng needed


# -- rejected messages change nothing -------------------------------------------------------

def _flips(data: bytes, rnd: random.Random, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        forged = bytearray(data)
        forged[rnd.randrange(len(forged))] ^= 1 << rnd.randrange(8)
        out.append(bytes(forged))
    return out


def _refused_without_change(receiver: Party, sender: Party, message_type: int,
                            forged: list[bytes], rng: Callable[[int], bytes]) -> None:
    before = _snapshot(receiver, sender)
    for data in forged:
        with pytest.raises(ProtocolError):
            decrypt(receiver.store, sender.address, message_type, data, rng=rng,
                    spqr=REQUIRED)
        assert _snapshot(receiver, sender) == before


def test_tampered_messages_change_neither_ratchet_at_any_braid_state() -> None:
    """At many points of a conversation (every payload type, chunks that complete a
    value), a tampered message is refused and both ratchets stay as they were; the
    original then decrypts."""
    c = Conversation(9, loss=0)
    rnd = random.Random(1)
    seen: set[PayloadType] = set()
    for step in range(260):
        name = "A" if step % 2 == 0 else "B"
        to = c.other(name)
        if step > 0 or name == "A":
            message = c.send(name)
            payload = SpqrMessage.decode(_pq_field(message)).payload
            data = message.serialized
            if step % 5 == 0 or payload not in seen:
                seen.add(payload)
                field_at = data.find(_pq_field(message))
                forged = _flips(data, rnd, 6)
                # Flips inside field 5 itself, including its chunk bytes.
                forged += [_flip_at(data, field_at + rnd.randrange(len(_pq_field(message))))
                           for _ in range(4)]
                _refused_without_change(c.parties[to], c.parties[name],
                                        message.message_type, forged, rnd.randbytes)
            c.deliver(to)
    assert seen == set(PayloadType) - {PayloadType.NONE} or seen == set(PayloadType)
    assert c.epochs() >= 2


def _flip_at(data: bytes, index: int) -> bytes:
    forged = bytearray(data)
    forged[index] ^= 0x01
    return bytes(forged)


def test_archived_spqr_session_rejects_tampering_and_resumes_on_success() -> None:
    c = Conversation(10, loss=0, serializing="A")  # Bob's record is live objects
    c.run(40)
    while c.flight["A"]:
        c.deliver("A")
    while c.flight["B"]:
        c.deliver("B")
    alice, bob = c.parties["A"], c.parties["B"]
    old_messages = [c.send("A") for _ in range(3)]  # sent on the session about to be archived
    # Alice starts a new session; Bob takes it, archiving the old one.
    process_prekey_bundle(alice.store, bob.address, bob.bundle(), rng=c.rnd.randbytes,
                          now=NOW, spqr=REQUIRED)
    fresh = encrypt(alice.store, bob.address, b"new session", now=NOW, rng=c.rnd.randbytes)
    assert decrypt(bob.store, alice.address, fresh.message_type, fresh.serialized,
                   rng=c.rnd.randbytes, spqr=REQUIRED) == b"new session"
    record = _record(bob, alice)
    assert len(record.previous) == 1
    archived_pq = record.previous[0].pq_ratchet_bytes()
    rnd = random.Random(2)
    for message in old_messages:
        _refused_without_change(bob, alice, 2, _flips(message.serialized, rnd, 12),
                                rnd.randbytes)
    assert _record(bob, alice).previous[0].pq_ratchet_bytes() == archived_pq
    # The untouched messages decrypt on the archived state, which becomes current, with
    # its SPQR state advanced.
    for message in old_messages:
        decrypt(bob.store, alice.address, 2, message.serialized, rng=rnd.randbytes)
    record = _record(bob, alice)
    assert record.current is not None and record.current.pq_ratchet_bytes() != archived_pq
    with pytest.raises(DuplicatedMessage):
        decrypt(bob.store, alice.address, 2, old_messages[0].serialized, rng=rnd.randbytes)


def test_an_spqr_failure_on_the_current_state_falls_through_to_the_archive() -> None:
    """A message whose SPQR part the current state refuses is tried on archived states,
    as libsignal does; if none takes it, nothing changes anywhere."""
    c = Conversation(14, loss=0, serializing="A")
    c.run(10)
    alice, bob = c.parties["A"], c.parties["B"]
    while c.flight["B"]:
        c.deliver("B")
    record = _record(bob, alice)
    record.archive_current_state()
    bob.store.store_session(alice.address, record)
    message = c.send("A")
    forged = _flip_at(message.serialized, message.serialized.find(_pq_field(message)) + 1)
    _refused_without_change(bob, alice, 2, [forged], c.rnd.randbytes)
    c.deliver("B")
    assert _record(bob, alice).current is not None
