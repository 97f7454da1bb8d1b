"""Model-based test of 1:1 sessions: send, deliver in any order, drop, duplicate, tamper,
restart. Every message decrypts exactly once to what was sent; rejected input changes
no stored state."""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from cipherpost.protocol import (
    DuplicatedMessage,
    ProtocolError,
    SessionRecord,
    decrypt,
    encrypt,
    process_prekey_bundle,
)
from tests.protocol.parties import NOW, Party, make_party


@dataclass
class InFlight:
    sender: str
    message_type: int
    data: bytes
    plaintext: bytes


class SessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.parties: dict[str, Party] = {}
        self.in_flight: list[InFlight] = []
        self.delivered: list[InFlight] = []
        self.counter = 0
        self.bob_can_send = False

    @initialize(seed=st.integers(0, 2**32 - 1), one_time=st.booleans())
    def start(self, seed: int, one_time: bool) -> None:
        rng = random.Random(seed).randbytes
        alice = make_party("alice", rng, 1)
        bob = make_party("bob", rng, 2)
        process_prekey_bundle(alice.store, bob.address, bob.bundle(one_time=one_time), rng=rng,
                              now=NOW)
        self.parties = {"alice": alice, "bob": bob}

    def _other(self, name: str) -> Party:
        return self.parties["bob" if name == "alice" else "alice"]

    def _snapshot(self, name: str) -> bytes | None:
        party = self.parties[name]
        record = party.store.load_session(self._other(name).address)
        return record.serialize() if record is not None else None

    def _send(self, name: str) -> None:
        self.counter += 1
        text = f"{name} {self.counter}".encode()
        message = encrypt(self.parties[name].store, self._other(name).address, text, now=NOW)
        self.in_flight.append(InFlight(name, message.message_type, message.serialized, text))

    @rule()
    def alice_sends(self) -> None:
        self._send("alice")

    @precondition(lambda self: self.bob_can_send)
    @rule()
    def bob_sends(self) -> None:
        self._send("bob")

    @precondition(lambda self: self.in_flight)
    @rule(pick=st.integers(0, 10_000))
    def deliver(self, pick: int) -> None:
        message = self.in_flight.pop(pick % len(self.in_flight))
        receiver = "bob" if message.sender == "alice" else "alice"
        party = self.parties[receiver]
        plaintext = decrypt(party.store, self.parties[message.sender].address,
                            message.message_type, message.data, rng=party.rng)
        assert plaintext == message.plaintext
        self.delivered.append(message)
        if receiver == "bob":
            self.bob_can_send = True

    @precondition(lambda self: self.in_flight)
    @rule(pick=st.integers(0, 10_000))
    def drop(self, pick: int) -> None:
        self.in_flight.pop(pick % len(self.in_flight))

    @precondition(lambda self: self.delivered)
    @rule(pick=st.integers(0, 10_000))
    def duplicate(self, pick: int) -> None:
        message = self.delivered[pick % len(self.delivered)]
        receiver = "bob" if message.sender == "alice" else "alice"
        before = self._snapshot(receiver)
        party = self.parties[receiver]
        try:
            decrypt(party.store, self.parties[message.sender].address, message.message_type,
                    message.data, rng=party.rng)
        except DuplicatedMessage:
            pass
        else:
            raise AssertionError("a delivered message decrypted twice")
        assert self._snapshot(receiver) == before

    @precondition(lambda self: any(m.message_type == 2 for m in self.in_flight))
    @rule(pick=st.integers(0, 10_000), position=st.integers(0, 10_000), bit=st.integers(0, 7))
    def tamper(self, pick: int, position: int, bit: int) -> None:
        whispers = [m for m in self.in_flight if m.message_type == 2]
        message = whispers[pick % len(whispers)]
        forged = bytearray(message.data)
        forged[position % len(forged)] ^= 1 << bit
        receiver = "bob" if message.sender == "alice" else "alice"
        before = self._snapshot(receiver)
        party = self.parties[receiver]
        try:
            decrypt(party.store, self.parties[message.sender].address, 2, bytes(forged),
                    rng=party.rng)
        except ProtocolError:
            pass
        else:
            raise AssertionError("a tampered message decrypted")
        assert self._snapshot(receiver) == before

    @rule()
    def restart(self) -> None:
        """Every stored record goes through bytes, as after a process restart."""
        for name, party in self.parties.items():
            other = self._other(name).address
            record = party.store.load_session(other)
            if record is not None:
                party.store.store_session(other, SessionRecord.deserialize(record.serialize()))

    @invariant()
    def alice_can_always_send(self) -> None:
        if self.parties:
            record = self.parties["alice"].store.load_session(self.parties["bob"].address)
            assert record is not None and record.current is not None


TestSessionMachine = SessionMachine.TestCase
