"""Server-stored encrypted history (docs/spec/history.md).

Every change of a conversation a device stores (a message sent or received, an edit, a
reaction, a group state) is also sealed under the account's current history epoch key and
queued for upload in the same store transaction; deletions (for everyone, or a
disappearing timer running out) queue the removal of the entry. The queue is flushed to
the relay after each batch of work, so a crash delays uploads but loses none. A new device
(linked, or restored from the recovery key) downloads the log and replays it into its
store. The relay sees padded opaque blobs, their day and their count.

Sans-I/O except :func:`flush` and :func:`download`, which talk to the relay.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from google.protobuf.message import DecodeError

from . import content as codec
from .api import RelayApi, RelayError
from .errors import ClientError
from .groups import Group, GroupChangeRejected
from .padding import PaddingError, pad, unpad
from .proto.app_pb2 import (
    DataMessage,
    HistoryEvent,
    HistoryKeys,
    HistoryMessage,
    MessageRef,
    Reaction,
)
from .store.database import Store

log = logging.getLogger("cipherpost.client.history")

BLOB_VERSION = 1
#: A new epoch at least this often (and whenever a device is removed).
EPOCH_MS = 30 * 24 * 3600 * 1000
KIND_MESSAGE, KIND_CHANGE, KIND_GROUP = "message", "change", "group"
_SECRET = "history_keys"  # noqa: S105 - the name of a store secret, not a secret
_ENABLED = "history_enabled"


class HistoryError(ClientError):
    """A history entry that does not open (another account's, damaged, or a key we lack),
    history keys that are malformed, or a relay's history page that is not one."""


@dataclass(frozen=True)
class Keys:
    """The account's history keys: the naming key and every epoch's key."""

    id_key: bytes
    epochs: dict[int, tuple[bytes, int]]  # number -> (key, started_at ms)

    def __repr__(self) -> str:
        return f"history.Keys(epochs={sorted(self.epochs)})"

    @classmethod
    def new(cls, now_ms: int) -> Keys:
        return cls(os.urandom(32), {_epoch_number(set()): (os.urandom(32), now_ms)})

    @property
    def current(self) -> int:
        """The newest epoch (epoch numbers are random, so that two devices starting one
        at the same time do not collide)."""
        return max(self.epochs, key=lambda n: (self.epochs[n][1], n))

    @property
    def current_started_at(self) -> int:
        return self.epochs[self.current][1]

    def rotated(self, now_ms: int) -> Keys:
        """With a new epoch (after a device was removed, or every 30 days)."""
        return Keys(self.id_key, {**self.epochs,
                                  _epoch_number(set(self.epochs)): (os.urandom(32), now_ms)})

    def to_proto(self) -> HistoryKeys:
        return HistoryKeys(id_key=self.id_key, epochs=[
            HistoryKeys.Epoch(number=n, key=k, started_at=t)
            for n, (k, t) in sorted(self.epochs.items())])

    @classmethod
    def from_proto(cls, message: HistoryKeys) -> Keys:
        """Raises: HistoryError when the keys are malformed."""
        epochs = {e.number: (bytes(e.key), int(e.started_at)) for e in message.epochs}
        if len(message.id_key) != 32 or not epochs or len(epochs) != len(message.epochs) \
                or any(len(k) != 32 or n < 1 for n, (k, _t) in epochs.items()):
            raise HistoryError("malformed history keys")
        return cls(bytes(message.id_key), epochs)

    def merged(self, other: Keys) -> Keys:
        """Ours plus the epochs ``other`` knows (one naming key per account)."""
        if not hmac.compare_digest(self.id_key, other.id_key):
            raise HistoryError("history keys of another account")
        return Keys(self.id_key, {**self.epochs, **other.epochs})


def _epoch_number(taken: set[int]) -> int:
    while True:
        number = 1 + secrets.randbelow(2**32 - 1)
        if number not in taken:
            return number


def event_id(keys: Keys, kind: str, conversation: str, author: str, timestamp: int) -> bytes:
    name = b"\x00".join([kind.encode(), conversation.encode(), author.encode(),
                         str(timestamp).encode()])
    return hmac.new(keys.id_key, name, hashlib.sha256).digest()[:16]


def _enc_key(epoch_key: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=b"", info=b"Cipherpost history v1 enc").derive(
        epoch_key)


def seal(keys: Keys, name: bytes, event: HistoryEvent) -> bytes:
    epoch = struct.pack(">I", keys.current)
    nonce = os.urandom(12)
    body = AESGCM(_enc_key(keys.epochs[keys.current][0])).encrypt(
        nonce, pad(event.SerializeToString()), name + epoch)
    return bytes([BLOB_VERSION]) + epoch + nonce + body


def open_blob(keys: Keys, name: bytes, blob: bytes) -> HistoryEvent:
    """Raises: HistoryError."""
    if len(blob) < 1 + 4 + 12 + 16 or blob[0] != BLOB_VERSION:
        raise HistoryError("not a history entry of this version")
    (number,) = struct.unpack(">I", blob[1:5])
    if number not in keys.epochs:
        raise HistoryError(f"no key for history epoch {number}")
    try:
        plaintext = AESGCM(_enc_key(keys.epochs[number][0])).decrypt(
            blob[5:17], blob[17:], name + blob[1:5])
        event = HistoryEvent.FromString(unpad(plaintext))
        codec.check_integers(event)
    except (InvalidTag, PaddingError, DecodeError, codec.InvalidContent):
        raise HistoryError("the entry does not open") from None
    return event


# -- the account's settings and keys, in the store -------------------------------------


def enabled(store: Store) -> bool:
    return store.get_meta(_ENABLED) == "1"


def keys(store: Store) -> Keys | None:
    data = store.get_secret(_SECRET)
    return None if data is None else Keys.from_proto(HistoryKeys.FromString(data))


def set_keys(store: Store, value: Keys | None, *, on: bool) -> None:
    """Whether this account keeps its history on the relay, and its keys (merged with
    those held already). Turning it off drops the entries waiting for upload."""
    with store.transaction():
        store.set_meta(_ENABLED, "1" if on else "0")
        if value is not None:
            held = keys(store)
            merged = value if held is None else held.merged(value)
            store.set_secret(_SECRET, merged.to_proto().SerializeToString())
        if not on:
            store.history_clear_pending()


def stored_events(store: Store) -> Iterator[HistoryEvent]:
    """Every stored message as the events that make it again on another device, oldest
    first: the message under its own timestamp, then its edit and its reactions as
    changes. An edited message's stored body is the edit (named by the edit's own
    timestamp): the message carries its current text, and the edit follows so that the
    other device knows it was edited. A reaction is named by the message it is on (its
    own timestamp is not kept)."""
    for m in store.all_messages():
        data = DataMessage.FromString(m.body)
        edit = None
        if data.HasField("edit"):
            edit, data = data, DataMessage()
            data.CopyFrom(edit)
            data.ClearField("edit")
            data.timestamp = m.timestamp
        yield HistoryEvent(message=HistoryMessage(
            conversation=m.conversation, author=m.author, author_device=m.author_device,
            received_at=m.received_at, outgoing=m.outgoing, data=data))
        if edit is not None:
            yield HistoryEvent(change=HistoryMessage(
                conversation=m.conversation, author=m.author, author_device=m.author_device,
                received_at=m.received_at, outgoing=m.outgoing, data=edit))
        for reactor, emoji in sorted(store.reactions(m.author, m.timestamp).items()):
            yield HistoryEvent(change=HistoryMessage(
                conversation=m.conversation, author=reactor, received_at=m.received_at,
                data=DataMessage(timestamp=m.timestamp, reaction=Reaction(
                    emoji=emoji, target=MessageRef(author=m.author, timestamp=m.timestamp)))))


def message_timestamp(m: HistoryMessage) -> int:
    """The timestamp that names a message event's message. Files and archives written
    before stored_events carried an edited message as its edit (the edit's timestamp, and
    the message it replaces in ``edit``)."""
    if m.data.HasField("edit") and m.data.edit.author == m.author:
        return m.data.edit.timestamp
    return m.data.timestamp


def backfill(store: Store, recorder: Recorder) -> int:
    """Queue every stored message, with its edit and reactions (after history was turned
    on); the number of messages queued."""
    count = 0
    with store.transaction():
        for event in stored_events(store):
            if event.WhichOneof("body") == "change":
                c = event.change
                recorder.change(c.conversation, c.author, c.author_device, c.data)
                continue
            m = event.message
            recorder.message(m.conversation, m.author, m.author_device, m.received_at,
                             m.outgoing, m.data)
            count += 1
        for group_id in store.group_ids():
            state = store.get_group(group_id)
            if state is not None:
                recorder.group(Group.from_bytes(state))
    return count


# -- recording (inside the caller's store transaction) ----------------------------------


class Recorder:
    """Queues sealed history entries for what a device stores, when history is on."""

    def __init__(self, store: Store, clock: Callable[[], int]) -> None:
        self.store = store
        self.clock = clock

    def _keys(self) -> Keys | None:
        return keys(self.store) if enabled(self.store) else None

    def message(self, conversation: str, author: str, author_device: int, received_at: int,
                outgoing: bool, data: DataMessage) -> None:
        found = self._keys()
        if found is None:
            return
        name = event_id(found, KIND_MESSAGE, conversation, author, data.timestamp)
        event = HistoryEvent(message=HistoryMessage(
            conversation=conversation, author=author, author_device=author_device,
            received_at=received_at, outgoing=outgoing, data=data))
        self.store.history_enqueue(name, seal(found, name, event), self.clock())
        self.store.name_history_event(name, author, data.timestamp)

    def change(self, conversation: str, author: str, author_device: int,
               data: DataMessage) -> None:
        """An edit or a reaction (by ``author``, named by its own timestamp)."""
        found = self._keys()
        if found is None:
            return
        name = event_id(found, KIND_CHANGE, conversation, author, data.timestamp)
        event = HistoryEvent(change=HistoryMessage(
            conversation=conversation, author=author, author_device=author_device,
            received_at=self.clock(), data=data))
        self.store.history_enqueue(name, seal(found, name, event), self.clock())
        if data.HasField("reaction"):  # it replaces the reactor's earlier ones to the message
            target = data.reaction.target
            for earlier in self.store.take_reaction_names(target.author, target.timestamp,
                                                          author, name):
                self.store.history_enqueue(earlier, None, self.clock())
        _name_change(self.store, name, author, data)

    def group(self, group: Group) -> None:
        found = self._keys()
        if found is None:
            return
        name = event_id(found, KIND_GROUP, group.conversation, "", group.revision)
        self.store.history_enqueue(name, seal(found, name, HistoryEvent(
            group_state=group.state_bytes)), self.clock())

    def deleted(self, conversation: str, author: str, timestamp: int) -> None:
        """A message deleted for everyone or expired: its entry goes too, and so do the
        entries of its edits and reactions (an edit holds the new text)."""
        found = self._keys()
        if found is None:
            return
        names = {event_id(found, KIND_MESSAGE, conversation, author, timestamp),
                 *self.store.history_names_of(author, timestamp)}
        for name in sorted(names):
            self.store.history_enqueue(name, None, self.clock())


def _name_change(store: Store, name: bytes, author: str, data: DataMessage) -> None:
    """Name an edit's or a reaction's entry after the message it changes, so that it is
    deleted with that message (:meth:`Recorder.deleted`); a reaction's names its reactor
    too, so that the reactor's next reaction replaces it (:meth:`Recorder.change`)."""
    if data.HasField("edit"):
        store.name_history_event(name, author, data.edit.timestamp)
    elif data.HasField("reaction"):
        store.name_history_event(name, data.reaction.target.author,
                                 data.reaction.target.timestamp, author)


# -- talking to the relay -----------------------------------------------------------------


async def flush(api: RelayApi, store: Store, batch: int = 100) -> int:
    """Upload (or delete) the queued entries; the number done. Entries the relay refuses
    for good (too large, its budget full) are dropped with a warning; a network error
    leaves the rest queued for the next time."""
    done = 0
    while True:
        pending = store.history_pending(batch)
        if not pending:
            return done
        finished: list[bytes] = []
        try:
            for name, blob in pending:
                try:
                    if blob is None:
                        await api.request("DELETE", f"/v1/history/{name.hex()}")
                    else:
                        await api.request("PUT", f"/v1/history/{name.hex()}", content=blob)
                except RelayError as exc:
                    if exc.status in (429, 500, 502, 503, 504):
                        raise
                    log.warning("the relay refused a history entry: %s", exc.code)
                finished.append(name)
        finally:
            if finished:
                with store.relaxed_transaction():
                    store.history_done(finished)
                done += len(finished)


@dataclass(frozen=True)
class Replayed:
    """What a download did: messages newly stored, ones this device held already, edits
    and reactions, group states, deletions, and entries that did not open."""

    messages: int
    known: int
    changes: int
    groups: int
    deleted: int
    unreadable: int


async def download(api: RelayApi, store: Store, *,
                   progress: Callable[[int], None] | None = None) -> Replayed:
    """Page through the relay's history log from where this device stopped and replay it
    into the store (messages deduplicated by name, edits and reactions applied to messages
    we hold, newer group states taken, deleted entries removed). Resumable: the position
    is committed with each page."""
    found = keys(store)
    if found is None:
        raise HistoryError("this device holds no history keys")
    counts = {"messages": 0, "known": 0, "changes": 0, "groups": 0, "deleted": 0,
              "unreadable": 0}
    after = int(store.get_meta("history_cursor") or 0)
    seen = 0
    while True:
        entries, more = parse_page(
            await api.request("GET", f"/v1/history?after={after}&limit=200"))
        with store.transaction():
            for seq, name, blob in entries:
                if blob is None:
                    counts["deleted"] += _forget(store, found, name)
                else:
                    try:
                        event = open_blob(found, name, blob)
                    except HistoryError:
                        counts["unreadable"] += 1
                        continue
                    counts[_apply(store, name, event)] += 1
                after = seq
            store.set_meta("history_cursor", str(after))
        seen += len(entries)
        if progress is not None:
            progress(seen)
        if not more:
            return Replayed(**counts)


def parse_page(page: Any) -> tuple[list[tuple[int, bytes, bytes | None]], bool]:
    """A page of the relay's history log (``GET /v1/history``): its entries as (seq,
    event id, sealed blob or None for a deleted entry), and whether more follow.

    Raises:
        HistoryError: the answer is not such a page (a broken or hostile relay).
    """
    try:
        raw, more = page["entries"], page["more"]
        entries = []
        for entry in raw:
            seq, name, blob = entry["seq"], entry["event_id"], entry["blob"]
            if type(seq) is not int or seq < 0 or not isinstance(name, str) \
                    or len(name) != 32 or not (blob is None or isinstance(blob, str)):
                raise ValueError("a malformed entry")
            entries.append((seq, bytes.fromhex(name),
                            None if blob is None else base64.b64decode(blob, validate=True)))
    except (KeyError, TypeError, ValueError):
        raise HistoryError("the relay sent a malformed history page") from None
    if not isinstance(raw, list) or not isinstance(more, bool):
        raise HistoryError("the relay sent a malformed history page")
    return entries, more


def replay_event(store: Store, event: HistoryEvent) -> str:
    """Apply one event from elsewhere than the log (an export file): what it was."""
    found = keys(store)
    name = b""
    kind = event.WhichOneof("body")
    if found is not None and kind == "message":
        m = event.message
        name = event_id(found, KIND_MESSAGE, m.conversation, m.author, message_timestamp(m))
    return _apply(store, name, event)


def _forget(store: Store, found: Keys, name: bytes) -> int:
    """A deleted entry: the message it names goes when it is that message's own entry.
    An edit's or a reaction's entry also names the message, and a reaction's is deleted
    when its reactor reacts anew: the message stays then (the newer reaction replaces it
    here when its own entry is replayed, or arrives)."""
    named = store.history_named(name)
    if named is None:
        return 0
    author, timestamp = named
    conversation = store.message_conversation(author, timestamp)
    if conversation is None or name != event_id(found, KIND_MESSAGE, conversation, author,
                                                timestamp):
        return 0
    return int(store.delete_message(author, timestamp))


def _apply(store: Store, name: bytes, event: HistoryEvent) -> str:
    kind = event.WhichOneof("body")
    if kind == "message":
        m = event.message
        timestamp = message_timestamp(m)
        timer = m.data.expire_timer
        expires = timestamp + timer * 1000 if m.outgoing and timer else None
        stored = store.add_message(conversation=m.conversation, author=m.author,
                                   author_device=m.author_device, timestamp=timestamp,
                                   received_at=m.received_at, outgoing=m.outgoing,
                                   body=m.data.SerializeToString(), expire_timer=timer,
                                   expires_at=expires)
        if name:
            store.name_history_event(name, m.author, timestamp)
        return "messages" if stored else "known"
    if kind == "change":
        c = event.change
        data = c.data
        if data.HasField("edit") and data.edit.author == c.author and \
                store.message_conversation(c.author, data.edit.timestamp) == c.conversation:
            store.replace_body(c.author, data.edit.timestamp, data.SerializeToString())
        elif data.HasField("reaction") and store.message_conversation(
                data.reaction.target.author, data.reaction.target.timestamp) == c.conversation:
            r = data.reaction
            store.set_reaction(r.target.author, r.target.timestamp, c.author,
                               None if r.remove else r.emoji)
        if name:
            if data.HasField("reaction"):  # a reactor's newer reaction replaces the earlier
                target = data.reaction.target
                store.take_reaction_names(target.author, target.timestamp, c.author, name)
            _name_change(store, name, c.author, data)
        return "changes"
    if kind == "group_state":
        try:
            group = Group.from_bytes(event.group_state)
        except GroupChangeRejected:
            return "unreadable"
        current = store.get_group(group.id)
        if current is None or Group.from_bytes(current).revision < group.revision:
            store.save_group(group.id, group.state_bytes)
        return "groups"
    return "unreadable"
