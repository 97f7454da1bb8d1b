"""A real relay (uvicorn in a thread of the test process) for SDK tests, and helpers."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from cipherpost.client import Client, ClientOptions, history
from cipherpost.client.keys import KeyPolicy
from cipherpost.client.proto.app_pb2 import HistoryEvent
from cipherpost.client.store import database
from cipherpost.client.store.crypto import TEST_PARAMS, Argon2Params
from cipherpost.server import Settings, create_app

from ..server.process import free_port

#: The relays running in this process, by database file (see :func:`relay_queue`).
_RUNNING: dict[Path, ThreadedRelay] = {}


class ThreadedRelay:
    """The relay served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, workdir: Path, *, port: int | None = None, **overrides: Any) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database = (workdir / "relay.db").resolve()
        settings = Settings(**{"database_url": f"sqlite:///{workdir}/relay.db",
                               "attachment_dir": str(workdir / "blobs"),
                               "rate_register_per_ip": "1000/100",
                               "rate_prekey_fetch_per_account": "1000/100",
                               "rate_messages_per_pair": "10000/1000", **overrides})
        self.settings = settings
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                log_level="warning", ws="websockets-sansio",
                                ws_per_message_deflate=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        # As uvicorn.Server.run, keeping the loop for settle().
        with asyncio.Runner(loop_factory=self.server.config.get_loop_factory()) as runner:
            self.loop = runner.get_loop()
            runner.run(self.server.serve())

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("relay did not start")
            time.sleep(0.02)
        _RUNNING[self.database] = self

    def settle(self) -> None:
        """Wait until every write the relay took so far is committed, acknowledgements
        it deletes a moment later (server/storage/queue_log.py) included."""
        assert self.loop is not None
        asyncio.run_coroutine_threadsafe(self.app.state.relay.storage.flush(),
                                         self.loop).result(timeout=30)

    def stop(self) -> None:
        _RUNNING.pop(self.database, None)
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[ThreadedRelay]:
    server = ThreadedRelay(tmp_path / "relay")
    (tmp_path / "relay").mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Devices:
    """Makes SDK devices with stores under one temporary directory."""

    def __init__(self, root: Path, relay: ThreadedRelay) -> None:
        self.root = root
        self.relay = relay
        self.clients: list[Client] = []
        self._n = 0
        #: Small key batches keep set-up quick; the behaviour is the same.
        self.options = ClientOptions(keys=KeyPolicy(one_time_batch=10, kyber_batch=4,
                                                    low_water=3))
        #: Whether accounts registered here keep server-stored history.
        self.history = False

    def path(self, name: str) -> Path:
        self._n += 1
        return self.root / f"{name}-{self._n}.db"

    async def register(self, username: str) -> Client:
        client = await Client.register(self.path(username), self.relay.url, username=username,
                                       history=self.history,
                                       passphrase="correct horse", argon2=TEST_PARAMS,
                                       options=dataclasses.replace(self.options))
        self.clients.append(client)
        return client

    async def link(self, owner: Client, name: str) -> Client:
        code = await owner.create_link_code()
        client = await Client.link(self.path(name), self.relay.url, code,
                                   owner.store.get_identity_key_pair(),
                                   passphrase="correct horse", argon2=TEST_PARAMS,
                                   device_name=name, options=dataclasses.replace(self.options))
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


@dataclasses.dataclass(frozen=True)
class _TestCost(Argon2Params):
    """Argon2Params whose defaults are TEST_PARAMS."""

    time_cost: int = TEST_PARAMS.time_cost
    memory_kib: int = TEST_PARAMS.memory_kib
    parallelism: int = TEST_PARAMS.parallelism


@pytest.fixture
def cheap_store_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """A store made without Argon2 parameters of the caller's (the CLI's, in process)
    gets TEST_PARAMS instead of the default cost (64 MiB, 3 passes: 0.3 s of a core at
    each CLI command that opens the store, some hundred of them in the CLI tests). The
    CLI tests that run ``python -m cipherpost.cli`` as a process keep the default cost."""
    monkeypatch.setattr(database, "Argon2Params", _TestCost)


def settle(database: Path) -> None:
    """If a relay of this process runs on ``database``, wait until what it took so far is
    committed (acknowledged messages deleted a moment later included), so that the file
    shows it to another connection."""
    relay = _RUNNING.get(Path(database).resolve())
    if relay is not None:
        relay.settle()


def relay_queue(database: Path, account_id: str) -> list[tuple[str | None, int | None, int, int]]:
    """(sender account, sender device, type, client timestamp) of each envelope the relay
    at ``database`` holds for the account, as stored: in the per-device queues or still in
    the queue log (server/storage/queue_log.py), in queue order. A relay running in this
    process on that database first commits what it took, so that what its devices
    acknowledged is gone."""
    columns = "sender_account_id, sender_device_id, type, client_timestamp, seq, device_id"
    settle(database)
    with sqlite3.connect(database) as db:
        return [row[:4] for row in db.execute(
            f"SELECT {columns} FROM messages WHERE account_id = ? UNION ALL "
            f"SELECT {columns} FROM queue_log WHERE account_id = ? ORDER BY seq, device_id",
            (account_id, account_id)).fetchall()]


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def logged_events(client: Client) -> list[HistoryEvent | None]:
    """The account's server-stored history log, in log order, each entry opened with
    ``client``'s keys (None for a deleted entry)."""
    keys = history.keys(client.store)
    assert keys is not None
    found: list[HistoryEvent | None] = []
    after = 0
    while True:
        entries, more = history.parse_page(
            await client.api.request("GET", f"/v1/history?after={after}"))
        for seq, name, blob in entries:
            after = seq
            found.append(None if blob is None else history.open_blob(keys, name, blob))
        if not more:
            return found
