"""Freeze stored-record samples of the current formats into tests/golden/.

Run once per new session-record format; it refuses to overwrite an existing file. Every
later version of Cipherpost must keep loading these and continue the sessions they hold.
From format 3 on the session runs SPQR (required by both sides) and is frozen after
two completed SPQR epochs, with a message held back in both ratchets (a skipped Double
Ratchet seed and a skipped SPQR key).

    .venv/bin/python tests/golden/make_golden.py
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from pathlib import Path

from cipherpost.protocol import encrypt, process_prekey_bundle
from cipherpost.protocol import sender_keys as sk
from cipherpost.protocol.address import ProtocolAddress
from cipherpost.protocol.spqr.ratchet import SpqrSettings
from cipherpost.protocol.state import RECORD_FORMAT
from cipherpost.protocol.stores import InMemorySenderKeyStore
from tests.protocol.parties import NOW, make_party


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def main() -> None:
    rng = random.Random(77).randbytes
    alice = make_party("alice", rng, 11)
    bob = make_party("bob", rng, 22)
    bundle = bob.bundle(last_resort=True)
    spqr = SpqrSettings.REQUIRED
    process_prekey_bundle(alice.store, bob.address, bundle, rng=rng, now=NOW, spqr=spqr)
    from cipherpost.protocol import decrypt

    def send(sender_store, receiver_store, to, frm, text):  # type: ignore[no-untyped-def]
        message = encrypt(sender_store, to, text, now=NOW, rng=rng)
        decrypt(receiver_store, frm, message.message_type, message.serialized, rng=rng,
                spqr=spqr)

    send(alice.store, bob.store, bob.address, alice.address, b"first")
    send(bob.store, alice.store, alice.address, bob.address, b"reply")
    for i in range(150):  # through SPQR epochs 1 and 2
        send(alice.store, bob.store, bob.address, alice.address, b"a%d" % i)
        send(bob.store, alice.store, alice.address, bob.address, b"b%d" % i)
    held = encrypt(alice.store, bob.address, b"held back", now=NOW, rng=rng)
    pending = encrypt(alice.store, bob.address, b"delivered after restore", now=NOW, rng=rng)
    decrypt(bob.store, alice.address, pending.message_type, pending.serialized, rng=rng)
    after = encrypt(alice.store, bob.address, b"new after restore", now=NOW, rng=rng)
    bob_record = bob.store.load_session(alice.address)
    assert bob_record is not None

    sender = ProtocolAddress("alice", 1)
    distribution = uuid.UUID(int=0x1234)
    sender_store, member_store = InMemorySenderKeyStore(), InMemorySenderKeyStore()
    skdm = sk.create_distribution_message(sender_store, sender, distribution, rng=rng)
    sk.process_distribution_message(member_store, sender, skdm.serialized)
    group_held = sk.group_encrypt(sender_store, sender, distribution, b"group held", rng=rng)
    group_next = sk.group_encrypt(sender_store, sender, distribution, b"group next", rng=rng)
    sk.group_decrypt(member_store, sender, group_next)
    member_record = member_store.load_sender_key(sender, distribution)
    assert member_record is not None

    pq = bob_record.current.pq_ratchet if bob_record.current else None
    assert pq is not None and pq.chain is not None and pq.chain.current_epoch >= 2
    out = {
        "format": RECORD_FORMAT,
        "spqr_epoch": pq.chain.current_epoch,
        "bob_identity_key_pair": _b64(bob.store.get_identity_key_pair().serialize()),
        "alice_identity_key": _b64(alice.store.get_identity_key_pair().public.serialize()),
        "bob_session_record": _b64(bob_record.serialize()),
        "signed_prekey_record": _b64(
            bob.store.get_signed_pre_key(bundle.signed_pre_key_id).serialize()),
        "kyber_prekey_record": _b64(
            bob.store.get_kyber_pre_key(bundle.kyber_pre_key_id).serialize()),
        "whisper_messages": [
            {"ciphertext": _b64(held.serialized), "plaintext": _b64(b"held back")},
            {"ciphertext": _b64(after.serialized), "plaintext": _b64(b"new after restore")},
        ],
        "duplicate": _b64(pending.serialized),
        "sender_key_record": _b64(member_record.serialize()),
        "distribution_id": str(distribution),
        "group_message": {"ciphertext": _b64(group_held), "plaintext": _b64(b"group held")},
        "group_duplicate": _b64(group_next),
    }
    path = Path(__file__).with_name(f"records-v{RECORD_FORMAT}.json")
    if path.exists():
        raise SystemExit(f"{path.name} exists: golden files are frozen, never regenerated")
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
