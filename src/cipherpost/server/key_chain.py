"""The relay's sealed-sender key chain (docs/server.md, "Sealed sender").

Clients pin a *trust root* public key. The root signs a *server certificate* (a key id
and the server's public key), and the server key signs short-lived *sender
certificates* (account id, device id, identity key, expiry) that a device puts inside
its sealed messages so that the recipient, and only the recipient, learns who sent them.

Everything lives in one JSON file (``settings.sealed_sender_keys``), created at the first
start with mode 0600. Several relay processes share it: it is created by a hard link of
a finished temporary file, so a process that loses the race reads the winner's. The
root's private key may be taken out of the file (kept offline): the relay then still
issues sender certificates, and only :func:`rotate_server_key` needs the root back
(``take-root-offline`` moves it to a file of its own, ``rotate --root-file`` reads it
from there). A key file that users other than its owner may read or write is refused
(review 2026-11-29-sealed-ops, R7): it holds the server's signing key.

A rotation does not make the old server certificate invalid: clients accept whatever
server certificate the root signed. After a leak of the server key, rotate with
``revoke_old``: the old key id joins ``revoked_server_key_ids``, which the relay serves
with the trust root and clients refuse from then on (review 2026-11-29-sealed-ops, R4).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import secrets
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cipherpost.protocol.certificates import SenderCertificate, ServerCertificate
from cipherpost.protocol.errors import ProtocolError
from cipherpost.protocol.keys import PrivateKey, PublicKey

FORMAT_VERSION = 1


class KeyChainError(Exception):
    """The key file is unreadable, inconsistent, or lacks what an operation needs."""


@dataclass(frozen=True)
class KeyChain:
    """The trust root's public key, the server certificate and the server's private key."""

    trust_root: PublicKey
    server_certificate: ServerCertificate
    server_key: PrivateKey = field(repr=False)
    #: Server key ids whose certificates clients must refuse (leaked keys).
    revoked_key_ids: frozenset[int] = frozenset()

    def issue(self, account_id: str, device_id: int, identity_key: PublicKey,
              expires_ms: int) -> SenderCertificate:
        """A sender certificate for one device, valid until ``expires_ms`` (inclusive).

        Raises:
            ValueError: a device id outside 1..127 or an expiry outside u64.
        """
        return SenderCertificate.create(
            sender_uuid=account_id, sender_e164=None, sender_device_id=device_id,
            identity_key=identity_key, expires=expires_ms, signer=self.server_certificate,
            signer_key=self.server_key, rng=secrets.token_bytes)


def load_or_create(path: str | os.PathLike[str]) -> KeyChain:
    """The key chain in ``path``; a new one (root, server key id 1) if there is none.

    Raises:
        KeyChainError: the file exists but is malformed or inconsistent.
        OSError: it cannot be read or written.
    """
    target = Path(path)
    if not target.exists():
        root = PrivateKey.generate(secrets.token_bytes)
        server = PrivateKey.generate(secrets.token_bytes)
        certificate = ServerCertificate.create(1, server.public_key(), root,
                                               rng=secrets.token_bytes)
        _write_new(target, _document(root.public_key(), root, certificate, server))
    return _load(target)


def load(path: str | os.PathLike[str]) -> KeyChain:
    """The key chain in ``path``, which must exist (nothing is created).

    Raises:
        KeyChainError: the file is malformed, inconsistent, or others may read it.
        OSError: it cannot be read.
    """
    return _load(Path(path))


def rotate_server_key(path: str | os.PathLike[str], *, revoke_old: bool = False,
                      root_file: str | os.PathLike[str] | None = None) -> KeyChain:
    """Replace the server key and certificate (next key id) under the same root. Clients
    keep their pinned root; certificates issued before stay valid until they expire,
    unless ``revoke_old`` (the old key leaked): then its id is revoked, and clients that
    learned it refuse every certificate under it. Every relay process must be restarted
    to pick the new key up. The root's private key comes from ``root_file`` (written by
    :func:`take_root_offline`) if given, else from the key file.

    Raises:
        KeyChainError: no key file, or the root's private key is in neither file, or
            it is not the key file's root.
    """
    target = Path(path)
    if not target.exists():
        raise KeyChainError(f"{target} does not exist")
    in_file = _read(target)
    data = _read(Path(root_file)) if root_file is not None else in_file
    root_text = data.get("trust_root_private")
    if not isinstance(root_text, str):
        where = root_file if root_file is not None else target
        raise KeyChainError(f"the trust root's private key (trust_root_private) is not in "
                            f"{where}: give the file it was taken offline to "
                            "(rotate --root-file FILE)")
    chain = _load(target)
    try:
        root = PrivateKey.from_stored(_unb64(root_text, "trust_root_private"))
    except ProtocolError as exc:
        raise KeyChainError(f"trust_root_private: {exc}") from None
    if root.public_key() != chain.trust_root:
        raise KeyChainError("trust_root_private does not match the key file's "
                            "trust_root_public")
    server = PrivateKey.generate(secrets.token_bytes)
    key_id = (chain.server_certificate.key_id + 1) & 0xFFFFFFFF or 1
    certificate = ServerCertificate.create(key_id, server.public_key(), root,
                                           rng=secrets.token_bytes)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(8)}")
    revoked = chain.revoked_key_ids | (
        {chain.server_certificate.key_id} if revoke_old else set())
    # An offline root stays offline: the new file holds it only if the old one did.
    keep_root = root if isinstance(in_file.get("trust_root_private"), str) else None
    _write_private(temporary, _document(chain.trust_root, keep_root, certificate, server,
                                        revoked))
    os.replace(temporary, target)
    return _load(target)


def take_root_offline(path: str | os.PathLike[str],
                      root_file: str | os.PathLike[str]) -> KeyChain:
    """Move the trust root's private key from the key file at ``path`` to ``root_file``
    (created with mode 0600, never over an existing file), a deployment step: copy
    ``root_file`` to offline storage and delete it from the relay host. The relay keeps
    issuing sender certificates with the server key; only a rotation needs the root
    (``rotate --root-file``). Every relay process reads the key file only at start, so
    none needs a restart.

    Raises:
        KeyChainError: no key file, or its root private key is not in it (already
            offline), or ``root_file`` exists.
    """
    target, offline = Path(path), Path(root_file)
    data = _read(target)
    chain = _load(target)
    root_text = data.get("trust_root_private")
    if not isinstance(root_text, str):
        raise KeyChainError(f"{target} holds no trust_root_private: already offline")
    try:
        root = PrivateKey.from_stored(_unb64(root_text, "trust_root_private"))
    except ProtocolError as exc:
        raise KeyChainError(f"trust_root_private: {exc}") from None
    if root.public_key() != chain.trust_root:
        raise KeyChainError("trust_root_private does not match trust_root_public")
    try:
        _write_private(offline, {"version": FORMAT_VERSION,
                                 "trust_root_public": _b64(chain.trust_root.serialize()),
                                 "trust_root_private": root_text})
    except FileExistsError:
        raise KeyChainError(f"{offline} exists: choose a new file for the root") from None
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(8)}")
    _write_private(temporary, _document(chain.trust_root, None, chain.server_certificate,
                                        chain.server_key, chain.revoked_key_ids))
    os.replace(temporary, target)
    return _load(target)


def _document(root_public: PublicKey, root: PrivateKey | None,
              certificate: ServerCertificate, server: PrivateKey,
              revoked: frozenset[int] = frozenset()) -> dict[str, Any]:
    document: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "trust_root_public": _b64(root_public.serialize()),
        "server_key_id": certificate.key_id,
        "server_certificate": _b64(certificate.serialized),
        "server_key": _b64(server.serialize()),
        "revoked_server_key_ids": sorted(revoked),
    }
    if root is not None:
        document["trust_root_private"] = _b64(root.serialize())
    return document


def _write_new(target: Path, document: dict[str, Any]) -> None:
    """Create ``target`` with ``document`` unless another process did first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(8)}")
    _write_private(temporary, document)
    try:
        os.link(temporary, target)
    except FileExistsError:
        pass  # another relay process created it first: theirs is the one
    finally:
        temporary.unlink(missing_ok=True)


def _write_private(path: Path, document: dict[str, Any]) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def _read(path: Path) -> dict[str, Any]:
    """The JSON document in ``path``, refused if others than its owner may use it."""
    with path.open("rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise KeyChainError(f"{path} is not a regular file")
        if mode & 0o077:
            raise KeyChainError(
                f"{path} may be read or written by other users (mode "
                f"{stat.S_IMODE(mode):o}), and it holds the relay's signing keys: "
                f"`chmod 600 {path}` (owned by the relay's user), and if others could "
                "read it, treat the keys as leaked (docs/operations.md)")
        raw = handle.read()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise KeyChainError(f"{path} is not a sealed-sender key file: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        raise KeyChainError(f"{path}: unknown key file version")
    return data


def _load(path: Path) -> KeyChain:
    data = _read(path)
    try:
        root = PublicKey.deserialize(_unb64(data.get("trust_root_public"),
                                            "trust_root_public"))
        certificate = ServerCertificate.deserialize(_unb64(data.get("server_certificate"),
                                                           "server_certificate"))
        server = PrivateKey.from_stored(_unb64(data.get("server_key"), "server_key"))
    except ProtocolError as exc:
        raise KeyChainError(f"{path}: {exc}") from None
    if not certificate.is_signed_by(root):
        raise KeyChainError(f"{path}: the server certificate is not signed by the trust root")
    if certificate.key != server.public_key():
        raise KeyChainError(f"{path}: the server key does not match its certificate")
    revoked = data.get("revoked_server_key_ids", [])  # absent in files before R4
    if not isinstance(revoked, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= 0xFFFFFFFF
            for i in revoked):
        raise KeyChainError(f"{path}: revoked_server_key_ids must list key ids (u32)")
    if certificate.key_id in revoked:
        raise KeyChainError(f"{path}: the current server key id is revoked: rotate")
    return KeyChain(root, certificate, server, frozenset(revoked))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, name: str) -> bytes:
    if not isinstance(value, str):
        raise KeyChainError(f"the key file lacks {name}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise KeyChainError(f"{name} in the key file is not base64") from None


def main(argv: list[str] | None = None) -> None:
    """``python -m cipherpost.server.key_chain show|rotate|take-root-offline [FILE]``:
    print the trust root clients pin (to publish it), rotate the server key (then
    restart every relay), or move the root's private key to ``--root-file``."""
    from .settings import Settings, sealed_sender_key_file

    parser = argparse.ArgumentParser(prog="python -m cipherpost.server.key_chain",
                                     description="The relay's sealed-sender key chain.")
    parser.add_argument("command", choices=("show", "rotate", "take-root-offline"))
    parser.add_argument("--revoke-old", action="store_true",
                        help="rotate: the old server key leaked; clients refuse it from "
                             "now on")
    parser.add_argument("--root-file", help="rotate: the root's private key, taken offline; "
                                            "take-root-offline: the new file to move it to")
    parser.add_argument("file", nargs="?", help="the key file (else from the settings: "
                                                "sealed_sender_keys)")
    args = parser.parse_intermixed_args(argv)
    try:
        path = Path(args.file) if args.file else sealed_sender_key_file(Settings.load())
        if args.command == "rotate":
            chain = rotate_server_key(path, revoke_old=args.revoke_old,
                                      root_file=args.root_file)
        elif args.command == "take-root-offline":
            if not args.root_file:
                sys.exit("key_chain: take-root-offline needs --root-file FILE")
            chain = take_root_offline(path, args.root_file)
        else:
            chain = _load(path)
    except (OSError, ValueError, KeyChainError) as exc:
        sys.exit(f"key_chain: {exc}")
    print(f"trust root: {_b64(chain.trust_root.serialize())}")
    print(f"server key id: {chain.server_certificate.key_id}")
    if chain.revoked_key_ids:
        print("revoked server key ids: "
              + ", ".join(str(i) for i in sorted(chain.revoked_key_ids)))


if __name__ == "__main__":
    main()
