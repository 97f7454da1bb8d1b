"""Database engines and migrations.

SQLite (the default) gets two engines: one writer connection whose transactions start
with ``BEGIN IMMEDIATE`` (so every write transaction holds the lock from its first
statement: no lock-upgrade failures, and writes queue in order), and a small pool of
readers, which WAL lets run beside the writer. PostgreSQL uses one engine for both, on
psycopg 3 (``postgresql://`` URLs are taken to mean ``postgresql+psycopg://``).
The engines are synchronous; :mod:`.sql` runs them on threads of their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"
_SYNC_LEVELS = {"OFF", "NORMAL", "FULL", "EXTRA"}
#: The PostgreSQL advisory lock key held while migrating (any constant of our own).
MIGRATION_LOCK = 0x63697068_65727074


class Database:
    """The engines of one database."""

    reader_threads = 2

    def __init__(self, url: str, *, sqlite_synchronous: str = "NORMAL") -> None:
        self._held: list[Any] = []
        self.url = make_url(url)
        backend = self.url.get_backend_name()
        self.is_sqlite = backend == "sqlite"
        self.is_postgresql = backend in ("postgresql", "postgres")
        if self.is_sqlite and self.url.drivername != "sqlite":
            self.url = self.url.set(drivername="sqlite")  # e.g. sqlite: same file
        if self.is_postgresql:
            # The per-message SQL of :mod:`.sql` goes to the DB-API driver directly, so the
            # driver is not a free choice: psycopg 3 (see ``sql._PostgresCursor``).
            if self.url.drivername not in ("postgresql", "postgres", "postgresql+psycopg"):
                raise ValueError(f"PostgreSQL is supported through psycopg 3 only "
                                 f"(postgresql:// or postgresql+psycopg://), "
                                 f"not {self.url.drivername}")
            self.url = self.url.set(drivername="postgresql+psycopg")
        elif not self.is_sqlite:
            raise ValueError(f"unsupported database {backend!r}: use sqlite:// or "
                             "postgresql://")
        if self.is_sqlite:
            level = sqlite_synchronous.upper()
            if level not in _SYNC_LEVELS:
                raise ValueError(f"sqlite_synchronous must be one of {sorted(_SYNC_LEVELS)}")
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            # The writer thread's two connections (SQLAlchemy and raw) and the event
            # loop's own (see ``loop_connection``).
            self.writer = self._sqlite_engine(level, immediate=True, pool_size=3)
            self.reader = self._sqlite_engine(level, immediate=False,
                                              pool_size=2 * self.reader_threads)
        else:
            try:
                self.writer = self.reader = create_engine(self.url, pool_pre_ping=True)
            except ModuleNotFoundError as exc:  # psycopg is an optional dependency
                raise RuntimeError("PostgreSQL needs psycopg: pip install "
                                   "'cipherpost[postgresql]'") from exc

    def _sqlite_engine(self, level: str, *, immediate: bool, pool_size: int) -> Engine:
        engine = create_engine(self.url, poolclass=QueuePool, pool_size=pool_size,
                               max_overflow=0,
                               connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={level}")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    def loop_connection(self) -> Any:
        """A SQLite connection for the event loop's group commits and queue reads: it
        never waits for a lock (busy_timeout 0: the caller hands its batch to the writer
        thread instead) and never checkpoints the WAL inside a commit (``checkpoint``
        does, on the writer thread)."""
        assert self.is_sqlite
        checked_out = self.writer.raw_connection()
        self._held.append(checked_out)  # dropped, it would go back to the pool
        connection: Any = checked_out.driver_connection
        for pragma in ("busy_timeout=0", "wal_autocheckpoint=0"):
            connection.execute(f"PRAGMA {pragma}").fetchall()
        return connection

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent). On PostgreSQL, relay
        processes starting at once take turns: each holds an advisory lock for its
        migration's transaction, and whoever comes second finds the schema current."""
        with self.writer.begin() as conn:
            if self.is_postgresql:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            _upgrade(conn)

    def dispose(self) -> None:
        """Close every connection."""
        for checked_out in self._held:
            checked_out.close()
        self._held.clear()
        self.writer.dispose()
        if self.reader is not self.writer:
            self.reader.dispose()


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
