"""Regenerate vectors/session-kat.json: a whole seeded session (see tests/support/kat.py).

The file pins Cipherpost's exact wire output for a fixed seed (XEdDSA signatures, PQXDH
with a deterministic Kyber1024, the PreKey message, a reply after a DH ratchet step). It
is not independent evidence of correctness (libsignal interop is), but any change to the
bytes Cipherpost produces shows up as a diff of this file.

Run: .venv/bin/python vectors/tools/make_session_kat.py
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.kat import transcript

SEEDS = [1, 2]


def main() -> None:
    out = {"source": "Cipherpost itself, seeded; vectors/tools/make_session_kat.py",
           "cases": [{"seed": seed, **transcript(seed)} for seed in SEEDS]}
    path = Path(__file__).resolve().parents[1] / "session-kat.json"
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
