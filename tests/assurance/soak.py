"""Soak: a relay process under a steady load of many clients for a long time, with
receivers reconnecting and devices linked and removed all along; the relay's memory and
the delivery latency are sampled throughout, and the figures compare the first and the
last stretch of the run (drift), besides the usual lost/duplicated count.

    python -m tests.assurance.soak --seconds 3600      # what `make soak` runs
    python -m tests.assurance.soak --seconds 20 --name quick

The load is ``chaos.Load``'s (senders over HTTP, receivers over WebSocket acknowledging
every envelope) with senders paced and receivers that drop their WebSocket after a random
while and reconnect. A churn thread links a new device to accounts of its own, connects
its WebSocket and removes it again, over and over. Every ``--sample`` seconds the
relay's resident set size is read from /proc. The window compared is a tenth of the run
at least and ten minutes at most (the first versus the last). Figures go to
``build/assurance/soak/<name>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from tests.server.helpers import KeyMaker, auth
from tests.server.process import ServerProcess

from . import results
from .chaos import Load


def rss_kib(pid: int) -> int:
    """The resident set size of process ``pid`` (KiB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Churn:
    """Devices linked to, used on and removed from accounts of their own, in a loop."""

    url: str
    accounts: int = 2
    linked: int = 0
    removed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def _error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1
        time.sleep(0.2)

    def run(self) -> None:
        owners = []
        for _ in range(self.accounts):
            keys = KeyMaker()
            r = httpx.post(f"{self.url}/v1/accounts", json=keys.device_body(), timeout=10)
            r.raise_for_status()
            owners.append((keys, r.json()))
        ws_url = self.url.replace("http", "ws") + "/v1/websocket"
        turn = 0
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while not self.stop.is_set():
                keys, owner = owners[turn % len(owners)]
                turn += 1
                try:
                    code = http.post("/v1/devices/link-codes",
                                     headers=auth(owner["token"])).json()["link_code"]
                    r = http.post("/v1/devices", json={**keys.linked().device_body(),
                                                       "link_code": code})
                    r.raise_for_status()
                    device = r.json()
                except (httpx.HTTPError, KeyError, ValueError):
                    self._error("link")
                    continue
                self.linked += 1
                try:
                    with connect(ws_url, additional_headers=auth(device["token"]),
                                 open_timeout=5) as ws:
                        with_timeout = time.monotonic() + 0.5
                        while time.monotonic() < with_timeout and not self.stop.is_set():
                            with contextlib.suppress(TimeoutError):
                                ws.recv(timeout=0.1)
                except (OSError, WebSocketException, TimeoutError):
                    self._error("websocket")
                try:
                    r = http.delete(f"/v1/devices/{device['device_id']}",
                                    headers=auth(owner["token"]))
                    r.raise_for_status()
                    self.removed += 1
                except httpx.HTTPError:
                    self._error("remove")
                self.stop.wait(0.5)


def _percentile_ms(values: list[float], q: float) -> float | None:
    """The ``q`` quantile of ``values`` (seconds), in milliseconds."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


def _window(samples: list[tuple[float, float]], start: float, end: float) -> list[float]:
    return [v for t, v in samples if start <= t < end]


def _stretch(rss: list[tuple[float, float]], latencies: list[tuple[float, float]],
             start: float, end: float) -> dict[str, Any]:
    memory = _window(rss, start, end)
    delays = _window(latencies, start, end)
    return {"from_s": round(start, 1), "to_s": round(end, 1),
            "rss_mib_median": round(statistics.median(memory) / 1024, 1) if memory else None,
            "rss_mib_max": round(max(memory) / 1024, 1) if memory else None,
            "deliveries": len(delays),
            "latency_ms_p50": _percentile_ms(delays, 0.5),
            "latency_ms_p99": _percentile_ms(delays, 0.99)}


def run(workdir: Path, *, seconds: float, senders: int = 6, receivers: int = 6,
        pace: float = 0.25, sample: float = 5.0, churn_accounts: int = 2,
        reconnect: tuple[float, float] = (5.0, 30.0)) -> dict[str, Any]:
    """Run the soak for ``seconds``; the figures."""
    server = ServerProcess(workdir)
    server.start()
    assert server.proc is not None
    load = Load(server, senders, receivers, messages_per_sender=10**9)
    load.pace = pace
    load.reconnect = reconnect
    churn = Churn(server.url, churn_accounts)
    churn_thread = threading.Thread(target=churn.run, daemon=True)
    rss: list[tuple[float, float]] = []
    started = time.monotonic()
    try:
        load.start()
        churn_thread.start()
        end = started + seconds
        while time.monotonic() < end:
            if server.proc.poll() is not None:
                raise RuntimeError(f"the relay exited: {server.log.read_text()[-2000:]}")
            rss.append((time.monotonic() - started, rss_kib(server.proc.pid)))
            time.sleep(min(sample, max(0.0, end - time.monotonic())))
        load.stop_sending.set()
        churn.stop.set()
        deadline = time.monotonic() + 60
        while not load.senders_done() and time.monotonic() < deadline:
            time.sleep(0.1)
        load.drain(60)
        rss.append((time.monotonic() - started, rss_kib(server.proc.pid)))
    finally:
        load.close()
        churn.stop.set()
        churn_thread.join(timeout=10)
        server.stop()
    elapsed = time.monotonic() - started
    latencies = [(t - started, d) for t, d in load.ledger.latencies]
    window = min(600.0, max(seconds / 10, sample * 2))
    first = _stretch(rss, latencies, 0.0, window)
    last = _stretch(rss, latencies, seconds - window, seconds + 1e-9)

    def drift(key: str) -> float | None:
        a, b = first[key], last[key]
        return None if a is None or b is None else round(b - a, 1)

    return {**load.ledger.figures(), "seconds": round(elapsed, 1), "load_seconds": seconds,
            "senders": senders, "receivers": receivers, "pace_s": pace,
            "reconnect_s": list(reconnect), "devices_linked": churn.linked,
            "devices_removed": churn.removed, "churn_errors": churn.errors,
            "rss_samples": len(rss),
            "rss_mib_peak": round(max(v for _t, v in rss) / 1024, 1),
            "window_s": window, "first": first, "last": last,
            "drift": {"rss_mib_median": drift("rss_mib_median"),
                      "latency_ms_p50": drift("latency_ms_p50"),
                      "latency_ms_p99": drift("latency_ms_p99")},
            "latency_ms_p99_overall": _percentile_ms([d for _t, d in latencies], 0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3600.0)
    parser.add_argument("--senders", type=int, default=6)
    parser.add_argument("--receivers", type=int, default=6)
    parser.add_argument("--pace", type=float, default=0.25,
                        help="seconds between one sender's messages")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS reads")
    parser.add_argument("--name", default="long")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = run(Path(tmp), seconds=args.seconds, senders=args.senders,
                      receivers=args.receivers, pace=args.pace, sample=args.sample)
    results.write("soak", args.name, figures)
    print(json.dumps(figures, indent=1))
    if figures["lost"] or figures["duplicated_after_ack"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
