"""Drive JSON-lines peers (shared/interop/PEER.md) from tests.

A :class:`PeerClient` talks to one peer process: the Python peer (our console script),
the libsignal reference peer (Node, ``interop/libsignal-peer``) or the TypeScript peer
(Node, ``web/``, the browser client's protocol core). Requests can be pipelined
(:meth:`PeerClient.call_many`), which keeps long scenarios fast.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NODE_PEER = ROOT / "interop" / "libsignal-peer" / "peer.js"
#: The same peer on libsignal-client 0.103.0 (SPQR required, field 6).
NODE_PEER_0103 = ROOT / "interop" / "libsignal-peer-0.103" / "peer.js"
TS_PEER = ROOT / "web" / "bin" / "cipherpost-ts-peer.mjs"

Json = dict[str, Any]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


class PeerFailure(AssertionError):
    """A request expected to succeed failed (or the reverse)."""


class PeerClient:
    """One running peer process."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self._ids = itertools.count(1)
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=sys.stderr,
            text=True, bufsize=1, cwd=ROOT, env={**os.environ, **(env or {})},
        )

    def __repr__(self) -> str:
        return f"<peer {self.name}>"

    @property
    def process(self) -> subprocess.Popen[str]:
        return self._proc

    def send_raw(self, line: str) -> Json:
        """Write one raw line and read one response."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        out = self._proc.stdout.readline()
        if not out:
            raise PeerFailure(f"{self.name}: peer exited (status {self._proc.poll()})")
        response: Json = json.loads(out)
        return response

    def call_many(self, requests: list[Json]) -> list[Json]:
        """Send requests pipelined; return their responses in order."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        ids = []
        chunk = 256
        responses: list[Json] = []
        for start in range(0, len(requests), chunk):
            lines = []
            for req in requests[start:start + chunk]:
                rid = next(self._ids)
                ids.append(rid)
                lines.append(json.dumps({"id": rid, **req}))
            self._proc.stdin.write("\n".join(lines) + "\n")
            self._proc.stdin.flush()
            for _ in lines:
                out = self._proc.stdout.readline()
                if not out:
                    raise PeerFailure(f"{self.name}: peer exited (status {self._proc.poll()})")
                responses.append(json.loads(out))
        for rid, response in zip(ids, responses, strict=True):
            if response.get("id") != rid:
                raise PeerFailure(f"{self.name}: response id {response.get('id')} != {rid}")
        return responses

    def call(self, op: str, **fields: Any) -> Json:
        return self.call_many([{"op": op, **fields}])[0]

    def ok(self, op: str, **fields: Any) -> Json:
        response = self.call(op, **fields)
        if not response.get("ok"):
            raise PeerFailure(f"{self.name}: {op} failed: {response.get('error')}")
        return response

    def error(self, op: str, **fields: Any) -> str:
        """Call an op that must fail; return its error kind."""
        response = self.call(op, **fields)
        if response.get("ok"):
            raise PeerFailure(f"{self.name}: {op} unexpectedly succeeded")
        kind: str = response["error"]["kind"]
        return kind

    def close(self) -> int:
        if self._proc.poll() is None:
            with contextlib.suppress(PeerFailure, BrokenPipeError, OSError):
                self.send_raw(json.dumps({"id": "bye", "op": "quit"}))
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()
        return self._proc.wait()


def python_peer(spqr: str = "off") -> PeerClient:
    """The Python peer; ``spqr`` is its CIPHERPOST_PEER_SPQR (named ``python-spqr`` unless off)."""
    name = "python" if spqr == "off" else "python-spqr"
    return PeerClient(name, [sys.executable, "-m", "cipherpost.interop.peer"],
                      {"CIPHERPOST_PEER_SPQR": spqr})


def node_available(peer: Path = NODE_PEER) -> bool:
    return shutil.which("node") is not None and (
        peer.parent / "node_modules" / "@signalapp" / "libsignal-client").exists()


def node_peer() -> PeerClient:
    return PeerClient("libsignal", ["node", str(NODE_PEER)])


def node_peer_0103() -> PeerClient:
    return PeerClient("libsignal-0.103", ["node", str(NODE_PEER_0103)])


def typescript_available() -> bool:
    return shutil.which("node") is not None and (
        ROOT / "web" / "node_modules" / "tsx").exists()


def typescript_peer(spqr: str = "off") -> PeerClient:
    """The TypeScript peer; ``spqr`` is its CIPHERPOST_PEER_SPQR.

    Named ``typescript-spqr`` unless off.
    """
    name = "typescript" if spqr == "off" else "typescript-spqr"
    return PeerClient(name, ["node", str(TS_PEER)], {"CIPHERPOST_PEER_SPQR": spqr})


_actor_counter = itertools.count(1)


class Actor:
    """A protocol actor living in one peer, with helpers for common requests."""

    def __init__(self, peer: PeerClient, name: str, device_id: int = 1,
                 registration_id: int | None = None, *, create: bool = True) -> None:
        self.peer = peer
        self.address = {"name": name, "device_id": device_id}
        self.registration_id = registration_id or (next(_actor_counter) % 16000) + 1
        self.identity_key: bytes | None = None
        self._ids = itertools.count(1)
        if create:
            response = peer.ok("create_actor", actor=self.address,
                               registration_id=self.registration_id)
            self.identity_key = unb64(response["identity_key"])

    def __repr__(self) -> str:
        return f"<{self.address['name']}.{self.address['device_id']} on {self.peer.name}>"

    def bundle(self, *, one_time: bool = True, kem: str | None = None) -> Json:
        base = next(self._ids) * 10
        fields: Json = {"signed_prekey_id": base + 1, "kyber_prekey_id": base + 2,
                        "prekey_id": base + 3 if one_time else None}
        if kem is not None:
            fields["kem"] = kem
        bundle: Json = self.peer.ok("generate_bundle", actor=self.address, **fields)["bundle"]
        return bundle

    def process_bundle(self, remote: Actor | Json, bundle: Json) -> None:
        self.peer.ok("process_bundle", actor=self.address, remote=_addr(remote), bundle=bundle)

    def encrypt(self, remote: Actor | Json, plaintext: bytes) -> tuple[str, str]:
        r = self.peer.ok("encrypt", actor=self.address, remote=_addr(remote),
                         plaintext=b64(plaintext))
        return r["message_type"], r["ciphertext"]

    def encrypt_many(self, remote: Actor | Json, plaintexts: list[bytes]) -> list[tuple[str, str]]:
        responses = self.peer.call_many([
            {"op": "encrypt", "actor": self.address, "remote": _addr(remote),
             "plaintext": b64(p)} for p in plaintexts])
        out = []
        for r in responses:
            if not r.get("ok"):
                raise PeerFailure(f"{self.peer.name}: encrypt failed: {r.get('error')}")
            out.append((r["message_type"], r["ciphertext"]))
        return out

    def decrypt(self, remote: Actor | Json, message: tuple[str, str]) -> bytes:
        r = self.peer.ok("decrypt", actor=self.address, remote=_addr(remote),
                         message_type=message[0], ciphertext=message[1])
        return unb64(r["plaintext"])

    def decrypt_error(self, remote: Actor | Json, message: tuple[str, str]) -> str:
        return self.peer.error("decrypt", actor=self.address, remote=_addr(remote),
                               message_type=message[0], ciphertext=message[1])

    def has_session(self, remote: Actor | Json) -> Json:
        return self.peer.ok("has_session", actor=self.address, remote=_addr(remote))

    def identity(self, remote: Actor | Json) -> bytes | None:
        key = self.peer.ok("identity", actor=self.address, remote=_addr(remote))["identity_key"]
        return unb64(key) if key is not None else None


def _addr(remote: Actor | Json) -> Json:
    return remote.address if isinstance(remote, Actor) else remote
