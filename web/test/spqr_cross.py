"""Cross-check helper for web/test/spqr_storage.test.ts: SPQR states between Python and TypeScript.

Run by the TypeScript test with the repository's venv (never on its own in CI):

    python spqr_cross.py produce SEED STEPS   -> JSON records of a Python conversation
    python spqr_cross.py consume < records    -> JSON verdict on records made by TypeScript

A record is one step of a conversation, as stored bytes (cipherpost.protocol.spqr.storage):
``{"op": "recv", "state", "data", "key", "after"}`` or ``{"op": "send", "state", "draws"
(the rng outputs the send consumed), "message", "key", "after"}``; ``key`` is "" for none.
The consumer loads ``state``, checks it re-serializes to the same bytes, repeats the step
and checks the message, key and stored state after it.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from cipherpost.protocol.spqr import ratchet
from cipherpost.protocol.spqr.chain import Direction
from cipherpost.protocol.spqr.storage import deserialize, serialize

AUTH = b"\x29" * 32


def produce(seed: int, steps: int) -> list[dict[str, object]]:
    rnd = random.Random(seed)  # noqa: S311 - a reproducible test schedule, no keys
    state = {"A": ratchet.initial_state(AUTH, Direction.A2B),
             "B": ratchet.initial_state(AUTH, Direction.B2A)}
    flight: dict[str, list[bytes]] = {"A": [], "B": []}
    records: list[dict[str, object]] = []
    seen: dict[tuple[str, str], int] = {}

    def keep(op: str, before: ratchet.PqRatchetState, record: dict[str, object]) -> None:
        """Every 8th step, and the first three of each (operation, braid state) pair."""
        kind = (op, type(before.braid).__name__)
        seen[kind] = seen.get(kind, 0) + 1
        if seen[kind] <= 3 or sum(seen.values()) % 8 == 0:
            records.append(record)
    for _ in range(steps):
        name = rnd.choice("AB")
        other = "B" if name == "A" else "A"
        for _ in range(rnd.randint(1, 4)):
            draws: list[bytes] = []

            def rng(n: int, draws: list[bytes] = draws) -> bytes:
                draws.append(rnd.randbytes(n))
                return draws[-1]

            before = state[name]
            sent = ratchet.send(before, rng)
            state[name] = sent.state
            keep("send", before, {
                "op": "send", "state": serialize(before).hex(), "draws": [d.hex() for d in draws],
                "message": sent.message.hex(), "key": (sent.key or b"").hex(),
                "after": serialize(sent.state).hex()})
            if rnd.random() >= 0.05:
                flight[other].append(sent.message)
        while flight[other] and rnd.random() < 0.8:
            data = flight[other].pop(rnd.randrange(min(3, len(flight[other]))))
            before = state[other]
            state[other], key = ratchet.recv(before, data)
            keep("recv", before, {
                "op": "recv", "state": serialize(before).hex(), "data": data.hex(),
                "key": (key or b"").hex(), "after": serialize(state[other]).hex()})
    return records


def consume(records: list[dict[str, str]]) -> dict[str, object]:
    failures: list[str] = []
    checked = 0
    for i, rec in enumerate(records):
        stored = bytes.fromhex(rec["state"])
        state = deserialize(stored)
        if serialize(state) != stored:
            failures.append(f"{i}: re-serialized state differs")
            continue
        if rec["op"] == "send":
            draws = [bytes.fromhex(d) for d in rec["draws"]]

            def rng(n: int, draws: list[bytes] = draws) -> bytes:
                out = draws.pop(0)
                assert len(out) == n
                return out

            sent = ratchet.send(state, rng)
            got = (sent.message.hex(), (sent.key or b"").hex(), serialize(sent.state).hex())
            want = (rec["message"], rec["key"], rec["after"])
        else:
            after, key = ratchet.recv(state, bytes.fromhex(rec["data"]))
            got = ((key or b"").hex(), serialize(after).hex())
            want = (rec["key"], rec["after"])
        if got != want:
            failures.append(f"{i}: {rec['op']} gives another result")
        checked += 1
    return {"checked": checked, "failures": failures}


def main() -> None:
    if sys.argv[1] == "produce":
        json.dump(produce(int(sys.argv[2]), int(sys.argv[3])), sys.stdout)
    else:
        json.dump(consume(json.load(sys.stdin)), sys.stdout)


if __name__ == "__main__":
    main()
