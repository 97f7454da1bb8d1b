"""Driving two SPQR parties with the randomness of a recorded libsignal run."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from cipherpost.protocol.spqr import incremental, ratchet
from cipherpost.protocol.spqr.chain import Direction
from cipherpost.protocol.spqr.incremental import KeyPair
from cipherpost.protocol.spqr.wire import PayloadType, SpqrMessage

from .helpers import H

VALUE_OF = {PayloadType.HDR: "hdr", PayloadType.EK: "ek", PayloadType.EK_CT1_ACK: "ek",
            PayloadType.CT1: "ct1", PayloadType.CT2: "ct2"}


@dataclass
class Party:
    """One side: its SPQR state plus the recorded key pairs and encapsulation messages.

    Once the recording runs out, randomness comes from a seeded generator.
    """

    name: str
    state: ratchet.PqRatchetState
    key_pairs: list[KeyPair]
    encaps_ms: list[bytes]
    fallback: random.Random = field(default_factory=lambda: random.Random(99))

    def rng(self, n: int) -> bytes:
        if n == 32 and self.encaps_ms:
            return self.encaps_ms.pop(0)
        return self.fallback.randbytes(n)

    def keygen(self, rng: Callable[[int], bytes]) -> KeyPair:
        if self.key_pairs:
            return self.key_pairs.pop(0)
        return incremental.generate(rng)

    def fork(self) -> Party:
        """An independent copy (states are immutable; only the queues are copied)."""
        fallback = random.Random()
        fallback.setstate(self.fallback.getstate())
        return Party(self.name, self.state, list(self.key_pairs), list(self.encaps_ms),
                     fallback)

    def send(self) -> ratchet.Sent:
        sent = ratchet.send(self.state, self.rng, keygen=self.keygen)
        self.state = sent.state
        return sent

    def recv(self, data: bytes) -> bytes | None:
        self.state, key = ratchet.recv(self.state, data)
        return key


def parties(run: dict) -> dict[str, Party]:
    """Alice (A2B) and Bob (B2A) of a recorded run, at the start."""
    auth_key = H(run["spqr_auth_key"])
    out = {}
    for name, direction in (("A", Direction.A2B), ("B", Direction.B2A)):
        mine = [e for e in run["epochs"] if e["ek_side"] == name]
        theirs = [e for e in run["epochs"] if e["ek_side"] != name]
        out[name] = Party(
            name, ratchet.initial_state(auth_key, direction),
            [KeyPair(H(e["hdr"]), H(e["ek"]), H(e["dk"])) for e in mine],
            [H(e["encaps_m"]) for e in theirs])
    return out


def check_chunk(run: dict, message: bytes) -> SpqrMessage:
    """The message's chunk, if any, is the recorded chunk of that epoch and index."""
    msg = SpqrMessage.decode(message)
    if msg.chunk is not None and msg.epoch <= len(run["epochs"]):
        recorded = run["epochs"][msg.epoch - 1]["wire_chunks"][VALUE_OF[msg.payload]]
        assert recorded[str(msg.chunk.index)] == msg.chunk.data.hex(), msg
    return msg
