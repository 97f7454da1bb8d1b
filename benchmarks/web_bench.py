"""The TypeScript protocol core (web/src/protocol) under Node next to the Python one.

Run: ``make bench-web`` (or ``.venv/bin/python benchmarks/web_bench.py [--quick]``).

The workloads are protocol_bench.py's W1-W4 (benchmarks/README.md), W1 and W2 with both
session stores, without SPQR; then W1-W3 with SPQR required (the default of both cores
since 2026-11-29) on both sides. The TypeScript side is
``web/bench/protocol.ts``, one Node process per run (start-up, compilation and a short
warm-up run not timed); its runs take turns with the Python ones so both sample the same
machine noise. ``ts/py`` is the median of run-by-run ratios (above 1: TypeScript slower).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from protocol_bench import ON, cp_w1, cp_w2, cp_w3, cp_w4, interleaved_runs, paired_ratio

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"


def node_ready() -> bool:
    return shutil.which("node") is not None and (WEB / "node_modules" / "tsx").exists()


def ts_run(params: dict[str, object]) -> dict[str, float]:
    out = subprocess.run(["node", "--import", "tsx", "bench/protocol.ts", json.dumps(params)],
                         cwd=WEB, capture_output=True, text=True, timeout=1800, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"web/bench/protocol.ts failed: {out.stderr.strip()[-2000:]}")
    result: dict[str, float] = json.loads(out.stdout)
    return result


def ts(key: str, n: int, size: int, serializing: bool = False,
       spqr: str = "off") -> Callable[[], float]:
    unit = {"w1": "us", "w2": "us", "w3": "ms", "w4": "mbs"}[key]
    params = {key: n, "size": size, "reps": 1, "only": [key], "serializing": serializing,
              "warmup": 1, "spqr": spqr}
    return lambda: ts_run(params)[f"{key}_{unit}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="about 10x fewer iterations")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if not node_ready():
        sys.exit("Node or web/node_modules missing: run `make web` first")
    scale = 10 if args.quick else 1
    n1, n2, n3, n4 = 10_000 // scale, 2_000 // scale, max(30 // scale, 5), 500 // scale
    size = 100
    rows: list[tuple[str, str, str, Callable[[], float], Callable[[], float]]] = [
        ("W1 one way, µs/msg", "objects", "us", lambda: cp_w1(n1, size, False),
         ts("w1", n1, size)),
        ("W1 one way, µs/msg", "serializing", "us", lambda: cp_w1(n1, size, True),
         ts("w1", n1, size, True)),
        ("W2 alternating, µs/msg", "objects", "us", lambda: cp_w2(n2, size, False),
         ts("w2", n2, size)),
        ("W2 alternating, µs/msg", "serializing", "us", lambda: cp_w2(n2, size, True),
         ts("w2", n2, size, True)),
        ("W3 session set-up, median ms", "objects", "ms", lambda: cp_w3(n3), ts("w3", n3, size)),
        ("W4 64 KiB one way, MB/s", "objects", "mbs", lambda: cp_w4(n4), ts("w4", n4, size)),
        ("W1 one way, µs/msg", "spqr-on", "us", lambda: cp_w1(n1, size, False, ON),
         ts("w1", n1, size, spqr="required")),
        ("W2 alternating, µs/msg", "spqr-on", "us", lambda: cp_w2(n2, size, False, ON),
         ts("w2", n2, size, spqr="required")),
        ("W3 session set-up, median ms", "spqr-on", "ms", lambda: cp_w3(n3, ON),
         ts("w3", n3, size, spqr="required")),
    ]
    node = subprocess.run(["node", "--version"], capture_output=True, text=True,
                          check=False).stdout.strip()
    print(f"TypeScript (Node {node}) next to Python, {args.reps} interleaved runs each; "
          "best run shown, ts/py = median of run-by-run ratios (W4: py/ts, MB/s)")
    print(f"{'workload':32} {'store':12} {'python':>10} {'typescript':>11} {'ts/py':>8}")
    figures: dict[str, float] = {}
    for name, store, unit, py, tsf in rows:
        py_runs, ts_runs = interleaved_runs(args.reps, py, tsf)
        pick = max if unit == "mbs" else min
        best_py, best_ts = pick(py_runs), pick(ts_runs)
        ratio = (paired_ratio(ts_runs, py_runs) if unit == "mbs"
                 else paired_ratio(py_runs, ts_runs))
        print(f"{name:32} {store:12} {best_py:10.1f} {best_ts:11.1f} {ratio:7.2f}x")
        key = f"{name.split()[0].lower()}_{store}"
        figures.update({f"{key}_python": best_py, f"{key}_typescript": best_ts,
                        f"{key}_ts_over_py": ratio})
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
