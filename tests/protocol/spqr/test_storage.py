"""The stored form of SPQR states: every braid state round-trips and continues the same;
corrupt bytes fail as InvalidSpqrState and nothing else."""

from __future__ import annotations

import contextlib
import random

import pytest

from cipherpost.protocol.spqr import braid
from cipherpost.protocol.spqr.chain import ChainParams, Direction
from cipherpost.protocol.spqr.errors import InvalidSpqrState
from cipherpost.protocol.spqr.ratchet import PqRatchetState, initial_state, recv, send
from cipherpost.protocol.spqr.storage import STORAGE_FORMAT, deserialize, serialize
from cipherpost.protocol.spqr.wire import V0, V1

from .test_ratchet import AUTH, Conversation


def _states() -> list[PqRatchetState]:
    """States of both parties after every step of a lossy, reordered conversation."""
    c = Conversation(7)
    out = [c.state["A"], c.state["B"]]
    for _ in range(150):
        name = c.rnd.choice("AB")
        for _ in range(c.rnd.randint(1, 4)):
            c.send(name)
            out.append(c.state[name])
        other = "B" if name == "A" else "A"
        while c.flight[other] and c.rnd.random() < 0.8:
            c.deliver(other)
            out.append(c.state[other])
    return out


STATES = _states()


def test_every_braid_state_is_covered() -> None:
    kinds = {type(s.braid) for s in STATES}
    assert kinds == set(braid.BraidState.__args__)  # type: ignore[attr-defined]
    assert {s.negotiating for s in STATES} == {True, False}
    assert max(s.chain.current_epoch for s in STATES if s.chain) >= 2


def test_round_trip_is_exact_and_stable() -> None:
    for state in STATES:
        data = serialize(state)
        assert data[0] == STORAGE_FORMAT
        loaded = deserialize(data)
        assert loaded == state
        assert serialize(loaded) == data


def test_a_loaded_state_continues_exactly_like_the_original() -> None:
    c = Conversation(8, loss=0)
    for step in range(400):
        name = c.rnd.choice("AB")
        # Every few steps both parties go through storage, as a client does per message.
        if step % 3 == 0:
            c.state = {k: deserialize(serialize(v)) for k, v in c.state.items()}
        c.send(name)
        other = "B" if name == "A" else "A"
        c.deliver(other)  # asserts the receiver's key equals the sender's
    assert c.epochs() >= 2


def test_v0_is_empty_and_empty_is_v0() -> None:
    assert serialize(PqRatchetState()) == b""
    assert deserialize(b"") == PqRatchetState()
    assert initial_state(AUTH, Direction.A2B, version=V0, min_version=V0) == PqRatchetState()


def test_negotiation_and_limits_survive() -> None:
    params = ChainParams(max_jump=2**32 - 1, max_ooo_keys=7)
    state = initial_state(AUTH, Direction.B2A, min_version=V0, params=params)
    loaded = deserialize(serialize(state))
    assert loaded.negotiation is not None and loaded.negotiation.params == params
    assert loaded.negotiation.min_version == V0 and loaded.version == V1


def test_every_truncation_fails_cleanly() -> None:
    for state in STATES[::9]:
        data = serialize(state)
        # Every cut through the fixed-size parts, then every 13th through long values.
        for cut in [*range(min(len(data), 320)), *range(320, len(data), 13)]:
            with pytest.raises(InvalidSpqrState):
                deserialize(data[:cut] if cut else b"\x01")
        with pytest.raises(InvalidSpqrState):
            deserialize(data + b"\x00")


def test_corrupt_bytes_give_invalid_state_or_a_usable_state() -> None:
    rnd = random.Random(3)
    outcomes = {"refused": 0, "loaded": 0}
    for state in STATES[::5]:
        data = serialize(state)
        for _ in range(20):
            bad = bytearray(data)
            for _ in range(rnd.randint(1, 3)):
                pos = rnd.randrange(min(len(bad), 200)) if rnd.random() < 0.7 \
                    else rnd.randrange(len(bad))
                bad[pos] = rnd.randrange(256)
            try:
                loaded = deserialize(bytes(bad))
            except InvalidSpqrState:
                outcomes["refused"] += 1
                continue
            outcomes["loaded"] += 1
            # A state that loads is well-formed: using it raises protocol errors at most.
            with contextlib.suppress(InvalidSpqrState):
                send(loaded, rnd.randbytes)
    assert outcomes["refused"] > 50 and outcomes["loaded"] > 50


@pytest.mark.parametrize("data", [b"\x02\x01", b"\x01\x00", b"\x01\x01", b"\x01\x09",
                                  b"\x01\x03" + bytes(200)])
def test_bad_headers_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidSpqrState):
        deserialize(data)


def test_a_loaded_state_still_refuses_what_the_original_refuses() -> None:
    state = next(s for s in STATES if isinstance(s.braid, braid.NoHeaderReceived)
                 and not s.negotiating)
    loaded = deserialize(serialize(state))
    with pytest.raises(InvalidSpqrState):
        deserialize(serialize(loaded)[:-1])
    # An empty field 5 after negotiation is a version mismatch, before and after storage.
    for s in (state, loaded):
        with pytest.raises(Exception) as info:
            recv(s, b"")
        assert type(info.value).__name__ == "SpqrVersionMismatch"
