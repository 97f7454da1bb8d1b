"""Writes web/test/fixtures/key-file-python.json: a key file made by the Python SDK's
writer (cipherpost.client.export.export_account) for web/test/app_key_file.test.ts.

Regenerate (from the repository root) with:

    .venv/bin/python web/test/key_file_fixture.py

The records are made here (an account with one contact, the recovery secrets of a fixed
recovery key, two messages of a 1:1 conversation) and handed to export_account in place of
a client's store; the header, the Argon2id key, the chunks and their binding are the
SDK's own. The salt and nonce prefix are random, so each run writes another file.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from cipherpost.client import export
from cipherpost.client.proto.app_pb2 import (
    DataMessage,
    ExportRecord,
    HistoryEvent,
    HistoryMessage,
    ProvisionMessage,
    RecoveryBlob,
)
from cipherpost.client.recovery import Secrets
from cipherpost.client.store.crypto import TEST_PARAMS
from cipherpost.protocol import IdentityKeyPair

PASSPHRASE = "correct horse battery staple, exported"  # noqa: S105 - a test file's
ACCOUNT = "0f8e2c5a-7d1b-4c3e-9a6f-2b4d8e1c7a90"
CONTACT = "5c1d9e7b-3a2f-4e8d-b6c0-9f1a2e3d4c5b"
OUT = Path(__file__).with_name("fixtures") / "key-file-python.json"


def main() -> None:
    rng = random.Random(7).randbytes  # noqa: S311 - fixed keys for a fixture
    identity = IdentityKeyPair.generate(rng)
    contact_key = IdentityKeyPair.generate(rng).public.serialize()
    secrets = Secrets.derive(bytes(range(32)))
    messages = [(CONTACT, ACCOUNT, 1, "hello from the SDK", True, 1_780_000_000_000),
                (CONTACT, CONTACT, 1, "and back to you", False, 1_780_000_001_000)]
    records = [
        ExportRecord(account=RecoveryBlob(
            account_id=ACCOUNT, identity_key_pair=identity.serialize(), username="",
            history_enabled=False,
            contacts=[ProvisionMessage.Contact(account_id=CONTACT, username="olga",
                                               identity_key=contact_key, verified=True)])),
        ExportRecord(recovery_secrets=secrets.to_bytes()),
        *(ExportRecord(event=HistoryEvent(message=HistoryMessage(
            conversation=conversation, author=author, author_device=device,
            received_at=at + 5, outgoing=outgoing,
            data=DataMessage(timestamp=at, text=text))))
          for conversation, author, device, text, outgoing, at in messages),
    ]
    setattr(export, "_records", lambda _client, _history: records)  # noqa: B010
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "account.cpexport"
        export.export_account(None, path, PASSPHRASE, with_history=True,  # type: ignore[arg-type]
                              params=TEST_PARAMS)
        data = path.read_bytes()
    OUT.write_text(json.dumps({
        "passphrase": PASSPHRASE, "file": data.hex(), "account_id": ACCOUNT,
        "identity_key_pair": identity.serialize().hex(),
        "recovery_secrets": secrets.to_bytes().hex(),
        "contact": {"account_id": CONTACT, "username": "olga", "identity_key": contact_key.hex(),
                    "verified": True},
        "messages": [{"conversation": c, "author": a, "text": t, "outgoing": o, "timestamp": at}
                     for c, a, _, t, o, at in messages],
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()
