"""An in-process relay per test (TestClient runs the lifespan and speaks WebSocket), on
SQLite and on PostgreSQL alike: every test that takes ``settings``, ``client`` or
``database_url`` runs once per database.

PostgreSQL is a private server that the test session starts itself (``tests/support/
postgres.py``), with a new database per test. If it cannot be started, its tests fail,
saying why. ``CIPHERPOST_TEST_POSTGRES=skip`` skips them on a developer's machine (not
where ``CI`` is set); ``-m "not postgresql"`` deselects them. Redis (the fan-out between
relay processes) is started likewise, by the tests that take ``redis_server``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cipherpost.server import Settings, create_app
from cipherpost.server.storage.engine import Database
from tests.support.postgres import PostgresServer, PostgresUnavailable
from tests.support.redis import RedisServer, RedisUnavailable

from .helpers import KeyMaker, auth

OPT_OUT = "CIPHERPOST_TEST_POSTGRES"
REDIS_OPT_OUT = "CIPHERPOST_TEST_REDIS"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for this test session (one per xdist worker)."""
    if os.environ.get(OPT_OUT, "").strip().lower() == "skip":
        if _in_ci():
            pytest.fail(f"{OPT_OUT}=skip is for developers' machines: CI runs the "
                        "PostgreSQL tests", pytrace=False)
        pytest.skip(f"PostgreSQL tests skipped by {OPT_OUT}=skip")
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL could not be started for the tests: {exc}\n"
                    f"(`make test` installs it; {OPT_OUT}=skip skips these tests on a "
                    "developer's machine)", pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A Redis server for this test session (one per xdist worker). If it cannot be
    started, its tests fail; ``CIPHERPOST_TEST_REDIS=skip`` skips them on a developer's
    machine (not where ``CI`` is set)."""
    if os.environ.get(REDIS_OPT_OUT, "").strip().lower() == "skip":
        if _in_ci():
            pytest.fail(f"{REDIS_OPT_OUT}=skip is for developers' machines: CI runs the "
                        "Redis tests", pytrace=False)
        pytest.skip(f"Redis tests skipped by {REDIS_OPT_OUT}=skip")
    try:
        server = RedisServer.start()
    except RedisUnavailable as exc:
        pytest.fail(f"Redis could not be started for the tests: {exc}\n"
                    f"(`make test` installs it; {REDIS_OPT_OUT}=skip skips these tests on a "
                    "developer's machine)", pytrace=False)
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new, empty database of each kind (the relay migrates it when it starts)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/relay.db"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = server.create_database()
    yield server.url(name)
    server.drop_database(name)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url,
                    attachment_dir=str(tmp_path / "blobs"),
                    rate_register_per_ip="1000/100", rate_prekey_fetch_per_account="1000/100",
                    rate_messages_per_pair="10000/1000")


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    """The relay's database for ``settings``, migrated (tests that read or change rows
    beside the relay)."""
    database = Database(settings.database_url)
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


class Registered:
    """A registered account's first device, with helpers."""

    def __init__(self, client: TestClient, keys: KeyMaker, credentials: dict[str, Any]) -> None:
        self.client = client
        self.keys = keys
        self.account_id: str = credentials["account_id"]
        self.device_id: int = credentials["device_id"]
        self.token: str = credentials["token"]
        self.headers = auth(self.token)


def register(client: TestClient, username: str | None = None, **body: Any) -> Registered:
    keys = KeyMaker()
    payload = keys.device_body(**body)
    if username:
        payload["username"] = username
    response = client.post("/v1/accounts", json=payload)
    assert response.status_code == 201, response.text
    return Registered(client, keys, response.json())


def link(client: TestClient, owner: Registered, keys: KeyMaker | None = None) -> Registered:
    code = client.post("/v1/devices/link-codes", headers=owner.headers).json()["link_code"]
    keys = keys or owner.keys.linked()
    response = client.post("/v1/devices", json={**keys.device_body(), "link_code": code})
    assert response.status_code == 201, response.text
    return Registered(client, keys, response.json())
