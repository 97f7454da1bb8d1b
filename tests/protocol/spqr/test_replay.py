"""The V1 state machine driven with the recorded inputs of libsignal 0.103.0 runs.

Both parties run in Python with libsignal's key pairs and encapsulation messages
injected; every SPQR message they emit must equal the recorded one byte for byte, every
key the recorded SPQR key, and every epoch the recorded secrets (spqr-digest §10).
"""

from __future__ import annotations

from cipherpost.protocol.ratchet import MessageKeys, message_key_seed
from cipherpost.protocol.spqr.kdf import CHAIN_ADD_EPOCH, hkdf

from .helpers import H, load
from .replay import check_chunk, parties

LOCKSTEP = load("run-lockstep-0.103.0.json")
BURSTY = load("run-bursty-0.103.0.json")


def test_lockstep_run_replays_byte_for_byte() -> None:
    run = LOCKSTEP
    party = parties(run)
    recorded = {m["id"]: m for m in run["messages"]}
    epochs_done = {}
    for i in range(200):  # the run's length; the first 120 messages are recorded in full
        sender, receiver = ("A", "B") if i % 2 == 0 else ("B", "A")
        sent = party[sender].send()
        check_chunk(run, sent.message)
        got = party[receiver].recv(sent.message)
        assert got == sent.key and got is not None
        if i in recorded:
            m = recorded[i]
            assert m["from"] == sender
            assert sent.message.hex() == m["pq_ratchet"]
            assert sent.key.hex() == m["spqr_key"]
            # The SPQR key is the HKDF salt of the Double Ratchet message keys (§7).
            keys = MessageKeys.from_seed(message_key_seed(H(m["dr_chain_key"])), sent.key)
            assert (keys.cipher_key.hex(), keys.mac_key.hex(), keys.iv.hex()) == (
                m["cipher_key"], m["mac_key"], m["iv"])
        for p in party.values():
            chain = p.state.chain
            if chain is not None and chain.current_epoch not in epochs_done \
                    and chain.current_epoch > 0:
                epochs_done.setdefault(chain.current_epoch, (p.name, i, chain.next_root))
    assert sorted(epochs_done)[:2] == [1, 2]
    previous_root = H(run["chain_epoch0"]["next_root"])
    for e in run["epochs"]:
        first, _at, next_root = epochs_done[e["epoch"]]
        assert first != e["ek_side"]  # the CT sender knows the epoch secret first
        assert next_root.hex() == e["chain_next_root_after"]
        okm = hkdf(previous_root, H(e["epoch_secret"]), CHAIN_ADD_EPOCH, 96)
        assert okm.hex() == e["chain_next_root_after"] + e["chain_a2b_seed"] + e["chain_b2a_seed"]
        previous_root = next_root
    # After the recorded epochs, a third (with fresh Python keys) was under way.
    assert {p.state.chain.current_epoch for p in party.values()} <= {2, 3}
    assert 3 in epochs_done and epochs_done[3][0] == "B"


def test_lockstep_epoch_one_transitions_as_recorded() -> None:
    """Spot checks of the table in spqr-digest §6.2."""
    run = LOCKSTEP
    messages = run["messages"]
    types = [(m["pq_decoded"]["epoch"], m["pq_decoded"]["type"]) for m in messages]
    assert types[0] == (1, "Hdr") and types[1] == (1, "None")
    assert types[5] == (1, "Ct1") and types[6] == (1, "Ek")
    assert types[85] == (1, "Ct2") and types[86] == (2, "None") and types[87] == (2, "Hdr")


def test_bursty_run_replays_with_inferred_delivery() -> None:
    """The bursty run records what each side sent, not when the other side received it.

    Each side's next message is reproduced by delivering the peer's pending messages,
    oldest first, only as far as needed to emit exactly the recorded bytes; keys of all
    delivered messages must match, and every message is delivered by the end (the
    lost ones late, which exercises the skipped-key store).
    """
    run = BURSTY
    party = parties(run)
    pending: dict[str, list[tuple[bytes, bytes]]] = {"A": [], "B": []}
    delivered = 0
    for m in run["messages"]:
        sender = party[m["from"]]
        other = "B" if m["from"] == "A" else "A"
        while True:
            trial = sender.fork()
            sent = trial.send()
            if sent.message.hex() == m["pq_ratchet"]:
                break
            assert pending[m["from"]], f"message {m['id']} cannot be reproduced"
            data, key = pending[m["from"]].pop(0)
            assert sender.recv(data) == key
            delivered += 1
        party[m["from"]] = trial
        assert sent.key is not None and sent.key.hex() == m["spqr_key"]
        check_chunk(run, sent.message)
        pending[other].append((sent.message, sent.key))
    for name, queue in pending.items():
        for data, key in reversed(queue):  # the rest, newest first
            assert party[name].recv(data) == key
    assert delivered > 30
