"""Fault injection: the relay under a steady load of real clients, killed with SIGKILL at
random moments and restarted, many times; every message it accepted must be delivered,
and none delivered again once its acknowledgement was confirmed.

    python -m tests.assurance.chaos --kills 50          # what `make chaos` runs
    python -m tests.assurance.chaos --kills 3 --quick   # about what `make test` runs

Several sender threads (HTTP) write to several receiving devices (WebSocket, acknowledging
each envelope) of registered accounts. A send answered 200 is *accepted*; a send whose
answer was lost is *unknown* (it may or may not have been stored, so it may be delivered
or not). Figures: accepted, unknown, delivered (distinct), lost (accepted, never
delivered), duplicated after a confirmed ack; written to build/assurance/chaos/.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from tests.server.helpers import KeyMaker, auth, b64
from tests.server.process import ServerProcess

from . import results


@dataclass
class Ledger:
    """What the clients saw, shared by their threads."""

    accepted: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    delivered: dict[str, str] = field(default_factory=dict)   # envelope id -> message name
    deliveries: int = 0
    confirmed: set[str] = field(default_factory=set)
    after_ack: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)   # refused sends by status
    #: (monotonic time received, seconds from send to delivery) of each first delivery.
    latencies: list[tuple[float, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def figures(self) -> dict[str, Any]:
        names = set(self.delivered.values())
        return {"accepted": len(self.accepted), "unknown": len(self.unknown),
                "delivered": len(names), "lost": len(self.accepted - names),
                "duplicated_after_ack": len(self.after_ack),
                "refused_by_status": {str(k): v for k, v in sorted(self.statuses.items())},
                "redeliveries_before_ack": self.deliveries - len(self.delivered)}


def _register(url: str) -> dict[str, Any]:
    keys = KeyMaker()
    response = httpx.post(f"{url}/v1/accounts", json=keys.device_body(), timeout=10)
    response.raise_for_status()
    return {**response.json(), "registration_id": keys.registration_id}


class Load:
    """Senders and receivers running against ``server`` until stopped."""

    def __init__(self, server: ServerProcess, senders: int, receivers: int,
                 messages_per_sender: int, *, accounts: list[dict[str, Any]] | None = None,
                 ledger: Ledger | None = None) -> None:
        self.server = server
        self.ledger = ledger or Ledger()
        self.stop = threading.Event()
        self.accounts = accounts or [_register(server.url) for _ in range(senders + receivers)]
        self.senders = self.accounts[:senders]
        self.receivers = self.accounts[senders:]
        self.per_sender = messages_per_sender
        #: Seconds between one sender's messages (0: as fast as the relay answers).
        self.pace = 0.0
        #: Receivers drop their WebSocket after a random time in this range, then reconnect.
        self.reconnect: tuple[float, float] | None = None
        #: Senders stop here (receivers go on until ``stop``).
        self.stop_sending = threading.Event()
        #: Whether a 503 (storage unavailable) is retried, or counted as refused.
        self.retry_503 = True
        self.threads = [threading.Thread(target=self._send, args=(s, n), daemon=True)
                        for n, s in enumerate(self.senders)] + \
            [threading.Thread(target=self._receive, args=(r,), daemon=True)
             for r in self.receivers]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _send(self, sender: dict[str, Any], number: int) -> None:
        rng = random.Random(number)
        with httpx.Client(timeout=5) as http:
            for i in range(self.per_sender):
                if self.stop_sending.is_set():
                    return
                if self.pace:
                    time.sleep(self.pace)
                target = rng.choice(self.receivers)
                name = f"{number}:{i}"
                while not self.stop.is_set():
                    content = f"{name} {time.monotonic():.6f}".encode()
                    try:
                        r = http.put(f"{self.server.url}/v1/messages/{target['account_id']}",
                                     headers=auth(sender["token"]), json={
                                         "timestamp": i, "messages": [{
                                             "device_id": 1,
                                             "registration_id": target["registration_id"],
                                             "type": 2, "content": b64(content)}]})
                    except httpx.ConnectError:      # never reached the relay: retry
                        time.sleep(0.05)
                        continue
                    except httpx.HTTPError:         # the answer was lost
                        with self.ledger.lock:
                            self.ledger.unknown.add(name)
                        break
                    if r.status_code == 200:
                        with self.ledger.lock:
                            self.ledger.accepted.add(name)
                        break
                    with self.ledger.lock:
                        self.ledger.statuses[r.status_code] = \
                            self.ledger.statuses.get(r.status_code, 0) + 1
                    if r.status_code == 429 or (r.status_code == 503 and self.retry_503):
                        time.sleep(0.05)
                        continue
                    with self.ledger.lock:      # refused: not stored (5xx: maybe stored)
                        self.ledger.unknown.add(name)
                    break

    def _receive(self, account: dict[str, Any]) -> None:
        ledger = self.ledger
        url = self.server.url.replace("http", "ws") + "/v1/websocket"
        rng = random.Random(account["account_id"])
        while not self.stop.is_set():
            until = time.monotonic() + (rng.uniform(*self.reconnect) if self.reconnect
                                        else float("inf"))
            try:
                with connect(url, additional_headers=auth(account["token"]),
                             open_timeout=5) as ws:
                    while not self.stop.is_set() and time.monotonic() < until:
                        try:
                            frame = json.loads(ws.recv(timeout=0.5))
                        except TimeoutError:
                            continue
                        with ledger.lock:
                            if frame["type"] == "acked":
                                ledger.confirmed.update(frame["ids"])
                                continue
                            if "envelope" not in frame:
                                continue
                            envelope = frame["envelope"]
                            if envelope["id"] in ledger.confirmed:
                                ledger.after_ack.append(envelope["id"])
                            name, sent = base64.b64decode(envelope["content"]).decode().split()
                            now = time.monotonic()
                            if envelope["id"] not in ledger.delivered:
                                ledger.latencies.append((now, now - float(sent)))
                            ledger.delivered[envelope["id"]] = name
                            ledger.deliveries += 1
                        ws.send(json.dumps({"type": "ack", "ids": [envelope["id"]]}))
            except (OSError, WebSocketException, TimeoutError):
                time.sleep(0.05)

    def senders_done(self) -> bool:
        return not any(t.is_alive() for t in self.threads[:len(self.senders)])

    def drain(self, timeout: float) -> None:
        """Wait until every accepted message was delivered (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.ledger.lock:
                if self.ledger.accepted <= set(self.ledger.delivered.values()):
                    return
            time.sleep(0.05)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            if t.is_alive():
                t.join(timeout=10)


def run(workdir: Path, *, kills: int, seed: int, senders: int = 3, receivers: int = 3,
        messages_per_sender: int = 200, database_url: str | None = None) -> dict[str, Any]:
    """Kill the relay ``kills`` times at random moments under load; the figures."""
    rng = random.Random(seed)
    settings = {"database_url": database_url} if database_url else {}
    server = ServerProcess(workdir, **settings)
    server.start()
    started = time.monotonic()
    load = Load(server, senders, receivers, messages_per_sender)
    load.start()
    done = 0
    try:
        while done < kills:
            time.sleep(rng.uniform(0.2, 1.5))
            server.kill()
            done += 1
            time.sleep(rng.uniform(0.0, 0.3))
            server.start()
        deadline = time.monotonic() + 300
        while not load.senders_done() and time.monotonic() < deadline:
            time.sleep(0.1)
        load.drain(60)
    finally:
        load.close()
        server.stop()
    return {**load.ledger.figures(), "kills": done, "seed": seed,
            "seconds": round(time.monotonic() - started, 1),
            "backend": "postgresql" if database_url else "sqlite"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a small load")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = run(Path(tmp), kills=args.kills, seed=args.seed,
                      messages_per_sender=100 if args.quick else 1000)
    results.write("chaos", f"sigkill-{'quick' if args.quick else 'long'}", figures)
    print(json.dumps(figures, indent=1))
    if figures["lost"] or figures["duplicated_after_ack"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
