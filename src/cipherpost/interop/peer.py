"""The JSON-lines interop peer (``shared/interop/PEER.md``).

Reads one JSON request per line on stdin and answers each with one JSON line on stdout.
It holds any number of actors, each with its own in-memory stores. The request handling
(:class:`Peer`) is separate from the stdin/stdout loop (:func:`serve`) so tests can drive
it directly. It never crashes: malformed requests get ``bad_request``, protocol failures
their error kind, and a failed request changes no state.

Operations of our own (beyond PEER.md): the sealed-sender ones documented in
``interop/README.md`` (``server_certificate``, ``sender_certificate``,
``sealed_encrypt``, ``sealed_decrypt``). Sessions this peer creates run SPQR
as the environment variable ``CIPHERPOST_PEER_SPQR`` says: ``off`` (the default, no
SPQR), ``offered`` (SPQR, downgrading for a peer without it, as libsignal 0.90/0.91) or
``required`` (as libsignal 0.92+). The actor's own address goes with every encrypt and
decrypt, so PreKey messages between service-id names carry and check field 6.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from cipherpost.protocol import sealed_sender, sender_keys, session
from cipherpost.protocol.address import ProtocolAddress
from cipherpost.protocol.bundles import generate_prekey_bundle
from cipherpost.protocol.errors import ProtocolError
from cipherpost.protocol.fingerprint import (
    DEFAULT_ITERATIONS,
    Fingerprint,
    FingerprintParsingError,
    FingerprintVersionMismatch,
)
from cipherpost.protocol.kem import KYBER1024, MLKEM1024, KemPublicKey
from cipherpost.protocol.keys import IdentityKeyPair, PrivateKey, PublicKey
from cipherpost.protocol.messages import PREKEY_TYPE, WHISPER_TYPE
from cipherpost.protocol.prekeys import PreKeyBundle
from cipherpost.protocol.spqr.ratchet import SpqrSettings
from cipherpost.protocol.stores import InMemoryProtocolStore, InMemorySenderKeyStore

Json = dict[str, Any]


class BadRequest(Exception):
    """The request itself is malformed or names something that does not exist."""


@dataclass
class Actor:
    """One protocol actor: an address with its own stores."""

    address: ProtocolAddress
    store: InMemoryProtocolStore
    sender_keys: InMemorySenderKeyStore = field(default_factory=InMemorySenderKeyStore)


# -- request field readers ------------------------------------------------------------------


def _field(req: Json, name: str) -> Any:
    if name not in req:
        raise BadRequest(f"missing field {name!r}")
    return req[name]


def _int(req: Json, name: str, lo: int, hi: int) -> int:
    value = _field(req, name)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise BadRequest(f"{name!r} must be an integer {lo}..{hi}")
    return value


def _opt_int(req: Json, name: str, lo: int, hi: int) -> int | None:
    if req.get(name) is None:
        return None
    return _int(req, name, lo, hi)


def _b64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise BadRequest(f"{name!r} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{name!r} is not valid base64") from None


def _bytes(req: Json, name: str) -> bytes:
    return _b64(_field(req, name), name)


def _address(value: Any, name: str) -> ProtocolAddress:
    if not isinstance(value, dict):
        raise BadRequest(f"{name!r} must be an address object")
    try:
        account, device_id = value.get("name"), value.get("device_id")
        if not isinstance(account, str) or not isinstance(device_id, int):
            raise ValueError("an address needs a string name and an integer device_id")
        return ProtocolAddress(account, device_id)
    except ValueError as exc:
        raise BadRequest(f"{name!r}: {exc}") from None


def _enc(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


U32 = 0xFFFFFFFF
SPQR_SETTINGS = {"off": SpqrSettings.OFF, "offered": SpqrSettings.OFFERED,
                 "required": SpqrSettings.REQUIRED}


def spqr_from_environment() -> SpqrSettings:
    """The SPQR settings ``CIPHERPOST_PEER_SPQR`` names (default ``off``).

    Raises:
        ValueError: an unknown name.
    """
    name = os.environ.get("CIPHERPOST_PEER_SPQR", "off")
    if name not in SPQR_SETTINGS:
        raise ValueError(f"CIPHERPOST_PEER_SPQR must be one of {sorted(SPQR_SETTINGS)}")
    return SPQR_SETTINGS[name]
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class Peer:
    """Request handling for one peer process."""

    def __init__(self, rng: Callable[[int], bytes] = os.urandom,
                 clock: Callable[[], float] = time.time,
                 spqr: SpqrSettings = SpqrSettings.OFF) -> None:
        self._rng = rng
        self._spqr = spqr
        self._clock = clock
        self._actors: dict[ProtocolAddress, Actor] = {}
        self._ops: dict[str, Callable[[Json], Json]] = {
            "create_actor": self._create_actor,
            "generate_bundle": self._generate_bundle,
            "process_bundle": self._process_bundle,
            "encrypt": self._encrypt,
            "decrypt": self._decrypt,
            "has_session": self._has_session,
            "archive_session": self._archive_session,
            "identity": self._identity,
            "trust": self._trust,
            "fingerprint": self._fingerprint,
            "compare_scannable": self._compare_scannable,
            "sender_key_distribution": self._sender_key_distribution,
            "process_sender_key_distribution": self._process_skdm,
            "group_encrypt": self._group_encrypt,
            "group_decrypt": self._group_decrypt,
            "server_certificate": self._server_certificate,
            "sender_certificate": self._sender_certificate,
            "sealed_encrypt": self._sealed_encrypt,
            "sealed_decrypt": self._sealed_decrypt,
        }

    def handle_line(self, line: str) -> Json | None:
        """Answer one input line; None for a blank line."""
        if not line.strip():
            return None
        try:
            request = json.loads(line)
        except (ValueError, RecursionError):
            return _error(None, "bad_request", "not a JSON object")
        if not isinstance(request, dict):
            return _error(None, "bad_request", "not a JSON object")
        return self.handle(request)

    def handle(self, request: Json) -> Json:
        """Answer one request object."""
        rid = request.get("id")
        op = request.get("op")
        try:
            if op == "quit":
                return {"id": rid, "ok": True}
            if not isinstance(op, str) or op not in self._ops:
                raise BadRequest(f"unknown op {op!r}")
            result = self._ops[op](request)
        except BadRequest as exc:
            return _error(rid, "bad_request", str(exc))
        except ProtocolError as exc:
            return _error(rid, exc.kind, str(exc) or type(exc).__name__)
        except Exception as exc:  # a bug: report it, keep serving
            traceback.print_exc(file=sys.stderr)
            return _error(rid, "internal_error", f"{type(exc).__name__}: {exc}")
        return {"id": rid, "ok": True, **result}

    # -- helpers ---------------------------------------------------------------------------

    def _now(self) -> int:
        return int(self._clock())

    def _actor(self, req: Json) -> Actor:
        address = _address(_field(req, "actor"), "actor")
        actor = self._actors.get(address)
        if actor is None:
            raise BadRequest(f"unknown actor {address}")
        return actor

    def _remote(self, req: Json, name: str = "remote") -> ProtocolAddress:
        return _address(_field(req, name), name)

    def _distribution_id(self, req: Json) -> uuid.UUID:
        value = _field(req, "distribution_id")
        if not isinstance(value, str):
            raise BadRequest("distribution_id must be a UUID string")
        if not _UUID_RE.fullmatch(value):
            raise BadRequest("distribution_id must be 128 bits written 8-4-4-4-12 in hex")
        return uuid.UUID(value)

    def _plaintext(self, req: Json) -> bytes:
        return _bytes(req, "plaintext")

    # -- operations ------------------------------------------------------------------------

    def _create_actor(self, req: Json) -> Json:
        address = _address(_field(req, "actor"), "actor")
        registration_id = _int(req, "registration_id", 1, 16380)
        if address in self._actors:
            raise BadRequest(f"actor {address} exists")
        identity = IdentityKeyPair.generate(self._rng)
        self._actors[address] = Actor(address, InMemoryProtocolStore(identity, registration_id))
        return {"identity_key": _enc(identity.public.serialize())}

    def _generate_bundle(self, req: Json) -> Json:
        actor = self._actor(req)
        signed_id = _int(req, "signed_prekey_id", 0, U32)
        kyber_id = _int(req, "kyber_prekey_id", 0, U32)
        pre_key_id = _opt_int(req, "prekey_id", 0, U32)
        kem_name = req.get("kem", "kyber1024")
        kem_types = {"kyber1024": KYBER1024, "mlkem1024": MLKEM1024}
        if not isinstance(kem_name, str) or kem_name not in kem_types:
            raise BadRequest("kem must be 'kyber1024' or 'mlkem1024'")
        # The Kyber prekey is kept after use (last resort): a bundle may start several
        # sessions, as with libsignal's in-memory store.
        b = generate_prekey_bundle(actor.store, device_id=actor.address.device_id,
                                   signed_pre_key_id=signed_id, kyber_pre_key_id=kyber_id,
                                   pre_key_id=pre_key_id, rng=self._rng,
                                   now_ms=self._now() * 1000, kem_type=kem_types[kem_name])
        bundle = {
            "registration_id": b.registration_id,
            "device_id": b.device_id,
            "identity_key": _enc(b.identity_key.serialize()),
            "signed_prekey_id": b.signed_pre_key_id,
            "signed_prekey": _enc(b.signed_pre_key.serialize()),
            "signed_prekey_signature": _enc(b.signed_pre_key_signature),
            "kyber_prekey_id": b.kyber_pre_key_id,
            "kyber_prekey": _enc(b.kyber_pre_key.serialize()),
            "kyber_prekey_signature": _enc(b.kyber_pre_key_signature),
            "prekey_id": b.pre_key_id,
            "prekey": _enc(b.pre_key.serialize()) if b.pre_key else None,
        }
        return {"bundle": bundle}

    def _parse_bundle(self, value: Any) -> PreKeyBundle:
        if not isinstance(value, dict):
            raise BadRequest("bundle must be an object")
        pre_key_id = _opt_int(value, "prekey_id", 0, U32)
        pre_key_raw = value.get("prekey")
        if (pre_key_id is None) != (pre_key_raw is None):
            raise BadRequest("prekey_id and prekey go together")
        return PreKeyBundle(
            registration_id=_int(value, "registration_id", 0, U32),
            device_id=_int(value, "device_id", 1, 127),
            identity_key=PublicKey.deserialize(_bytes(value, "identity_key")),
            signed_pre_key_id=_int(value, "signed_prekey_id", 0, U32),
            signed_pre_key=PublicKey.deserialize(_bytes(value, "signed_prekey")),
            signed_pre_key_signature=_bytes(value, "signed_prekey_signature"),
            kyber_pre_key_id=_int(value, "kyber_prekey_id", 0, U32),
            kyber_pre_key=KemPublicKey.deserialize(_bytes(value, "kyber_prekey")),
            kyber_pre_key_signature=_bytes(value, "kyber_prekey_signature"),
            pre_key_id=pre_key_id,
            pre_key=(PublicKey.deserialize(_b64(pre_key_raw, "prekey"))
                     if pre_key_raw is not None else None),
        )

    def _process_bundle(self, req: Json) -> Json:
        actor = self._actor(req)
        remote = self._remote(req)
        bundle = self._parse_bundle(_field(req, "bundle"))
        session.process_prekey_bundle(actor.store, remote, bundle, rng=self._rng,
                                      now=self._now(), spqr=self._spqr)
        return {}

    def _encrypt(self, req: Json) -> Json:
        actor = self._actor(req)
        remote = self._remote(req)
        plaintext = self._plaintext(req)
        message = session.encrypt(actor.store, remote, plaintext, now=self._now(),
                                  rng=self._rng, local_address=actor.address)
        kind = "prekey" if message.message_type == PREKEY_TYPE else "whisper"
        return {"message_type": kind, "ciphertext": _enc(message.serialized)}

    def _decrypt(self, req: Json) -> Json:
        actor = self._actor(req)
        remote = self._remote(req)
        types = {"prekey": PREKEY_TYPE, "whisper": WHISPER_TYPE}
        kind = _field(req, "message_type")
        if not isinstance(kind, str) or kind not in types:
            raise BadRequest("message_type must be 'prekey' or 'whisper'")
        ciphertext = _bytes(req, "ciphertext")
        plaintext = session.decrypt(actor.store, remote, types[kind], ciphertext, rng=self._rng,
                                    spqr=self._spqr, local_address=actor.address)
        return {"plaintext": _enc(plaintext)}

    def _has_session(self, req: Json) -> Json:
        actor = self._actor(req)
        remote = self._remote(req)
        record = actor.store.load_session(remote)
        usable = session.has_session(actor.store, remote, self._now(), spqr=self._spqr)
        version = record.current.version if usable and record and record.current else None
        return {"has_session": usable, "session_version": version}

    def _archive_session(self, req: Json) -> Json:
        actor = self._actor(req)
        remote = self._remote(req)
        record = actor.store.load_session(remote)
        if record is not None:
            record.archive_current_state()
            actor.store.store_session(remote, record)
        return {}

    def _identity(self, req: Json) -> Json:
        actor = self._actor(req)
        key = actor.store.get_identity(self._remote(req))
        return {"identity_key": _enc(key.serialize()) if key is not None else None}

    def _trust(self, req: Json) -> Json:
        actor = self._actor(req)
        remote = self._remote(req)
        try:
            key = PublicKey.deserialize(_bytes(req, "identity_key"))
        except ProtocolError as exc:
            raise BadRequest(f"identity_key: {exc}") from None
        actor.store.save_identity(remote, key)
        return {}

    def _fingerprint_for(self, req: Json) -> Fingerprint:
        actor = self._actor(req)
        remote = self._remote(req)
        local_id = _bytes(req, "local_id")
        remote_id = _bytes(req, "remote_id")
        iterations = req.get("iterations", DEFAULT_ITERATIONS)
        if not isinstance(iterations, int) or isinstance(iterations, bool):
            raise BadRequest("iterations must be an integer")
        remote_key = actor.store.get_identity(remote)
        if remote_key is None:
            raise BadRequest(f"no trusted identity for {remote}")
        local_key = actor.store.get_identity_key_pair().public
        try:
            return Fingerprint.create(local_id, local_key, remote_id, remote_key,
                                      iterations=iterations)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None

    def _fingerprint(self, req: Json) -> Json:
        fp = self._fingerprint_for(req)
        return {"displayable": fp.displayable, "scannable": _enc(fp.scannable)}

    def _compare_scannable(self, req: Json) -> Json:
        fp = self._fingerprint_for(req)
        scanned = _bytes(req, "scanned")
        try:
            return {"match": fp.compare(scanned)}
        except (FingerprintParsingError, FingerprintVersionMismatch) as exc:
            raise BadRequest(str(exc)) from None

    def _sender_key_distribution(self, req: Json) -> Json:
        actor = self._actor(req)
        distribution_id = self._distribution_id(req)
        skdm = sender_keys.create_distribution_message(
            actor.sender_keys, actor.address, distribution_id, rng=self._rng)
        return {"skdm": _enc(skdm.serialized)}

    def _process_skdm(self, req: Json) -> Json:
        actor = self._actor(req)
        sender = self._remote(req, "sender")
        sender_keys.process_distribution_message(actor.sender_keys, sender, _bytes(req, "skdm"))
        return {}

    def _group_encrypt(self, req: Json) -> Json:
        actor = self._actor(req)
        distribution_id = self._distribution_id(req)
        ciphertext = sender_keys.group_encrypt(actor.sender_keys, actor.address,
                                               distribution_id, self._plaintext(req),
                                               rng=self._rng)
        return {"ciphertext": _enc(ciphertext)}

    def _group_decrypt(self, req: Json) -> Json:
        actor = self._actor(req)
        sender = self._remote(req, "sender")
        plaintext = sender_keys.group_decrypt(actor.sender_keys, sender,
                                              _bytes(req, "ciphertext"))
        return {"plaintext": _enc(plaintext)}

    # -- sealed sender (interop/README.md) ------------------------------------------------

    def _private_key(self, req: Json, name: str) -> PrivateKey:
        raw = _bytes(req, name)
        if len(raw) != 32:
            raise BadRequest(f"{name!r} must be 32 bytes")
        return PrivateKey(raw)

    def _public_key(self, req: Json, name: str) -> PublicKey:
        try:
            return PublicKey.deserialize(_bytes(req, name))
        except ProtocolError as exc:
            raise BadRequest(f"{name!r}: {exc}") from None

    def _opt_str(self, req: Json, name: str) -> str | None:
        value = req.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise BadRequest(f"{name!r} must be a non-empty string or null")
        return value

    def _server_certificate(self, req: Json) -> Json:
        trust_root = self._private_key(req, "trust_root_private")
        server = self._private_key(req, "server_private")
        key_id = _int(req, "key_id", 0, U32)
        cert = sealed_sender.ServerCertificate.create(key_id, server.public_key(), trust_root,
                                                      rng=self._rng)
        return {"certificate": _enc(cert.serialized),
                "trust_root": _enc(trust_root.public_key().serialize()),
                "server_key": _enc(server.public_key().serialize())}

    def _sender_certificate(self, req: Json) -> Json:
        try:
            server_cert = sealed_sender.ServerCertificate.deserialize(
                _bytes(req, "server_certificate"))
        except ProtocolError as exc:
            raise BadRequest(f"server_certificate: {exc}") from None
        sender = _address(_field(req, "sender"), "sender")
        cert = sealed_sender.SenderCertificate.create(
            sender_uuid=sender.name, sender_e164=self._opt_str(req, "sender_e164"),
            sender_device_id=sender.device_id,
            identity_key=self._public_key(req, "identity_key"),
            expires=_int(req, "expires", 0, 2**53 - 1), signer=server_cert,
            signer_key=self._private_key(req, "server_private"), rng=self._rng)
        return {"certificate": _enc(cert.serialized)}

    def _sealed_encrypt(self, req: Json) -> Json:
        actor = self._actor(req)
        remote = self._remote(req)
        try:
            cert = sealed_sender.SenderCertificate.deserialize(_bytes(req, "sender_certificate"))
        except ProtocolError as exc:
            raise BadRequest(f"sender_certificate: {exc}") from None
        sealed = sealed_sender.encrypt_message(actor.store, remote, cert, self._plaintext(req),
                                               now=self._now(), rng=self._rng,
                                               local_address=actor.address)
        return {"ciphertext": _enc(sealed)}

    def _sealed_decrypt(self, req: Json) -> Json:
        actor = self._actor(req)
        ciphertext = _bytes(req, "ciphertext")
        trust_root = self._public_key(req, "trust_root")
        now_ms = _int(req, "now", 0, 2**53 - 1)
        result = sealed_sender.decrypt(
            actor.store, ciphertext, trust_roots=[trust_root], now_ms=now_ms,
            local_uuid=actor.address.name, local_device_id=actor.address.device_id,
            local_e164=self._opt_str(req, "local_e164"), rng=self._rng, spqr=self._spqr,
            local_address=actor.address)
        return {"plaintext": _enc(result.plaintext),
                "sender": {"name": result.sender_uuid, "device_id": result.device_id},
                "sender_e164": result.sender_e164}


def _error(rid: Any, kind: str, message: str) -> Json:
    return {"id": rid, "ok": False, "error": {"kind": kind, "message": message}}


def serve(stdin: IO[str], stdout: IO[str], peer: Peer | None = None) -> int:
    """Serve requests until end of input or ``quit``; return the exit status."""
    peer = peer or Peer()
    for line in stdin:
        response = peer.handle_line(line)
        if response is None:
            continue
        stdout.write(json.dumps(response, separators=(",", ":")) + "\n")
        stdout.flush()
        if response.get("ok") and isinstance(line, str) and _is_quit(line):
            return 0
    return 0


def _is_quit(line: str) -> bool:
    try:
        request = json.loads(line)
    except ValueError:
        return False
    return isinstance(request, dict) and request.get("op") == "quit"


def main() -> None:
    """Console entry point: ``cipherpost-interop-peer``."""
    sys.exit(serve(sys.stdin, sys.stdout, Peer(spqr=spqr_from_environment())))


if __name__ == "__main__":
    main()
