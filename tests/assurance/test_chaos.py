"""Fault injection, the quick versions (`make chaos` runs the long one): random SIGKILLs
under load (SQLite and PostgreSQL), a full disk, and a database that refuses writes. In
every case nothing the relay accepted is lost, nothing acknowledged is delivered again,
and the relay answers errors instead of dying."""

from __future__ import annotations

import resource
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.server.conftest import (
    BACKENDS,
    postgres,  # noqa: F401 - the fixture
)
from tests.server.process import ServerProcess
from tests.support.postgres import PostgresServer

from . import results
from .chaos import Load, run


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_sigkills_under_load_lose_nothing(tmp_path: Path, backend: str,
                                                 request: pytest.FixtureRequest) -> None:
    """On SQLite and on PostgreSQL (tests/server/test_e2e.py had a test of its own for
    this, one sender and one receiver, merged here)."""
    database_url = None
    if backend == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres")
        name = server.create_database()
        request.addfinalizer(lambda: server.drop_database(name))
        database_url = server.url(name)
    figures = run(tmp_path, kills=2, seed=7, senders=2, receivers=2, messages_per_sender=60,
                  database_url=database_url)
    results.write("chaos", "sigkill-quick" if backend == "sqlite"
                  else f"sigkill-quick-{backend}", figures)
    assert figures["backend"] == backend
    assert figures["kills"] == 2
    assert figures["lost"] == 0, figures
    assert figures["duplicated_after_ack"] == 0, figures
    assert figures["accepted"] + figures["unknown"] == 120 and figures["unknown"] <= 12


def _file_size_limit(limit: int) -> Callable[[], None]:
    """Once the relay's files reach ``limit`` bytes every write fails (EFBIG, SIGXFSZ
    ignored), as on a full disk."""
    def constrain() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return constrain


def _files_size(folder: Path) -> int:
    return max((p.stat().st_size for p in folder.rglob("*") if p.is_file()), default=0)


def test_a_full_disk_refuses_sends_and_loses_nothing(tmp_path: Path) -> None:
    """Writes start failing part-way through a load: the relay keeps answering (errors
    for sends), and after it restarts with room, everything it accepted is delivered."""
    plain = ServerProcess(tmp_path)
    plain.start()                      # creates and migrates the database
    plain.stop()
    full = ServerProcess(tmp_path, preexec_fn=_file_size_limit(_files_size(tmp_path)
                                                               + 160 * 1024))
    full.start()
    try:
        load = Load(full, senders=2, receivers=2, messages_per_sender=200)
        load.retry_503 = False
        load.start()
        deadline = time.monotonic() + 120
        while not load.senders_done() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert full.proc is not None and full.proc.poll() is None, "the relay died"
        assert httpx.get(f"{full.url}/healthz", timeout=5).status_code == 200
        accepted_while_filling = len(load.ledger.accepted)
        load.close()
    finally:
        full.stop()
    roomy = ServerProcess(tmp_path, port=full.port)   # room again
    roomy.start()
    drain = Load(roomy, senders=0, receivers=2, messages_per_sender=0,
                 accounts=load.receivers, ledger=load.ledger)
    try:
        drain.start()
        drain.drain(60)
    finally:
        drain.close()
        roomy.stop()
    figures = {**load.ledger.figures(), "sends": 400,
               "accepted_while_filling": accepted_while_filling}
    results.write("chaos", "full-disk", figures)
    assert figures["lost"] == 0, figures
    assert figures["duplicated_after_ack"] == 0, figures
    assert accepted_while_filling < 400, "the disk never filled: the test did not test"
    assert set(figures["refused_by_status"]) == {"503"}, figures   # an answer, not a crash


def test_a_database_that_refuses_writes(tmp_path: Path,
                                        postgres: PostgresServer) -> None:  # noqa: F811
    """PostgreSQL turned read-only under the relay: sends fail with an error answer, the
    relay stays up, and once writes are allowed again everything accepted arrives."""
    name = postgres.create_database()
    server = ServerProcess(tmp_path, database_url=postgres.url(name))
    server.start()
    load = Load(server, senders=2, receivers=2, messages_per_sender=150)

    def set_read_only(on: bool) -> None:
        with psycopg.connect(postgres.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = '
                         f'{"on" if on else "off"}')
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s", (name,))

    try:
        load.start()
        time.sleep(1.0)
        set_read_only(True)
        time.sleep(2.0)
        assert server.proc is not None and server.proc.poll() is None, "the relay died"
        health = httpx.get(f"{server.url}/healthz", timeout=5)
        during = len(load.ledger.accepted)
        time.sleep(1.0)
        assert len(load.ledger.accepted) - during <= 2, "writes kept being accepted"
        set_read_only(False)
        deadline = time.monotonic() + 120
        while not load.senders_done() and time.monotonic() < deadline:
            time.sleep(0.1)
        load.drain(60)
    finally:
        load.close()
        server.stop()
        postgres.drop_database(name)
    figures = {**load.ledger.figures(), "health_while_read_only": health.status_code}
    results.write("chaos", "read-only-database", figures)
    assert figures["lost"] == 0, figures
    assert figures["duplicated_after_ack"] == 0, figures
