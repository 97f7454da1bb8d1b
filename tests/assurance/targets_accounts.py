"""Fuzz targets of the account data that moves between devices: server-stored history
(sealed entries and the relay's log pages), export files, recovery blobs and keys, the
one-time archive of a device link, and the linking messages (link URIs, provisioning
envelopes, typed-code steps).

Registered in ``targets.TARGETS`` (``targets.py`` imports this module). Most targets have
two modes, picked by a selector byte: the bytes *as received* (from the relay, or a file),
and the plaintext *sealed by someone who holds the key* (another device of the account,
or the maker of a file), which reaches the protobuf parsers and what consumes their
result behind the authenticated encryption. Accepted input that writes to the local
store is undone after each run; refused input must leave the store byte for byte as it
was (compared by an SQL dump).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import io
import json
import random
import shutil
import sqlite3
import struct
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cipherpost.client import archive, export, history, linking, recovery
from cipherpost.client.devices import adopt
from cipherpost.client.errors import ClientError
from cipherpost.client.padding import pad
from cipherpost.client.proto.app_pb2 import (
    DataMessage,
    ExportRecord,
    HistoryArchivePart,
    HistoryEvent,
    HistoryMessage,
    MessageRef,
    ProvisionEnvelope,
    ProvisionMessage,
    Reaction,
    RecoveryBlob,
)
from cipherpost.client.store.crypto import TEST_PARAMS, Argon2Params
from cipherpost.client.store.database import Store
from cipherpost.protocol import IdentityKeyPair, ProtocolError

from . import corpus as c
from .targets import _split, target

_rng = random.Random(303).randbytes
NOW_MS = c.NOW * 1000

# -- a local store to replay into, restored after every accepted input -----------------------

_DIR = Path(tempfile.mkdtemp(prefix="cipherpost-fuzz-"))
STORE = Store.create(_DIR / "fuzz.db", passphrase="fuzz", params=TEST_PARAMS)
STORE._db.execute("PRAGMA synchronous = OFF")  # a scratch store: no fsync per input
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)
STORE.set_identity(c.ALICE.store.get_identity_key_pair(), 1)
KEYS = history.Keys(_rng(32), {7: (_rng(32), NOW_MS - 1000), 9: (_rng(32), NOW_MS)})
history.set_keys(STORE, KEYS, on=True)
_TEXT = DataMessage(timestamp=NOW_MS, text="hello, history")
_OWN = HistoryMessage(conversation="bob-account", author="alice-account", author_device=1,
                      received_at=NOW_MS, outgoing=True, data=_TEXT)
_THEIRS = HistoryMessage(conversation="bob-account", author="bob-account", author_device=2,
                         received_at=NOW_MS + 5,
                         data=DataMessage(timestamp=NOW_MS + 5, text="hi", expire_timer=60))
with STORE.transaction():
    history._apply(STORE, b"", HistoryEvent(message=_OWN))
_PRISTINE = sqlite3.connect(":memory:")
STORE._db.backup(_PRISTINE)


def _dump() -> list[str]:
    return list(STORE._db.iterdump())


_PRISTINE_DUMP = _dump()


def _reset() -> None:
    """Back to the pristine store (after an accepted input wrote to it)."""
    _PRISTINE.backup(STORE._db)


def _unchanged(what: str) -> None:
    assert _dump() == _PRISTINE_DUMP, f"a refused {what} changed the local store"


#: Events of every kind: a message, an edit, a reaction, a group state.
EVENTS = [
    HistoryEvent(message=_THEIRS),
    HistoryEvent(change=HistoryMessage(
        conversation="bob-account", author="alice-account", received_at=NOW_MS + 9,
        data=DataMessage(timestamp=NOW_MS + 9, text="hello, edited",
                         edit=MessageRef(author="alice-account", timestamp=NOW_MS)))),
    HistoryEvent(change=HistoryMessage(
        conversation="bob-account", author="bob-account", received_at=NOW_MS + 10,
        data=DataMessage(timestamp=NOW_MS + 10, reaction=Reaction(
            emoji="+1", target=MessageRef(author="alice-account", timestamp=NOW_MS))))),
    HistoryEvent(group_state=c.GROUP_STATE0.state_bytes),
]
EVENT_BYTES = [e.SerializeToString() for e in EVENTS]
NAME = bytes(range(16))


def _seal_history(plaintext: bytes, epoch: int = 9, name: bytes = NAME) -> bytes:
    """history.seal of raw plaintext (what a device of the account could upload)."""
    head = struct.pack(">I", epoch)
    nonce = _rng(12)
    return bytes([history.BLOB_VERSION]) + head + nonce + AESGCM(
        history._enc_key(KEYS.epochs[epoch][0])).encrypt(nonce, pad(plaintext), name + head)


def _undone(run: Any) -> Any:
    """Run ``run()`` on the store, then put the store back as it was."""
    try:
        return run()
    finally:
        _reset()


# -- server-stored history ------------------------------------------------------------------


@target("history_blob", "history.open_blob of an entry of the relay's log, then its replay "
        "into the store; also entries sealed by a device of the account (valid AES-GCM over "
        "fuzzed plaintext)", "HistoryError; the store unchanged when refused",
        lambda: [b"\x00" + _seal_history(e) for e in EVENT_BYTES]
        + [b"\x01" + e for e in EVENT_BYTES])
def history_blob(data: bytes) -> None:
    selector, payload = _split(data)
    blob = _seal_history(payload) if selector & 1 else payload
    try:
        event = history.open_blob(KEYS, NAME, blob)
    except history.HistoryError:
        _unchanged("history entry")
        return

    def replay() -> str:
        with STORE.transaction():
            return history._apply(STORE, NAME, event)
    assert _undone(replay) in ("messages", "known", "changes", "groups", "unreadable")


class _Relay:
    """A relay that answers ``GET /v1/history`` with the fuzzed page, then an empty one."""

    def __init__(self, page: Any) -> None:
        self.pages = [page, {"entries": [], "more": False}]

    async def request(self, method: str, path: str, **_kwargs: Any) -> Any:
        assert method == "GET" and path.startswith("/v1/history?")
        return self.pages.pop(0) if self.pages else {"entries": [], "more": False}


def _run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Drive a coroutine that never really waits (the fake relay answers at once)."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    raise AssertionError("the coroutine waited on something")


def history_page(entries: list[tuple[str, bytes | None]], more: bool = False) -> bytes:
    return json.dumps({"entries": [
        {"seq": i + 1, "event_id": name, "blob": None if blob is None
         else base64.b64encode(blob).decode()} for i, (name, blob) in enumerate(entries)],
        "more": more}).encode()


HISTORY_PAGES = [
    history_page([(NAME.hex(), _seal_history(e)) for e in EVENT_BYTES]),
    history_page([(NAME.hex(), None), ("00" * 16, _seal_history(EVENT_BYTES[0]))], more=True),
]


@target("history_page", "history.download of a page of the relay's log (JSON: entries of "
        "seq, event id and sealed blob), replayed into the store",
        "HistoryError; the store unchanged when refused",
        lambda: list(HISTORY_PAGES))
def history_download(data: bytes) -> None:
    try:
        page = json.loads(data)
    except (ValueError, RecursionError):
        return  # not JSON: the relay client refuses it before download sees it
    try:
        replayed = _undone(lambda: _run(history.download(_Relay(page), STORE)))  # type: ignore[arg-type]
    except history.HistoryError:
        _unchanged("history page")
        return
    assert isinstance(replayed, history.Replayed)


# -- export files -----------------------------------------------------------------------------

EXPORT_PASSPHRASE = "correct horse battery staple"
_EXPORT_SALT, _EXPORT_PREFIX = _rng(16), _rng(8)
_EXPORT_HEADER = export._HEADER.pack(export.MAGIC, export.VERSION, TEST_PARAMS.time_cost,
                                     TEST_PARAMS.memory_kib, TEST_PARAMS.parallelism,
                                     _EXPORT_SALT, _EXPORT_PREFIX)
_EXPORT_AEAD = AESGCM(export._key(EXPORT_PASSPHRASE, _EXPORT_SALT, TEST_PARAMS))
ACCOUNT = RecoveryBlob(account_id="alice-account",
                       identity_key_pair=c.ALICE.store.get_identity_key_pair().serialize(),
                       username="alice", history_enabled=True,
                       history_keys=KEYS.to_proto(), group_states=[c.GROUP_STATE0.state_bytes])
ACCOUNT.contacts.add(account_id="bob-account", username="bob",
                     identity_key=c.BOB.store.get_identity_key_pair().public.serialize(),
                     verified=True)
SECRETS = recovery.Secrets.derive(bytes(32))


def export_file(records: list[bytes]) -> bytes:
    """An export file of these serialized records (export.export_account's format)."""
    out = [_EXPORT_HEADER]
    for counter, record in enumerate(records):
        position = struct.pack(">IB", counter, counter == len(records) - 1)
        sealed = _EXPORT_AEAD.encrypt(_EXPORT_PREFIX + position[:4], record,
                                      _EXPORT_HEADER + position)
        out.append(struct.pack(">I", len(sealed)) + sealed)
    return b"".join(out)


EXPORT_RECORDS = [ExportRecord(account=ACCOUNT).SerializeToString(),
                  ExportRecord(recovery_secrets=SECRETS.to_bytes()).SerializeToString(),
                  *(ExportRecord(event=e).SerializeToString() for e in EVENTS)]
#: Argon2id cost a fuzzed header may ask for before the target skips the input: the
#: reader allows up to 4 GiB and 64 passes (see docs/assurance.md, open findings).
_EXPORT_COST = (2, 1024)


def _import(records: list[ExportRecord]) -> None:
    """What import_account does with the records before it talks to the relay."""
    if len(records) < 2 or records[0].WhichOneof("body") != "account" \
            or records[1].WhichOneof("body") != "recovery_secrets":
        raise export.ExportError("the export file does not start with an account")
    blob = records[0].account
    recovery.Secrets.from_bytes(records[1].recovery_secrets).release()
    _adopt(blob.identity_key_pair, blob)
    events = [r.event for r in records[2:] if r.WhichOneof("body") == "event"]
    for event in events:
        history.replay_event(STORE, event)


def _adopt(identity_key_pair: bytes, carrier: RecoveryBlob | ProvisionMessage) -> None:
    """What a restored, imported or linked device takes over (recovery._join and _finish,
    devices._join), into a store that holds no history keys yet: the identity key pair,
    the contacts and groups (adopt), the history keys.

    Raises: ClientError (HistoryError is one) as those functions do; a ProtocolError of
    the identity key pair comes out as ClientError (LinkError for a link)."""
    try:
        IdentityKeyPair.deserialize(identity_key_pair)
    except ProtocolError:
        raise ClientError("malformed identity key pair") from None
    STORE._db.execute("DELETE FROM secrets WHERE name = 'history_keys'")
    STORE.set_meta("history_enabled", "0")
    client = SimpleNamespace(store=STORE, account_id="alice-account")
    adopt(client, carrier.contacts, carrier.group_states)  # type: ignore[arg-type]
    if carrier.HasField("history_keys"):
        history.set_keys(STORE, history.Keys.from_proto(carrier.history_keys),
                         on=carrier.history_enabled)


@target("export_file", "export.read_export of a file (header, Argon2id parameters, sealed "
        "chunks), then what import_account does with its records before joining; also "
        "records sealed by the file's maker (fuzzed plaintext as the first or second of "
        "three chunks)",
        "ExportError; ClientError (HistoryError) for unusable records; the store unchanged "
        "when refused",
        lambda: [b"\x00" + export_file(EXPORT_RECORDS), b"\x00" + export_file(EXPORT_RECORDS[:2]),
                 *(b"\x01" + r for r in EXPORT_RECORDS), b"\x03" + EXPORT_RECORDS[0]])
def export_read(data: bytes) -> None:
    selector, payload = _split(data)
    if selector & 1:
        records = [EXPORT_RECORDS[0], EXPORT_RECORDS[1], EXPORT_RECORDS[2]]
        records[0 if selector & 2 else 1] = payload
        payload = export_file(records)
    if len(payload) >= export._HEADER.size:
        _magic, _version, t, m, _p, _salt, _prefix = export._HEADER.unpack(
            payload[:export._HEADER.size])
        if t > _EXPORT_COST[0] or m > _EXPORT_COST[1]:
            return  # a costly key derivation: see _EXPORT_COST
    try:
        records = export._read(io.BytesIO(payload), EXPORT_PASSPHRASE, TEST_PARAMS)
    except export.ExportError:
        _unchanged("export file")
        return
    assert records

    def consume() -> None:
        with STORE.transaction():
            _import(records)
    with contextlib.suppress(ClientError):  # ExportError and HistoryError are ones
        _undone(consume)


# -- recovery ---------------------------------------------------------------------------------

RECOVERY_KEY = bytes(range(32))
RECOVERY = recovery.Secrets.derive(RECOVERY_KEY)


def _recovery_seal(plaintext: bytes) -> bytes:
    nonce = _rng(12)
    return nonce + AESGCM(RECOVERY.seal_key).encrypt(nonce, plaintext,
                                                     recovery._BLOB_AAD + RECOVERY.lookup_id)


def _consume_blob(blob: RecoveryBlob) -> None:
    with STORE.transaction():
        _adopt(blob.identity_key_pair, blob)


@target("recovery_blob", "recovery.Secrets.open of the blob the relay releases, then what "
        "restore takes over from it (identity, contacts, groups, history keys); also blobs "
        "sealed under the recovery key (fuzzed plaintext)",
        "ClientError at open and while taking over; the store unchanged when refused",
        lambda: [b"\x00" + _recovery_seal(ACCOUNT.SerializeToString()),
                 b"\x01" + ACCOUNT.SerializeToString()])
def recovery_blob(data: bytes) -> None:
    selector, payload = _split(data)
    sealed = _recovery_seal(payload) if selector & 1 else payload
    try:
        blob = RECOVERY.open(sealed)
    except ClientError:
        _unchanged("recovery blob")
        return
    with contextlib.suppress(ClientError):  # HistoryError is one
        _undone(lambda: _consume_blob(blob))


@target("recovery_key_text", "recovery.parse_key of a typed recovery key",
        "RecoveryKeyError", lambda: [
            recovery.format_key(RECOVERY_KEY).encode(),
            recovery.format_key(RECOVERY_KEY).lower().replace(" ", "-").encode()])
def recovery_key_text(data: bytes) -> None:
    try:
        key = recovery.parse_key(data.decode("utf-8", "replace"))
    except recovery.RecoveryKeyError:
        return
    assert len(key) == 32 and recovery.parse_key(recovery.format_key(key)) == key


@target("passphrase_params", "recovery.relay_params of the relay's answer for a recovery "
        "passphrase (JSON: Argon2id parameters and salt)",
        "ClientError; the parameters are within [the local floor, MAX_PARAMS]",
        lambda: [json.dumps({"params": Argon2Params().encode(),
                             "salt": base64.b64encode(bytes(16)).decode()}).encode(),
                 json.dumps({"params": "4,131072,4",
                             "salt": base64.b64encode(bytes(32)).decode()}).encode()])
def passphrase_params(data: bytes) -> None:
    try:
        answer = json.loads(data)
    except (ValueError, RecursionError):
        return  # not JSON: the relay client refuses it first
    floor, ceiling = Argon2Params(), recovery.MAX_PARAMS
    try:
        params, salt = recovery.relay_params(answer, floor)
    except ClientError:
        return
    assert floor.time_cost <= params.time_cost <= ceiling.time_cost
    assert floor.memory_kib <= params.memory_kib <= ceiling.memory_kib
    assert 1 <= params.parallelism <= ceiling.parallelism
    assert params.memory_kib >= 8 * params.parallelism and 16 <= len(salt) <= 32


# -- the one-time archive of a device link --------------------------------------------------

ARCHIVE_KEY = _rng(32)
ARCHIVE_PART = HistoryArchivePart(events=EVENTS).SerializeToString()


def _archive_seal(plaintext: bytes, index: int = 0, count: int = 2) -> bytes:
    return bytes([archive.VERSION]) + AESGCM(ARCHIVE_KEY).encrypt(
        struct.pack(">4xQ", index), pad(plaintext), archive._aad(index, count))


@target("archive_part", "archive.open_part of a downloaded part, then its replay into the "
        "store; also parts sealed under the archive key (fuzzed plaintext)",
        "ArchiveError; the store unchanged when refused",
        lambda: [b"\x00" + _archive_seal(ARCHIVE_PART), b"\x01" + ARCHIVE_PART])
def archive_part(data: bytes) -> None:
    selector, payload = _split(data)
    blob = _archive_seal(payload) if selector & 1 else payload
    try:
        part = archive.open_part(ARCHIVE_KEY, 0, 2, blob)
    except archive.ArchiveError:
        _unchanged("archive part")
        return

    def replay() -> int:
        with STORE.transaction():
            return archive.replay(STORE, part.events)
    assert 0 <= _undone(replay) <= len(part.events)


# -- linking ----------------------------------------------------------------------------------

_LINK_PRIVATE = X25519PrivateKey.from_private_bytes(_rng(32))
LINK_REQUEST = linking.LinkRequest("https://relay.example", "mailbox-address",
                                   _LINK_PRIVATE.public_key().public_bytes_raw(), _rng(16))
PROVISION = ProvisionMessage(
    account_id="alice-account",
    identity_key_pair=c.ALICE.store.get_identity_key_pair().serialize(), link_code="code",
    username="alice", group_states=[c.GROUP_STATE0.state_bytes],
    history_keys=KEYS.to_proto(), history_enabled=True)
PROVISION.contacts.add(account_id="bob-account", username="bob",
                       identity_key=c.BOB.store.get_identity_key_pair().public.serialize())


@target("link_text", "linking.LinkRequest.parse of a scanned link URI, and "
        "linking.normalize_code of a typed link code", "LinkError",
        lambda: [LINK_REQUEST.uri().encode(), b"AB12-CD34", b"ab12 cd3l"])
def link_text(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        request = linking.LinkRequest.parse(text)
    except linking.LinkError:
        pass
    else:
        assert len(request.public_key) == 32 and len(request.secret) == linking.SECRET_BYTES
    try:
        code = linking.normalize_code(text)
    except linking.LinkError:
        return
    assert linking.normalize_code(linking.format_code(code)) == code


def _provision_seal(plaintext: bytes) -> bytes:
    """linking.seal of raw plaintext (what the existing device could send)."""
    ephemeral = X25519PrivateKey.from_private_bytes(_rng(32))
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(LINK_REQUEST.public_key))
    key, nonce = linking._keys(shared, LINK_REQUEST)
    return ProvisionEnvelope(
        version=linking.VERSION, public_key=ephemeral.public_key().public_bytes_raw(),
        ciphertext=AESGCM(key).encrypt(nonce, plaintext, LINK_REQUEST.address.encode())
    ).SerializeToString()


def _consume_provision(message: ProvisionMessage) -> None:
    with STORE.transaction():
        _adopt(message.identity_key_pair, message)


@target("provision_envelope", "linking.open_envelope of what arrives in a link mailbox, then "
        "what the new device takes over before registering (identity, contacts, groups, "
        "history keys); also messages sealed to the link request (fuzzed plaintext)",
        "LinkError; ClientError while taking over; the store unchanged when refused",
        lambda: [b"\x00" + linking.seal(LINK_REQUEST, PROVISION),
                 b"\x01" + PROVISION.SerializeToString()])
def provision_envelope(data: bytes) -> None:
    selector, payload = _split(data)
    envelope = _provision_seal(payload) if selector & 1 else payload
    try:
        message = linking.open_envelope(LINK_REQUEST, _LINK_PRIVATE, envelope)
    except linking.LinkError:
        _unchanged("provisioning message")
        return
    with contextlib.suppress(ClientError):  # HistoryError is one
        _undone(lambda: _consume_provision(message))


_NEW = X25519PrivateKey.from_private_bytes(_rng(32))
_EXISTING = X25519PrivateKey.from_private_bytes(_rng(32))
_NEW_PUBLIC = _NEW.public_key().public_bytes_raw()
_EXISTING_PUBLIC = _EXISTING.public_key().public_bytes_raw()
CODE_KEYS = linking.CodeLinkKeys(_NEW, _EXISTING_PUBLIC, new_public=_NEW_PUBLIC,
                                 existing_public=_EXISTING_PUBLIC, address="code-mailbox")
_FIELDS = ("commitment", "public_key", "confirm", "sealed")


@target("code_link_step", "linking.decode_step of each message of the typed-code exchange "
        "(a selector byte says which is expected), then its use: the commitment check, the "
        "X25519 agreement with the peer's key, the confirmation tag, opening the sealed "
        "provisioning message", "LinkError",
        lambda: [bytes((0,)) + linking.encode_step("commitment", linking.commitment(
            _NEW_PUBLIC)),
                 bytes((1,)) + linking.encode_step("public_key", _EXISTING_PUBLIC),
                 bytes((2,)) + linking.encode_step("confirm", CODE_KEYS.confirm_tag()),
                 bytes((3,)) + linking.encode_step("sealed", CODE_KEYS.seal(PROVISION))])
def code_link_step(data: bytes) -> None:
    selector, payload = _split(data)
    field = _FIELDS[selector % len(_FIELDS)]
    try:
        value = linking.decode_step(payload, field)
        if field == "commitment":
            linking.check_commitment(value, _NEW_PUBLIC)
        elif field == "public_key":
            keys = linking.CodeLinkKeys(_NEW, value, new_public=_NEW_PUBLIC,
                                        existing_public=value, address="code-mailbox")
            assert len(keys.sas) == 7
        elif field == "confirm":
            CODE_KEYS.check_confirm(value)
        else:
            message = CODE_KEYS.open(value)
            assert message.account_id == PROVISION.account_id
    except linking.LinkError:
        return

