"""Model-based test of 1:1 sessions between two parties.

Alice starts from Bob's bundle; later either side may start a fresh session from the
other's bundle. Messages are sent, delivered in any order, dropped, delivered again,
tampered with, and both parties' current states archived; records go through bytes as
after a process restart, and one variant keeps every record as bytes throughout
(``SerializingSessionStore``).

The model predicts every outcome without reading the implementation's state:

* which session each party sends on (``current``) and whether a send must fail with
  ``NoSession`` (after an archive, until a message from the peer revives a state);
* whether a message goes out as a PreKey message (the initiator's state is unacknowledged
  and was never archived);
* whether a message decrypts: a receiver keeps ``MAX_RECEIVER_CHAINS`` receiving chains
  per state, so a message on an older chain of the peer is refused with InvalidMessage.
  (Chains are told apart by the ratchet key written in each message.) The 2,000 skipped
  keys per chain and the 25,000 forward jump cannot be reached in these runs.

Invariants: a message not yet delivered decrypts to exactly its plaintext (unless its
chain was dropped as above); one delivered again raises DuplicatedMessage; and any
rejected input (duplicate, forgery, lost chain, send without a session) leaves both
parties' records, prekeys and trusted identities byte-identical.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from cipherpost.protocol import (
    PREKEY_TYPE,
    WHISPER_TYPE,
    DuplicatedMessage,
    InvalidMessage,
    NoSession,
    ProtocolError,
    SessionRecord,
    SpqrSettings,
    decrypt,
    encrypt,
    has_session,
    process_prekey_bundle,
)
from cipherpost.protocol.constants import MAX_RECEIVER_CHAINS
from cipherpost.protocol.messages import PreKeySignalMessage, SignalMessage
from cipherpost.protocol.stores import SerializingSessionStore
from tests.protocol.parties import NOW, Party, make_party

NAMES = ("alice", "bob")
#: The model is of the classical Double Ratchet; SPQR sessions (the default) are checked by
#: tests/protocol/test_session_spqr.py's randomized conversations.
CLASSIC = SpqrSettings.OFF
MAX_SESSIONS = 4  # far below the 40 archived states a record keeps


def _peer(name: str) -> str:
    return "bob" if name == "alice" else "alice"


def ratchet_key_of(message_type: int, data: bytes) -> bytes:
    """The sender's ratchet key a message carries (it names the sending chain)."""
    if message_type == PREKEY_TYPE:
        return PreKeySignalMessage.parse(data).message.ratchet_key_bytes
    return SignalMessage.parse(data).ratchet_key_bytes


@dataclass
class Sent:
    sender: str
    session: int  # the model's id of the session it was sent on
    message_type: int
    data: bytes
    plaintext: bytes
    ratchet_key: bytes

    @property
    def receiver(self) -> str:
        return _peer(self.sender)


class SessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.parties: dict[str, Party] = {}
        self.in_flight: list[Sent] = []
        self.delivered: list[Sent] = []
        # -- the model --
        self.current: dict[str, int | None] = {"alice": None, "bob": None}
        self.initiator: dict[int, str] = {}
        self.pending: dict[int, bool] = {}  # the initiator still sends PreKey messages
        #: (party, session) -> ratchet keys of the receiving chains it created, oldest first
        self.chains: dict[tuple[str, int], list[bytes]] = {}

    # -- set-up ----------------------------------------------------------------------------

    @initialize(seed=st.integers(0, 2**32 - 1), one_time=st.booleans(),
                serializing=st.booleans())
    def start(self, seed: int, one_time: bool, serializing: bool) -> None:
        r = random.Random(seed)
        for registration_id, name in enumerate(NAMES, start=1):
            rng = random.Random(r.getrandbits(64)).randbytes
            self.parties[name] = make_party(
                name, rng, registration_id, SerializingSessionStore() if serializing else None)
        self._initiate("alice", one_time)

    def _initiate(self, name: str, one_time: bool) -> None:
        party, peer = self.parties[name], self.parties[_peer(name)]
        bundle = peer.bundle(one_time=one_time)
        process_prekey_bundle(party.store, peer.address, bundle, rng=party.rng, now=NOW,
                              spqr=CLASSIC)
        session = len(self.initiator)
        self.initiator[session] = name
        self.pending[session] = True
        # The initiator's first receiving chain is the responder's signed prekey.
        self.chains[(name, session)] = [bundle.signed_pre_key.serialize()]
        self._make_current(name, session)

    def _make_current(self, name: str, session: int | None) -> None:
        old = self.current[name]
        if old is not None and old != session and self.initiator[old] == name:
            self.pending[old] = False  # an archived state never sends PreKey messages again
        self.current[name] = session

    # -- observation -----------------------------------------------------------------------

    def _record(self, name: str) -> SessionRecord | None:
        return self.parties[name].store.load_session(self.parties[_peer(name)].address)

    def _snapshot(self) -> tuple[object, ...]:
        """Everything a rejected input must leave alone, for both parties."""
        out: list[object] = []
        for name in NAMES:
            store = self.parties[name].store
            record = self._record(name)
            out += [record.serialize() if record is not None else None,
                    sorted(store._pre_keys), sorted(store._kyber_keys),
                    store.get_identity(self.parties[_peer(name)].address)]
        return tuple(out)

    def _expected_ok(self, message: Sent) -> bool:
        """Does the receiver still hold the chain (or will it make one) for ``message``?"""
        chains = self.chains.get((message.receiver, message.session))
        if chains is None:
            # Only the responder lacks the state, and only PreKey messages reach it then.
            assert message.message_type == PREKEY_TYPE, "model: whisper before any PreKey"
            return True
        if message.ratchet_key not in chains:
            return True  # a new chain: a DH ratchet step
        return message.ratchet_key in chains[-MAX_RECEIVER_CHAINS:]

    def _accept(self, message: Sent) -> None:
        """Update the model after ``message`` decrypted."""
        if self.current[message.receiver] != message.session:
            event("a message revived an archived (or absent) state")
        chains = self.chains.setdefault((message.receiver, message.session), [])
        if message.ratchet_key not in chains:
            chains.append(message.ratchet_key)
        if self.initiator[message.session] == message.receiver:
            self.pending[message.session] = False
        self._make_current(message.receiver, message.session)
        self.delivered.append(message)

    def _decrypt(self, message: Sent, data: bytes | None = None) -> bytes:
        receiver = self.parties[message.receiver]
        return decrypt(receiver.store, self.parties[message.sender].address,
                       message.message_type, message.data if data is None else data,
                       rng=receiver.rng, spqr=CLASSIC)

    def _rejected(self, message: Sent, expected: type[ProtocolError],
                  data: bytes | None = None) -> ProtocolError:
        """Decrypt must raise ``expected`` and change nothing."""
        before = self._snapshot()
        try:
            plaintext = self._decrypt(message, data)
        except expected as exc:
            assert self._snapshot() == before, f"rejected input changed state: {exc!r}"
            return exc
        raise AssertionError(f"expected {expected.__name__}, decrypted to {plaintext!r}")

    # -- rules -----------------------------------------------------------------------------

    def _send(self, name: str, text: bytes) -> None:
        party, peer = self.parties[name], self.parties[_peer(name)]
        session = self.current[name]
        if session is None:
            before = self._snapshot()
            try:
                encrypt(party.store, peer.address, text, now=NOW)
            except NoSession:
                event("send refused: no current session")
                assert self._snapshot() == before
                return
            raise AssertionError(f"{name} sent without a current session")
        message = encrypt(party.store, peer.address, text, now=NOW)
        prekey = self.pending[session] and self.initiator[session] == name
        assert message.message_type == (PREKEY_TYPE if prekey else WHISPER_TYPE)
        self.in_flight.append(Sent(name, session, message.message_type, message.serialized,
                                   text, ratchet_key_of(*message)))

    @rule(text=st.binary(max_size=40))
    def alice_send(self, text: bytes) -> None:
        self._send("alice", text)

    @rule(text=st.binary(max_size=40))
    def bob_send(self, text: bytes) -> None:
        self._send("bob", text)

    def _deliver(self, index: int) -> None:
        message = self.in_flight.pop(index)
        if self._expected_ok(message):
            assert self._decrypt(message) == message.plaintext
            self._accept(message)
        else:
            event("a message on a dropped receiving chain")
            exc = self._rejected(message, InvalidMessage)
            assert not isinstance(exc, DuplicatedMessage), exc

    @precondition(lambda self: self.in_flight)
    @rule(pick=st.integers(0, 2**16))
    def deliver(self, pick: int) -> None:
        self._deliver(pick % len(self.in_flight))

    @precondition(lambda self: self.in_flight)
    @rule(pick=st.integers(0, 2**16))
    def drop(self, pick: int) -> None:
        self.in_flight.pop(pick % len(self.in_flight))

    @precondition(lambda self: self.delivered)
    @rule(pick=st.integers(0, 2**16))
    def duplicate(self, pick: int) -> None:
        message = self.delivered[pick % len(self.delivered)]
        if self._expected_ok(message):  # its chain is still held: a true duplicate
            self._rejected(message, DuplicatedMessage)
        else:  # the chain is gone, so the message is just undecryptable
            exc = self._rejected(message, InvalidMessage)
            assert not isinstance(exc, DuplicatedMessage), exc

    @precondition(lambda self: self.in_flight)
    @rule(pick=st.integers(0, 2**16), position=st.integers(0, 2**16), bit=st.integers(0, 7),
          deliver_original=st.booleans())
    def tamper(self, pick: int, position: int, bit: int, deliver_original: bool) -> None:
        index = pick % len(self.in_flight)
        message = self.in_flight[index]
        forged = bytearray(message.data)
        forged[position % len(forged)] ^= 1 << bit
        before = self._snapshot()
        try:
            plaintext = self._decrypt(message, bytes(forged))
        except ProtocolError:
            assert self._snapshot() == before, "a forgery changed state"
        else:
            # Only a PreKey message has unauthenticated parts (registration id, low version
            # nibble, and prekey ids, Kyber ciphertext once the responder holds the state);
            # then the forgery *is* the message, and the original is now a duplicate.
            assert message.message_type == PREKEY_TYPE, "a forged whisper message decrypted"
            assert self._expected_ok(message), "a forgery decrypted on a lost chain"
            assert plaintext == message.plaintext
            event("a PreKey message with a flipped unauthenticated bit decrypted")
            self.in_flight.pop(index)
            self._accept(message)
            return
        if deliver_original:
            self._deliver(index)

    @rule(rounds=st.integers(1, 4))
    def ping_pong(self, rounds: int) -> None:
        """Round trips delivered at once: each turns the DH ratchet, so messages left in
        flight fall behind the receivers' last ``MAX_RECEIVER_CHAINS`` chains."""
        for _ in range(rounds):
            for name in NAMES:
                if self.current[name] is not None:
                    self._send(name, b"ping")
                    self._deliver(len(self.in_flight) - 1)

    @rule(name=st.sampled_from(NAMES))
    def archive(self, name: str) -> None:
        """Archive ``name``'s current state, as on a safety-number change or reset."""
        party, peer = self.parties[name], self.parties[_peer(name)]
        record = party.store.load_session(peer.address)
        if record is not None:
            record.archive_current_state()
            party.store.store_session(peer.address, record)
        self._make_current(name, None)

    @precondition(lambda self: len(self.initiator) < MAX_SESSIONS)
    @rule(name=st.sampled_from(NAMES), one_time=st.booleans())
    def initiate(self, name: str, one_time: bool) -> None:
        """``name`` starts a fresh session from the other side's new bundle."""
        self._initiate(name, one_time)

    @rule()
    def restart(self) -> None:
        """Every stored record goes through bytes, as after a process restart."""
        for name in NAMES:
            record = self._record(name)
            if record is None:
                continue
            data = record.serialize()
            reloaded = SessionRecord.deserialize(data)
            assert reloaded.serialize() == data
            self.parties[name].store.store_session(self.parties[_peer(name)].address, reloaded)

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def sessions_match_the_model(self) -> None:
        for name in self.parties:
            party, peer = self.parties[name], self.parties[_peer(name)]
            assert has_session(party.store, peer.address, NOW, spqr=CLASSIC) == (
                self.current[name] is not None)


TestSessionMachine = SessionMachine.TestCase
