"""A private Redis server for tests and benchmarks: ``redis-server`` on 127.0.0.1 at a
free port, no persistence, in a temporary directory removed by :meth:`RedisServer.stop`.

The binary comes from Debian's ``redis-server`` package (``make test`` installs it where
it is missing), found on ``PATH`` or in ``CIPHERPOST_TEST_REDIS_SERVER``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.net import free_port


class RedisUnavailable(RuntimeError):
    """Redis is not installed, or the server did not start."""


class RedisServer:
    """One running ``redis-server`` process."""

    def __init__(self, workdir: Path, port: int, process: subprocess.Popen[bytes],
                 extra: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.port = port
        self.process = process
        self.extra = extra
        self._databases = 0

    @classmethod
    def start(cls, *, timeout: float = 30.0, extra: tuple[str, ...] = ()) -> RedisServer:
        """Start a server (``extra``: more ``redis-server`` arguments).

        Raises:
            RedisUnavailable: not installed, or not answering within ``timeout`` seconds.
        """
        binary = os.environ.get("CIPHERPOST_TEST_REDIS_SERVER") or shutil.which("redis-server")
        if not binary:
            raise RedisUnavailable("redis-server is not installed (`make test` installs "
                                   "Debian's redis-server package; or set "
                                   "CIPHERPOST_TEST_REDIS_SERVER)")
        workdir = Path(tempfile.mkdtemp(prefix="cipherpost-redis-"))
        try:
            for _attempt in range(3):  # the free port may be taken before it binds
                server = cls._launch(binary, workdir, free_port(), extra)
                try:
                    server._wait_ready(timeout)
                except RedisUnavailable:
                    server.stop(remove=False)
                    if "Address already in use" in server.log():
                        continue
                    raise
                return server
            raise RedisUnavailable(f"no free port found: {server.log()[-2000:]}")
        except OSError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise RedisUnavailable(f"cannot run {binary}: {exc}") from exc
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    @classmethod
    def _launch(cls, binary: str, workdir: Path, port: int,
                extra: tuple[str, ...]) -> RedisServer:
        args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                "--appendonly", "no", "--dir", str(workdir), "--databases", "1000",
                "--logfile", str(workdir / "redis.log"), "--daemonize", "no", *extra]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        return cls(workdir, port, process, extra)

    def restart(self, *, timeout: float = 30.0) -> None:
        """Stop the server and start it again on the same port (with nothing in it: a
        lost server, as its clients see it)."""
        binary = self.process.args[0]  # type: ignore[index]
        self.stop(remove=False)
        self.process = self._launch(str(binary), self.workdir, self.port, self.extra).process
        self._wait_ready(timeout)

    def log(self) -> str:
        try:
            return (self.workdir / "redis.log").read_text(errors="replace")
        except OSError:
            return ""

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisUnavailable(f"redis-server exited with {self.process.returncode}: "
                                       f"{self.log()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):  # up (with a password)
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RedisUnavailable(f"redis-server did not start in {timeout:.0f} s: "
                               f"{self.log()[-2000:]}")

    def url(self) -> str:
        """A new database number of this server (tests do not share keys or channels
        but pub/sub, which is server-wide: channel names hold random account ids)."""
        self._databases += 1
        return f"redis://127.0.0.1:{self.port}/{self._databases % 1000}"

    def stop(self, *, remove: bool = True) -> None:
        """SIGTERM (no save: persistence is off), then remove the directory."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)
