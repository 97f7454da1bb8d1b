"""Sender keys: every group message decrypts exactly once for every member who holds the
sender's chain, in any order, across restarts and repeated distribution messages.

A member who processes the distribution message late starts at the iteration it names:
earlier messages are refused with DuplicatedMessage (libsignal does the same). Rejected
input changes no member's record.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from cipherpost.protocol import DuplicatedMessage, NoSenderKey, ProtocolError
from cipherpost.protocol import sender_keys as sk
from cipherpost.protocol.address import ProtocolAddress
from cipherpost.protocol.stores import InMemorySenderKeyStore

SENDER = ProtocolAddress("sender", 1)
MEMBERS = ("m1", "m2", "m3")


@dataclass(frozen=True)
class GroupMessage:
    iteration: int
    data: bytes
    plaintext: bytes


class SenderKeyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[GroupMessage] = []
        self.members = {name: InMemorySenderKeyStore() for name in MEMBERS}
        #: member -> the iteration its chain started at (None: no distribution message yet)
        self.joined: dict[str, int | None] = dict.fromkeys(MEMBERS)
        self.delivered: dict[str, set[int]] = {name: set() for name in MEMBERS}

    @initialize(seed=st.integers(0, 2**32 - 1), dist=st.uuids())
    def start(self, seed: int, dist: uuid.UUID) -> None:
        self.rng = random.Random(seed).randbytes
        self.dist = dist
        self.sender = InMemorySenderKeyStore()
        sk.create_distribution_message(self.sender, SENDER, dist, rng=self.rng)

    def _record(self, member: str) -> bytes | None:
        record = self.members[member].load_sender_key(SENDER, self.dist)
        return record.serialize() if record is not None else None

    def _snapshot(self) -> dict[str, bytes | None]:
        return {name: self._record(name) for name in MEMBERS}

    def _rejected(self, member: str, data: bytes, expected: type[ProtocolError]) -> None:
        before = self._snapshot()
        try:
            plaintext = sk.group_decrypt(self.members[member], SENDER, data)
        except expected:
            assert self._snapshot() == before
            return
        raise AssertionError(f"expected {expected.__name__}, decrypted to {plaintext!r}")

    @rule(text=st.binary(max_size=40))
    def send(self, text: bytes) -> None:
        data = sk.group_encrypt(self.sender, SENDER, self.dist, text, rng=self.rng)
        self.sent.append(GroupMessage(len(self.sent), data, text))

    @rule(member=st.sampled_from(MEMBERS))
    def distribute(self, member: str) -> None:
        """The sender's current distribution message reaches ``member`` (again, perhaps)."""
        skdm = sk.create_distribution_message(self.sender, SENDER, self.dist, rng=self.rng)
        assert skdm.iteration == len(self.sent)
        sk.process_distribution_message(self.members[member], SENDER, skdm.serialized)
        if self.joined[member] is None:
            self.joined[member] = skdm.iteration
        # else: same chain id and signing key, so the member's chain state is kept as is

    @precondition(lambda self: self.sent)
    @rule(member=st.sampled_from(MEMBERS), pick=st.integers(0, 2**16))
    def deliver(self, member: str, pick: int) -> None:
        """Deliver any message, new or already delivered: so reordering and duplicates."""
        message = self.sent[pick % len(self.sent)]
        start = self.joined[member]
        if start is None:
            self._rejected(member, message.data, NoSenderKey)
        elif message.iteration < start or message.iteration in self.delivered[member]:
            self._rejected(member, message.data, DuplicatedMessage)
        else:
            plaintext = sk.group_decrypt(self.members[member], SENDER, message.data)
            assert plaintext == message.plaintext
            self.delivered[member].add(message.iteration)

    @precondition(lambda self: self.sent)
    @rule(member=st.sampled_from(MEMBERS), pick=st.integers(0, 2**16),
          position=st.integers(0, 2**16), bit=st.integers(0, 7))
    def tamper(self, member: str, pick: int, position: int, bit: int) -> None:
        message = self.sent[pick % len(self.sent)]
        forged = bytearray(message.data)
        forged[position % len(forged)] ^= 1 << bit
        self._rejected(member, bytes(forged), ProtocolError)

    @rule(member=st.sampled_from(MEMBERS))
    def restart(self, member: str) -> None:
        data = self._record(member)
        if data is not None:
            reloaded = sk.SenderKeyRecord.deserialize(data)
            assert reloaded.serialize() == data
            self.members[member].store_sender_key(SENDER, self.dist, reloaded)

    @invariant()
    def sender_iteration_matches(self) -> None:
        if self.sent:
            record = self.sender.load_sender_key(SENDER, self.dist)
            assert isinstance(record, sk.SenderKeyRecord)
            assert record.states[0].iteration == len(self.sent)


TestSenderKeyMachine = SenderKeyMachine.TestCase


@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_any_permutation_decrypts_exactly_once(seed: int, data: st.DataObject) -> None:
    rng = random.Random(seed).randbytes
    dist = uuid.UUID(int=seed)
    sender, member = InMemorySenderKeyStore(), InMemorySenderKeyStore()
    skdm = sk.create_distribution_message(sender, SENDER, dist, rng=rng)
    sk.process_distribution_message(member, SENDER, skdm.serialized)
    count = data.draw(st.integers(1, 25), label="count")
    messages = [sk.group_encrypt(sender, SENDER, dist, i.to_bytes(2, "big"), rng=rng)
                for i in range(count)]
    # Each message once, in any order, with repeats of earlier ones mixed in.
    order = data.draw(st.permutations(range(count)), label="order")
    seen: list[int] = []
    for i in order:
        assert sk.group_decrypt(member, SENDER, messages[i]) == i.to_bytes(2, "big")
        seen.append(i)
        if data.draw(st.booleans(), label="repeat one"):
            again = data.draw(st.sampled_from(seen), label="repeated")
            try:
                sk.group_decrypt(member, SENDER, messages[again])
            except DuplicatedMessage:
                pass
            else:
                raise AssertionError("a group message decrypted twice")
    record = member.load_sender_key(SENDER, dist)
    assert isinstance(record, sk.SenderKeyRecord)
    assert record.states[0].iteration == count and not record.states[0].skipped
