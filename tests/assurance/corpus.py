"""Valid inputs ("seeds") for the fuzz targets, and the parties and stores they act on.

Everything is built once, deterministically (a seeded ``random.Random``), when the module
is first imported. Mutations of these seeds reach far deeper into a parser than random
bytes, which rarely get past a version byte or a JSON brace.
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from typing import Any

from cipherpost.client import attachments, groups
from cipherpost.client.content import encode as encode_content
from cipherpost.client.padding import pad
from cipherpost.client.proto.app_pb2 import Content
from cipherpost.client.store.crypto import LocalKey
from cipherpost.protocol import (
    KemKeyPair,
    SessionRecord,
    SpqrSettings,
    decrypt,
    encrypt,
    process_prekey_bundle,
)
from cipherpost.protocol import sender_keys as sk
from cipherpost.protocol.address import ProtocolAddress
from cipherpost.protocol.kem import MLKEM1024
from cipherpost.protocol.messages import PreKeySignalMessage
from cipherpost.protocol.prekeys import KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord
from cipherpost.protocol.stores import InMemorySenderKeyStore
from tests.conftest import ROOT, load_vectors
from tests.protocol.parties import NOW, make_party

rng = random.Random(2024).randbytes
#: The 1:1 seeds are classical sessions (the SPQR ones are targets_protocol's).
CLASSIC = SpqrSettings.OFF

# -- 1:1 sessions ----------------------------------------------------------------------------

ALICE = make_party("alice", rng, 1)
BOB = make_party("bob", rng, 2)
CAROL = make_party("carol", rng, 3)
process_prekey_bundle(ALICE.store, BOB.address, BOB.bundle(), rng=rng, now=NOW, spqr=CLASSIC)
#: A PreKey message Bob has decrypted (replays are duplicates).
FIRST = encrypt(ALICE.store, BOB.address, b"first", now=NOW).serialized
#: A PreKey message of the same state that Bob never saw: its key is a skipped key.
SKIPPED = encrypt(ALICE.store, BOB.address, b"skipped", now=NOW).serialized
decrypt(BOB.store, ALICE.address, 3, FIRST, rng=rng, spqr=CLASSIC)
REPLY = encrypt(BOB.store, ALICE.address, b"reply", now=NOW).serialized
decrypt(ALICE.store, BOB.address, 2, REPLY, rng=rng, spqr=CLASSIC)
#: A whisper message Bob has not decrypted yet.
WHISPER = encrypt(ALICE.store, BOB.address, b"whisper", now=NOW).serialized
# Carol's first message is never delivered: Bob keeps the prekeys it names, so mutations
# of it reach the responder's PQXDH code, not only the look-up of a state by base key.
process_prekey_bundle(CAROL.store, BOB.address, BOB.bundle(), rng=rng, now=NOW, spqr=CLASSIC)
CAROL_FIRST = encrypt(CAROL.store, BOB.address, b"carol", now=NOW).serialized
#: The SignalMessage inside a PreKey message (as a whisper message it is refused).
INNER = PreKeySignalMessage.parse(SKIPPED).message.serialized
PLAINTEXTS = {b"first", b"skipped", b"reply", b"whisper", b"carol"}

_bob_record = BOB.store.load_session(ALICE.address)
assert _bob_record is not None and _bob_record.current is not None
#: Bob's record for Alice (a receiving chain with a skipped key) plus an archived state.
RICH_RECORD = SessionRecord(_bob_record.current, [_bob_record.current]).serialize()
ALICE_RECORD = ALICE.store.load_session(BOB.address).serialize()  # type: ignore[union-attr]
CAROL_RECORD = CAROL.store.load_session(BOB.address).serialize()  # type: ignore[union-attr]
_golden = {fmt: json.loads((ROOT / "tests" / "golden" / f"records-v{fmt}.json").read_text())
           for fmt in (1, 2)}
#: Session records as stored by format 1 (libsignal's protobuf numbers) and format 2.
SESSION_RECORD_V1 = base64.b64decode(_golden[1]["bob_session_record"])
SESSION_RECORD_V2 = base64.b64decode(_golden[2]["bob_session_record"])

# -- keys and prekey records -----------------------------------------------------------------

IDENTITY_KEY = ALICE.store.get_identity_key_pair().public.serialize()
IDENTITY_KEY_PAIR = ALICE.store.get_identity_key_pair().serialize()
KYBER_PAIR = KemKeyPair.generate(rng)
MLKEM_PAIR = KemKeyPair.generate(rng, MLKEM1024)
KYBER_PUBLIC = KYBER_PAIR.public.serialize()
MLKEM_PUBLIC = MLKEM_PAIR.public.serialize()
KYBER_CIPHERTEXT = KYBER_PAIR.public.encapsulate()[1]
PREKEY_RECORD = PreKeyRecord.generate(7, rng).serialize()
SIGNED_PREKEY_RECORD = SignedPreKeyRecord.generate(
    8, ALICE.store.get_identity_key_pair(), NOW * 1000, rng).serialize()
KYBER_PREKEY_RECORD = KyberPreKeyRecord.generate(
    9, ALICE.store.get_identity_key_pair(), NOW * 1000, rng, last_resort=True).serialize()

# -- sender keys -----------------------------------------------------------------------------

SENDER = ProtocolAddress("sender", 1)
DIST = uuid.UUID(int=7)
SENDER_KEYS, MEMBER_KEYS = InMemorySenderKeyStore(), InMemorySenderKeyStore()
SKDM = sk.create_distribution_message(SENDER_KEYS, SENDER, DIST, rng=rng).serialized
sk.process_distribution_message(MEMBER_KEYS, SENDER, SKDM)
GROUP_SKIPPED = sk.group_encrypt(SENDER_KEYS, SENDER, DIST, b"group skipped", rng=rng)
GROUP = sk.group_encrypt(SENDER_KEYS, SENDER, DIST, b"group", rng=rng)
sk.group_decrypt(MEMBER_KEYS, SENDER, GROUP)  # the skipped one stays as a skipped key
GROUP_NEXT = sk.group_encrypt(SENDER_KEYS, SENDER, DIST, b"group next", rng=rng)
GROUP_PLAINTEXTS = {b"group skipped", b"group", b"group next"}
SENDER_KEY_RECORD = MEMBER_KEYS.load_sender_key(SENDER, DIST).serialize()  # type: ignore[union-attr]
OWN_SENDER_KEY_RECORD = SENDER_KEYS.load_sender_key(SENDER, DIST).serialize()  # type: ignore[union-attr]

# -- the relay's bundle answer (GET /v1/keys/{account}/{device}) ------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def bundle_answer(with_one_time: bool = True) -> dict[str, Any]:
    """A fresh bundle of Bob's (his stores keep the private halves) as the relay sends it."""
    b = BOB.bundle(one_time=with_one_time)
    device: dict[str, Any] = {
        "device_id": b.device_id, "registration_id": b.registration_id,
        "signed_prekey": {"key_id": b.signed_pre_key_id,
                          "public_key": _b64(b.signed_pre_key.serialize()),
                          "signature": _b64(b.signed_pre_key_signature)},
        "kyber_prekey": {"key_id": b.kyber_pre_key_id,
                         "public_key": _b64(b.kyber_pre_key.serialize()),
                         "signature": _b64(b.kyber_pre_key_signature)},
        "one_time_prekey": None,
    }
    if b.pre_key is not None:
        device["one_time_prekey"] = {"key_id": b.pre_key_id,
                                     "public_key": _b64(b.pre_key.serialize())}
    return {"identity_key": _b64(b.identity_key.serialize()), "devices": [device]}


BUNDLE_ANSWER = bundle_answer()
BUNDLE_ANSWER_NO_ONE_TIME = bundle_answer(with_one_time=False)
BUNDLE_JSON = json.dumps(BUNDLE_ANSWER).encode()
BUNDLE_JSON_NO_ONE_TIME = json.dumps(BUNDLE_ANSWER_NO_ONE_TIME).encode()

# -- application content ---------------------------------------------------------------------

_app = load_vectors("app-content.json")
CONTENTS = [pad(bytes.fromhex(case["serialized"])) for case in _app["cases"]]
_with_skdm = Content()
_with_skdm.data.timestamp = NOW * 1000
_with_skdm.data.text = "with a sender key"
_with_skdm.sender_key_distribution = SKDM
CONTENTS.append(encode_content(_with_skdm))
SIGNED_CHANGE_VECTOR = bytes.fromhex(_app["group_change"]["signed_change"])
CHANGE_AUTHOR = _app["group_change"]["author"]
CHANGE_AUTHOR_KEY = bytes.fromhex(_app["group_change"]["author_identity_key"])

# -- groups ----------------------------------------------------------------------------------

GROUP_ID = bytes(range(32))
ADMIN_ID, MEMBER_ID, OUTSIDER_ID = "admin-account", "member-account", "outsider-account"
ADMIN_IDENTITY = ALICE.store.get_identity_key_pair()
MEMBER_IDENTITY = BOB.store.get_identity_key_pair()
_state0 = groups.encode_state(GROUP_ID, 0, "climbing", {ADMIN_ID: groups.ADMIN,
                                                         MEMBER_ID: groups.MEMBER})
CREATION = groups.sign_change(ADMIN_IDENTITY, ADMIN_ID, None, _state0, NOW * 1000, rng)
GROUP_STATE0 = groups.verify_change(CREATION, None, ADMIN_IDENTITY.public)
_state1 = groups.encode_state(GROUP_ID, 1, "climbing on tuesdays",
                              {ADMIN_ID: groups.ADMIN, MEMBER_ID: groups.MEMBER,
                               OUTSIDER_ID: groups.MEMBER})
#: An admin's change that follows GROUP_STATE0 (adds a member, renames).
NEXT_CHANGE = groups.sign_change(ADMIN_IDENTITY, ADMIN_ID, GROUP_STATE0, _state1,
                                 NOW * 1000 + 1, rng)
_state_leave = groups.encode_state(GROUP_ID, 1, "climbing", {ADMIN_ID: groups.ADMIN})
#: A plain member leaving (allowed without being an admin).
LEAVE_CHANGE = groups.sign_change(MEMBER_IDENTITY, MEMBER_ID, GROUP_STATE0, _state_leave,
                                  NOW * 1000 + 2, rng)

# -- attachments -----------------------------------------------------------------------------

ATTACHMENT_PLAINTEXT = b"a photo of a cat, or close enough " * 40
ATTACHMENT = attachments.encrypt(ATTACHMENT_PLAINTEXT, key=rng(64), iv=rng(16))

# -- the local store's sealed values -----------------------------------------------------------

LOCAL_KEY = LocalKey(rng(32))
SEALED_AAD = b"sessions\x00alice.1"
SEALED = LOCAL_KEY.seal(SESSION_RECORD_V2, SEALED_AAD)
