"""What SQLite costs the relay per queued message, against an append-only queue log.

Run: ``.venv/bin/python benchmarks/queue_sql.py`` (about a minute).

Issue #4 asks for relay CPU per delivered message <= 2x a bare relay's. With storage
taken out of the relay (measured separately, see docs/performance.md) the relay is at
about 1.8x, so the target leaves SQLite some 40 µs per message, where it now spends
about 200 in the load benchmark. This benchmark shows where that goes and what a
different layout would cost, on a database of 1,000 devices as ``relay_load.py`` makes:

* **relay**: the relay's own per-message SQL (``sql._enqueue`` for a send, then
  ``sql._acknowledge`` with the size known, as the WebSocket path runs them): a SELECT of
  the recipient's devices, an UPDATE of its counters, an INSERT into ``messages``
  (clustered by recipient: a random page per message), then a DELETE and an UPDATE;
* **log**: the same sends as one INSERT each into a rowid table in arrival order (the
  tail page, shared by consecutive messages), with the SELECT of devices kept, and the
  acknowledgements applied in bulk (one DELETE per 200 messages), as a relay could do with
  its per-device counters in memory.

Each is timed as thread CPU time (what the relay's event loop would spend, the WAL
writes included) with 1, 3 and 10 messages per transaction: at 1,000 messages per second
the relay's 1 ms group commit holds about 1 to 3. The ratio is relay / log in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
import relay_load  # noqa: E402

from cipherpost.server.storage.envelope_ids import envelope_id  # noqa: E402
from cipherpost.server.storage.models import OutgoingMessage  # noqa: E402
from cipherpost.server.storage.sql import _acknowledge, _enqueue  # noqa: E402

DEVICES = 1000
CONTENT = os.urandom(relay_load.PAYLOAD)
LOG_TABLE = """CREATE TABLE IF NOT EXISTS queue_log (
    id INTEGER PRIMARY KEY, account_id TEXT NOT NULL, device_id INTEGER NOT NULL,
    seq INTEGER NOT NULL, guid TEXT NOT NULL, sender_account_id TEXT,
    sender_device_id INTEGER, type INTEGER NOT NULL, content BLOB NOT NULL,
    client_timestamp INTEGER NOT NULL, server_timestamp INTEGER NOT NULL,
    expires_at INTEGER NOT NULL)"""
DEVICES_SQL = ("SELECT device_id, registration_id, queued_bytes, last_seq FROM devices "
               "WHERE account_id = ? ORDER BY device_id")
LOG_INSERT = ("INSERT INTO queue_log (account_id, device_id, seq, guid, sender_account_id, "
              "sender_device_id, type, content, client_timestamp, server_timestamp, "
              "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def connect(path: Path) -> sqlite3.Connection:
    """A connection set up as the relay's loop connection is (WAL, synchronous=NORMAL,
    no automatic checkpoint)."""
    con = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "wal_autocheckpoint=0"):
        con.execute(f"PRAGMA {pragma}").fetchall()
    return con


def relay_layout(cur: sqlite3.Cursor, targets: list[int], per: int) -> float:
    """Thread CPU µs per send + acknowledgement with the relay's own statements."""
    in_flight: list[tuple[str, str]] = []
    sender = (relay_load.account_id(0), 1)
    start = time.thread_time()
    for k in range(0, len(targets), per):
        cur.execute("BEGIN IMMEDIATE")
        for i in targets[k:k + per]:
            account = relay_load.account_id(i)
            queued = _enqueue(account, [OutgoingMessage(1, relay_load.registration_id(i), 1,
                                                        CONTENT)],
                              sender, None, 1, 1, 86400, 1 << 40, cur)
            in_flight.append((account, queued[0][1].guid))
            if len(in_flight) > 20:  # acknowledged a little later, as over the network
                acked, guid = in_flight.pop(0)
                _acknowledge(acked, 1, [guid], cur, sizes={guid: len(CONTENT)})
        cur.execute("COMMIT")
    return (time.thread_time() - start) / len(targets) * 1e6


def log_layout(cur: sqlite3.Cursor, targets: list[int], per: int) -> float:
    """Thread CPU µs per send + acknowledgement with an append-only queue log."""
    pending: list[int] = []
    seq = 0
    start = time.thread_time()
    for k in range(0, len(targets), per):
        cur.execute("BEGIN IMMEDIATE")
        for i in targets[k:k + per]:
            account = relay_load.account_id(i)
            cur.execute(DEVICES_SQL, (account,)).fetchall()
            seq += 1
            cur.execute(LOG_INSERT, (account, 1, seq, envelope_id(seq), account, 1, 1,
                                     CONTENT, 1, 1, 1))
            assert cur.lastrowid is not None
            pending.append(cur.lastrowid)
        if len(pending) >= 200:  # acknowledgements applied in bulk
            acked, pending = pending[:-20], pending[-20:]
            cur.execute(f"DELETE FROM queue_log WHERE id IN ({','.join('?' * len(acked))})",
                        acked)
        cur.execute("COMMIT")
    return (time.thread_time() - start) / len(targets) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "queue.db"
        asyncio.run(relay_load.create_accounts(f"sqlite:///{path}", DEVICES))
        con = connect(path)
        cur = con.cursor()
        cur.execute(LOG_TABLE)
        print(f"SQLite {sqlite3.sqlite_version}, {DEVICES} devices, {len(CONTENT)}-byte "
              f"messages, thread CPU µs per message (send + acknowledgement), best of "
              f"{args.rounds}")
        print(f"{'per commit':>10} {'relay':>8} {'log':>8} {'relay/log':>10}")
        for per in (1, 3, 10):
            best = {"relay": float("inf"), "log": float("inf")}
            for _ in range(args.rounds):  # interleaved, each on a checkpointed WAL
                for name, run in (("relay", relay_layout), ("log", log_layout)):
                    cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                    targets = [rng.randrange(DEVICES) for _ in range(args.messages)]
                    best[name] = min(best[name], run(cur, targets, per))
            print(f"{per:>10} {best['relay']:>8.1f} {best['log']:>8.1f} "
                  f"{best['relay'] / best['log']:>9.2f}x")
        con.close()


if __name__ == "__main__":
    main()
