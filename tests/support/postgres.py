"""A private PostgreSQL server for tests and benchmarks: initdb in a temporary directory,
``postgres`` on 127.0.0.1 at a free port, removed again by :meth:`PostgresServer.stop`.

The binaries come from Debian's ``postgresql`` package (``make test`` installs it where it
is missing), found under ``/usr/lib/postgresql/<version>/bin``, then on ``PATH``, or in
``CIPHERPOST_TEST_PG_BINDIR``. PostgreSQL refuses to run as root: as root, the server runs
as the ``postgres`` user that the Debian package creates (``CIPHERPOST_TEST_PG_OS_USER``
names another). Clients authenticate with ``trust`` on loopback, as superuser
``cipherpost``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from tests.support.net import free_port

SUPERUSER = "cipherpost"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed, or the server did not start."""


def find_bindir() -> Path:
    """The directory holding ``initdb`` and ``postgres`` (the newest installed version).

    Raises:
        PostgresUnavailable: none is installed.
    """
    configured = os.environ.get("CIPHERPOST_TEST_PG_BINDIR")
    if configured:
        return Path(configured)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb and shutil.which("postgres"):
        return Path(initdb).resolve().parent
    raise PostgresUnavailable(
        "PostgreSQL is not installed: no /usr/lib/postgresql/*/bin/initdb and no initdb on "
        "PATH (`make test` installs Debian's postgresql package; or set "
        "CIPHERPOST_TEST_PG_BINDIR)")


def _as_user(user: str | None) -> dict[str, Any]:
    """``subprocess`` arguments that run the child as ``user`` (uid, gid, no extra groups)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


class PostgresServer:
    """One running ``postgres`` process with its own data directory."""

    def __init__(self, workdir: Path, port: int, process: subprocess.Popen[bytes]) -> None:
        self.workdir = workdir
        self.port = port
        self.process = process
        self._databases = 0

    @classmethod
    def start(cls, *, durable: bool = False, timeout: float = 60.0) -> PostgresServer:
        """initdb and start a server. ``durable=False`` turns fsync off (the tests need
        no crash safety of PostgreSQL itself, only of the relay); benchmarks pass True.

        Raises:
            PostgresUnavailable: not installed, initdb failed, or the server did not
                accept connections within ``timeout`` seconds.
        """
        bindir = find_bindir()
        user = None
        if os.geteuid() == 0:
            user = os.environ.get("CIPHERPOST_TEST_PG_OS_USER", "postgres")
            try:
                pwd.getpwnam(user)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root, and there is no user {user!r} to run PostgreSQL as "
                    "(Debian's postgresql package creates 'postgres'; or set "
                    "CIPHERPOST_TEST_PG_OS_USER)") from None
        workdir = Path(tempfile.mkdtemp(prefix="cipherpost-pg-"))
        try:
            return cls._init_and_launch(bindir, workdir, user, durable, timeout)
        except OSError as exc:  # e.g. a binary missing or not executable
            shutil.rmtree(workdir, ignore_errors=True)
            raise PostgresUnavailable(f"cannot run PostgreSQL from {bindir}: {exc}") from exc
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    @classmethod
    def _init_and_launch(cls, bindir: Path, workdir: Path, user: str | None, durable: bool,
                         timeout: float) -> PostgresServer:
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(workdir, entry.pw_uid, entry.pw_gid)
        data = workdir / "data"
        initdb = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync"],
            capture_output=True, timeout=120, check=False, **_as_user(user))
        if initdb.returncode != 0:
            raise PostgresUnavailable(
                f"initdb failed ({initdb.returncode}): "
                f"{initdb.stderr.decode(errors='replace')[-2000:]}")
        for _attempt in range(3):  # the free port may be taken before we bind it
            port = free_port()
            server = cls._launch(bindir, workdir, port, user, durable)
            try:
                server._wait_ready(timeout)
            except PostgresUnavailable:
                server.stop(remove=False)
                if "already in use" in server.log():
                    continue
                raise
            return server
        raise PostgresUnavailable(f"no free port found: {server.log()[-2000:]}")

    @classmethod
    def _launch(cls, bindir: Path, workdir: Path, port: int, user: str | None,
                durable: bool) -> PostgresServer:
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": "",
            "max_connections": "200",
            "logging_collector": "off",
        }
        if not durable:
            options |= {"fsync": "off", "full_page_writes": "off"}
        args = [str(bindir / "postgres"), "-D", str(workdir / "data")]
        for name, value in options.items():
            args += ["-c", f"{name}={value}"]
        log = workdir / "postgres.log"
        with log.open("ab") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True,
                                       **_as_user(user))
        return cls(workdir, port, process)

    def log(self) -> str:
        """What the server printed so far."""
        try:
            return (self.workdir / "postgres.log").read_text(errors="replace")
        except OSError:
            return ""

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PostgresUnavailable(
                    f"postgres exited with {self.process.returncode}: {self.log()[-2000:]}")
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                time.sleep(0.05)
        raise PostgresUnavailable(f"postgres did not start in {timeout:.0f} s: "
                                  f"{self.log()[-2000:]}")

    def dsn(self, database: str) -> str:
        """A libpq connection string for ``database``."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}"

    def url(self, database: str) -> str:
        """The relay's ``database_url`` for ``database``."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its name."""
        if name is None:
            self._databases += 1
            name = f"test_{os.getpid()}_{self._databases}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing any connection still open to it."""
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self, *, remove: bool = True) -> None:
        """Fast shutdown (SIGINT), then remove the data directory."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)
