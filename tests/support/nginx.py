"""A private nginx for tests: a site configuration (``docs/deploy/nginx.conf``, rendered
for loopback) inside a minimal main configuration, run in the foreground by the current
user with its own prefix, pid file, logs and temporary directories, on 127.0.0.1 at free
ports, and removed by :meth:`NginxServer.stop`.

The binary comes from Debian's ``nginx`` package (``make test`` installs it where it is
missing), found on ``PATH``, in ``/usr/sbin`` or in ``CIPHERPOST_TEST_NGINX``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.net import free_port

#: The documented configuration (docs/deploy.md).
SITE = Path(__file__).resolve().parents[2] / "docs" / "deploy" / "nginx.conf"


class NginxUnavailable(RuntimeError):
    """nginx is not installed, or did not start."""


def find_nginx() -> str | None:
    """The nginx binary, or None."""
    configured = os.environ.get("CIPHERPOST_TEST_NGINX")
    if configured:
        return configured
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def _replace(text: str, old: str, new: str, count: int) -> str:
    found = text.count(old)
    if found != count:
        raise AssertionError(f"{SITE.name}: expected {old!r} {count} time(s), found it "
                             f"{found} time(s); update tests/support/nginx.py:render_site")
    return text.replace(old, new)


def render_site(text: str, *, relays: tuple[int, int], http_port: int, https_port: int,
                cert: Path, key: Path) -> str:
    """The documented site for loopback: its relay ports, listen addresses (127.0.0.1
    only, IPv6 dropped), name and certificate replaced, nothing else changed. Raises
    AssertionError if the file no longer has the shape this expects."""
    text = _replace(text, "server 127.0.0.1:8081 ", f"server 127.0.0.1:{relays[0]} ", 2)
    text = _replace(text, "server 127.0.0.1:8082 ", f"server 127.0.0.1:{relays[1]} ", 2)
    text = _replace(text, "    listen 80;\n", f"    listen 127.0.0.1:{http_port};\n", 1)
    text = _replace(text, "    listen [::]:80;\n", "", 1)
    text = _replace(text, "    listen 443 ssl http2;\n",
                    f"    listen 127.0.0.1:{https_port} ssl http2;\n", 1)
    text = _replace(text, "    listen [::]:443 ssl http2;\n", "", 1)
    text = _replace(text, "/etc/letsencrypt/live/chat.example.org/fullchain.pem", str(cert), 1)
    text = _replace(text, "/etc/letsencrypt/live/chat.example.org/privkey.pem", str(key), 1)
    text = _replace(text, "server_name chat.example.org;", "server_name 127.0.0.1;", 2)
    if re.search(r"^\s*listen (?!127\.0\.0\.1:)", text, re.MULTILINE):
        raise AssertionError(f"{SITE.name}: a listen directive was not rendered for loopback")
    return text


class NginxServer:
    """One running nginx master process (and its worker)."""

    def __init__(self, workdir: Path, http_port: int, https_port: int,
                 process: subprocess.Popen[bytes]) -> None:
        self.workdir = workdir
        self.http_port = http_port
        self.https_port = https_port
        self.process = process

    @classmethod
    def start(cls, render: Callable[[int, int], str], *, timeout: float = 30.0) -> NginxServer:
        """Start nginx with the site ``render(http_port, https_port)``.

        Raises:
            NginxUnavailable: not installed, or not listening within ``timeout`` seconds.
        """
        binary = find_nginx()
        if binary is None:
            raise NginxUnavailable("nginx is not installed (`make test` installs Debian's "
                                   "nginx package; or set CIPHERPOST_TEST_NGINX)")
        workdir = Path(tempfile.mkdtemp(prefix="cipherpost-nginx-"))
        try:
            for _attempt in range(3):  # a free port may be taken before nginx binds it
                server = cls._launch(binary, workdir, render)
                try:
                    server._wait_ready(timeout)
                except NginxUnavailable:
                    server.stop(remove=False)
                    if "Address already in use" in server.log():
                        continue
                    raise
                return server
            raise NginxUnavailable(f"no free port found: {server.log()[-2000:]}")
        except OSError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise NginxUnavailable(f"cannot run {binary}: {exc}") from exc
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    @classmethod
    def _launch(cls, binary: str, workdir: Path,
                render: Callable[[int, int], str]) -> NginxServer:
        http_port, https_port = free_port(), free_port()
        (workdir / "cipherpost.conf").write_text(render(http_port, https_port))
        # As root, nginx would run its workers as "nobody"; they run as the current user.
        user = (f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else "")
        temp = "\n".join(f"    {kind}_temp_path {workdir / kind};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (workdir / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes 1;\npid {workdir / 'nginx.pid'};\n"
            f"error_log {workdir / 'error.log'} warn;\n"
            "events {\n    worker_connections 1024;\n}\n"
            f"http {{\n{temp}\n    include {workdir / 'cipherpost.conf'};\n}}\n")
        (workdir / "error.log").unlink(missing_ok=True)
        process = subprocess.Popen(
            [binary, "-p", str(workdir), "-c", str(workdir / "nginx.conf"),
             "-e", str(workdir / "error.log")],
            stdout=subprocess.DEVNULL, stderr=(workdir / "stderr.log").open("ab"),
            stdin=subprocess.DEVNULL, start_new_session=True)
        return cls(workdir, http_port, https_port, process)

    def log(self) -> str:
        out = []
        for name in ("stderr.log", "error.log"):
            with contextlib.suppress(OSError):
                out.append((self.workdir / name).read_text(errors="replace"))
        return "\n".join(out)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NginxUnavailable(f"nginx exited with {self.process.returncode}: "
                                       f"{self.log()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.https_port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise NginxUnavailable(f"nginx did not start in {timeout:.0f} s: {self.log()[-2000:]}")

    def stop(self, *, remove: bool = True) -> None:
        """SIGQUIT (graceful), then SIGKILL after 10 s; then remove the directory."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)
