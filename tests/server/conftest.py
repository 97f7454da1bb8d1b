"""An in-process relay per test (TestClient runs the lifespan and speaks WebSocket)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cipherpost.server import Settings, create_app

from .helpers import KeyMaker, auth


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/relay.db",
                    attachment_dir=str(tmp_path / "blobs"),
                    rate_register_per_ip="1000/100", rate_prekey_fetch_per_account="1000/100",
                    rate_messages_per_pair="10000/1000")


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
