"""The relay's storage on PostgreSQL: the private server the tests start, and what only
concurrent writers (several relay processes on one database) can show."""

from __future__ import annotations

import os

import psycopg
import pytest

from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.postgresql


def test_private_server_on_loopback_not_as_root(postgres: PostgresServer) -> None:
    with psycopg.connect(postgres.dsn("postgres")) as conn:
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('listen_addresses', 'unix_socket_directories', 'data_directory')").fetchall())
    assert settings["listen_addresses"] == "127.0.0.1"
    assert settings["unix_socket_directories"] == ""
    assert settings["data_directory"].startswith(str(postgres.workdir))
    assert os.stat(f"/proc/{postgres.process.pid}").st_uid != 0
