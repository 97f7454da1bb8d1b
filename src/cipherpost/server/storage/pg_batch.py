"""A PostgreSQL group commit in a handful of statements, whatever its size.

Row by row (:func:`.sql._enqueue`, :func:`.sql._acknowledge`) a send costs three
statements and an acknowledgement two: on a database server each is a round trip, and
psycopg's own Python work per statement cost the relay more CPU per message than all
the rest of the relay. Here a batch of sends and acknowledgements runs as four
statements in all, with the same checks and the same results per operation:

1. one ``DELETE ... USING unnest(...) RETURNING`` for every acknowledgement, each row found
   by its primary key (the ``seq`` its id carries, :mod:`.envelope_ids`; ids of rows older
   than migration 0008 take a second statement), message rows before device rows, the
   lock order ``expire`` and ``remove_device`` keep too;
2. one ``SELECT ... ORDER BY account_id, device_id FOR UPDATE`` locking, in the global
   order, the device rows of every account the batch touches (so no two relay processes'
   batches wait for each other in a cycle); sends are then checked in batch order against
   these rows as the batch changes them (budgets, sequence numbers), so two sends to one
   device in a batch get consecutive numbers and a refusal writes nothing;
3. one ``INSERT ... SELECT FROM unnest(...)`` for every queued message;
4. one ``UPDATE ... FROM unnest(...)`` of the devices' byte counts and last numbers.

Acknowledgements go first: a message queued in a batch cannot be acknowledged in the
same batch (its device has not seen it yet), and the bytes they free count for the sends.
An error other than a refusal propagates; the group commit then rolls back and runs the
batch again operation by operation (``group._apply_one_by_one``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .envelope_ids import seq_of
from .models import (
    DeviceMismatch,
    Envelope,
    OutgoingMessage,
    QueueFull,
    Refusal,
    StaleDevices,
    UnknownAccount,
)

Results = list[tuple[bool, Any]]


class Enqueue(NamedTuple):
    """A send: the arguments of :meth:`.sql.Storage.enqueue`."""

    account_id: str
    outgoing: Sequence[OutgoingMessage]
    sender: tuple[str, int] | None
    exclude_device: int | None
    client_timestamp: int
    now: int
    ttl: int
    byte_budget: int


class Acknowledge(NamedTuple):
    """An acknowledgement: the arguments of :meth:`.sql.Storage.acknowledge`."""

    account_id: str
    device_id: int
    guids: list[str]


Plan = Enqueue | Acknowledge

_DELETE_ACKED = (
    "DELETE FROM messages AS m USING unnest(%s::text[], %s::int[], %s::bigint[], %s::text[]) "
    "AS v(account_id, device_id, seq, guid) WHERE m.account_id = v.account_id "
    "AND m.device_id = v.device_id AND m.seq = v.seq AND m.guid = v.guid "
    "RETURNING m.account_id, m.device_id, m.guid, length(m.content)")
#: Ids that carry no ``seq`` (rows queued before migration 0008): a scan of the queue.
_DELETE_ACKED_OLDER = (
    "DELETE FROM messages AS m USING unnest(%s::text[], %s::int[], %s::text[]) "
    "AS v(account_id, device_id, guid) WHERE m.account_id = v.account_id "
    "AND m.device_id = v.device_id AND m.guid = v.guid "
    "RETURNING m.account_id, m.device_id, m.guid, length(m.content)")
_LOCK_DEVICES = (
    "SELECT account_id, device_id, registration_id, queued_bytes, last_seq FROM devices "
    "WHERE account_id = ANY(%s::text[]) ORDER BY account_id, device_id FOR UPDATE")
_HAS_KEYS = ("SELECT device_id FROM signed_prekeys WHERE account_id = %s "
             "AND device_id = ANY(%s::int[])")
_INSERT = (
    "INSERT INTO messages (guid, account_id, device_id, seq, sender_account_id, "
    "sender_device_id, type, content, client_timestamp, server_timestamp, expires_at) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::int[], %s::bigint[], %s::text[], "
    "%s::int[], %s::int[], %s::bytea[], %s::bigint[], %s::bigint[], %s::bigint[])")
_UPDATE_DEVICES = (
    "UPDATE devices AS d SET queued_bytes = v.queued_bytes, last_seq = v.last_seq "
    "FROM unnest(%s::text[], %s::int[], %s::bigint[], %s::bigint[]) "
    "AS v(account_id, device_id, queued_bytes, last_seq) "
    "WHERE d.account_id = v.account_id AND d.device_id = v.device_id")


class _Device:
    """A locked device row as the batch changes it."""

    __slots__ = ("changed", "last_seq", "queued_bytes", "registration_id")

    def __init__(self, registration_id: int, queued_bytes: int, last_seq: int) -> None:
        self.registration_id = registration_id
        self.queued_bytes = queued_bytes
        self.last_seq = last_seq
        self.changed = False


def apply(cursor: Any, plans: Sequence[Plan], envelope_id: Callable[[int], str]) -> Results:
    """Run ``plans`` (in batch order) in the open transaction of psycopg ``cursor``;
    ``(True, result)`` or ``(False, refusal)`` per plan, as the row-by-row operations.
    ``envelope_id(seq)`` makes the id of a message queued as number ``seq``."""
    results: Results = [(True, 0)] * len(plans)
    freed = _acknowledge(cursor, plans, results)
    accounts = sorted({p.account_id for p in plans if isinstance(p, Enqueue)}
                      | {a for a, _ in freed})
    locked: dict[str, dict[int, _Device]] = {}
    if accounts:
        for a, d, registration_id, queued_bytes, last_seq in cursor.execute(
                _LOCK_DEVICES, (accounts,)).fetchall():
            locked.setdefault(a, {})[d] = _Device(registration_id, queued_bytes, last_seq)
    for (a, d), size in freed.items():
        device = locked.get(a, {}).get(d)
        if device is not None:  # else removed with its messages meanwhile
            device.queued_bytes -= size
            device.changed = True
    rows: list[tuple[Any, ...]] = []
    for i, plan in enumerate(plans):
        if isinstance(plan, Enqueue):
            try:
                results[i] = (True, _enqueue(cursor, plan, locked.get(plan.account_id, {}),
                                             rows, envelope_id))
            except Refusal as exc:
                results[i] = (False, exc)
    if rows:
        cursor.execute(_INSERT, [list(column) for column in zip(*rows, strict=True)])
    changed = [(a, d, device.queued_bytes, device.last_seq)
               for a, devices in locked.items() for d, device in devices.items()
               if device.changed]
    if changed:
        cursor.execute(_UPDATE_DEVICES, [list(column) for column in zip(*changed, strict=True)])
    return results


def _acknowledge(cursor: Any, plans: Sequence[Plan],
                 results: Results) -> dict[tuple[str, int], int]:
    """Delete every acknowledged message; set each acknowledgement's count (the first
    to name a message counts it; a plan without ids keeps its 0); return the bytes freed
    per device."""
    keyed: list[tuple[str, int, int, str]] = []
    older: list[tuple[str, int, str]] = []
    for p in plans:
        if isinstance(p, Acknowledge):
            for g in p.guids:
                seq = seq_of(g)
                if seq is None:
                    older.append((p.account_id, p.device_id, g))
                else:
                    keyed.append((p.account_id, p.device_id, seq, g))
    deleted: dict[tuple[str, int, str], int] = {}
    for sql, wanted in ((_DELETE_ACKED, keyed), (_DELETE_ACKED_OLDER, older)):
        if wanted:
            deleted.update(((a, d, g), size) for a, d, g, size in cursor.execute(
                sql, [list(column) for column in zip(*wanted, strict=True)]).fetchall())
    freed: dict[tuple[str, int], int] = {}
    for (a, d, _), size in deleted.items():
        freed[(a, d)] = freed.get((a, d), 0) + size
    for i, plan in enumerate(plans):
        if isinstance(plan, Acknowledge):
            found = [g for g in plan.guids
                     if deleted.pop((plan.account_id, plan.device_id, g), None) is not None]
            results[i] = (True, len(found))
    return freed


def _enqueue(cursor: Any, plan: Enqueue, devices: dict[int, _Device],
             rows: list[tuple[Any, ...]], envelope_id: Callable[[int], str]
             ) -> list[tuple[int, Envelope]]:
    """:func:`.sql._enqueue` on the locked rows: its checks, in its order, then the rows
    to insert (appended to ``rows``) and the devices changed."""
    if not devices:
        raise UnknownAccount(plan.account_id)
    current = {d: device for d, device in devices.items() if d != plan.exclude_device}
    given = {m.device_id: m for m in plan.outgoing}
    if given.keys() != current.keys():
        extra = sorted(set(given) - set(current))
        absent = sorted(set(current) - set(given))
        # A device without keys (after an identity reset, until it uploads new ones)
        # cannot be encrypted to, so a sender may leave it out.
        missing = sorted(r[0] for r in cursor.execute(
            _HAS_KEYS, (plan.account_id, absent)).fetchall()) if absent else []
        if missing or extra:
            raise DeviceMismatch(missing, extra)
    stale = sorted(d for d, m in given.items() if current[d].registration_id
                   != m.registration_id)
    if stale:
        raise StaleDevices(stale)
    full = sorted(d for d, m in given.items()
                  if current[d].queued_bytes + len(m.content) > plan.byte_budget)
    if full:
        raise QueueFull(full)
    sender_account, sender_device = plan.sender if plan.sender else (None, None)
    expires_at = plan.now + plan.ttl * 1000
    queued = []
    for m in plan.outgoing:
        device = current[m.device_id]
        device.last_seq += 1
        guid = envelope_id(device.last_seq)
        device.queued_bytes += len(m.content)
        device.changed = True
        rows.append((guid, plan.account_id, m.device_id, device.last_seq, sender_account,
                     sender_device, m.type, m.content, plan.client_timestamp, plan.now,
                     expires_at))
        queued.append((m.device_id, Envelope(device.last_seq, guid, sender_account,
                                             sender_device, m.type, m.content,
                                             plan.client_timestamp, plan.now)))
    return queued
