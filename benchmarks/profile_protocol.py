"""Where W1 and W2 spend their time: cProfile over the benchmark's own loops.

Run: ``.venv/bin/python benchmarks/profile_protocol.py [--quick] [--top N] [--spqr]``.
Prints, per workload and store (with ``--spqr``: on sessions running SPQR), the functions
with the most own time (cProfile's ``tottime``), with paths shortened. cProfile adds a
roughly constant cost to every Python call, so small Python functions look heavier than
they are; use it to rank, and ``protocol_bench.py`` to measure.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import re
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import protocol_bench as bench


def profile(run: Callable[[], float], top: int) -> str:
    run()  # warm-up
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    text = re.sub(r"\S*/site-packages/", "", out.getvalue())
    text = re.sub(r"\S*/src/cipherpost/", "cipherpost/", text)
    text = re.sub(r"\S*/lib/python3\.\d+/", "", text)
    return "\n".join(line for line in text.splitlines() if line.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--spqr", action="store_true", help="sessions with SPQR on")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    n1, n2 = 10_000 // scale, 2_000 // scale
    spqr = bench.ON if args.spqr else bench.OFF
    for serializing in (False, True):
        label = ("serializing" if serializing else "objects") + (", SPQR on" if args.spqr
                                                                 else "")
        print(f"===== W1 ({n1} messages one way), {label} store")
        print(profile(lambda s=serializing: bench.cp_w1(n1, 100, s, spqr), args.top))  # type: ignore[misc]
        print(f"===== W2 ({n2} messages alternating), {label} store")
        print(profile(lambda s=serializing: bench.cp_w2(n2, 100, s, spqr), args.top))  # type: ignore[misc]


if __name__ == "__main__":
    main()
