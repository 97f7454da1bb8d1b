"""The per-epoch chains (spqr-digest §5): derivations, limits and error cases."""

from __future__ import annotations

import pytest

from cipherpost.protocol.spqr.chain import Chain, ChainParams, Direction
from cipherpost.protocol.spqr.errors import (
    InvalidSpqrState,
    SpqrEpochOutOfRange,
    SpqrKeyAlreadyRequested,
    SpqrKeyJump,
    SpqrKeyTrimmed,
)

from .helpers import RUNS, H, load

MODEL = load("model-fixed-inputs.json")["kdf"]
SMALL = ChainParams(max_jump=10, max_ooo_keys=4)


def test_model_chain_start_and_keys() -> None:
    alice = Chain.start(H(MODEL["auth_key"]), Direction.A2B)
    bob = Chain.start(H(MODEL["auth_key"]), Direction.B2A)
    start = MODEL["chain_start"]
    assert alice.next_root.hex() == start["next_root"] == bob.next_root.hex()
    assert alice.links[0].send.next_key.hex() == start["a2b_seed"]
    assert alice.links[0].recv.next_key.hex() == start["b2a_seed"]
    assert bob.links[0].send.next_key.hex() == start["b2a_seed"]
    keys = MODEL["chain_keys_epoch0"]
    sent = {}
    for _ in range(10):
        alice, index, key = alice.send_key(0)
        sent[index] = key
    for index, a2b, b2a in zip(keys["indices"], keys["a2b"], keys["b2a"], strict=True):
        assert sent[index].hex() == a2b
        bob, key = bob.recv_key(0, index)
        assert key.hex() == a2b
        alice, key = alice.recv_key(0, index)
        assert key.hex() == b2a


def test_model_add_epoch() -> None:
    case = MODEL["add_epoch"]
    for direction, mine, theirs in ((Direction.A2B, "a2b", "b2a"),
                                    (Direction.B2A, "b2a", "a2b")):
        chain = Chain.start(H(MODEL["auth_key"]), direction)
        chain = chain.add_epoch(1, H(case["epoch_secret"]))
        assert chain.next_root.hex() == case["next_root"]
        assert chain.links[-1].send.next_key.hex() == case[f"{mine}_seed"]
        chain, index, key = chain.send_key(1)
        assert (index, key.hex()) == (1, case[f"{mine}_key1"])
        chain, key = chain.recv_key(1, 1)
        assert key.hex() == case[f"{theirs}_key1"]


@pytest.mark.parametrize("name", RUNS)
def test_recorded_chain_epoch_zero(name: str) -> None:
    run = load(name)
    chain = Chain.start(H(run["spqr_auth_key"]), Direction.A2B)
    want = run["chain_epoch0"]
    assert chain.next_root.hex() == want["next_root"]
    assert chain.links[0].send.next_key.hex() == want["a2b_seed"]
    assert chain.links[0].recv.next_key.hex() == want["b2a_seed"]


def _pair(params: ChainParams = SMALL) -> tuple[Chain, Chain]:
    key = b"\x07" * 32
    return (Chain.start(key, Direction.A2B, params), Chain.start(key, Direction.B2A, params))


def _sent(chain: Chain, count: int, epoch: int = 0) -> tuple[Chain, dict[int, bytes]]:
    keys = {}
    for _ in range(count):
        chain, index, key = chain.send_key(epoch)
        keys[index] = key
    return chain, keys


def test_out_of_order_and_each_key_once() -> None:
    alice, bob = _pair()
    alice, keys = _sent(alice, 8)
    for index in (5, 3, 4, 1, 2, 8, 7, 6):
        before = bob
        bob, key = bob.recv_key(0, index)
        assert key == keys[index]
        assert before.recv_key(0, index)[1] == key  # the old value is untouched
        with pytest.raises(SpqrKeyAlreadyRequested):
            bob.recv_key(0, index)


def test_jump_limit() -> None:
    alice, bob = _pair()
    alice, keys = _sent(alice, 12)
    with pytest.raises(SpqrKeyJump):
        bob.recv_key(0, 11)
    bob, key = bob.recv_key(0, 10)
    assert key == keys[10]


def test_trimmed_and_discarded_keys() -> None:
    alice, bob = _pair()
    alice, keys = _sent(alice, 20)
    bob, _ = bob.recv_key(0, 10)  # keeps 6..9 (max_ooo 4), never 1..5
    assert sorted(bob.links[0].recv.skipped) == [6, 7, 8, 9]
    with pytest.raises(SpqrKeyTrimmed):
        bob.recv_key(0, 5)
    assert bob.recv_key(0, 6)[1] == keys[6]
    # A jump past max_ooo discards every stored key.
    bob, _ = bob.recv_key(0, 16)
    assert sorted(bob.links[0].recv.skipped) == [12, 13, 14, 15]
    with pytest.raises(SpqrKeyTrimmed):
        bob.recv_key(0, 9)
    with pytest.raises(SpqrKeyAlreadyRequested):
        bob.recv_key(0, 16)


def test_garbage_collection_of_old_keys() -> None:
    params = ChainParams(max_jump=100, max_ooo_keys=4)  # trim size 5
    alice, bob = _pair(params)
    alice, keys = _sent(alice, 30)
    for index in (2, 4, 6, 8, 10, 12):  # each leaves one skipped key behind
        bob, _ = bob.recv_key(0, index)
    skipped = bob.links[0].recv.skipped
    # At 5 stored keys (1, 3, 5, 7, 9; counter 9) the gc drops those below 9 - 4.
    assert sorted(skipped) == [5, 7, 9, 11]
    assert all(skipped[i] == keys[i] for i in skipped)


def test_epoch_bookkeeping() -> None:
    alice, bob = _pair()
    with pytest.raises(SpqrEpochOutOfRange):
        bob.recv_key(1, 1)
    for e in (1, 2):
        alice = alice.add_epoch(e, bytes([e]) * 32)
        bob = bob.add_epoch(e, bytes([e]) * 32)
    with pytest.raises(InvalidSpqrState):
        alice.add_epoch(4, bytes(32))
    alice, keys0 = _sent(alice, 2, 0)
    alice, keys1 = _sent(alice, 2, 1)
    assert len(alice.links) == 3 and alice.links[0].send.next_key == b""  # epoch 0 wiped
    alice, keys2 = _sent(alice, 1, 2)
    assert len(alice.links) == 2  # epoch 0 dropped, epoch 1 kept for late messages
    assert alice.links[0].send.next_key == b""
    with pytest.raises(InvalidSpqrState):
        alice.send_key(1)
    # Bob has sent nothing yet, so he still has every epoch.
    bob, key = bob.recv_key(1, 2)
    assert key == keys1[2]
    bob, key = bob.recv_key(0, 1)
    assert key == keys0[1]
    bob, _ = bob.send_key(2)[0], None
    with pytest.raises(SpqrEpochOutOfRange):
        bob.recv_key(0, 2)
    assert bob.recv_key(2, 1)[1] == keys2[1]


def test_limits_are_checked() -> None:
    for bad in ((0, 1), (1, 0), (2**32, 1)):
        with pytest.raises(ValueError):
            ChainParams(*bad)
    assert ChainParams().max_jump == 25_000 and ChainParams().max_ooo_keys == 2_000


def test_repr_hides_keys() -> None:
    alice, _ = _pair()
    text = repr(alice)
    assert alice.next_root.hex()[:8] not in text
    assert alice.links[0].send.next_key.hex()[:8] not in text
    assert "skipped" in repr(alice.links[0].recv) and "redacted" in text
