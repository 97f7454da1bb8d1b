"""Hostile SPQR bytes at many points of a conversation: every failure is a ProtocolError."""

from __future__ import annotations

import random

from cipherpost.protocol.errors import ProtocolError
from cipherpost.protocol.spqr.ratchet import PqRatchetState, recv
from cipherpost.protocol.spqr.wire import Chunk, PayloadType, SpqrMessage

from .test_ratchet import Conversation


def _snapshots() -> tuple[list[PqRatchetState], list[bytes]]:
    """States of both parties at many points of a conversation, and the messages seen."""
    c = Conversation(21, loss=0)
    states, messages = [], []
    for _ in range(120):
        name = c.rnd.choice("AB")
        c.send(name)
        other = "B" if name == "A" else "A"
        messages.append(c.flight[other][-1][0])
        c.deliver(other)
        states.append(c.state[other])
    return states[::7], messages


_NO_CHUNK = (PayloadType.NONE, PayloadType.CT1_ACK)


def _forged(rnd: random.Random, epoch: int, index: int) -> bytes:
    payload = rnd.choice(list(PayloadType))
    chunk = None if payload in _NO_CHUNK else Chunk(rnd.randrange(65536), rnd.randbytes(32))
    return SpqrMessage(epoch, index, payload, chunk).encode()


def _mutations(rnd: random.Random, data: bytes) -> list[bytes]:
    flipped = bytearray(data)
    flipped[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
    msg = SpqrMessage.decode(data)
    return [bytes(flipped), data[:rnd.randrange(len(data))], data + b"\x00",
            b"\x01" + rnd.randbytes(rnd.randrange(40)),
            _forged(rnd, msg.epoch, msg.index),  # same key, another payload
            _forged(rnd, rnd.choice([1, 2, 3, 2**63]), rnd.randrange(2**32))]


def test_mutated_messages_raise_only_protocol_errors() -> None:
    rnd = random.Random(5)
    states, messages = _snapshots()
    outcomes = {"ok": 0, "refused": 0}
    for state in states:
        for data in rnd.sample(messages, 12):
            for bad in _mutations(rnd, data):
                try:
                    recv(state, bad)
                    outcomes["ok"] += 1
                except ProtocolError:
                    outcomes["refused"] += 1
    assert outcomes["ok"] > 50 and outcomes["refused"] > 50


def test_every_spqr_error_is_an_invalid_message() -> None:
    from cipherpost.protocol.errors import InvalidMessage
    from cipherpost.protocol.spqr import errors

    leaves = [v for v in vars(errors).values()
              if isinstance(v, type) and issubclass(v, errors.SpqrError)]
    assert len(leaves) == 11  # SpqrError and its ten leaves
    for leaf in leaves:
        assert issubclass(leaf, InvalidMessage) and leaf.kind == "invalid_message"


def test_the_payload_shortcut_covers_exactly_what_each_state_takes_in() -> None:
    """step_recv returns early for payloads a state does not consume (_CONSUMES); that
    table must name every state, and every payload it leaves out must indeed leave the
    state unchanged on the full path."""
    import typing

    from cipherpost.protocol.spqr import braid

    states = set(typing.get_args(braid.BraidState))
    assert set(braid._CONSUMES) == states
    c = Conversation(11, loss=0)
    seen: set[type] = set()
    for step in range(300):
        name = "AB"[step % 2]
        c.send(name)
        c.deliver("B" if name == "A" else "A")
        for state in (c.state["A"].braid, c.state["B"].braid):
            assert state is not None
            seen.add(type(state))
            for payload in PayloadType:
                if payload in braid._CONSUMES[type(state)]:
                    continue
                chunk = bytes(32) if payload in (1, 2, 3, 5, 6) else None
                assert braid._consume(state, payload, 0, chunk) == (state, None)
    assert len(seen) >= 9
