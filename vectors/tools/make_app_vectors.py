"""Regenerate vectors/app-padding.json and vectors/app-content.json (docs/spec/).

Padding: input lengths with their padded lengths, and whole padded plaintexts for a few
inputs. Content: messages of the application protocol with their exact protobuf bytes
(standard proto3 encoding, fields in number order), so the browser client can check that
it reads and writes the same bytes.

Run: .venv/bin/python vectors/tools/make_app_vectors.py
"""

from __future__ import annotations

import json
from pathlib import Path

from google.protobuf import json_format

from cipherpost.client.padding import pad, padme
from cipherpost.client.proto.app_pb2 import (
    Content,
    DataMessage,
    DecryptionErrorMessage,
    MessageRef,
    ReceiptMessage,
    SyncMessage,
    TypingMessage,
)

ALICE = "6f1c1d8e-2a53-4a8f-9a0e-2f1b8c2d7e10"
BOB = "0b7f4c55-8f39-4e1f-bb1e-5d7d0a9c3a21"
LENGTHS = [0, 1, 2, 100, 158, 159, 160, 161, 255, 256, 1000, 1024, 4096, 65536, 100000,
           1 << 20, 3_000_001]


def contents() -> list[tuple[str, Content]]:
    ts = 1_790_000_000_000
    return [
        ("text", Content(version=1, data=DataMessage(timestamp=ts, text="hello, Bob"))),
        ("reply with quote", Content(version=1, data=DataMessage(
            timestamp=ts + 1, text="yes", quote=MessageRef(author=BOB, timestamp=ts - 5)))),
        ("delete for everyone", Content(version=1, data=DataMessage(
            timestamp=ts + 2, delete=MessageRef(author=ALICE, timestamp=ts)))),
        ("sync sent", Content(version=1, sync=SyncMessage(sent=SyncMessage.Sent(
            destination=BOB, message=DataMessage(timestamp=ts, text="hello, Bob"))))),
        ("device added", Content(version=1, sync=SyncMessage(
            device_added=SyncMessage.DeviceAdded(device_id=2, name="laptop")))),
        ("delivery receipt", Content(version=1, receipt=ReceiptMessage(
            type=ReceiptMessage.TYPE_DELIVERY, timestamps=[ts, ts + 1]))),
        ("read receipt", Content(version=1, receipt=ReceiptMessage(
            type=ReceiptMessage.TYPE_READ, timestamps=[ts]))),
        ("typing stopped", Content(version=1, typing=TypingMessage(
            timestamp=ts, action=TypingMessage.ACTION_STOPPED))),
        ("decryption error", Content(version=1, decryption_error=DecryptionErrorMessage(
            timestamp=ts, device_id=3, ratchet_key=bytes([5]) + bytes(range(32))))),
    ]


def group_change_vector() -> dict[str, object]:
    """A group creation signed by a fixed identity key (XEdDSA with fixed nonce bytes)."""
    from cipherpost.client.groups import ADMIN, MEMBER, encode_state, sign_change
    from cipherpost.protocol import IdentityKeyPair
    from cipherpost.protocol.keys import KeyPair

    pair = KeyPair.from_private(bytes(range(32)))
    identity = IdentityKeyPair(pair.public, pair.private)
    state = encode_state(bytes(range(32)), 0, "climbing", {ALICE: ADMIN, BOB: MEMBER})
    signed = sign_change(identity, ALICE, None, state, 1_790_000_000_000,
                         lambda n: bytes([0x42]) * n)
    return {"author": ALICE, "author_identity_key": identity.public.serialize().hex(),
            "state": state.hex(), "signed_change": signed.SerializeToString().hex()}


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    padding = {
        "source": "Cipherpost, docs/spec/README.md §3; vectors/tools/make_app_vectors.py",
        "lengths": [{"length": n, "padded": padme(max(n + 1, 160))} for n in LENGTHS],
        "cases": [{"plaintext": p.hex(), "padded": pad(p).hex()}
                  for p in (b"", b"\x00", b"hi\x00\x00", bytes(range(200)))],
    }
    (root / "app-padding.json").write_text(json.dumps(padding, indent=1) + "\n")
    content = {
        "source": "proto/cipherpost/app/v1/app.proto; vectors/tools/make_app_vectors.py",
        "cases": [{"name": name, "json": json_format.MessageToDict(c),
                   "serialized": c.SerializeToString().hex()} for name, c in contents()],
        "group_change": group_change_vector(),
    }
    (root / "app-content.json").write_text(json.dumps(content, indent=1) + "\n")


if __name__ == "__main__":
    main()
