"""Instructions per delivered message of the whole relay, counted by cachegrind.

Run: ``.venv/bin/python benchmarks/relay_path_instructions.py [--baseline <checkout>]
[--devices 100 --rate 20 --short 8 --long 24]`` (needs ``valgrind``; 5-10 minutes).

``relay_instructions.py`` counts the storage path alone; this counts everything the relay
process does for a message: reading and parsing the ``send`` frame, the checks, the group
commit, the ``sent`` answer, the ``messages`` push, the ``ack`` and its deletion, the
event loop's wake-ups and the garbage collector. The relay runs under cachegrind
(``python -m cipherpost.server``, SQLite), and ``relay_load.py``'s load generator (one
process, not under valgrind) connects ``--devices`` devices with the batch subprotocol
and sends ``--rate`` messages per second in total, paced and spread across them, each
device acknowledging what it receives, as in ``relay_load.py``'s latency run. At this
rate every message is on its own, as at 1,000 devices sending 1,000 messages per second
(there, a commit holds one to three operations). The devices ack as relay_load.py's do
(RELAY_LOAD_ACKS): under ``cipherpost.batch.2`` an ack waits up to a second for the
device's next send, so give one message a second per device (``--devices 10 --rate
10``) to count that path as at 1,000 x 1,000; at 100 devices x 20 msg/s most acks go
alone.

Each set-up runs for ``--short`` and ``--long`` seconds in fresh processes; the
difference in instructions over the difference in delivered messages is the cost of
one (start-up, accounts, connections and shutdown cancel out; timers that run every
second are counted, as they are at this rate). The **bare relay** of ``relay_load.py``
runs the same way in the same invocation and the ratio is printed. ``--baseline`` runs
the relay of another checkout's ``src`` too (e.g. a worktree of an older commit).

Instruction counts leave out the kernel (socket writes and reads, the WAL's write()),
and they do move with the machine's load here: the rate is fixed in wall time while
valgrind runs the server some 50 times slower, so a relay starved of CPU on a busy
machine falls behind, batches its commits and frames, and counts fewer instructions
per message (each run's p50 latency and run-queue wait are printed: a p50 beyond a few
ms means it fell behind). Two counts of the same tree at a load of 10 differed by 1.6x
(2026-11-29). Compare trees in runs made at the same time, repeat them, and confirm a
gain with ``relay_load.py`` on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.relay_load import (  # noqa: E402
    BARE_SERVER,
    Server,
    _measure,
    free_port,
    raise_fd_limit,
    wait_port,
)


def _valgrind(out: Path) -> list[str]:
    return ["valgrind", "--tool=cachegrind", "--cache-sim=no",
            "--cachegrind-out-file=/dev/null", f"--log-file={out}"]


def count(kind: str, src: Path, devices: int, rate: float, seconds: float,
          workdir: Path) -> tuple[int, int]:
    """Instructions of one run of ``kind`` ("bare" or "relay") and messages delivered."""
    port = free_port()
    log = workdir / f"valgrind-{port}.log"
    env = dict(os.environ)
    tokens: list[str] = []
    if kind == "bare":
        command = [*_valgrind(log), sys.executable, "-c", BARE_SERVER, str(port)]
    else:
        db = f"sqlite:///{workdir}/relay-{port}.db"
        env.update({"PYTHONPATH": str(src), "CIPHERPOST_DATABASE_URL": db,
                    "CIPHERPOST_ATTACHMENT_DIR": str(workdir / "blobs"),
                    "CIPHERPOST_RATE_MESSAGES_PER_PAIR": "100000/10000",
                    "CIPHERPOST_LOG_LEVEL": "WARNING"})
        tokens = subprocess.run(
            [sys.executable, "-c", _ACCOUNTS, db, str(devices)], env=env, check=True,
            capture_output=True, text=True, timeout=600).stdout.split()
        command = [*_valgrind(log), sys.executable, "-m", "cipherpost.server",
                   "--port", str(port)]
    proc = subprocess.Popen(command, env=env,
                            preexec_fn=lambda: raise_fd_limit(devices + 1000))
    try:
        wait_port(port, proc, timeout=600)
        result = _measure(Server(kind, [port], [proc], tokens), devices, rate, seconds,
                          1, True)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    match = re.search(r"I\s+refs:\s+([\d,]+)", log.read_text())
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{log.read_text()}")
    instructions = int(match.group(1).replace(",", ""))
    # A relay that fell behind (starved of CPU under valgrind on a busy machine) batched
    # its commits and frames: its count per message is lower and not comparable.
    print(f"  {kind} {seconds:g} s: {instructions:,} instructions, "
          f"{int(result['delivered'])} delivered, p50 {result['p50_ms']:.1f} ms, "
          f"p99 {result['p99_ms']:.1f} ms, runq {result['runqueue_percent']:.0f} %",
          flush=True)
    return instructions, int(result["delivered"])


#: Accounts are made in the tree under test (its schema), tokens printed one a line.
_ACCOUNTS = f"""
import asyncio, sys
sys.path.insert(0, {str(ROOT)!r})
from benchmarks.relay_load import create_accounts
print("\\n".join(asyncio.run(create_accounts(sys.argv[1], int(sys.argv[2])))))
"""


def per_message(kind: str, src: Path, args: argparse.Namespace, workdir: Path) -> float:
    short, n_short = count(kind, src, args.devices, args.rate, args.short, workdir)
    long, n_long = count(kind, src, args.devices, args.rate, args.long, workdir)
    if n_long <= n_short:
        raise RuntimeError(f"{kind}: {n_long} messages delivered in the long run, "
                           f"{n_short} in the short one")
    return (long - short) / (n_long - n_short)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path,
                        help="another checkout whose relay to measure beside this one")
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20, help="messages per second in total")
    parser.add_argument("--short", type=float, default=8, help="seconds of the short runs")
    parser.add_argument("--long", type=float, default=24, help="seconds of the long runs")
    parser.add_argument("--skip-bare", action="store_true")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    if not 0 < args.short < args.long:
        raise SystemExit("need 0 < --short < --long")
    raise_fd_limit(args.devices + 1000)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ours = per_message("relay", ROOT / "src", args, work)
        print(f"this tree: {ours:,.0f} instructions per delivered message "
              f"({args.devices} devices, {args.rate:g} msg/s)")
        if args.baseline is not None:
            base = per_message("relay", args.baseline.resolve() / "src", args, work)
            print(f"baseline {args.baseline}: {base:,.0f} instructions per delivered "
                  f"message; this tree / baseline {ours / base:.3f}")
        if not args.skip_bare:
            bare = per_message("bare", ROOT / "src", args, work)
            print(f"bare relay: {bare:,.0f} instructions per delivered message; "
                  f"this tree / bare relay {ours / bare:.2f}x")


if __name__ == "__main__":
    main()
