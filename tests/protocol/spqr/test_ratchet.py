"""SPQR send/recv: negotiation (spqr-digest §8.2), error cases, the Python-initiator
vectors, and long conversations under reordering and loss."""

from __future__ import annotations

import random

import pytest

from cipherpost.protocol.errors import InvalidMessage
from cipherpost.protocol.keys import PrivateKey
from cipherpost.protocol.messages import PreKeySignalMessage, SignalMessage
from cipherpost.protocol.ratchet import (
    MessageKeys,
    aes_cbc_decrypt,
    message_key_seed,
    root_step,
)
from cipherpost.protocol.spqr import braid, incremental, mlkem768
from cipherpost.protocol.spqr.chain import Chain, Direction
from cipherpost.protocol.spqr.errors import (
    MalformedSpqrMessage,
    SpqrAuthenticationFailed,
    SpqrEpochOutOfRange,
    SpqrErroneousData,
    SpqrMinimumVersion,
    SpqrVersionMismatch,
)
from cipherpost.protocol.spqr.ratchet import PqRatchetState, initial_state, recv, send
from cipherpost.protocol.spqr.wire import V0, V1, Chunk, PayloadType, SpqrMessage

from .helpers import H, flip, load

PY_ALICE = load("py-alice-to-libsignal.json")["results"]
AUTH = b"\x29" * 32


def _pq_fields(result: dict) -> list[bytes]:
    return [PreKeySignalMessage.parse(H(m)).message.pq_ratchet for m in result["msgs"]]


def _recorded_key_pair(alice_state: dict) -> incremental.KeyPair:
    ek, dk = H(alice_state["ek"]), H(alice_state["dk"])
    return incremental.KeyPair(ek[1152:] + mlkem768.h(ek), ek[:1152], dk)


def test_python_initiator_accepted_by_libsignal_reproduces() -> None:
    result = PY_ALICE["spqr"]
    state = result["alice_state"]
    auth_key = H(state["A"])
    alice = initial_state(auth_key, Direction.A2B)
    bob = initial_state(auth_key, Direction.B2A)
    pair = _recorded_key_pair(state)
    recorded = _pq_fields(result)
    assert all(d["ok"] for d in result["delivered"])
    for i, field in enumerate(recorded):
        sent = send(alice, random.Random(0).randbytes, keygen=lambda _rng: pair)
        alice = sent.state
        assert sent.message == field
        assert SpqrMessage.decode(field).payload is PayloadType.HDR
        bob, key = recv(bob, field)
        assert key == sent.key
        assert SpqrMessage.decode(field).chunk.index == i  # type: ignore[union-attr]
    assert isinstance(bob.braid, braid.HeaderReceived)
    # libsignal's reply: Ct1 chunk 0; its key is the salt that makes the reply's MAC verify.
    reply = SignalMessage.parse(H(result["reply"]))
    assert reply.pq_ratchet.hex() == result["reply_decoded_by_python"]["pq_ratchet"]
    alice, key = recv(alice, reply.pq_ratchet)
    assert key is not None and isinstance(alice.braid, braid.HeaderSent)
    start = Chain.start(auth_key, Direction.A2B)
    assert start.links[0].recv.next_key.hex() == state["b2a"]  # SPQR B->A seed
    # The Double Ratchet's receiving chain after Bob's new ratchet key, salted with it.
    dh = PrivateKey.from_stored(H(state["s_priv"])).agree(reply.ratchet_key)
    _, chain_key = root_step(H(state["rk"]), dh)
    keys = MessageKeys.from_seed(message_key_seed(chain_key), key)
    identities = H(state["bik"]) + H(state["aik"])
    assert reply.verify_mac_prefixed(keys.mac_key, identities)
    plaintext = aes_cbc_decrypt(keys.cipher_key, keys.iv, bytes(reply.ciphertext))
    assert plaintext == result["reply_decoded_by_python"]["plaintext"].encode()
    unsalted = MessageKeys.from_seed(message_key_seed(chain_key))
    assert not reply.verify_mac_prefixed(unsalted.mac_key, identities)
    auth = braid.initial_a(auth_key).auth
    assert (auth.root_key.hex(), auth.mac_key.hex()) == (state["auth_root"], state["auth_mac"])


def test_bad_header_mac_is_refused_on_the_completing_chunk() -> None:
    result = PY_ALICE["badmac"]
    assert [d["ok"] for d in result["delivered"]] == [True, True, False]
    bob = initial_state(H(result["alice_state"]["A"]), Direction.B2A)
    fields = _pq_fields(result)
    for field in fields[:2]:
        bob, key = recv(bob, field)
        assert key is not None
    before = bob
    with pytest.raises(SpqrAuthenticationFailed):
        recv(bob, fields[2])
    assert bob is before and isinstance(bob.braid, braid.NoHeaderReceived)
    # Bob's next message is None, as libsignal's reply was.
    assert SpqrMessage.decode(send(bob, random.Random(1).randbytes).message).payload \
        is PayloadType.NONE


def test_v0_initiator_refused_by_minimum_version() -> None:
    result = PY_ALICE["v0"]
    assert not any(d["ok"] for d in result["delivered"])
    fields = _pq_fields(result)
    assert fields == [b"", b"", b""]
    bob = initial_state(H(result["alice_state"]["A"]), Direction.B2A)
    with pytest.raises(SpqrMinimumVersion) as info:
        recv(bob, fields[0])
    assert isinstance(info.value, InvalidMessage)


# -- negotiation (spqr-digest §8.2) ---------------------------------------------------------

def _v1_message() -> bytes:
    return send(initial_state(AUTH, Direction.A2B), random.Random(2).randbytes).message


def test_negotiation_table() -> None:
    v1 = _v1_message()
    # A V0 state ignores everything.
    v0_state = initial_state(AUTH, Direction.B2A, version=V0, min_version=V0)
    assert v0_state == PqRatchetState() and v0_state.version == V0
    assert recv(v0_state, v1) == (PqRatchetState(), None)
    assert recv(v0_state, b"") == (PqRatchetState(), None)
    assert send(v0_state, random.Random(0).randbytes).message == b""
    # Negotiating, minimum V0: a V0 message downgrades for good.
    lax = initial_state(AUTH, Direction.B2A, min_version=V0)
    assert recv(lax, b"") == (PqRatchetState(), None)
    assert recv(lax, b"\x00whatever") == (PqRatchetState(), None)
    # Negotiating, minimum V1: a V0 message is refused.
    strict = initial_state(AUTH, Direction.B2A)
    with pytest.raises(SpqrMinimumVersion):
        recv(strict, b"")
    # A V1 message ends negotiation; after that V0 is a mismatch.
    done, key = recv(strict, v1)
    assert key is not None and not done.negotiating and strict.negotiating
    with pytest.raises(SpqrVersionMismatch):
        recv(done, b"")
    # Unknown versions are ignored: no state change, no key.
    for state in (strict, done, lax):
        assert recv(state, b"\x02" + v1[1:]) == (state, None)


def test_sending_never_ends_negotiation_and_min_v0_sends_without_key_first() -> None:
    lax = initial_state(AUTH, Direction.A2B, min_version=V0)
    sent = send(lax, random.Random(3).randbytes)
    assert sent.key is None and sent.state.negotiating and sent.state.chain is None
    msg = SpqrMessage.decode(sent.message)
    assert (msg.epoch, msg.index) == (1, 0)
    bob, key = recv(initial_state(AUTH, Direction.B2A), sent.message)
    assert key is None and not bob.negotiating  # epoch 1, index 0: no key
    strict = send(initial_state(AUTH, Direction.A2B), random.Random(3).randbytes)
    assert strict.key is not None and SpqrMessage.decode(strict.message).index == 1
    assert strict.state.negotiating


def test_initial_state_misuse() -> None:
    with pytest.raises(ValueError):
        initial_state(AUTH[:31], Direction.A2B)
    with pytest.raises(ValueError):
        initial_state(AUTH, Direction.A2B, version=V0, min_version=V1)
    with pytest.raises(ValueError):
        initial_state(AUTH, Direction.A2B, version=2)


def test_malformed_and_out_of_range_messages_change_nothing() -> None:
    bob = initial_state(AUTH, Direction.B2A)
    for data in (b"\x01", b"\x01\x00\x01\x00", b"\x01\x01\x01\x09"):
        with pytest.raises(MalformedSpqrMessage):
            recv(bob, data)
    ahead = SpqrMessage(2, 1, PayloadType.NONE).encode()
    with pytest.raises(SpqrEpochOutOfRange):
        recv(bob, ahead)
    assert bob == initial_state(AUTH, Direction.B2A)


def test_reprs_hold_no_secrets() -> None:
    alice = initial_state(AUTH, Direction.A2B)
    for _ in range(2):
        alice = send(alice, random.Random(4).randbytes).state
    text = repr(alice)
    assert AUTH.hex()[:16] not in text and "2929" not in text
    assert alice.chain is not None and alice.chain.next_root.hex()[:8] not in text
    assert isinstance(alice.braid, braid.KeysSampled)
    assert alice.braid.keys.dk.hex()[:8] not in text


# -- whole conversations ------------------------------------------------------------------

class Conversation:
    """Two parties with a seeded schedule of bursts, reordering and loss."""

    def __init__(self, seed: int, loss: float = 0.05) -> None:
        self.rnd = random.Random(seed)
        self.loss = loss
        self.state = {"A": initial_state(AUTH, Direction.A2B),
                      "B": initial_state(AUTH, Direction.B2A)}
        self.flight: dict[str, list[tuple[bytes, bytes | None]]] = {"A": [], "B": []}
        self.delivered = 0

    def send(self, name: str) -> None:
        sent = send(self.state[name], self.rnd.randbytes)
        self.state[name] = sent.state
        assert sent.key is not None
        if self.rnd.random() >= self.loss:
            self.flight["B" if name == "A" else "A"].append((sent.message, sent.key))

    def deliver(self, name: str) -> None:
        queue = self.flight[name]
        data, key = queue.pop(self.rnd.randrange(min(3, len(queue))))  # mild reordering
        new, got = recv(self.state[name], data)
        assert got == key
        self.state[name] = new
        self.delivered += 1

    def run(self, steps: int) -> None:
        for _ in range(steps):
            name = self.rnd.choice("AB")
            for _ in range(self.rnd.randint(1, 6)):
                self.send(name)
            other = "B" if name == "A" else "A"
            while self.flight[other] and self.rnd.random() < 0.8:
                self.deliver(other)

    def epochs(self) -> int:
        return min(s.chain.current_epoch for s in self.state.values())  # type: ignore[union-attr]


@pytest.mark.parametrize("seed", [1, 2])
def test_long_conversation_under_reordering_and_loss(seed: int) -> None:
    conversation = Conversation(seed)
    conversation.run(400)
    assert conversation.epochs() >= 3
    assert conversation.delivered > 1000


def _until(conversation: Conversation, name: str, payload: PayloadType) -> bytes:
    """Send from ``name`` until a message with ``payload`` comes out; return it."""
    for _ in range(400):
        sent = send(conversation.state[name], conversation.rnd.randbytes)
        conversation.state[name] = sent.state
        msg = SpqrMessage.decode(sent.message)
        if msg.payload is payload:
            return sent.message
        other = "B" if name == "A" else "A"
        conversation.state[other], _ = recv(conversation.state[other], sent.message)
    raise AssertionError(f"no {payload.name} from {name}")


def _tamper(data: bytes) -> bytes:
    msg = SpqrMessage.decode(data)
    assert msg.chunk is not None
    chunk = Chunk(msg.chunk.index, flip(msg.chunk.data, 5))
    return SpqrMessage(msg.epoch, msg.index, msg.payload, chunk).encode()


def test_tampered_ct2_fails_the_ciphertext_mac() -> None:
    c = Conversation(5, loss=0)
    # Lockstep until Bob sends ct2 chunks; hold back the last one and tamper with it.
    for _ in range(200):
        c.send("A")
        c.deliver("B")
        c.send("B")
        data, key = c.flight["A"][-1]
        if isinstance(c.state["A"].braid, braid.EkSentCt1Received) \
                and SpqrMessage.decode(data).payload is PayloadType.CT2 \
                and len(c.state["A"].braid.receiving_ct2.chunks) == 4:
            with pytest.raises(SpqrAuthenticationFailed):
                recv(c.state["A"], _tamper(data))
            state, got = recv(c.state["A"], data)
            assert got == key and isinstance(state.braid, braid.NoHeaderReceived)
            return
        c.deliver("A")
    raise AssertionError("ct2 never completed")


def test_ek_that_does_not_match_the_header_is_refused() -> None:
    c = Conversation(6, loss=0)
    for _ in range(200):
        c.send("A")
        data, key = c.flight["B"][-1]
        bob = c.state["B"].braid
        if isinstance(bob, braid.Ct1Sampled | braid.Ct1Acknowledged) \
                and len(bob.receiving_ek.chunks) == 35:
            with pytest.raises(SpqrErroneousData):
                recv(c.state["B"], _tamper(data))
            state, got = recv(c.state["B"], data)
            assert got == key
            assert isinstance(state.braid, braid.Ct2Sampled | braid.EkReceivedCt1Sampled)
            return
        c.deliver("B")
        c.send("B")
        c.deliver("A")
    raise AssertionError("ek never completed")
