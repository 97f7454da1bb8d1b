"""Writes web/test/fixtures/history-events-python.json: the history entries the Python
SDK's recorder (cipherpost.client.history.Recorder) queues for a group state, an edit, a
reaction and a deletion, for web/test/app_history_kinds.test.ts.

Regenerate (from the repository root) with:

    .venv/bin/python web/test/history_events_fixture.py

The recorder runs unchanged against a stand-in for the store that holds the history
setting and keys and keeps what is queued; the event ids, the HistoryEvent bodies and the
sealing are the SDK's own. Nonces are random, so each run writes another file (the same
event ids and plaintexts).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from cipherpost.client import history
from cipherpost.client.groups import ADMIN, MEMBER, Group, encode_state
from cipherpost.client.proto.app_pb2 import DataMessage, GroupContext, MessageRef, Reaction

ALICE = "0f8e2c5a-7d1b-4c3e-9a6f-2b4d8e1c7a90"
BOB = "5c1d9e7b-3a2f-4e8d-b6c0-9f1a2e3d4c5b"
NOW = 1_780_000_009_000
OUT = Path(__file__).with_name("fixtures") / "history-events-python.json"


class _Store:
    """The part of cipherpost.client.store.Store the recorder uses."""

    def __init__(self, keys: history.Keys) -> None:
        self._secret = keys.to_proto().SerializeToString()
        self.queued: list[tuple[bytes, bytes | None]] = []

    def get_meta(self, name: str) -> str | None:
        return "1" if name == "history_enabled" else None

    def get_secret(self, name: str) -> bytes | None:
        return self._secret if name == "history_keys" else None

    def history_enqueue(self, name: bytes, blob: bytes | None, now: int) -> None:
        self.queued.append((name, blob))


def main() -> None:
    keys = history.Keys(bytes(range(32)), {
        7: (bytes(range(32, 64)), 1_700_000_000_000),
        0xC0FFEE: (bytes(range(64, 96)), 1_750_000_000_000)})
    store = _Store(keys)
    recorder = history.Recorder(store, lambda: NOW)  # type: ignore[arg-type]
    group = Group.from_bytes(encode_state(bytes(range(100, 132)), 3, "Weekend plans",
                                          {ALICE: ADMIN, BOB: MEMBER}, expire_timer=3600))
    context = GroupContext(id=group.id, revision=group.revision)
    edit = DataMessage(timestamp=1_780_000_002_000, text="we meet at ten, not nine",
                       edit=MessageRef(author=ALICE, timestamp=1_780_000_001_000), group=context)
    reaction = DataMessage(timestamp=1_780_000_003_000, group=context, reaction=Reaction(
        emoji="\N{THUMBS UP SIGN}", target=MessageRef(author=ALICE, timestamp=1_780_000_001_000)))
    recorder.group(group)
    recorder.change(group.conversation, ALICE, 2, edit)
    recorder.change(group.conversation, BOB, 1, reaction)
    recorder.deleted(group.conversation, ALICE, 1_780_000_001_000)
    entries = []
    for kind, (name, blob) in zip(("group", "edit", "reaction", "deleted"), store.queued,
                                  strict=True):
        entries.append({
            "kind": kind, "event_id": name.hex(),
            "blob": None if blob is None else blob.hex(),
            "plaintext": None if blob is None
            else history.open_blob(keys, name, blob).SerializeToString().hex()})
    OUT.write_text(json.dumps({
        "id_key": keys.id_key.hex(),
        "epochs": [[n, k.hex(), t] for n, (k, t) in sorted(keys.epochs.items())],
        "alice": ALICE, "bob": BOB, "now": NOW, "conversation": group.conversation,
        "group_state": group.state_bytes.hex(), "edit": edit.SerializeToString().hex(),
        "reaction": reaction.SerializeToString().hex(), "deleted_timestamp": 1_780_000_001_000,
        "entries": entries}, indent=1) + "\n")


if __name__ == "__main__":
    main()
