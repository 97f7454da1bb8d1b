"""Instructions per message of the relay's storage path, counted by cachegrind.

Run: ``.venv/bin/python benchmarks/relay_instructions.py [--baseline <checkout>]
[--small 500 --large 1500]`` (needs ``valgrind``; a minute or two).

Each message is queued and acknowledged through ``Storage.enqueue`` and
``Storage.acknowledge`` on SQLite (WAL, ``synchronous=NORMAL``, the relay's settings),
through the group commit as at a low rate: each commit holds one send and the
acknowledgement of the message before, the way 1,000 devices sending 1,000 messages per
second in total share commits (``relay_load.py``'s latency run). That is the database's
share of a delivered message: the rows, the indexes, the WAL pages written per commit.
Frames, JSON and the event loop are not in it (``relay_load.py`` measures the whole).

As in ``count_instructions.py``, each configuration runs with ``--small`` and ``--large``
messages in fresh processes, and the difference over the difference in messages is the
cost of one: set-up and imports cancel out, and counts do not move with the machine's
load. ``--baseline`` runs the same loop on another checkout's ``src`` (e.g. a worktree
of an older commit) in the same invocation and prints the ratio. ``--acks own`` commits
each send and then its acknowledgement on their own, as when a device's ack comes
between two sends; ``--acks lazy`` lets the acknowledgement wait for the next send's
commit (``lazy=True``), and its baseline runs ``own``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_RUN = """
import asyncio, sys
from cipherpost.server.storage.engine import Database
from cipherpost.server.storage.models import KeyUpload, NewDevice, OutgoingMessage
from cipherpost.server.storage.sql import Storage

DEVICES = 100
CONTENT = bytes(range(160))

def account(i):
    return f"{{i:08d}}-0000-4000-8000-000000000000"

async def main(n):
    db = Database({url!r})
    db.migrate()
    storage = Storage(db)
    for i in range(DEVICES):
        await storage.create_account(account(i), None, b"\\x05" + bytes(32),
                                     NewDevice(1 + i, bytes([i]) * 32, None, KeyUpload()), 0)
    previous = None
    lazy = []
    for k in range(n):
        to = k % DEVICES
        sent = storage.enqueue(account(to), [OutgoingMessage(1, 1 + to, 2, CONTENT)],
                               sender=(account((to + 1) % DEVICES), 1), exclude_device=None,
                               client_timestamp=k, now=1_800_000_000_000 + k, ttl=2_592_000,
                               byte_budget=1 << 30)
        if {acks!r} != "shared":
            queued = await sent
            guid = queued[0][1].guid
            if {acks!r} == "own":
                assert await storage.acknowledge(account(to), 1, [guid]) == 1
            else:
                lazy.append(storage.acknowledge(account(to), 1, [guid], lazy=True))
            continue
        pending = [sent]
        if previous is not None:
            pending.append(storage.acknowledge(account(previous[0]), 1, [previous[1]]))
        done = await asyncio.gather(*pending)
        previous = (to, done[0][0][1].guid)
        if len(done) > 1:
            assert done[1] == 1
    assert sum(await asyncio.gather(*lazy)) == len(lazy)
    storage.close()
    db.dispose()

asyncio.run(main({n}))
"""


def instructions(src: Path, n: int, acks: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        code = _RUN.format(url=f"sqlite:///{tmp}/relay.db", n=n, acks=acks)
        done = subprocess.run(
            ["valgrind", "--tool=cachegrind", "--cache-sim=no",
             "--cachegrind-out-file=/dev/null", sys.executable, "-c", code],
            capture_output=True, text=True, check=True, timeout=3600,
            env={**os.environ, "PYTHONPATH": str(src)})
    match = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr}")
    return int(match.group(1).replace(",", ""))


def per_message(src: Path, small: int, large: int, acks: str) -> float:
    return (instructions(src, large, acks) - instructions(src, small, acks)) / (large - small)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path,
                        help="another checkout to measure beside this one")
    parser.add_argument("--acks", choices=("shared", "own", "lazy"), default="shared",
                        help="shared: each commit holds a send and the ack before it; own: "
                             "a send commits, then its ack on its own; lazy: the ack waits "
                             "to share the next send's commit (needs group.LAZY_WINDOW)")
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=1500)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    if not 0 < args.small < args.large:
        raise SystemExit("need 0 < --small < --large")
    ours = per_message(ROOT / "src", args.small, args.large, args.acks)
    print(f"this tree: {ours:,.0f} instructions per message (queued, committed, "
          f"acknowledged, committed; acks {args.acks})")
    if args.baseline is not None:
        base = per_message(args.baseline.resolve() / "src", args.small, args.large,
                           "own" if args.acks == "lazy" else args.acks)
        print(f"baseline {args.baseline}: {base:,.0f} instructions per message; "
              f"this tree / baseline {ours / base:.3f}")


if __name__ == "__main__":
    main()
