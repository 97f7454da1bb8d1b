"""Idle connections: server RSS with N devices connected over WebSocket and silent.

Run: ``.venv/bin/python benchmarks/relay_idle.py [--devices 10000]``

Accounts are created straight in the database (through the relay's storage layer) so
that the run measures connections, not registration; then a separate relay process is
started, every device connects and stays idle, and the relay's RSS is read from /proc,
next to its RSS with no connection.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.relay_load import (  # noqa: E402
    create_accounts,
    free_port,
    raise_fd_limit,
    rss_mb,
    wait_port,
)


async def connect_all(port: int, tokens: list[str]) -> list[object]:
    sockets: list[object] = []
    batch = 200
    for start in range(0, len(tokens), batch):
        sockets += await asyncio.gather(*[
            connect(f"ws://127.0.0.1:{port}/v1/websocket", compression=None,
                    additional_headers={"Authorization": f"Bearer {t}"}, open_timeout=60)
            for t in tokens[start:start + batch]])
    return sockets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000)
    args = parser.parse_args()
    raise_fd_limit(args.devices + 1000)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/relay.db"
        tokens = asyncio.run(create_accounts(url, args.devices))
        port = free_port()
        env = {**os.environ, "CIPHERPOST_DATABASE_URL": url, "CIPHERPOST_LOG_LEVEL": "WARNING",
               "CIPHERPOST_ATTACHMENT_DIR": f"{tmp}/blobs"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "cipherpost.server", "--port", str(port)], env=env,
            preexec_fn=lambda: raise_fd_limit(args.devices + 1000))
        try:
            wait_port(port, proc)
            time.sleep(0.5)
            base = rss_mb(proc.pid)

            async def run() -> float:
                started = time.perf_counter()
                sockets = await connect_all(port, tokens)
                took = time.perf_counter() - started
                await asyncio.sleep(3)
                rss = rss_mb(proc.pid)
                print(f"{len(sockets)} idle devices connected in {took:.1f} s")
                for ws in sockets:
                    await ws.close()  # type: ignore[attr-defined]
                return rss

            rss = asyncio.run(run())
            print(f"server RSS: {base:.0f} MB with no connection, {rss:.0f} MB with "
                  f"{args.devices} idle devices ({(rss - base) * 1024 / args.devices:.1f} KB "
                  f"each); target < 330 MB")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait()


if __name__ == "__main__":
    main()
