"""Run the relay as a real uvicorn process on 127.0.0.1 for end-to-end tests."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support.net import free_port


class ServerProcess:
    """``python -m cipherpost.server`` with its own database directory."""

    def __init__(self, workdir: Path, port: int | None = None,
                 preexec_fn: Callable[[], None] | None = None, **settings: str) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "CIPHERPOST_DATABASE_URL": f"sqlite:///{workdir}/relay.db",
            "CIPHERPOST_ATTACHMENT_DIR": str(workdir / "blobs"),
            "CIPHERPOST_RATE_REGISTER_PER_IP": "1000/100",
            "CIPHERPOST_RATE_MESSAGES_PER_PAIR": "100000/10000",
            "CIPHERPOST_RATE_PREKEY_FETCH_PER_ACCOUNT": "1000/100",
            "CIPHERPOST_LOG_LEVEL": "WARNING",
            **{f"CIPHERPOST_{k.upper()}": v for k, v in settings.items()},
        }
        self.proc: subprocess.Popen[bytes] | None = None
        #: Run in the child before the relay starts (resource limits, signal dispositions).
        self.preexec_fn = preexec_fn
        #: what httpx should verify the server with (True: the default CA store).
        self.verify: bool | ssl.SSLContext = True
        self.log = workdir / "server.log"

    def start(self, timeout: float = 90.0) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cipherpost.server", "--port", str(self.port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=self.preexec_fn)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1,
                             verify=self.verify).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not start")

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no flushing."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
