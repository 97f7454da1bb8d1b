"""Cryptographic hygiene: no secret in any log line or repr; MACs compared in constant
time; randomness only from the OS CSPRNG.

The log test runs the relay (uvicorn in a thread of this process) and SDK clients through
registration, linking, 1:1 and group messages, an attachment, the WebSocket and a few
refused requests with every logger at DEBUG, then pulls the secrets out of the clients'
stores (identity and prekey private keys, Kyber seeds, session root and chain keys,
ratchet private keys, sender-key chain and signing keys, tokens, link codes, attachment
keys, the passphrase) and looks for each, in every encoding ``scan.py`` knows, in all that
was logged. Figures go to ``build/assurance/logscan/``.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import io
import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cipherpost.client import Client
from cipherpost.client import events as ev
from cipherpost.client.api import Credentials, RelayApi
from cipherpost.client.attachments import encrypt as encrypt_attachment
from cipherpost.client.store.crypto import LocalKey
from cipherpost.protocol import (
    IdentityKeyPair,
    InMemoryProtocolStore,
    KemKeyPair,
    KeyPair,
    SessionRecord,
)
from cipherpost.protocol import sender_keys as sk
from cipherpost.protocol.address import ProtocolAddress
from cipherpost.protocol.prekeys import KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord
from tests.client.conftest import Devices, ThreadedRelay
from tests.conftest import ROOT

from . import corpus as c
from . import results
from .scan import Scan

PASSPHRASE = "correct horse"  # what tests.client.conftest.Devices uses
SECRET_KINDS = ("identity private key", "token", "signed prekey", "kyber seed", "prekey",
                "root key", "sending chain key", "ratchet private key", "receiving chain",
                "sender key", "link code", "attachment key", "passphrase")


# -- collecting every log record ----------------------------------------------------------------


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []
        self.names: list[str] = []
        self.loggers: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        self.loggers.add(record.name)
        text = self.format(record)  # message, arguments, exception and stack text
        self.lines.append(text + repr(record.args))
        self.names.append(record.name)


@contextlib.contextmanager
def everything_logged() -> Iterator[Capture]:
    capture = Capture()
    root = logging.getLogger()
    saved = root.level, {name: logging.getLogger(name).level
                         for name in list(logging.root.manager.loggerDict)}
    # Loggers that do not propagate (uvicorn's: the relay's own handlers) are captured
    # where their records stop, so the relay's side of a run is scanned too.
    stops = [logger for name in saved[1]
             if isinstance(logger := logging.getLogger(name), logging.Logger)
             and not logger.propagate]
    for logger in (root, *stops):
        logger.addHandler(capture)
    root.setLevel(logging.DEBUG)
    for name in saved[1]:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        for logger in (root, *stops):
            logger.removeHandler(capture)
        root.setLevel(saved[0])
        for name, level in saved[1].items():
            logging.getLogger(name).setLevel(level)


# -- what counts as a secret ------------------------------------------------------------------


def _secrets_of(client: Client, label: str) -> dict[str, bytes]:
    store = client.store
    db = store._db
    out: dict[str, bytes] = {}
    identity = store.get_identity_key_pair()
    out[f"{label} identity private key"] = identity.private.serialize()
    out[f"{label} token"] = client.credentials.token.encode()
    for (key_id,) in db.execute("SELECT id FROM prekeys"):
        out[f"{label} prekey {key_id}"] = store.get_pre_key(key_id).key_pair.private.serialize()
    for (key_id,) in db.execute("SELECT id FROM signed_prekeys"):
        out[f"{label} signed prekey {key_id}"] = (
            store.get_signed_pre_key(key_id).key_pair.private.serialize())
    for (key_id,) in db.execute("SELECT id FROM kyber_prekeys"):
        out[f"{label} kyber seed {key_id}"] = store.get_kyber_pre_key(key_id).key_pair.secret
    for account, device in db.execute("SELECT account, device FROM sessions"):
        record = store.load_session(ProtocolAddress(account, device))
        for i, state in enumerate(record.states() if record else []):
            where = f"{label} session {account[:8]}.{device} state {i}"
            out[f"{where} root key"] = state.root_key
            if state.sender_chain is not None:
                out[f"{where} sending chain key"] = state.sender_chain.chain_key
                out[f"{where} ratchet private key"] = (
                    state.sender_chain.ratchet.private.serialize())
            for j, chain in enumerate(state.receiver_chains):
                out[f"{where} receiving chain {j}"] = chain.chain_key
    for account, device, dist in db.execute(
            "SELECT account, device, distribution_id FROM sender_keys"):
        record = store.load_sender_key(ProtocolAddress(account, device), uuid.UUID(bytes=dist))
        for i, s in enumerate(getattr(record, "states", [])):
            where = f"{label} sender key {account[:8]}.{device} {i}"
            out[f"{where} chain key"] = s.chain_key
            if s.signing_private is not None:
                out[f"{where} signing private key"] = s.signing_private.serialize()
    return out


async def _flows(devices: Devices, relay: ThreadedRelay, found: dict[str, bytes]) -> None:
    alice = await devices.register("alice")
    code = await alice.create_link_code()
    found["link code"] = code.encode()
    alice2 = await devices.link(alice, "alice laptop")
    bob, carol = await devices.register("bob"), await devices.register("carol")
    await alice.receive()
    await alice.send_text("bob", "hello bob")
    await bob.receive()
    await bob.send_text("alice", "hello alice")
    await alice.receive()
    await alice2.receive()
    group = await alice.create_group("the group", ["bob", "carol"])
    for member in (bob, carol, alice2):
        await member.receive()
    await alice.send_text(group.id, "hello group")
    await bob.send_text(group.id, "hello from bob")
    for member in (alice, alice2, carol):
        await member.receive()
    pointer = await alice.upload_attachment(b"attached bytes" * 100, file_name="a.bin")
    found["attachment key"] = pointer.key
    await alice.send_text("bob", "a file", attachments=[pointer])
    for event in await bob.receive():
        if isinstance(event, ev.Message) and event.attachments:
            await bob.download(event.attachments[0])

    # The WebSocket: bob listens while carol writes.
    async def first_message() -> None:
        async for event in bob.listen(reconnect=False):
            if isinstance(event, ev.Message):
                return

    listener = asyncio.create_task(first_message())
    await asyncio.sleep(0.3)
    await carol.send_text("bob", "over the socket")
    await asyncio.wait_for(listener, 20)

    # Refused requests: a wrong token, a token of a removed device, a garbage body.
    async with httpx.AsyncClient(base_url=relay.url) as http:
        await http.get("/v1/accounts/me", headers={"Authorization": "Bearer " + "A" * 43})
        await http.put("/v1/keys", content=b"{not json",
                       headers={"Authorization": f"Bearer {bob.credentials.token}"})
        await http.put("/v1/messages/nobody", json={"timestamp": 1, "messages": []},
                       headers={"Authorization": f"Bearer {carol.credentials.token}"})
    for label, client in (("alice", alice), ("alice2", alice2), ("bob", bob),
                          ("carol", carol)):
        found.update(_secrets_of(client, label))
    await alice.api.remove_device(alice2.device_id)
    async with httpx.AsyncClient(base_url=relay.url) as http:
        await http.get("/v1/messages",
                       headers={"Authorization": f"Bearer {alice2.credentials.token}"})
    await alice.receive()


def test_no_secret_in_the_log_output(tmp_path: Path) -> None:
    found: dict[str, bytes] = {"passphrase": PASSPHRASE.encode()}
    stderr = io.StringIO()
    with everything_logged() as capture, contextlib.redirect_stderr(stderr):
        relay = ThreadedRelay(tmp_path / "relay")
        (tmp_path / "relay").mkdir()
        relay.start()
        devices = Devices(tmp_path, relay)

        async def run() -> None:
            try:
                await _flows(devices, relay, found)
            finally:
                await devices.close()

        try:
            asyncio.run(run())
        finally:
            relay.stop()
    scan = Scan(found)
    for i, line in enumerate(capture.lines):
        scan.text(f"log record {i}", line)
    scan.text("stderr", stderr.getvalue())
    kinds = Counter(next((kind for kind in SECRET_KINDS if kind in name), name)
                    for name in found)
    summary = {"name": "whole-run", "log_records": len(capture.lines),
               "loggers": sorted(capture.loggers), "secrets": len(found),
               "secret_kinds": dict(sorted(kinds.items())), **scan.summary()}
    contexts = []
    for where, secret, _form in scan.hits[:5]:  # the offending lines, the secret masked
        if where.startswith("log record "):
            line = capture.lines[int(where.split()[-1])]
            for needle in scan.needles.values():
                line = line.replace(needle.decode("latin-1"), "<SECRET>")
            contexts.append(f"{secret}: {line[:400]}")
    summary["hit_context"] = contexts
    results.write("logscan", "whole-run", summary)
    # The run logged for real, from the relay and the SDK's HTTP stack alike.
    assert len(capture.lines) > 100 and "cipherpost.server" in capture.loggers
    assert any(name.startswith("httpx") or name.startswith("httpcore")
               for name in capture.loggers), capture.loggers
    assert len(found) > 50 and any("root key" in k for k in found)
    assert not scan.hits, scan.hits[:10]


# -- reprs ----------------------------------------------------------------------------------


def _repr_cases() -> list[tuple[str, Any, list[bytes]]]:
    identity = IdentityKeyPair.generate(c.rng)
    pair = KeyPair.generate(c.rng)
    kem = KemKeyPair.generate(c.rng)
    prekey = PreKeyRecord.generate(1, c.rng)
    signed = SignedPreKeyRecord.generate(2, identity, 0, c.rng)
    kyber = KyberPreKeyRecord.generate(3, identity, 0, c.rng)
    record = SessionRecord.deserialize(c.RICH_RECORD)
    state = record.current
    assert state is not None and state.sender_chain is not None
    sender_record = sk.SenderKeyRecord.deserialize(c.OWN_SENDER_KEY_RECORD)
    sender_state = sender_record.states[0]
    assert sender_state.signing_private is not None
    store = InMemoryProtocolStore(identity, 1)
    local_key_bytes = bytes(range(32))
    attachment = encrypt_attachment(b"x" * 100)
    chain = state.receiver_chains[0]
    state_secrets = [state.root_key, state.sender_chain.chain_key,
                     state.sender_chain.ratchet.private.serialize(), chain.chain_key,
                     *chain.skipped.values()]
    return [
        ("PrivateKey", pair.private, [pair.private.serialize()]),
        ("KeyPair", pair, [pair.private.serialize()]),
        ("IdentityKeyPair", identity, [identity.private.serialize()]),
        ("KemKeyPair", kem, [kem.secret]),
        ("PreKeyRecord", prekey, [prekey.key_pair.private.serialize()]),
        ("SignedPreKeyRecord", signed, [signed.key_pair.private.serialize()]),
        ("KyberPreKeyRecord", kyber, [kyber.key_pair.secret]),
        ("SessionState", state, state_secrets),
        ("SessionRecord", record, state_secrets),
        ("SenderChain", state.sender_chain, state_secrets[1:3]),
        ("ReceiverChain", chain, [chain.chain_key, *chain.skipped.values()]),
        ("SenderKeyState", sender_state, [sender_state.chain_key,
                                          sender_state.signing_private.serialize()]),
        ("SenderKeyRecord", sender_record, [sender_state.chain_key]),
        ("InMemoryProtocolStore", store, [identity.private.serialize()]),
        ("LocalKey", LocalKey(local_key_bytes), [local_key_bytes]),
        ("Credentials", Credentials("acct", 1, "secret-token-" + "x" * 30),
         [b"secret-token-" + b"x" * 30]),
        ("RelayApi", RelayApi("http://127.0.0.1:1", token="tok-" + "y" * 40),
         [b"tok-" + b"y" * 40]),
        ("EncryptedAttachment", attachment, [attachment.key]),
        ("events.Attachment", ev.Attachment("id", attachment.key, attachment.digest, 100,
                                            "text/plain", "f", ""), [attachment.key]),
    ]


REPR_CASES = _repr_cases()


@pytest.mark.parametrize(("name", "obj", "secrets"), REPR_CASES,
                         ids=[case[0] for case in REPR_CASES])
def test_no_secret_in_a_repr(name: str, obj: Any, secrets: list[bytes]) -> None:
    assert secrets and all(secrets)
    scan = Scan({f"{name} secret {i}": s for i, s in enumerate(secrets)})
    for text in (repr(obj), str(obj), f"{obj!r:}", repr([obj]), repr({"k": obj})):
        scan.text(name, text)
    assert not scan.hits, (name, repr(obj)[:300])


def test_no_secret_in_the_repr_of_a_store_or_a_client(tmp_path: Path) -> None:
    relay = ThreadedRelay(tmp_path / "relay")
    (tmp_path / "relay").mkdir()
    relay.start()
    devices = Devices(tmp_path, relay)

    async def run() -> tuple[list[str], dict[str, bytes]]:
        try:
            alice = await devices.register("alice")
            bob = await devices.register("bob")
            attachment = await alice.upload_attachment(b"x" * 100, file_name="x")
            await alice.send_text("bob", "hi", attachments=[attachment])
            received = [e for e in await bob.receive() if isinstance(e, ev.Message)]
            texts = [repr(alice), str(alice), repr(alice.store), repr(alice.api),
                     repr(alice.credentials), repr(bob), repr(bob.store), repr(attachment),
                     repr(received), str(received)]
            secrets = {**_secrets_of(alice, "alice"), **_secrets_of(bob, "bob"),
                       "passphrase": PASSPHRASE.encode(), "attachment key": attachment.key}
            return texts, secrets
        finally:
            await devices.close()

    try:
        texts, secrets = asyncio.run(run())
    finally:
        relay.stop()
    scan = Scan(secrets)
    for text in texts:
        scan.text("repr", text)
    assert not scan.hits, scan.hits


def test_websocket_debug_log_has_no_token(tmp_path: Path) -> None:
    relay = ThreadedRelay(tmp_path / "relay")
    (tmp_path / "relay").mkdir()
    relay.start()
    devices = Devices(tmp_path, relay)
    tokens: dict[str, bytes] = {}

    async def run() -> None:
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            tokens["bob token"] = bob.credentials.token.encode()

            async def first_message() -> None:
                async for event in bob.listen(reconnect=False):
                    if isinstance(event, ev.Message):
                        return

            listener = asyncio.create_task(first_message())
            await asyncio.sleep(0.3)
            await alice.send_text("bob", "over the socket")
            await asyncio.wait_for(listener, 20)
        finally:
            await devices.close()

    with everything_logged() as capture:
        try:
            asyncio.run(run())
        finally:
            relay.stop()
    scan = Scan(tokens)
    for i, line in enumerate(capture.lines):
        scan.text(f"log record {i}", line)
    assert not scan.hits
    # The handshake was logged on both sides (so the scan saw it), its credential redacted.
    redacted = {name for name, line in zip(capture.names, capture.lines, strict=True)
                if "authorization: [redacted]" in line.lower()}
    assert {"websockets.client", "uvicorn.error"} <= redacted, redacted


# -- constant-time comparisons and the source of randomness ----------------------------------

SRC = ROOT / "src" / "cipherpost"
_SECRET_WORDS = ("mac", "digest", "tag", "signature", "token", "hash", "check")


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(), str(p))) for p in sorted(SRC.rglob("*.py"))
            if "proto" not in p.parts]


def _names(node: ast.AST) -> set[str]:
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            out.add(n.id.lower())
        elif isinstance(n, ast.Attribute):
            out.add(n.attr.lower())
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
            out.add(n.func.attr.lower())
    return out


#: Comparisons the name heuristic flags that compare no secret, each with the reason.
NOT_SECRET = {
    "check_server_url(request.server) != client.api.server": "server URLs",
    "change.previous_state_digest != current.digest":
        "the digest of a group state every member holds, inside a signed change",
    "data[pos] != tag": "a protobuf field tag byte",
    "self.mac_sending[:33] == self.mac_sending[33:]": "two public identity keys",
    "link_codes.c.code_hash == code_hash":
        "an SQL lookup by the SHA-256 of a link code (what is compared is the hash of a "
        "random 128-bit code, not the code)",
    "operators.c.token_hash == token_hash":
        "an SQL lookup by the SHA-256 of a random operator token (an index lookup in the "
        "database, not a byte-by-byte compare in Python)",
    "invites.c.code_hash == code_hash": "an SQL lookup by the SHA-256 of a random invite code",
    "device_removals.c.token_hash == token_hash":
        "an SQL lookup by the SHA-256 of a removed device's random token",
    "two_factor_codes.c.code_hash == totp.hash_recovery_code(account_id, normalized)":
        "an SQL lookup by the hash (salted with the account id) of a recovery code; "
        "wrong codes are rate limited",
    "audit_log.c.chain_hash == chain_hash": "audit-chain hashes are public integrity values",
    "digest != bytes(row.digest)": "audit-chain verification: public integrity values",
    "previous != bytes(row.chain_hash)": "audit-chain verification: public integrity values",
    "head_hash != previous": "audit-chain verification: public integrity values",
    "carried.hash_at_backup_head != backup_head":
        "a restore matching audit-chain heads: public integrity values",
}


def _variable_time_compares(tree: ast.Module) -> list[ast.Compare]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
            continue
        operands = [node.left, *node.comparators]
        if any(isinstance(o, ast.Constant) for o in operands):
            continue  # a comparison with a literal (a type byte, None, "") is not a MAC
        if any(isinstance(o, ast.Call) and isinstance(o.func, ast.Name)
               and o.func.id == "len" for o in operands):
            continue  # lengths are public
        if ast.unparse(node) in NOT_SECRET:
            continue
        names = set().union(*(_names(o) for o in operands))
        if any(word in name for name in names for word in _SECRET_WORDS):
            found.append(node)
    return found


def test_macs_and_digests_are_compared_in_constant_time() -> None:
    """No ``==``/``!=`` between values named like a MAC, digest, tag, signature, token
    hash or check value anywhere in src/ (hmac.compare_digest is the way)."""
    offenders = [f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}"
                 for path, tree in _modules() for node in _variable_time_compares(tree)]
    assert not offenders, "\n".join(offenders)
    planted = ast.parse("if computed_mac == received[-8:]:\n    pass\n"
                        "if hmac.compare_digest(a_mac, b):\n    pass\n")
    assert len(_variable_time_compares(planted)) == 1  # the check can fail


def test_randomness_comes_only_from_the_os() -> None:
    """src/ never imports ``random`` (nor numpy's), so every random byte comes from
    os.urandom or secrets (or is a parameter, in the protocol core)."""
    offenders = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names
                          if n.split(".")[0] in ("random", "numpy")]
    assert not offenders, "\n".join(offenders)
