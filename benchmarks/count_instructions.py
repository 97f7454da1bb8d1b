"""Instructions per message of W1 or W2 with SPQR off and on, counted by cachegrind.

Run: ``.venv/bin/python benchmarks/count_instructions.py [--workload w2] [--small 500
--large 1500]`` (needs ``valgrind``; takes a few minutes, slower on a busy machine).

Wall-clock ratios drift on a shared machine; instruction counts do not. Each
configuration runs twice under ``valgrind --tool=cachegrind`` (the workload's own loop,
``protocol_bench.cp_w1``/``cp_w2``, in a fresh process), with ``--small`` and ``--large``
messages; the difference divided by the difference in messages is the cost of one
message, set-up and imports cancelled out. Caveat: counts weigh every instruction alike,
while a real CPU runs OpenSSL's SHA-256 (SHA-NI) and AES far faster per instruction than
Python's interpreter loop, so a ratio of counts is a guide, not the benchmark's figure.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
_RUN = """
import sys
sys.path.insert(0, {here!r})
import protocol_bench as bench
spqr = bench.ON if {spqr!r} == "on" else bench.OFF
work = bench.cp_w1 if {workload!r} == "w1" else bench.cp_w2
work({n}, 100, False, spqr)
"""


def instructions(workload: str, spqr: str, n: int) -> int:
    code = _RUN.format(here=str(HERE), spqr=spqr, workload=workload, n=n)
    done = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no",
                           "--cachegrind-out-file=/dev/null", sys.executable, "-c", code],
                          capture_output=True, text=True, check=True, timeout=3600)
    match = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr}")
    return int(match.group(1).replace(",", ""))


def per_message(workload: str, spqr: str, small: int, large: int) -> float:
    return ((instructions(workload, spqr, large) - instructions(workload, spqr, small))
            / (large - small))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workload", choices=("w1", "w2"), default="w1")
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=1500)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    if not 0 < args.small < args.large:
        raise SystemExit("need 0 < --small < --large")
    off = per_message(args.workload, "off", args.small, args.large)
    on = per_message(args.workload, "on", args.small, args.large)
    print(f"{args.workload.upper()}: SPQR off {off:,.0f}, SPQR on {on:,.0f} instructions per "
          f"message; on/off {on / off:.3f}")


if __name__ == "__main__":
    main()
