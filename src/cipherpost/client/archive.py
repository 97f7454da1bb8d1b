"""The one-time history archive a new device gets when the account keeps no history on
the relay (docs/spec/history.md, "Archive").

The linking device collects its stored conversations as the same ``HistoryEvent`` entries
the server-stored history uses, splits them into parts, seals each under a fresh archive
key (AES-256-GCM, padded, bound to its number and the number of parts) and uploads them;
the key and the parts' ids travel inside the sealed provisioning message. The new device
keeps that reference in its store, takes the parts in order, replays each in one store
transaction that also records how far it got, and then deletes the part from the relay.
An interrupted download resumes at the first part not yet replayed; replaying a part
twice changes nothing (messages are deduplicated by author and timestamp, reactions are
set, not added).
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable, Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError

from . import content as codec
from . import history
from .api import RelayApi, RelayError
from .errors import ClientError
from .padding import PaddingError, pad, unpad
from .proto.app_pb2 import HistoryArchive, HistoryArchivePart, HistoryEvent
from .store.database import Store

VERSION = 1
#: Plaintext bytes per part, before padding (the relay takes parts up to 2 MiB).
PART_BYTES = 1024 * 1024
_AAD = b"Cipherpost archive v1"
_PENDING = "link_archive"  # a store secret: the HistoryArchive reference
_DONE = "link_archive_done"  # parts replayed so far


class ArchiveError(ClientError):
    """An archive part that does not open (damaged, reordered or from another archive),
    or one the relay no longer has."""


def _aad(index: int, count: int) -> bytes:
    return _AAD + struct.pack(">II", index, count)


def seal_part(key: bytes, index: int, count: int, part: HistoryArchivePart) -> bytes:
    nonce = struct.pack(">4xQ", index)
    return bytes([VERSION]) + AESGCM(key).encrypt(nonce, pad(part.SerializeToString()),
                                                  _aad(index, count))


def open_part(key: bytes, index: int, count: int, blob: bytes) -> HistoryArchivePart:
    """Raises: ArchiveError."""
    if len(blob) < 1 + 16 or blob[0] != VERSION:
        raise ArchiveError("not a history archive part of this version")
    try:
        plain = AESGCM(key).decrypt(struct.pack(">4xQ", index), blob[1:], _aad(index, count))
        part = HistoryArchivePart.FromString(unpad(plain))
        for event in part.events:
            codec.check_integers(event)
    except (InvalidTag, PaddingError, DecodeError, codec.InvalidContent):
        raise ArchiveError("a history archive part does not open") from None
    return part


async def upload(api: RelayApi, store: Store) -> HistoryArchive | None:
    """Seal and upload this device's conversations; None when there are none."""
    parts: list[HistoryArchivePart] = [HistoryArchivePart()]
    size = total = 0
    for event in history.stored_events(store):
        length = event.ByteSize()
        if size and size + length > PART_BYTES:
            parts.append(HistoryArchivePart())
            size = 0
        parts[-1].events.append(event)
        size += length + 4
        total += 1
    if total == 0:
        return None
    key = os.urandom(32)
    reference = HistoryArchive(key=key, events=total)
    for index, part in enumerate(parts):
        answer = await api.request("POST", "/v1/provisioning/archives",
                                   content=seal_part(key, index, len(parts), part))
        reference.parts.append(str(answer["id"]))
    return reference


# -- on the new device ----------------------------------------------------------------


def keep(store: Store, reference: HistoryArchive) -> None:
    """Remember an archive to take (before taking it, so that a crash resumes)."""
    with store.transaction():
        store.set_secret(_PENDING, reference.SerializeToString())
        store.set_meta(_DONE, "0")


def pending(store: Store) -> HistoryArchive | None:
    data = store.get_secret(_PENDING)
    return HistoryArchive.FromString(data) if data else None


async def receive(api: RelayApi, store: Store, *,
                  progress: Callable[[int, int], None] | None = None) -> int:
    """Take the archive this device was linked with, if any is left: download, replay and
    delete each part in turn; the number of messages newly stored. ``progress`` gets
    (events replayed, events in all).

    Raises:
        ArchiveError: a part does not open, or the relay no longer has one (it keeps parts
            for a day); the parts before it stay replayed.
        RelayError, RelayUnavailable: try again later: it resumes where it stopped.
    """
    reference = pending(store)
    if reference is None:
        return 0
    count = len(reference.parts)
    done = int(store.get_meta(_DONE) or 0)
    replayed = stored = 0
    for index in range(count):
        part_id = reference.parts[index]
        if index >= done:
            try:
                blob = await api.request("GET", f"/v1/provisioning/archives/{part_id}")
            except RelayError as exc:
                if exc.status == 404:
                    raise ArchiveError("the relay no longer has this device's history "
                                       "archive (it keeps it for a day)") from None
                raise
            part = open_part(bytes(reference.key), index, count, bytes(blob or b""))
            with store.transaction():
                stored += replay(store, part.events)
                store.set_meta(_DONE, str(index + 1))
            replayed += len(part.events)
            if progress is not None:
                progress(replayed, reference.events)
        # Taken (now or before a crash): the relay may forget it.
        with contextlib.suppress(RelayError):
            await api.request("DELETE", f"/v1/provisioning/archives/{part_id}")
    with store.transaction():
        store.set_secret(_PENDING, b"")
        store.set_meta(_DONE, "done")
    return stored


def replay(store: Store, events: Iterable[HistoryEvent]) -> int:
    """Replay a part's events (inside the caller's transaction) as an export file's are
    (history.replay_event): messages, edits and reactions; the new messages stored."""
    return sum(history.replay_event(store, event) == "messages" for event in events)
