"""Loading the recorded SPQR vectors (see vectors/SOURCES.md)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parent / "vectors"

H = bytes.fromhex


@cache
def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


RUNS = ("run-lockstep-0.103.0.json", "run-bursty-0.103.0.json")


def flip(data: bytes, bit: int = 0) -> bytes:
    """``data`` with one bit flipped."""
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)
