"""Regenerate vectors/libsignal-session.json from the libsignal reference peer.

A Python responder ("bob", in an in-process peer whose randomness is a seeded generator)
publishes a bundle; libsignal 0.90.0 (the Node peer) processes it as the initiator and
encrypts two PreKey messages; Bob answers once and libsignal writes two ratchet messages.
The file records the seed and every message, so a unit test replays the exchange offline:
the same seed gives Bob the same keys, libsignal's bytes must decrypt, and Bob's reply
must come out byte for byte as recorded.

Run (needs the Node peer installed, e.g. by `make test`):
    .venv/bin/python vectors/tools/make_libsignal_vectors.py
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
from pathlib import Path
from typing import Any

from cipherpost.interop.peer import Peer

ROOT = Path(__file__).resolve().parents[2]
SEED = 20261128
ALICE = {"name": "alice", "device_id": 1}
BOB = {"name": "bob", "device_id": 1}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def main() -> None:
    node = subprocess.Popen(["node", str(ROOT / "interop/libsignal-peer/peer.js")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def libsignal(req: dict[str, Any]) -> dict[str, Any]:
        assert node.stdin is not None and node.stdout is not None
        node.stdin.write(json.dumps({"id": 0, **req}) + "\n")
        node.stdin.flush()
        response: dict[str, Any] = json.loads(node.stdout.readline())
        assert response["ok"], response
        return response

    generator = random.Random(SEED)
    py = Peer(rng=generator.randbytes)

    def python(req: dict[str, Any]) -> dict[str, Any]:
        response = py.handle({"id": 0, **req})
        assert response["ok"], response
        return response

    python({"op": "create_actor", "actor": BOB, "registration_id": 4242})
    bundle = python({"op": "generate_bundle", "actor": BOB, "signed_prekey_id": 7,
                     "kyber_prekey_id": 8, "prekey_id": 9})["bundle"]
    alice_identity = libsignal({"op": "create_actor", "actor": ALICE,
                                "registration_id": 1717})["identity_key"]
    libsignal({"op": "process_bundle", "actor": ALICE, "remote": BOB, "bundle": bundle})

    def from_alice(texts: list[bytes]) -> list[dict[str, str]]:
        out = []
        for text in texts:
            r = libsignal({"op": "encrypt", "actor": ALICE, "remote": BOB,
                           "plaintext": _b64(text)})
            out.append({"message_type": r["message_type"], "ciphertext": r["ciphertext"],
                        "plaintext": _b64(text)})
        return out

    prekey_messages = from_alice([b"first message from libsignal", b"second, same session"])
    for m in prekey_messages:
        python({"op": "decrypt", "actor": BOB, "remote": ALICE,
                "message_type": m["message_type"], "ciphertext": m["ciphertext"]})
    reply = python({"op": "encrypt", "actor": BOB, "remote": ALICE,
                    "plaintext": _b64(b"reply from python")})
    libsignal({"op": "decrypt", "actor": ALICE, "remote": BOB,
               "message_type": reply["message_type"], "ciphertext": reply["ciphertext"]})
    whisper_messages = from_alice([b"after the reply: a ratchet message", b"and one more"])
    for m in whisper_messages:
        python({"op": "decrypt", "actor": BOB, "remote": ALICE,
                "message_type": m["message_type"], "ciphertext": m["ciphertext"]})
    libsignal({"op": "quit"})
    node.wait(timeout=10)

    out = {
        "source": "libsignal-client 0.90.0 (interop/libsignal-peer) initiating to a Python "
                  "responder whose rng is random.Random(seed).randbytes; "
                  "vectors/tools/make_libsignal_vectors.py",
        "seed": SEED,
        "bob": BOB,
        "bob_registration_id": 4242,
        "bundle_ids": {"signed_prekey_id": 7, "kyber_prekey_id": 8, "prekey_id": 9},
        "bundle": bundle,
        "alice": ALICE,
        "alice_identity_key": alice_identity,
        "prekey_messages": prekey_messages,
        "python_reply": {"message_type": reply["message_type"],
                         "ciphertext": reply["ciphertext"],
                         "plaintext": _b64(b"reply from python")},
        "whisper_messages": whisper_messages,
    }
    (ROOT / "vectors" / "libsignal-session.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
