"""Relay load: delivered messages per second, delivery latency, server CPU and memory.

Run: ``make bench-relay`` (or ``.venv/bin/python benchmarks/relay_load.py [--quick]``).

A driver (this process) runs simulated devices against a relay in a separate process on
127.0.0.1. Every device keeps a WebSocket open, sends ciphertext-sized messages to other
devices and acknowledges what it receives. In the same run the same driver measures a
**bare relay**: the same WebSocket library forwarding frames in memory, with no storage,
no authentication and no acknowledgements. Server CPU time is read from /proc for the
server process alone, so the figure is CPU per delivered message, not wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.server.helpers import KeyMaker  # noqa: E402  (test helper: builds key uploads)

TICK = os.sysconf("SC_CLK_TCK")
PAYLOAD = 160  # bytes: about a short text message after padding and the protocol's overhead


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("server did not start")


@dataclass
class Stats:
    sent: int = 0
    delivered: int = 0
    latencies: list[float] = field(default_factory=list)


# -- the bare relay -------------------------------------------------------------------------

BARE_SERVER = r'''
import asyncio, json, sys
from websockets.asyncio.server import serve
conns = {}
async def handler(ws):
    me = ws.request.path.rsplit("/", 1)[1]
    conns[me] = ws
    try:
        async for frame in ws:
            to = json.loads(frame)["to"]
            target = conns.get(to)
            if target is not None:
                await target.send(frame)
    finally:
        conns.pop(me, None)
async def main():
    async with serve(handler, "127.0.0.1", int(sys.argv[1]), compression=None,
                     max_queue=None):
        await asyncio.Future()
asyncio.run(main())
'''


async def run_bare(devices: int, rate: float, seconds: float) -> dict[str, float]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)])
    try:
        wait_port(port, proc)
        stats = Stats()
        ids = [f"d{i}" for i in range(devices)]
        sockets = [await connect(f"ws://127.0.0.1:{port}/{i}", compression=None,
                                 max_queue=None) for i in ids]

        async def receive(ws: Any) -> None:
            async for frame in ws:
                stats.delivered += 1
                stats.latencies.append(time.perf_counter() - json.loads(frame)["t"])

        readers = [asyncio.create_task(receive(ws)) for ws in sockets]
        body = base64.b64encode(os.urandom(PAYLOAD)).decode()

        async def send(i: int) -> None:
            target = ids[(i + 1 + random.randrange(devices - 1)) % devices]
            await sockets[i].send(json.dumps({"to": target, "t": time.perf_counter(),
                                              "content": body}))
            stats.sent += 1

        result = await _drive(proc.pid, stats, devices, rate, seconds, send)
        await _stop(readers, sockets)
        return result
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()


# -- the Cipherpost relay -------------------------------------------------------------------


async def run_cipherpost(devices: int, rate: float, seconds: float, workdir: Path,
                         transport: str) -> dict[str, float]:
    port = free_port()
    env = {**os.environ,
           "CIPHERPOST_DATABASE_URL": f"sqlite:///{workdir}/relay.db",
           "CIPHERPOST_ATTACHMENT_DIR": str(workdir / "blobs"),
           "CIPHERPOST_RATE_REGISTER_PER_IP": "100000/10000",
           "CIPHERPOST_RATE_MESSAGES_PER_PAIR": "100000/10000",
           "CIPHERPOST_RATE_PREKEY_FETCH_PER_ACCOUNT": "100000/10000",
           "CIPHERPOST_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "cipherpost.server", "--port", str(port)],
                            env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_port(port, proc)
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
            body_keys = KeyMaker()
            template = body_keys.device_body(one_time=1, kyber=0)
            accounts = []
            for _ in range(devices):
                maker = KeyMaker()
                reply = await http.post("/v1/accounts", json={
                    **template, "registration_id": maker.registration_id,
                    "identity_key": template["identity_key"]})
                reply.raise_for_status()
                accounts.append({**reply.json(), "registration_id": maker.registration_id})
            stats = Stats()
            sockets = [await connect(url.replace("http", "ws") + "/v1/websocket",
                                     additional_headers={
                                         "Authorization": f"Bearer {a['token']}"},
                                     compression=None, max_queue=None) for a in accounts]

            async def receive(ws: Any) -> None:
                async for frame in ws:
                    message = json.loads(frame)
                    if message["type"] == "sent":
                        window.release()
                        if message["status"] == 200:
                            stats.sent += 1
                        continue
                    if message["type"] != "message":
                        continue
                    envelope = message["envelope"]
                    stats.delivered += 1
                    stats.latencies.append(time.perf_counter()
                                           - envelope["client_timestamp"] / 1e6)
                    await ws.send(json.dumps({"type": "ack", "ids": [envelope["id"]]}))

            readers = [asyncio.create_task(receive(ws)) for ws in sockets]
            content = base64.b64encode(os.urandom(PAYLOAD)).decode()

            window = asyncio.Semaphore(256)  # unconfirmed sends in flight

            async def send_ws(i: int) -> None:
                target = accounts[(i + 1 + random.randrange(devices - 1)) % devices]
                await window.acquire()
                await sockets[i].send(json.dumps({
                    "type": "send", "id": i, "account_id": target["account_id"],
                    "timestamp": int(time.perf_counter() * 1e6),
                    "messages": [{"device_id": 1, "registration_id": target["registration_id"],
                                  "type": 2, "content": content}]}))

            async def send_http(i: int) -> None:
                target = accounts[(i + 1 + random.randrange(devices - 1)) % devices]
                r = await http.put(f"/v1/messages/{target['account_id']}", headers={
                    "Authorization": f"Bearer {accounts[i]['token']}"}, json={
                    "timestamp": int(time.perf_counter() * 1e6),
                    "messages": [{"device_id": 1,
                                  "registration_id": target["registration_id"],
                                  "type": 2, "content": content}]})
                if r.status_code == 200:
                    stats.sent += 1

            send = send_ws if transport == "ws" else send_http
            result = await _drive(proc.pid, stats, devices, rate, seconds, send)
            await _stop(readers, sockets)
            return result
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()


async def _stop(readers: list[asyncio.Task[None]], sockets: list[Any]) -> None:
    for task in readers:
        task.cancel()
    for ws in sockets:
        await ws.close()


async def _drive(pid: int, stats: Stats, devices: int, rate: float, seconds: float,
                 send: Any) -> dict[str, float]:
    """Send at ``rate`` messages/s in total (0 = as fast as possible) for ``seconds``."""
    in_flight: set[asyncio.Task[None]] = set()
    limit = 256
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < seconds:
        if rate:
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        while len(in_flight) >= limit:
            await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(send(i % devices))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        i += 1
    if in_flight:
        await asyncio.wait(in_flight)
    deadline = time.perf_counter() + 10
    while stats.delivered < stats.sent and time.perf_counter() < deadline:
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds(pid) - cpu0
    lat = sorted(stats.latencies) or [0.0]
    return {
        "sent": stats.sent, "delivered": stats.delivered,
        "per_second": stats.delivered / elapsed,
        "cpu_us_per_message": cpu / max(stats.delivered, 1) * 1e6,
        "p50_ms": lat[len(lat) // 2] * 1000,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        "rss_mb": rss_mb(pid),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=0, help="messages/s in total; 0: max")
    parser.add_argument("--send", choices=["ws", "http"], default="ws",
                        help="send over the WebSocket (default) or HTTP PUT")
    args = parser.parse_args()
    seconds = 3 if args.quick else args.seconds
    devices = 20 if args.quick else args.devices
    with tempfile.TemporaryDirectory() as tmp:
        bare = asyncio.run(run_bare(devices, args.rate, seconds))
        ours = asyncio.run(run_cipherpost(devices, args.rate, seconds, Path(tmp), args.send))
    print(f"Relay load: {devices} devices, sending over {args.send}, {seconds:g} s, "
          f"{'saturation' if not args.rate else f'{args.rate:g} msg/s offered'}")
    print(f"{'':14} {'msg/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/msg':>11} "
          f"{'RSS MB':>7} {'delivered/sent':>15}")
    for name, r in (("bare relay", bare), ("cipherpost", ours)):
        print(f"{name:14} {r['per_second']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
              f"{r['cpu_us_per_message']:11.1f} {r['rss_mb']:7.1f} "
              f"{int(r['delivered']):>7}/{int(r['sent'])}")
    ratio = ours["cpu_us_per_message"] / bare["cpu_us_per_message"]
    print(f"server CPU per delivered message: {ratio:.2f}x the bare relay (target ≤ 2x)")


if __name__ == "__main__":
    main()
