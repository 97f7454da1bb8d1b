"""Writes web/test/fixtures/history-events-python.json: the history entries the Python
SDK's recorder (cipherpost.client.history.Recorder) queues for a group state, an edit, a
reaction, the same reactor's next reaction (which replaces the first in the log) and a
deletion, for web/test/app_history_kinds.test.ts.

Regenerate (from the repository root) with:

    .venv/bin/python web/test/history_events_fixture.py

The recorder runs unchanged on a real store (in a temporary directory) holding the
history keys; each step's queued entries are read and cleared before the next. The event
ids, the HistoryEvent bodies and the sealing are the SDK's own. Nonces are random, so
each run writes another file (the same event ids and plaintexts).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from cipherpost.client import history
from cipherpost.client.groups import ADMIN, MEMBER, Group, encode_state
from cipherpost.client.proto.app_pb2 import DataMessage, GroupContext, MessageRef, Reaction
from cipherpost.client.store.crypto import TEST_PARAMS
from cipherpost.client.store.database import Store

ALICE = "0f8e2c5a-7d1b-4c3e-9a6f-2b4d8e1c7a90"
BOB = "5c1d9e7b-3a2f-4e8d-b6c0-9f1a2e3d4c5b"
NOW = 1_780_000_009_000
OUT = Path(__file__).with_name("fixtures") / "history-events-python.json"
ORIGINAL = 1_780_000_001_000  # the message the edit, the reactions and the deletion name


def main() -> None:
    keys = history.Keys(bytes(range(32)), {
        7: (bytes(range(32, 64)), 1_700_000_000_000),
        0xC0FFEE: (bytes(range(64, 96)), 1_750_000_000_000)})
    with tempfile.TemporaryDirectory() as directory:
        store = Store.create(Path(directory) / "store.db", passphrase="fixture",  # noqa: S106
                             params=TEST_PARAMS)
        history.set_keys(store, keys, on=True)
        recorder = history.Recorder(store, lambda: NOW)
        group = Group.from_bytes(encode_state(bytes(range(100, 132)), 3, "Weekend plans",
                                              {ALICE: ADMIN, BOB: MEMBER}, expire_timer=3600))
        context = GroupContext(id=group.id, revision=group.revision)
        edit = DataMessage(timestamp=1_780_000_002_000, text="we meet at ten, not nine",
                           edit=MessageRef(author=ALICE, timestamp=ORIGINAL), group=context)
        reaction = DataMessage(timestamp=1_780_000_003_000, group=context, reaction=Reaction(
            emoji="\N{THUMBS UP SIGN}", target=MessageRef(author=ALICE, timestamp=ORIGINAL)))
        again = DataMessage(timestamp=1_780_000_004_000, group=context, reaction=Reaction(
            emoji="\N{PARTY POPPER}", target=MessageRef(author=ALICE, timestamp=ORIGINAL)))
        entries = []

        def step(kinds: tuple[str, ...], record: object) -> None:
            with store.transaction():
                record()  # type: ignore[operator]
            queued = store.history_pending(100)
            for kind, (name, blob) in zip(kinds, queued, strict=True):
                entries.append({
                    "kind": kind, "event_id": name.hex(),
                    "blob": None if blob is None else blob.hex(),
                    "plaintext": None if blob is None
                    else history.open_blob(keys, name, blob).SerializeToString().hex()})
            store.history_done(name for name, _ in queued)

        step(("group",), lambda: recorder.group(group))
        step(("edit",), lambda: recorder.change(group.conversation, ALICE, 2, edit))
        step(("reaction",), lambda: recorder.change(group.conversation, BOB, 1, reaction))
        step(("reaction_again", "reaction_replaced"),
             lambda: recorder.change(group.conversation, BOB, 1, again))
        own = history.event_id(keys, history.KIND_MESSAGE, group.conversation, ALICE, ORIGINAL)
        with store.transaction():
            recorder.deleted(group.conversation, ALICE, ORIGINAL)
        deleted = store.history_pending(100)
        assert all(blob is None for _, blob in deleted)
        entries.append({"kind": "deleted", "event_id": own.hex(), "blob": None, "plaintext": None})
        changes = sorted(name.hex() for name, _ in deleted if name != own)
        store.close()
    OUT.write_text(json.dumps({
        "id_key": keys.id_key.hex(),
        "epochs": [[n, k.hex(), t] for n, (k, t) in sorted(keys.epochs.items())],
        "alice": ALICE, "bob": BOB, "now": NOW, "conversation": group.conversation,
        "group_state": group.state_bytes.hex(), "edit": edit.SerializeToString().hex(),
        "reaction": reaction.SerializeToString().hex(),
        "reaction_again": again.SerializeToString().hex(), "deleted_timestamp": ORIGINAL,
        "deleted_changes": changes, "entries": entries}, indent=1) + "\n")


if __name__ == "__main__":
    main()
