"""The queue as one b-tree keyed by (account, device, seq) (migration 0008): messages
queued before it survive it with their ids and order and are still acknowledged by those
ids; new envelope ids carry their ``seq`` and only the whole id deletes; expiry finds
what has expired without an index. On SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from cipherpost.server.storage.engine import Database
from cipherpost.server.storage.envelope_ids import (
    MAX_SEQ,
    envelope_id,
    seq_of,
    seq_unchecked,
)
from cipherpost.server.storage.models import KeyUpload, NewDevice, OutgoingMessage
from cipherpost.server.storage.sql import Storage

from .helpers import run_alembic

ALICE = "00000000-0000-4000-8000-00000000000a"
BOB = "00000000-0000-4000-8000-00000000000b"


def _queue_at_0007(db: Database) -> list[dict[str, Any]]:
    """A database at schema 0007 with messages queued for two devices, written as the
    relay of that schema wrote them (UUIDv4 ids, ``seq`` from the device row)."""
    run_alembic(db, "upgrade", "0007")
    rows: list[dict[str, Any]] = []
    with db.writer.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO accounts (id, username, identity_key, next_device_id, created_at) "
            "VALUES (:a, 'bob', :k, 3, 1)"), {"a": BOB, "k": b"\x05" + bytes(32)})
        for device, count in ((1, 3), (2, 2)):
            sizes = 0
            for seq in range(1, count + 1):
                content = b"old %d/%d" % (device, seq)
                sizes += len(content)
                rows.append({"guid": str(uuid.uuid4()), "account_id": BOB,
                             "device_id": device, "seq": seq,
                             "sender_account_id": ALICE if seq != 2 else None,
                             "sender_device_id": 1 if seq != 2 else None, "type": 2,
                             "content": content, "client_timestamp": 10 + seq,
                             "server_timestamp": 20 + seq, "expires_at": 10**15 + seq})
            conn.execute(sa.text(
                "INSERT INTO devices (account_id, device_id, registration_id, token_hash, "
                "queued_bytes, created_at, last_seen, last_seq) "
                "VALUES (:a, :d, :r, :t, :q, 1, 1, :s)"),
                {"a": BOB, "d": device, "r": 100 + device, "t": bytes([device]) * 32,
                 "q": sizes, "s": count})
        conn.execute(sa.text(
            "INSERT INTO messages (guid, account_id, device_id, seq, sender_account_id, "
            "sender_device_id, type, content, client_timestamp, server_timestamp, "
            "expires_at) VALUES (:guid, :account_id, :device_id, :seq, :sender_account_id, "
            ":sender_device_id, :type, :content, :client_timestamp, :server_timestamp, "
            ":expires_at)"), rows)
    return rows


def _messages(db: Database) -> list[dict[str, Any]]:
    with db.reader.connect() as conn:
        return [{**r._asdict(), "content": bytes(r.content)} for r in conn.execute(sa.text(
            "SELECT guid, account_id, device_id, seq, sender_account_id, sender_device_id, "
            "type, content, client_timestamp, server_timestamp, expires_at FROM messages "
            "ORDER BY account_id, device_id, seq"))]


def _queued_bytes(db: Database) -> dict[int, int]:
    with db.reader.connect() as conn:
        return {r[0]: r[1] for r in conn.execute(sa.text(
            "SELECT device_id, queued_bytes FROM devices WHERE account_id = :a"),
            {"a": BOB})}


def test_messages_queued_before_0008_survive_it_and_are_acknowledged(
        database_url: str) -> None:
    db = Database(database_url)
    try:
        before = _queue_at_0007(db)
        db.migrate()
        assert _messages(db) == before  # every column of every row, in queue order
        with db.reader.connect() as conn:
            indexes = {i["name"] for i in sa.inspect(conn).get_indexes("messages")}
            key = sa.inspect(conn).get_pk_constraint("messages")["constrained_columns"]
        assert not indexes & {"messages_by_device", "messages_by_expiry"}
        assert key == ["account_id", "device_id", "seq"]
        asyncio.run(_acknowledge_old_and_new(db, before))
    finally:
        db.dispose()


async def _acknowledge_old_and_new(db: Database, before: list[dict[str, Any]]) -> None:
    storage = Storage(db)
    try:
        queue = await storage.fetch(BOB, 1, 0, 10)
        assert [(e.seq, e.guid, e.content) for e in queue] == [
            (r["seq"], r["guid"], r["content"]) for r in before if r["device_id"] == 1]
        # An old UUIDv4 id is found by a scan of the device's queue, and only there.
        assert await storage.acknowledge(BOB, 2, [queue[0].guid]) == 0
        assert await storage.acknowledge(BOB, 1, [queue[0].guid]) == 1
        # New messages go on from the device's last seq, with ids that carry it.
        queued = await storage.enqueue(
            BOB, [OutgoingMessage(1, 101, 2, b"new one"), OutgoingMessage(2, 102, 2, b"2")],
            sender=(ALICE, 1), exclude_device=None, client_timestamp=0, now=1, ttl=60,
            byte_budget=1 << 20)
        new = {device: envelope for device, envelope in queued}
        assert (new[1].seq, new[2].seq) == (4, 3)
        assert seq_of(new[1].guid) == 4 and seq_of(new[2].guid) == 3
        # The right seq with another random part (a stale id, say from before a restore
        # that handed the seq out again) deletes nothing; nor does another device's id.
        forged = new[1].guid[:24] + ("0" if new[1].guid[24] != "0" else "1") \
            + new[1].guid[25:]
        assert seq_of(forged) == 4
        assert await storage.acknowledge(BOB, 1, [forged, new[2].guid]) == 0
        # Old and new ids in one acknowledgement, a repeated one harmless.
        remaining = [e.guid for e in queue[1:]]
        assert await storage.acknowledge(BOB, 1, [*remaining, new[1].guid,
                                                  new[1].guid]) == 3
        assert await storage.acknowledge(BOB, 2, [new[2].guid]) == 1
        assert [r["device_id"] for r in _messages(db)] == [2, 2]  # device 2's old ones
        assert _queued_bytes(db) == {1: 0, 2: len(b"old 2/1") + len(b"old 2/2")}
    finally:
        storage.close()


def test_acknowledgements_with_sizes_known_free_only_what_they_delete(
        database_url: str) -> None:
    """A connection passes the sizes of what it pushed, and SQLite then deletes without
    reading the rows first: the bytes freed must still be those of rows deleted (not a
    forged id's, nor one acknowledged twice or another device's)."""
    db = Database(database_url)
    try:
        _queue_at_0007(db)
        db.migrate()
        asyncio.run(_acknowledge_with_sizes(db))
    finally:
        db.dispose()


async def _acknowledge_with_sizes(db: Database) -> None:
    storage = Storage(db)
    try:
        before = _queued_bytes(db)
        queued = await storage.enqueue(
            BOB, [OutgoingMessage(1, 101, 2, b"twelve bytes"), OutgoingMessage(2, 102, 2, b"x")],
            sender=(ALICE, 1), exclude_device=None, client_timestamp=0, now=1, ttl=60,
            byte_budget=1 << 20)
        new = dict(queued)
        sizes = {e.guid: len(e.content) for e in new.values()}
        # Out of SQLite's queue log (acknowledged there they never reach ``messages``),
        # so that these acknowledgements are of stored rows.
        await storage.move_queue_log(everything=True)
        assert _queued_bytes(db) == {1: before[1] + 12, 2: before[2] + 1}
        forged = new[1].guid[:24] + ("0" if new[1].guid[24] != "0" else "1") \
            + new[1].guid[25:]
        assert await storage.acknowledge(BOB, 1, [forged], sizes={forged: 999}) == 0
        assert await storage.acknowledge(BOB, 1, [new[2].guid], sizes=sizes) == 0
        assert _queued_bytes(db) == {1: before[1] + 12, 2: before[2] + 1}
        old = (await storage.fetch(BOB, 1, 0, 1))[0]  # a UUIDv4 id: sizes do not apply
        assert await storage.acknowledge(BOB, 1, [new[1].guid, new[1].guid, old.guid],
                                         sizes={**sizes, old.guid: 999}) == 2
        assert await storage.acknowledge(BOB, 1, [new[1].guid], sizes=sizes) == 0
        assert _queued_bytes(db) == {1: before[1] - len(old.content), 2: before[2] + 1}
        assert await storage.acknowledge(BOB, 2, [new[2].guid], sizes=sizes) == 1
        assert _queued_bytes(db) == {1: before[1] - len(old.content), 2: before[2]}
    finally:
        storage.close()


def test_0008_downgrades_with_its_messages(database_url: str) -> None:
    db = Database(database_url)
    try:
        before = _queue_at_0007(db)
        db.migrate()
        run_alembic(db, "downgrade", "0007")
        assert _messages(db) == before
        with db.writer.begin() as conn:  # the old layout: a global id, unique guids
            conn.execute(sa.text(
                "INSERT INTO messages (guid, account_id, device_id, seq, type, content, "
                "client_timestamp, server_timestamp, expires_at) "
                "VALUES ('x', :a, 1, 9, 2, :c, 0, 0, 0)"), {"a": BOB, "c": b""})
            ids = [r[0] for r in conn.execute(sa.text("SELECT id FROM messages "
                                                      "ORDER BY id"))]
        assert len(set(ids)) == len(before) + 1
        with pytest.raises(sa.exc.IntegrityError), db.writer.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO messages (guid, account_id, device_id, seq, type, content, "
                "client_timestamp, server_timestamp, expires_at) "
                "VALUES ('x', :a, 1, 10, 2, :c, 0, 0, 0)"), {"a": BOB, "c": b""})
        db.migrate()  # and up again
        assert len(_messages(db)) == len(before) + 1
    finally:
        db.dispose()


def test_expiry_without_an_index(database_url: str) -> None:
    """Devices whose oldest message has expired lose every expired message (also ones
    behind an unexpired one); the others keep theirs until their oldest expires."""
    db = Database(database_url)
    db.migrate()
    storage = Storage(db)

    async def run() -> None:
        for account in (ALICE, BOB):
            await storage.create_account(account, None, b"\x05" + bytes(32),
                                         NewDevice(7, account[-1].encode() * 32, None,
                                                   KeyUpload()), 0)

        async def send(to: str, content: bytes, now: int, ttl: int) -> None:
            await storage.enqueue(to, [OutgoingMessage(1, 7, 2, content)], sender=None,
                                  exclude_device=None, client_timestamp=0, now=now,
                                  ttl=ttl, byte_budget=1 << 20)

        await send(BOB, b"old", 0, 10)  # expires at 10 s
        await send(BOB, b"short", 1000, 1)  # a lowered ttl: expires at 2 s
        await send(BOB, b"young", 1000, 100)
        await send(ALICE, b"long", 0, 100)
        await send(ALICE, b"short", 1000, 1)  # behind an unexpired one: kept for now
        # Out of SQLite's queue log, where each message expires at its own time
        # (tests/server/test_queue_log.py): this is the per-device queues' expiry.
        await storage.move_queue_log(everything=True)
        assert await storage.expire(5_000) == 0
        assert await storage.expire(20_000) == 2
        assert [e.content for e in await storage.fetch(BOB, 1, 0, 10)] == [b"young"]
        assert [e.content for e in await storage.fetch(ALICE, 1, 0, 10)] == [b"long",
                                                                             b"short"]
        assert await storage.expire(200_000) == 3
        with db.reader.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*), sum(queued_bytes) FROM devices")
                                ).one() == (2, 0)

    try:
        asyncio.run(run())
    finally:
        storage.close()
        db.dispose()


def test_envelope_ids_carry_their_seq_and_74_random_bits() -> None:
    ids = [envelope_id(seq) for seq in (1, 2, 255, MAX_SEQ)]
    for seq, text in zip((1, 2, 255, MAX_SEQ), ids, strict=True):
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 8
        assert parsed.variant == uuid.RFC_4122
        assert seq_of(text) == seq
        assert seq_unchecked(text) == seq
    assert seq_unchecked("x" * 36) == seq_unchecked(ids[0][:-1]) == -1
    many = [envelope_id(7) for _ in range(2000)]
    assert len(set(many)) == 2000
    # Every random digit varies (19 positions after the seq, the version and the dashes)
    # and the variant takes all four values: 18 digits and 2 bits, 74 bits in all.
    positions = [i for i in range(15, 36) if i not in (18, 19, 23)]
    assert len(positions) == 18
    for i in positions:
        assert len({text[i] for text in many}) >= 12, i
    assert {text[19] for text in many} == set("89ab")
    # Past 48 bits (never in practice) an id is a UUIDv4, found like the old ones.
    beyond = envelope_id(MAX_SEQ + 1)
    assert uuid.UUID(beyond).version == 4 and seq_of(beyond) is None
    for text in (str(uuid.uuid4()), ids[0].upper(), ids[0][:-1], ids[0] + "0",
                 ids[0].replace("-", "_"), " " + ids[0][1:], "", "x" * 36):
        assert seq_of(text) is None
