"""Fuzz targets: one function per parser of bytes that come from outside.

Each target takes one input (bytes) and returns normally when the code under test kept
its contract: it returned, or raised only its documented error type, and a rejected input
changed no stored state. Anything else escapes, as an ``AssertionError`` (a broken
contract) or as the unexpected exception itself. The same functions are driven by
Hypothesis (``test_fuzz.py``: a quick run in ``make test``, a long one in ``make fuzz``)
and by atheris, coverage-guided (``fuzz_atheris.py``, in ``make fuzz``).

Targets that need more than one input (which message type, which sender, which state to
apply a change to) read a selector byte first; the seeds carry valid selectors.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from google.protobuf.message import DecodeError

from cipherpost.client import attachments, groups, padding
from cipherpost.client.api import parse_bundles
from cipherpost.client.content import InvalidContent
from cipherpost.client.content import decode as decode_content
from cipherpost.client.proto.app_pb2 import GroupChange, SignedGroupChange
from cipherpost.client.store.crypto import CorruptValue
from cipherpost.interop.peer import Peer
from cipherpost.protocol import (
    IdentityKeyPair,
    InMemoryProtocolStore,
    KemPublicKey,
    ProtocolError,
    PublicKey,
    SessionRecord,
    decrypt,
    encrypt,
    process_prekey_bundle,
    xeddsa,
)
from cipherpost.protocol import sender_keys as sk
from cipherpost.protocol.address import ProtocolAddress
from cipherpost.protocol.keys import PrivateKey
from cipherpost.protocol.messages import (
    PreKeySignalMessage,
    SenderKeyDistributionMessage,
    SenderKeyMessage,
    SignalMessage,
)
from cipherpost.protocol.prekeys import KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord
from cipherpost.protocol.stores import InMemorySenderKeyStore, InMemorySessionStore

from . import corpus as c

_rng = random.Random(77).randbytes


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    seeds: tuple[bytes, ...]
    #: What is fuzzed and which errors it may raise (docs/assurance.md lists these).
    parser: str
    allowed: str


TARGETS: dict[str, Target] = {}


def target(name: str, parser: str, allowed: str,
           seeds: Callable[[], list[bytes]]) -> Callable[[Callable[[bytes], None]],
                                                      Callable[[bytes], None]]:
    def register(run: Callable[[bytes], None]) -> Callable[[bytes], None]:
        TARGETS[name] = Target(name, run, tuple(seeds()), parser, allowed)
        return run
    return register


@dataclass
class KnownBug:
    """A contract violation found by fuzzing, reported, and not fixed yet.

    Its target tolerates exactly this exception raised in exactly this function (and
    counts the inputs that hit it), so a long run keeps looking for other bugs; the test
    ``test_known_bug_reproducers`` replays ``reproducer`` as an ``xfail(strict=True)``, so
    the bug stays visible and the entry must go once it is fixed.
    """

    id: str
    target: str
    exception: type[BaseException]
    #: (file name ending, function name) of a frame the exception must pass through.
    where: tuple[str, str]
    reproducer: bytes
    reason: str
    hits: int = 0


KNOWN_BUGS: dict[str, KnownBug] = {}


def known_bug(bug: KnownBug) -> KnownBug:
    KNOWN_BUGS[bug.id] = bug
    return bug


def _passes_through(exc: BaseException, where: tuple[str, str]) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename.endswith(where[0]) and code.co_name == where[1]:
            return True
        tb = tb.tb_next
    return False


_STRICT = False


@contextlib.contextmanager
def strict_known_bugs() -> Iterator[None]:
    """Within this block known bugs are not tolerated (to replay their reproducers)."""
    global _STRICT
    _STRICT = True
    try:
        yield
    finally:
        _STRICT = False


@contextlib.contextmanager
def tolerating(*bugs: KnownBug) -> Iterator[None]:
    """Swallow (and count) the known bugs ``bugs``; anything else propagates."""
    try:
        yield
    except Exception as exc:
        if _STRICT:
            raise
        for bug in bugs:
            if isinstance(exc, bug.exception) and _passes_through(exc, bug.where):
                bug.hits += 1
                return
        raise


def _split(data: bytes) -> tuple[int, bytes]:
    return (data[0], data[1:]) if data else (0, b"")


# -- wire messages ---------------------------------------------------------------------------


@target("signal_message", "SignalMessage.parse", "ProtocolError",
        lambda: [c.WHISPER, c.REPLY, c.INNER])
def signal_message(data: bytes) -> None:
    try:
        message = SignalMessage.parse(data)
    except ProtocolError:
        return
    assert message.serialized == data, "a parsed message must keep the bytes it came from"
    assert 0 <= message.counter < 1 << 32 and 0 <= message.previous_counter < 1 << 32


@target("prekey_signal_message", "PreKeySignalMessage.parse", "ProtocolError",
        lambda: [c.FIRST, c.SKIPPED, c.CAROL_FIRST])
def prekey_signal_message(data: bytes) -> None:
    try:
        message = PreKeySignalMessage.parse(data)
    except ProtocolError:
        return
    assert message.serialized == data
    assert message.message.serialized in data


@target("sender_key_message", "SenderKeyMessage.parse", "ProtocolError",
        lambda: [c.GROUP, c.GROUP_NEXT])
def sender_key_message(data: bytes) -> None:
    try:
        message = SenderKeyMessage.parse(data)
    except ProtocolError:
        return
    assert message.serialized == data and message.signed_part + message.signature == data


@target("sender_key_distribution_message", "SenderKeyDistributionMessage.parse",
        "ProtocolError", lambda: [c.SKDM])
def sender_key_distribution_message(data: bytes) -> None:
    try:
        message = SenderKeyDistributionMessage.parse(data)
    except ProtocolError:
        return
    assert message.serialized == data and len(message.chain_key) == 32


# -- keys ------------------------------------------------------------------------------------

_AGREE = PrivateKey(bytes(range(32)))


@target("public_key", "PublicKey.deserialize (then X25519 with it, is_canonical), "
        "IdentityKeyPair.deserialize", "InvalidKey",
        lambda: [c.IDENTITY_KEY, c.IDENTITY_KEY_PAIR])
def public_key(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        key = PublicKey.deserialize(data)
        key.is_canonical()
        _AGREE.agree(key)
    with contextlib.suppress(ProtocolError):
        pair = IdentityKeyPair.deserialize(data)
        assert pair.private.public_key() == pair.public


@target("kem_key", "KemPublicKey.deserialize (then encapsulate to it), "
        "KemKeyPair.decapsulate of a ciphertext", "InvalidKey",
        lambda: [c.KYBER_PUBLIC, c.MLKEM_PUBLIC, c.KYBER_CIPHERTEXT])
def kem_key(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        shared, ciphertext = KemPublicKey.deserialize(data).encapsulate()
        assert len(shared) == 32 and ciphertext[0] == data[0]
    with contextlib.suppress(ProtocolError):
        assert len(c.KYBER_PAIR.decapsulate(data)) == 32


# -- stored records --------------------------------------------------------------------------


@target("session_record", "SessionRecord.deserialize (formats 1 and 2), then decrypt and "
        "encrypt with the loaded record", "ProtocolError (InvalidMessage at load)",
        lambda: [c.RICH_RECORD, c.ALICE_RECORD, c.CAROL_RECORD, c.SESSION_RECORD_V1,
                 c.SESSION_RECORD_V2])
def session_record(data: bytes) -> None:
    try:
        record = SessionRecord.deserialize(data)
    except ProtocolError:
        return
    once = record.serialize()
    assert SessionRecord.deserialize(once).serialize() == once, "no fixpoint after a load"
    store = InMemoryProtocolStore(c.BOB.store.get_identity_key_pair(), 2)
    store.store_session(c.ALICE.address, record)
    with contextlib.suppress(ProtocolError):
        decrypt(store, c.ALICE.address, 2, c.WHISPER, rng=_rng)
    with contextlib.suppress(ProtocolError):
        encrypt(store, c.ALICE.address, b"x", now=c.NOW, rng=_rng)


@target("prekey_records", "PreKeyRecord, SignedPreKeyRecord, KyberPreKeyRecord "
        ".deserialize, then use of the loaded keys", "InvalidKey",
        lambda: [c.PREKEY_RECORD, c.SIGNED_PREKEY_RECORD, c.KYBER_PREKEY_RECORD])
def prekey_records(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        record = PreKeyRecord.deserialize(data)
        record.key_pair.private.agree(c.ALICE.store.get_identity_key_pair().public)
    with contextlib.suppress(ProtocolError):
        signed = SignedPreKeyRecord.deserialize(data)
        signed.key_pair.private.agree(c.ALICE.store.get_identity_key_pair().public)
    with contextlib.suppress(ProtocolError):
        kyber = KyberPreKeyRecord.deserialize(data)
        kyber.key_pair.decapsulate(c.KYBER_CIPHERTEXT)


@target("sender_key_record", "SenderKeyRecord.deserialize, then group_decrypt and "
        "group_encrypt with it", "ProtocolError (InvalidMessage at load)",
        lambda: [c.SENDER_KEY_RECORD, c.OWN_SENDER_KEY_RECORD])
def sender_key_record(data: bytes) -> None:
    try:
        record = sk.SenderKeyRecord.deserialize(data)
    except ProtocolError:
        return
    store = InMemorySenderKeyStore()
    store.store_sender_key(c.SENDER, c.DIST, record)
    with contextlib.suppress(ProtocolError):
        sk.group_decrypt(store, c.SENDER, c.GROUP_NEXT)
    with contextlib.suppress(ProtocolError):
        sk.group_encrypt(store, c.SENDER, c.DIST, b"x", rng=_rng)


@target("sealed_value", "LocalKey.open (a value sealed in the client's store)",
        "CorruptValue", lambda: [c.SEALED])
def sealed_value(data: bytes) -> None:
    try:
        value = c.LOCAL_KEY.open(data, c.SEALED_AAD)
    except CorruptValue:
        return
    assert value == c.SESSION_RECORD_V2  # only a value sealed under this key and row


# -- decryption with stores: a rejected input changes nothing ----------------------------------


def _capture(store: InMemoryProtocolStore) -> dict[str, Any]:
    sessions = store.sessions
    assert isinstance(sessions, InMemorySessionStore)
    return {
        "sessions": {a: r.serialize() for a, r in sessions._sessions.items()},
        "pre_keys": dict(store._pre_keys),
        "signed": dict(store._signed_keys),
        "kyber": dict(store._kyber_keys),
        "used": set(store._used),
        "known": dict(store._known),
    }


def _restore(store: InMemoryProtocolStore, snap: dict[str, Any]) -> None:
    sessions = store.sessions
    assert isinstance(sessions, InMemorySessionStore)
    sessions._sessions = {a: SessionRecord.deserialize(b) for a, b in snap["sessions"].items()}
    store._pre_keys = dict(snap["pre_keys"])
    store._signed_keys = dict(snap["signed"])
    store._kyber_keys = dict(snap["kyber"])
    store._used = set(snap["used"])
    store._known = dict(snap["known"])


def session_input(message_type: int, sender: str, message: bytes) -> bytes:
    return bytes(((message_type == 3) | ((sender == "carol") << 1),)) + message


@target("session_decrypt", "decrypt (whisper and PreKey messages) at a party with sessions "
        "and prekeys", "ProtocolError; Bob's stores unchanged when refused",
        lambda: [session_input(2, "alice", c.WHISPER), session_input(3, "alice", c.SKIPPED),
                 session_input(3, "carol", c.CAROL_FIRST), session_input(3, "alice", c.FIRST),
                 session_input(2, "alice", c.INNER)])
def session_decrypt(data: bytes) -> None:
    selector, message = _split(data)
    message_type = 3 if selector & 1 else 2
    sender = c.CAROL.address if selector & 2 else c.ALICE.address
    before = _capture(c.BOB.store)
    try:
        plaintext = decrypt(c.BOB.store, sender, message_type, message, rng=_rng,
                            spqr=c.CLASSIC)
    except ProtocolError:
        assert _capture(c.BOB.store) == before, "a refused message changed Bob's stores"
        return
    _restore(c.BOB.store, before)
    assert plaintext in c.PLAINTEXTS, "a mutated message decrypted to something new"


def _sender_keys_snapshot(store: InMemorySenderKeyStore) -> dict[Any, bytes]:
    return {k: r.serialize() for k, r in store._records.items()}  # type: ignore[attr-defined]


@target("group_decrypt", "group_decrypt (sender-key messages) at a member",
        "ProtocolError; the member's sender-key record unchanged when refused",
        lambda: [c.GROUP, c.GROUP_NEXT, c.GROUP_SKIPPED])
def group_decrypt(data: bytes) -> None:
    before = _sender_keys_snapshot(c.MEMBER_KEYS)
    try:
        plaintext = sk.group_decrypt(c.MEMBER_KEYS, c.SENDER, data)
    except ProtocolError:
        assert _sender_keys_snapshot(c.MEMBER_KEYS) == before, "a refused message changed state"
        return
    c.MEMBER_KEYS._records = {k: sk.SenderKeyRecord.deserialize(v) for k, v in before.items()}
    assert plaintext in c.GROUP_PLAINTEXTS


@target("skdm_process", "process_distribution_message into an empty store or one that "
        "holds the sender's chain", "ProtocolError; the store unchanged when refused",
        lambda: [b"\x00" + c.SKDM, b"\x01" + c.SKDM])
def skdm_process(data: bytes) -> None:
    selector, message = _split(data)
    store = InMemorySenderKeyStore()
    if selector & 1:
        store.store_sender_key(c.SENDER, c.DIST, sk.SenderKeyRecord.deserialize(
            c.SENDER_KEY_RECORD))
    before = _sender_keys_snapshot(store)
    try:
        sk.process_distribution_message(store, c.SENDER, message)
    except ProtocolError:
        assert _sender_keys_snapshot(store) == before
        return


# -- the relay's bundle answer ------------------------------------------------------------------

#: parse_bundles reports anything malformed in a relay's answer as ProtocolError.
BUNDLE_ERRORS = (ProtocolError,)
_INITIATOR = IdentityKeyPair.generate(_rng)


@target("bundle_answer", "cipherpost.client.api.parse_bundles of a GET /v1/keys answer, "
        "then process_prekey_bundle of each bundle",
        "parse: ProtocolError only (anything malformed in a relay's answer); process: "
        "ProtocolError, no session or identity stored when refused",
        lambda: [c.BUNDLE_JSON, c.BUNDLE_JSON_NO_ONE_TIME])
def bundle_answer(data: bytes) -> None:
    try:
        answer = json.loads(data)
    except (ValueError, RecursionError):
        return  # not JSON: httpx's response.json() refuses it before parse_bundles runs
    bundles = []
    try:
        bundles = parse_bundles(answer)
    except BUNDLE_ERRORS:
        return
    for bundle in bundles:
        store = InMemoryProtocolStore(_INITIATOR, 5)
        address = ProtocolAddress("bob", 1)
        try:
            process_prekey_bundle(store, address, bundle, rng=_rng, now=c.NOW)
        except ProtocolError:
            assert store.load_session(address) is None and store.get_identity(address) is None
            continue
        assert store.load_session(address) is not None


# -- application content -------------------------------------------------------------------


@target("content_decode", "cipherpost.client.content.decode (unpad, then Content)",
        "InvalidContent", lambda: list(c.CONTENTS))
def content_decode(data: bytes) -> None:
    try:
        content = decode_content(data)
    except InvalidContent:
        return
    content.WhichOneof("body")
    content.SerializeToString()


@target("padding", "cipherpost.client.padding.unpad", "PaddingError",
        lambda: [padding.pad(b"hello"), padding.pad(b"\x80\x00"), padding.pad(b"")])
def padding_unpad(data: bytes) -> None:
    try:
        plain = padding.unpad(data)
    except padding.PaddingError:
        return
    assert data.startswith(plain + b"\x80") and not data[len(plain) + 1:].strip(b"\x00")


#: Who signs (re-signed mode) or whose key verifies (as received): an admin, a plain
#: member, or the author of the vector in vectors/app-content.json (verify only).
_SIGNERS = (c.ADMIN_IDENTITY, c.MEMBER_IDENTITY, None, c.ADMIN_IDENTITY)


def change_input(signed: SignedGroupChange, *, resign: bool, current: bool,
                 signer: int = 0) -> bytes:
    selector = int(resign) | (int(current) << 1) | (signer << 2)
    payload = signed.change if resign else signed.SerializeToString()
    return bytes((selector,)) + payload


@target("group_change", "cipherpost.client.groups.verify_change of a signed change as "
        "received, and of arbitrary changes validly signed by an admin or a plain member",
        "GroupChangeRejected; an accepted change obeys the spec's rules",
        lambda: [change_input(c.CREATION, resign=False, current=False),
                 change_input(SignedGroupChange.FromString(c.SIGNED_CHANGE_VECTOR),
                              resign=False, current=False, signer=2),
                 change_input(c.NEXT_CHANGE, resign=False, current=True),
                 change_input(c.LEAVE_CHANGE, resign=False, current=True, signer=1),
                 change_input(c.NEXT_CHANGE, resign=True, current=True),
                 change_input(c.LEAVE_CHANGE, resign=True, current=True, signer=1),
                 change_input(c.CREATION, resign=True, current=False)])
def group_change(data: bytes) -> None:
    selector, payload = _split(data)
    current = c.GROUP_STATE0 if selector & 2 else None
    identity = _SIGNERS[(selector >> 2) & 3]
    if selector & 1:  # an admin or a member signs whatever it likes
        identity = identity or c.ADMIN_IDENTITY
        signed = SignedGroupChange(change=payload, signature=xeddsa.sign(
            identity.private, groups.CHANGE_CONTEXT + payload, _rng))
    else:
        try:
            signed = SignedGroupChange.FromString(payload)
        except DecodeError:
            return  # inside a Content, content.decode refuses it first
    key = identity.public if identity else PublicKey.deserialize(c.CHANGE_AUTHOR_KEY)
    with contextlib.suppress(groups.GroupChangeRejected):
        groups.change_author(signed)
    try:
        new = groups.verify_change(signed, current, key)
    except groups.GroupChangeRejected:
        return
    change = GroupChange.FromString(signed.change)
    assert len(new.id) == groups.GROUP_ID_BYTES and new.revision == change.revision
    assert not new.members or any(r == groups.ADMIN for r in new.members.values())
    if current is None:
        assert new.is_admin(change.author), "joined a group on a non-admin's word"
        return
    assert new.id == current.id and new.revision == current.revision + 1
    assert current.is_member(change.author), "accepted a change from outside the group"
    if dict(new.members) != dict(current.members) and not current.is_admin(change.author):
        leaving = dict(current.members)
        leaving.pop(change.author, None)
        assert dict(new.members) == leaving, "a plain member changed the member list"


_SIZES = (c.ATTACHMENT.size, 0, (1 << 64) - 1, 1)


def attachment_input(mode: int, size_index: int, blob: bytes) -> bytes:
    return bytes((mode | (size_index << 2),)) + blob


@target("attachment", "cipherpost.client.attachments.decrypt of a downloaded blob: as "
        "downloaded, with the digest recomputed, and from a sender who holds the key "
        "(valid digest and MAC over a mutated body)", "AttachmentError",
        lambda: [attachment_input(mode, 0, c.ATTACHMENT.blob) for mode in (0, 1, 2)])
def attachment(data: bytes) -> None:
    selector, blob = _split(data)
    mode, size = selector & 3, _SIZES[(selector >> 2) & 3]
    key = c.ATTACHMENT.key
    digest = c.ATTACHMENT.digest
    if mode == 2 and len(blob) >= 16 + 32:
        iv, body = blob[:16], blob[16:-32]
        blob = iv + body + hmac.new(key[32:], iv + body, hashlib.sha256).digest()
    if mode >= 1:
        digest = hashlib.sha256(blob).digest()
    try:
        plain = attachments.decrypt(blob, key, digest, size)
    except attachments.AttachmentError:
        return
    assert len(plain) <= size
    if blob == c.ATTACHMENT.blob and size == c.ATTACHMENT.size:
        assert plain == c.ATTACHMENT_PLAINTEXT


# -- the interop peer's request reader ---------------------------------------------------------


class PeerHarness:
    """One Peer with two actors who share a session and a sender key; every accepted
    request is undone, so each input meets the same state."""

    A: ClassVar[dict[str, Any]] = {"name": "a", "device_id": 1}
    B: ClassVar[dict[str, Any]] = {"name": "b", "device_id": 1}
    D = "00000000-0000-0000-0000-000000000007"

    def __init__(self) -> None:
        self.peer = Peer(rng=random.Random(5).randbytes, clock=lambda: c.NOW)
        ok = self._ok
        for actor, reg in ((self.A, 1), (self.B, 2)):
            ok({"op": "create_actor", "actor": actor, "registration_id": reg})
        self.bundle = ok({"op": "generate_bundle", "actor": self.B, "signed_prekey_id": 1,
                          "kyber_prekey_id": 2, "prekey_id": 3})["bundle"]
        ok({"op": "process_bundle", "actor": self.A, "remote": self.B, "bundle": self.bundle})
        first = ok({"op": "encrypt", "actor": self.A, "remote": self.B, "plaintext": "AA=="})
        ok({"op": "decrypt", "actor": self.B, "remote": self.A, "message_type": "prekey",
            "ciphertext": first["ciphertext"]})
        self.first = first["ciphertext"]
        self.whisper = ok({"op": "encrypt", "actor": self.B, "remote": self.A,
                           "plaintext": "AQ=="})["ciphertext"]
        self.skdm = ok({"op": "sender_key_distribution", "actor": self.A,
                        "distribution_id": self.D})["skdm"]
        ok({"op": "process_sender_key_distribution", "actor": self.B, "sender": self.A,
            "skdm": self.skdm})
        self.group = ok({"op": "group_encrypt", "actor": self.A, "distribution_id": self.D,
                         "plaintext": "Ag=="})["ciphertext"]
        self.pristine = self.snapshot()

    def _ok(self, request: dict[str, Any]) -> dict[str, Any]:
        response = self.peer.handle({"id": 0, **request})
        assert response["ok"], response
        return response

    def snapshot(self) -> dict[Any, Any]:
        return {address: (_capture(actor.store), _sender_keys_snapshot(actor.sender_keys))
                for address, actor in self.peer._actors.items()}

    def restore(self) -> None:
        for address in list(self.peer._actors):
            if address not in self.pristine:
                del self.peer._actors[address]
        for address, (store, sender_keys) in self.pristine.items():
            actor = self.peer._actors[address]
            _restore(actor.store, store)
            actor.sender_keys._records = {  # type: ignore[assignment]
                k: sk.SenderKeyRecord.deserialize(v) for k, v in sender_keys.items()}

    def seeds(self) -> list[bytes]:
        a, b, d = self.A, self.B, self.D
        requests: list[dict[str, Any]] = [
            {"op": "decrypt", "actor": a, "remote": b, "message_type": "whisper",
             "ciphertext": self.whisper},
            {"op": "decrypt", "actor": b, "remote": a, "message_type": "prekey",
             "ciphertext": self.first},
            {"op": "process_bundle", "actor": a, "remote": b, "bundle": self.bundle},
            {"op": "group_decrypt", "actor": b, "sender": a, "ciphertext": self.group},
            {"op": "process_sender_key_distribution", "actor": b, "sender": a,
             "skdm": self.skdm},
            {"op": "encrypt", "actor": a, "remote": b, "plaintext": "aGVsbG8="},
            {"op": "fingerprint", "actor": a, "remote": b, "local_id": "YQ==",
             "remote_id": "Yg==", "iterations": 2},
            {"op": "trust", "actor": a, "remote": b, "identity_key": self.bundle["identity_key"]},
            {"op": "create_actor", "actor": {"name": "c", "device_id": 2},
             "registration_id": 9},
            {"op": "generate_bundle", "actor": a, "signed_prekey_id": 5, "kyber_prekey_id": 6,
             "prekey_id": None, "kem": "mlkem1024"},
            {"op": "has_session", "actor": a, "remote": b},
            {"op": "group_encrypt", "actor": a, "distribution_id": d, "plaintext": "Ag=="},
        ]
        return [json.dumps({"id": i, **r}).encode() for i, r in enumerate(requests)]


_PEER: PeerHarness | None = None


def peer_harness() -> PeerHarness:
    global _PEER
    if _PEER is None:
        _PEER = PeerHarness()
    return _PEER


@target("peer_request", "cipherpost.interop.peer.Peer.handle_line (one JSON request line)",
        "an error answer other than internal_error; no state change when refused",
        lambda: peer_harness().seeds())
def peer_request(data: bytes) -> None:
    harness = peer_harness()
    line = data.decode("utf-8", "replace")
    before = harness.snapshot()
    with contextlib.redirect_stderr(io.StringIO()):  # the peer prints internal errors
        response = harness.peer.handle_line(line)
    if response is None:
        assert not line.strip()
        return
    if not response["ok"]:
        assert harness.snapshot() == before, f"a refused request changed state: {response}"
        error = response["error"]
        assert error["kind"] != "internal_error", response
        return
    harness.restore()



# The newer parsers' targets register themselves here (they use the helpers above).
from . import targets_accounts, targets_protocol, targets_receive  # noqa: E402,F401
