"""Which relay processes use the database: each notes itself in ``server_state`` when it
starts and once a minute, and forgets itself when it stops, so that ``cipherpost-admin
restore`` can refuse to replace the rows under a running relay (docs/operations.md)."""

from __future__ import annotations

import os
import secrets
import socket

from sqlalchemy import Connection, delete, insert, select

from .schema import server_state
from .sql import Storage, writes

PREFIX = "relay:"
#: A process not heard of for this long is taken to be gone (it notes itself every 60 s).
FRESH_MS = 150_000


def process_key() -> str:
    """This relay process's key: host, process id and a random part (several apps may
    run in one process, as in tests)."""
    host = socket.gethostname()[:30]
    return f"{PREFIX}{host}:{os.getpid()}:{secrets.token_hex(4)}"[:64]


@writes
def note_alive(storage: Storage, key: str, wall_ms: int) -> None:
    with storage._tx(storage.db.writer) as conn:
        conn.execute(delete(server_state).where(server_state.c.key == key))
        conn.execute(insert(server_state).values(key=key, value=str(wall_ms)))


@writes
def forget(storage: Storage, key: str) -> None:
    with storage._tx(storage.db.writer) as conn:
        conn.execute(delete(server_state).where(server_state.c.key == key))


def live_relays(conn: Connection, wall_ms: int) -> list[tuple[str, int]]:
    """Relay processes heard of in the last ``FRESH_MS``: (key, milliseconds ago)."""
    rows = conn.execute(select(server_state.c.key, server_state.c.value).where(
        server_state.c.key.startswith(PREFIX))).all()
    out = []
    for key, value in rows:
        try:
            ago = wall_ms - int(value)
        except ValueError:
            continue
        if ago < FRESH_MS:
            out.append((str(key)[len(PREFIX):], ago))
    return out
