"""Relay load: delivered messages per second, delivery latency, server CPU and memory.

Run: ``make bench-relay`` (or ``.venv/bin/python benchmarks/relay_load.py [--quick]``).

Simulated devices keep a WebSocket open to a relay running in a separate process on
127.0.0.1, send ciphertext-sized messages to other devices and acknowledge what they
receive. The devices are driven by ``--workers`` client processes (uvloop), so that the
load generator is not the limit; every process stamps and reads ``time.perf_counter()``,
which is the machine's monotonic clock, shared by all of them.

Two runs, each against Cipherpost and against a **bare relay** measured in the same
invocation (the same WebSocket library and event loop forwarding frames in memory, with
no storage, no authentication and no acknowledgements):

* **saturation**: ``--devices`` devices send as fast as the relay takes it;
* **latency**: ``--latency-devices`` devices send ``--latency-rate`` messages per second
  in total, paced and spread across the devices; delivery latency is the time from the
  send to its receipt at the recipient.

With ``--postgresql``, a third relay runs on a private PostgreSQL server started for the
benchmark (``tests/support/postgres.py``, with PostgreSQL's durable defaults: fsync and
synchronous commit on), and the relay's CPU per message is reported as a ratio of its CPU
per message on SQLite in the same invocation, beside PostgreSQL's own CPU per message
(all of its processes).

With ``--scale-out`` (implies ``--postgresql``), a fourth set-up runs too: **two** relay
processes on that PostgreSQL and a private Redis (``tests/support/redis.py``: fan-out and
rate limits), each device connected to one of them in turn, so that half the messages
cross from one process to the other through Redis. For every set-up the CPU time per
delivered message of each component is reported: the relay processes (together),
PostgreSQL (all of its processes), Redis, and the load generator.

Server CPU time is read from /proc for the server process alone (CPU per delivered
message, not wall time); ``CPU %`` is that time over the run's wall time, to show
whether the server was the limit. ``runq %`` is the time the server's event-loop
thread was ready to run but waited for a CPU (/proc/<pid>/schedstat), over wall time: on
a shared machine, a large value means other processes, not the relay, set the pace.
``lag p99`` is how late the client processes sent behind their schedule in the paced run
(a large lag means the load generator, not the relay, was the limit).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import multiprocessing
import os
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.support.postgres import PostgresServer  # noqa: E402
from tests.support.redis import RedisServer  # noqa: E402

from cipherpost.server import native  # noqa: E402
from cipherpost.server.auth import make_token, new_secret  # noqa: E402
from cipherpost.server.storage.engine import Database  # noqa: E402
from cipherpost.server.storage.models import KeyUpload, NewDevice  # noqa: E402
from cipherpost.server.storage.sql import Storage  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
PAYLOAD = 160  # bytes: about a short text message after padding and the protocol's overhead
#: Opt-in WebSocket subprotocols of the relay: several envelopes per pushed frame, and
#: with ``.2`` acks carried in ``send`` frames too (docs/websocket.md).
BATCH_SUBPROTOCOL = "cipherpost.batch"
ACKS_ON_SEND_SUBPROTOCOL = "cipherpost.batch.2"
#: How the devices acknowledge (environment variable RELAY_LOAD_ACKS, read by the client
#: processes too): "auto", as the SDK and the browser do (docs/websocket.md): under
#: ``cipherpost.batch.2`` held for the device's next send for up to ACK_DELAY seconds
#: (ACK_HOLD ids at most), else an ``ack`` frame per event-loop turn; "turn": always an
#: ``ack`` frame per turn (the only way before ``.2``); "none": never (to measure what
#: acks cost; a device then stops getting messages after the relay's window of 256).
ACKS = os.environ.get("RELAY_LOAD_ACKS", "auto")
#: The SDK's and the browser's hold (cipherpost.client.socket.ACK_DELAY, ACK_HOLD).
ACK_DELAY = 1.0
ACK_HOLD = 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def runqueue_seconds(pid: int) -> float:
    """Time the process's main thread (the relay's event loop) spent runnable but waiting
    for a CPU, from /proc/<pid>/schedstat (0 where the kernel does not keep it)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def family_cpu_seconds(parent: int) -> float:
    """CPU of ``parent``, of its live children and of those it reaped (a PostgreSQL
    server: the postmaster forks every backend and background process itself)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if stat.parent.name == str(parent):
            total += (int(fields[11]) + int(fields[12]) + int(fields[13])
                      + int(fields[14])) / TICK
        elif int(fields[1]) == parent:
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def raise_fd_limit(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, n), hard), hard))


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


def account_id(i: int) -> str:
    return f"{i:08d}-0000-4000-8000-000000000000"


def registration_id(i: int) -> int:
    return 1 + i % 16380


async def create_accounts(url: str, n: int) -> list[str]:
    """``n`` accounts with one device each, written straight through the storage layer
    (so that runs measure relaying, not registration); returns their tokens."""
    db = Database(url)
    db.migrate()
    storage = Storage(db)
    tokens = []
    identity = b"\x05" + bytes(32)
    for i in range(n):
        secret, token_hash = new_secret()
        await storage.create_account(account_id(i), None, identity,
                                     NewDevice(registration_id(i), token_hash, None,
                                               KeyUpload()), 0)
        tokens.append(make_token(account_id(i), 1, secret))
    storage.close()
    db.dispose()
    return tokens


# -- servers --------------------------------------------------------------------------------

BARE_SERVER = r'''
import asyncio, json, sys
import uvloop
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
uvloop.run(main())
'''


#: The relay under cProfile, its profile written when SIGTERM stops it (``python -m
#: cProfile`` writes none: uvicorn raises the signal again after its shutdown, which then
#: ends the process before cProfile's own exit).
PROFILED_RELAY = r'''
import cProfile, runpy, signal, sys
def stop(*_):
    raise SystemExit(0)
signal.signal(signal.SIGTERM, stop)
path = sys.argv[1]
sys.argv = ["cipherpost-server", *sys.argv[2:]]
profile = cProfile.Profile()
try:
    profile.runcall(runpy.run_module, "cipherpost.server", run_name="__main__")
except SystemExit:
    pass
finally:
    profile.dump_stats(path)
'''


@dataclass
class Server:
    #: "bare", "cipherpost" (on SQLite), "postgresql" (cipherpost on it) or "scale-out"
    #: (two cipherpost processes on PostgreSQL and Redis)
    kind: str
    ports: list[int]
    procs: list[subprocess.Popen[bytes]]
    tokens: list[str] = field(default_factory=list)
    #: the postmaster's pid, when the relay runs on PostgreSQL
    database_pid: int | None = None
    #: the Redis server's pid, when the relays share one
    redis_pid: int | None = None

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


#: The PostgreSQL server of ``--postgresql`` runs, the Redis server of ``--scale-out``.
POSTGRES: PostgresServer | None = None
REDIS: RedisServer | None = None


def start_server(kind: str, devices: int, workdir: Path) -> Server:
    port = free_port()
    limit = devices + 1000
    if kind == "bare":
        proc = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)],
                                preexec_fn=lambda: raise_fd_limit(limit))
        wait_port(port, proc)
        return Server(kind, [port], [proc])
    database_pid = redis_pid = None
    env = {**os.environ,
           "CIPHERPOST_ATTACHMENT_DIR": str(workdir / "blobs"),
           "CIPHERPOST_RATE_MESSAGES_PER_PAIR": "100000/10000",
           "CIPHERPOST_LOG_LEVEL": "WARNING"}
    if kind in ("postgresql", "scale-out"):
        assert POSTGRES is not None
        db = POSTGRES.url(POSTGRES.create_database(f"relay_{port}"))
        database_pid = POSTGRES.process.pid
    else:
        db = f"sqlite:///{workdir}/relay-{port}.db"
    ports = [port]
    if kind == "scale-out":
        assert REDIS is not None
        env["CIPHERPOST_REDIS_URL"] = REDIS.url()
        redis_pid = REDIS.process.pid
        ports.append(free_port())
    env["CIPHERPOST_DATABASE_URL"] = db
    tokens = asyncio.run(create_accounts(db, devices))
    procs = []
    for at in ports:
        command = [sys.executable, "-m", "cipherpost.server", "--port", str(at)]
        profile = os.environ.get("RELAY_PROFILE")  # e.g. "cprofile:/tmp/relay.prof"
        if profile and profile.startswith("cprofile:") and at == port:
            command[1:3] = ["-c", PROFILED_RELAY, profile.split(":", 1)[1]]
        procs.append(subprocess.Popen(command, env=env,
                                      preexec_fn=lambda: raise_fd_limit(limit)))
    for at, proc in zip(ports, procs, strict=True):
        wait_port(at, proc)
    return Server(kind, ports, procs, tokens, database_pid, redis_pid)


# -- client processes -----------------------------------------------------------------------


@dataclass
class Plan:
    """What one client process does."""

    kind: str
    ports: list[int]  # device i connects to ports[i % len(ports)]
    devices: list[int]  # the indexes of the devices this process drives
    total_devices: int
    tokens: list[str]  # of ``devices``, same order
    rate: float  # this process's share of messages per second; 0 = saturation
    seconds: float
    window: int  # unconfirmed sends in flight per process (saturation)
    batch: bool  # offer the batch subprotocol
    seed: int


def client_main(plan: Plan, pipe: Connection) -> None:
    import uvloop
    raise_fd_limit(len(plan.devices) + 1000)
    uvloop.run(_client(plan, pipe))


async def _client(plan: Plan, pipe: Connection) -> None:
    rng = random.Random(plan.seed)
    loop = asyncio.get_running_loop()
    sent = delivered = 0
    latencies: list[float] = []
    lags: list[float] = []
    content = base64.b64encode(os.urandom(PAYLOAD)).decode()
    window = asyncio.Semaphore(plan.window)
    answered = frames_out = 0
    all_answered = asyncio.Event()
    bare = plan.kind == "bare"

    async def open_socket(i: int, token: str) -> Any:
        port = plan.ports[i % len(plan.ports)]
        if bare:
            return await connect(f"ws://127.0.0.1:{port}/d{i}", compression=None,
                                 max_queue=None, open_timeout=120)
        return await connect(f"ws://127.0.0.1:{port}/v1/websocket", compression=None,
                             max_queue=None, open_timeout=120,
                             subprotocols=[Subprotocol(ACKS_ON_SEND_SUBPROTOCOL),
                                           Subprotocol(BATCH_SUBPROTOCOL)]
                             if plan.batch else None,
                             additional_headers={"Authorization": f"Bearer {token}"})

    flushing: set[asyncio.Task[None]] = set()
    sockets: list[Any] = []
    for start in range(0, len(plan.devices), 100):
        sockets += await asyncio.gather(*[
            open_socket(i, t) for i, t in zip(plan.devices[start:start + 100],
                                              plan.tokens[start:start + 100], strict=True)])

    def on_envelope(envelope: dict[str, Any], now: float) -> None:
        nonlocal delivered
        delivered += 1
        latencies.append(now - envelope["client_timestamp"] / 1e6)

    #: per socket: acks held for its next send (auto, under cipherpost.batch.2), the timer
    #: that sends them in an ack frame instead; confirmations awaited at the end
    held: list[list[str]] = [[] for _ in sockets]
    timers: list[asyncio.TimerHandle | None] = [None] * len(sockets)
    confirmed = asyncio.Event()
    unconfirmed = 0

    def ack_frame(i: int, confirm: bool = False) -> str:
        ids, held[i] = held[i], []
        timer, timers[i] = timers[i], None
        if timer is not None:
            timer.cancel()
        return orjson.dumps({"type": "ack", "ids": ids, "confirm": confirm} if confirm
                            else {"type": "ack", "ids": ids}).decode()

    def send_held(i: int) -> None:
        flushing.add(task := loop.create_task(sockets[i].send(ack_frame(i))))
        task.add_done_callback(flushing.discard)

    async def drain_acks() -> None:
        """Every ack sent and committed: the server's CPU is read after its last one."""
        nonlocal unconfirmed
        if bare:
            return
        await asyncio.sleep(0.1)  # the per-turn acks of the last messages go out first
        if not plan.batch:  # every ack is confirmed, so committed at once, in 1 ms
            return
        ends = [i for i in range(len(sockets)) if held[i]] or [0]
        unconfirmed = len(ends)
        for i in ends:
            await sockets[i].send(ack_frame(i, confirm=True))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(confirmed.wait(), 60)

    async def receive(i: int, ws: Any) -> None:
        nonlocal sent, delivered, answered, unconfirmed
        pending_acks: list[str] = []
        on_send = ACKS == "auto" and ws.subprotocol == ACKS_ON_SEND_SUBPROTOCOL

        async def flush() -> None:
            await asyncio.sleep(0)
            ids = pending_acks[:]
            pending_acks.clear()
            await ws.send(orjson.dumps({"type": "ack", "ids": ids}).decode())

        async for frame in ws:
            now = time.perf_counter()
            message = orjson.loads(frame)
            if bare:
                delivered += 1
                latencies.append(now - message["t"])
                continue
            kind = message["type"]
            if kind == "acked":
                unconfirmed -= 1
                if unconfirmed == 0:
                    confirmed.set()
                continue
            if kind == "sent":
                window.release()
                answered += 1
                sent += message["status"] == 200
                if answered == frames_out:
                    all_answered.set()
                continue
            if kind == "message":
                envelopes = [message["envelope"]]
            elif kind == "messages":
                envelopes = message["envelopes"]
            else:
                continue
            for envelope in envelopes:
                on_envelope(envelope, now)
            if ACKS == "none":
                continue
            if on_send:
                held[i].extend(e["id"] for e in envelopes)
                if len(held[i]) >= ACK_HOLD:
                    send_held(i)
                elif timers[i] is None:
                    timers[i] = loop.call_later(ACK_DELAY, send_held, i)
                continue
            if not pending_acks:
                flushing.add(task := loop.create_task(flush()))
                task.add_done_callback(flushing.discard)
            pending_acks.extend(e["id"] for e in envelopes)

    def frame(i: int) -> str:
        target = (plan.devices[i] + 1 + rng.randrange(plan.total_devices - 1)) \
            % plan.total_devices
        stamp = time.perf_counter()
        if bare:
            return orjson.dumps({"to": f"d{target}", "t": stamp, "content": content}).decode()
        body = {"type": "send", "id": i, "account_id": account_id(target),
                "timestamp": int(stamp * 1e6),
                "messages": [{"device_id": 1, "registration_id": registration_id(target),
                              "type": 2, "content": content}]}
        if held[i]:
            body["ack"], held[i] = held[i], []
            timer, timers[i] = timers[i], None
            if timer is not None:
                timer.cancel()
        return orjson.dumps(body).decode()

    readers = [loop.create_task(receive(i, ws)) for i, ws in enumerate(sockets)]
    pipe.send(("ready",))
    while not pipe.poll(0):
        await asyncio.sleep(0.01)
    _go, start = pipe.recv()
    await asyncio.sleep(max(0.0, start - time.perf_counter()))

    async def report() -> None:
        while True:
            pipe.send(("progress", sent if not bare else frames_out, delivered))
            await asyncio.sleep(0.1)

    reporter = loop.create_task(report())
    n = 0
    count = len(sockets)
    end = start + plan.seconds
    if plan.rate:
        while True:
            due = start + n / plan.rate
            if due >= end:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lags.append(time.perf_counter() - due)
            i = n % count
            await sockets[i].send(frame(i))
            frames_out += 1
            n += 1
    else:
        while time.perf_counter() < end:
            if not bare and plan.rate == 0:
                await window.acquire()
            i = n % count
            await sockets[i].send(frame(i))
            frames_out += 1
            n += 1
            if n % 64 == 0:
                await asyncio.sleep(0)
    if not bare and answered < frames_out:  # wait for the answers to what was sent
        all_answered.clear()
        # An overloaded relay may not answer everything in time: the run still reports
        # what was answered and delivered (delivered/sent shows the shortfall).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_answered.wait(), 60)
    pipe.send(("sent", sent if not bare else frames_out))
    while not pipe.poll(0):
        await asyncio.sleep(0.01)
    pipe.recv()  # drain
    await drain_acks()
    pipe.send(("drained",))
    while not pipe.poll(0):
        await asyncio.sleep(0.01)
    pipe.recv()  # stop
    reporter.cancel()
    for task in readers:
        task.cancel()
    pipe.send(("done", latencies, lags, delivered))
    await asyncio.gather(*[ws.close() for ws in sockets], return_exceptions=True)


# -- one measured run -----------------------------------------------------------------------


def run(kind: str, devices: int, rate: float, seconds: float, workers: int, batch: bool,
        workdir: Path) -> dict[str, float]:
    server = start_server(kind, devices, workdir)
    try:
        return _measure(server, devices, rate, seconds, workers, batch)
    finally:
        server.stop()


def _measure(server: Server, devices: int, rate: float, seconds: float, workers: int,
             batch: bool) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    pipes: list[Connection] = []
    procs = []
    for w in range(workers):
        mine = list(range(w, devices, workers))
        plan = Plan(server.kind, server.ports, mine, devices,
                    [server.tokens[i] for i in mine] if server.tokens else [""] * len(mine),
                    rate / workers, seconds, 256, batch, w)
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=client_main, args=(plan, child), daemon=True)
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    for p in pipes:
        assert p.recv()[0] == "ready"
    time.sleep(1)
    pids = [proc.pid for proc in server.procs]
    base_rss = sum(rss_mb(pid) for pid in pids)
    start = time.perf_counter() + 0.2
    for p in pipes:
        p.send(("go", start))
    time.sleep(max(0.0, start - time.perf_counter()))
    cpu0 = sum(cpu_seconds(pid) for pid in pids)
    waits0 = [runqueue_seconds(pid) for pid in pids]
    db_pid = server.database_pid
    db_cpu0 = family_cpu_seconds(db_pid) if db_pid else 0.0
    redis_pid = server.redis_pid
    redis_cpu0 = cpu_seconds(redis_pid) if redis_pid else 0.0
    clients0 = [cpu_seconds(proc.pid or 0) for proc in procs]
    delivered = [0] * workers
    sent: list[int | None] = [None] * workers
    peak_rss = base_rss

    def poll(until: Callable[[], bool], timeout: float) -> None:
        nonlocal peak_rss
        deadline = time.perf_counter() + timeout
        while not until() and time.perf_counter() < deadline:
            for w, p in enumerate(pipes):
                while p.poll(0):
                    message = p.recv()
                    if message[0] == "progress":
                        delivered[w] = message[2]
                    elif message[0] == "sent":
                        sent[w] = message[1]
            peak_rss = max(peak_rss, sum(rss_mb(pid) for pid in pids))
            time.sleep(0.02)

    poll(lambda: all(s is not None for s in sent), seconds + 120)
    total_sent = sum(s or 0 for s in sent)
    poll(lambda: sum(delivered) >= total_sent, 20)
    elapsed = time.perf_counter() - start
    # The acks of what was delivered are part of its cost: a client may still hold some
    # (for its next send); they are sent now, and the CPU read once they are committed.
    for p in pipes:
        p.send(("drain",))
    for p in pipes:
        while p.recv()[0] != "drained":
            pass
    cpu = sum(cpu_seconds(pid) for pid in pids) - cpu0
    waited = max(runqueue_seconds(pid) - w0 for pid, w0 in zip(pids, waits0, strict=True))
    db_cpu = family_cpu_seconds(db_pid) - db_cpu0 if db_pid else 0.0
    redis_cpu = cpu_seconds(redis_pid) - redis_cpu0 if redis_pid else 0.0
    clients = [cpu_seconds(proc.pid or 0) - c0 for proc, c0 in zip(procs, clients0, strict=True)]
    for p in pipes:
        p.send(("stop",))
    latencies: list[float] = []
    lags: list[float] = []
    total_delivered = 0
    for p in pipes:
        while True:
            message = p.recv()
            if message[0] == "done":
                break
        latencies += message[1]
        lags += message[2]
        total_delivered += message[3]
    for proc in procs:
        proc.join(30)
    lat = sorted(latencies) or [0.0]
    lags.sort()
    return {
        "sent": total_sent, "delivered": total_delivered,
        "per_second": total_delivered / elapsed,
        "cpu_us_per_message": cpu / max(total_delivered, 1) * 1e6,
        "db_cpu_us_per_message": db_cpu / max(total_delivered, 1) * 1e6,
        "db_cpu_percent": db_cpu / elapsed * 100,
        "redis_cpu_us_per_message": redis_cpu / max(total_delivered, 1) * 1e6,
        "client_cpu_us_per_message": sum(clients) / max(total_delivered, 1) * 1e6,
        "cpu_percent": cpu / elapsed * 100,
        "runqueue_percent": waited / elapsed * 100,
        "client_cpu_percent": max(clients) / elapsed * 100,
        "p50_ms": lat[len(lat) // 2] * 1000,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        "lag_p99_ms": lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000 if lags else 0,
        "rss_mb": peak_rss,
    }


def print_table(title: str, rows: list[tuple[str, dict[str, float]]]) -> None:
    print(title)
    print(f"  {'':12} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/msg':>11} "
          f"{'CPU %':>6} {'runq %':>6} {'RSS MB':>7} {'lag p99':>8} {'client %':>8} "
          f"{'delivered/sent':>16}")
    for name, r in rows:
        print(f"  {name:12} {r['per_second']:8.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
              f"{r['cpu_us_per_message']:11.1f} {r['cpu_percent']:6.0f} "
              f"{r['runqueue_percent']:6.0f} {r['rss_mb']:7.1f} "
              f"{r['lag_p99_ms']:8.2f} {r['client_cpu_percent']:8.0f} "
              f"{int(r['delivered']):>8}/{int(r['sent'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs, fewer devices")
    parser.add_argument("--devices", type=int, default=100, help="saturation run")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--latency-devices", type=int, default=1000)
    parser.add_argument("--latency-rate", type=float, default=1000,
                        help="messages/s in total in the latency run")
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument("--legacy-frames", action="store_true",
                        help="one envelope per pushed frame (no batch subprotocol)")
    parser.add_argument("--only", choices=["saturation", "latency"])
    parser.add_argument("--skip-bare", action="store_true")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of each run, the set-ups interleaved; the median ratio "
                             "is printed after them (one pair moves with the machine's load)")
    parser.add_argument("--postgresql", action="store_true",
                        help="also run the relay on PostgreSQL (a private server started "
                             "here; needs Debian's postgresql package)")
    parser.add_argument("--scale-out", action="store_true",
                        help="also run two relay processes on PostgreSQL and Redis (implies "
                             "--postgresql; needs Debian's redis-server package)")
    args = parser.parse_args()
    seconds = 3 if args.quick else args.seconds
    devices = 20 if args.quick else args.devices
    lat_devices = 100 if args.quick else args.latency_devices
    raise_fd_limit(max(devices, lat_devices) + 1000)
    batch = not args.legacy_frames
    frames = ("one envelope per frame" if args.legacy_frames else "batch subprotocol") \
        + f", acks {ACKS}"
    global POSTGRES, REDIS
    # The relay processes inherit this environment, so they make the same choice.
    print(f"relay's per-message modules: {native.status}")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        kinds = ["cipherpost"] if args.skip_bare else ["bare", "cipherpost"]
        if args.postgresql or args.scale_out:
            POSTGRES = PostgresServer.start(durable=True)
            stack.callback(POSTGRES.stop)
            kinds.append("postgresql")
        if args.scale_out:
            REDIS = RedisServer.start()
            stack.callback(REDIS.stop)
            kinds.append("scale-out")
        if args.only != "latency":
            ratios = []
            for n in range(args.repeat):
                rows = [(k if k != "bare" else "bare relay",
                         run(k, devices, 0, seconds, args.workers, batch, work)) for k in kinds]
                print_table(f"Saturation: {devices} devices, {seconds:g} s, {args.workers} "
                            f"client processes, {frames}{_round(n, args.repeat)}", rows)
                ratios.append(_ratio(rows))
                _components(rows)
            _median(ratios)
        if args.only != "saturation":
            ratios = []
            for n in range(args.repeat):
                rows = [(k if k != "bare" else "bare relay",
                         run(k, lat_devices, args.latency_rate, seconds, args.workers, batch,
                             work)) for k in kinds]
                print_table(f"Latency: {lat_devices} devices, {args.latency_rate:g} msg/s "
                            f"offered, {seconds:g} s, {args.workers} client processes, "
                            f"{frames}{_round(n, args.repeat)}", rows)
                ratios.append(_ratio(rows))
                _components(rows)
                for name, r in rows:
                    if name != "bare relay":
                        print(f"  {name}: p99 delivery latency {r['p99_ms']:.2f} ms "
                              "(target < 20 ms)")
            _median(ratios)


def _round(n: int, rounds: int) -> str:
    return f" (round {n + 1} of {rounds})" if rounds > 1 else ""


def _median(ratios: list[float | None]) -> None:
    """The median of the rounds' ratios (each round measured its own bare relay)."""
    measured = sorted(r for r in ratios if r is not None)
    if len(measured) > 1:
        each = ", ".join(f"{r:.2f}x" for r in ratios if r is not None)
        print(f"  median over {len(measured)} rounds: {statistics.median(measured):.2f}x the "
              f"bare relay (rounds: {each}; target ≤ 2x)")


def _ratio(rows: list[tuple[str, dict[str, float]]]) -> float | None:
    """Print the ratios of the run; return the relay's to the bare relay's (if run)."""
    by_name = dict(rows)
    ours = by_name["cipherpost"]
    ratio = None
    if "bare relay" in by_name:
        ratio = ours["cpu_us_per_message"] / by_name["bare relay"]["cpu_us_per_message"]
        print(f"  server CPU per delivered message: {ratio:.2f}x the bare relay "
              "(target ≤ 2x)")
    if "postgresql" in by_name:
        pg = by_name["postgresql"]
        relay = pg["cpu_us_per_message"] / ours["cpu_us_per_message"]
        both = (pg["cpu_us_per_message"] + pg["db_cpu_us_per_message"]) \
            / ours["cpu_us_per_message"]
        print(f"  on PostgreSQL: relay CPU per delivered message {relay:.2f}x its CPU on "
              f"SQLite; PostgreSQL's own {pg['db_cpu_us_per_message']:.1f} µs/msg "
              f"({pg['db_cpu_percent']:.0f}% CPU); relay + PostgreSQL {both:.2f}x the "
              "relay on SQLite")
    return ratio


#: How the tables name each set-up.
LABELS = {"bare relay": "bare relay", "cipherpost": "1 relay, SQLite",
          "postgresql": "1 relay, PostgreSQL", "scale-out": "2 relays, PG + Redis"}


def _components(rows: list[tuple[str, dict[str, float]]]) -> None:
    """CPU per delivered message of each component, and the scale-out target."""
    print(f"  CPU µs per delivered message: {'set-up':22} {'relays':>8} {'PostgreSQL':>11} "
          f"{'Redis':>7} {'load gen':>9}")
    for name, r in rows:
        if name == "bare relay":
            continue
        print(f"  {'':30} {LABELS[name]:22} {r['cpu_us_per_message']:8.1f} "
              f"{r['db_cpu_us_per_message']:11.1f} {r['redis_cpu_us_per_message']:7.1f} "
              f"{r['client_cpu_us_per_message']:9.1f}")
    by_name = dict(rows)
    if "scale-out" in by_name and "cipherpost" in by_name:
        ratio = by_name["scale-out"]["cpu_us_per_message"] \
            / by_name["cipherpost"]["cpu_us_per_message"]
        print(f"  2 relays on PostgreSQL + Redis: relay CPU per delivered message {ratio:.2f}x "
              "one relay on SQLite (target ≤ 1.5x)")


if __name__ == "__main__":
    main()
