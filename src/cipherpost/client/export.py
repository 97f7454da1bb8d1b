"""Local encrypted export and import of an account (docs/spec/history.md, "Export").

An export file holds what a restored device needs (the account's identity, contacts with
their trust, groups, history keys, and the recovery key's derived values, through which
the importing device joins the account) and, optionally, every stored message, edit,
reaction and group state. It is protected by a passphrase:

    header  = "CPEXPORT" || version (1) || Argon2id t (4) || m KiB (4) || p (1) ||
              salt (16) || nonce prefix (8)
    chunk   = length (4, big-endian) || AES-256-GCM(key, nonce prefix || counter (4),
                                                   one ExportRecord,
                                                   aad = header || counter || last (1))

The key is Argon2id(passphrase, salt); every chunk is bound to the header, its position,
and whether it is the last one, so a reordered, truncated or extended file is refused.
A file is written under a temporary name and renamed when complete. The header's Argon2id
parameters are refused past ``store.crypto.MAX_PARAMS`` (four times the defaults) before
any key derivation, so a hostile file cannot make the importer spend gigabytes or minutes.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError

from . import history
from .api import RelayApi, RelayError
from .client import Client
from .content import InvalidContent, check_integers
from .errors import ClientError
from .options import ClientOptions
from .proto.app_pb2 import ExportRecord, HistoryEvent
from .recovery import RECOVERY_SECRET, Secrets, _blob, _finish, _join
from .store.crypto import Argon2Params, UnusableParams, check_params

MAGIC = b"CPEXPORT"
VERSION = 1
_HEADER = struct.Struct(">8sBIIB16s8s")
_MAX_CHUNK = 1 << 20


class ExportError(ClientError):
    """Not an export file, a wrong passphrase, or a damaged or truncated file."""


def _key(passphrase: str, salt: bytes, params: Argon2Params) -> bytes:
    if not passphrase:
        raise ExportError("the export passphrase must not be empty")
    check_params(params)
    return hash_secret_raw(passphrase.encode(), salt, time_cost=params.time_cost,
                           memory_cost=params.memory_kib, parallelism=params.parallelism,
                           hash_len=32, type=Type.ID)


def _records(client: Client, with_history: bool) -> list[ExportRecord]:
    store = client.store
    secrets = store.get_secret(RECOVERY_SECRET)
    if secrets is None:
        raise ClientError("make a recovery key first (`cipherpost recovery-key`): an "
                          "imported device joins the account through it")
    records = [ExportRecord(account=_blob(client, "")),
               ExportRecord(recovery_secrets=secrets)]
    if with_history:
        records.extend(ExportRecord(event=event) for event in history.stored_events(store))
        for group_id in store.group_ids():
            state = store.get_group(group_id)
            if state is not None:
                records.append(ExportRecord(event=HistoryEvent(group_state=state)))
    return records


def export_account(client: Client, path: Path, passphrase: str, *, with_history: bool,
                   params: Argon2Params | None = None,
                   progress: Callable[[int, int], None] | None = None) -> int:
    """Write the account (and with ``with_history`` its stored conversations) to
    ``path``, encrypted under ``passphrase``; the number of records written.

    Raises:
        ClientError: no recovery key was made on this account yet, or ``path`` exists.
        UnusableParams: ``params`` past ``store.crypto.MAX_PARAMS`` (no importer reads it).
    """
    if path.exists():
        raise ClientError(f"{path} exists already")
    params = check_params(params or Argon2Params())
    records = _records(client, with_history)
    header = _HEADER.pack(MAGIC, VERSION, params.time_cost, params.memory_kib,
                          params.parallelism, os.urandom(16), os.urandom(8))
    salt, prefix = header[-24:-8], header[-8:]
    aead = AESGCM(_key(passphrase, salt, params))
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(header)
            for counter, record in enumerate(records):
                last = counter == len(records) - 1
                position = struct.pack(">IB", counter, last)
                sealed = aead.encrypt(prefix + position[:4], record.SerializeToString(),
                                      header + position)
                out.write(struct.pack(">I", len(sealed)) + sealed)
                if progress is not None:
                    progress(counter + 1, len(records))
            out.flush()
            os.fsync(out.fileno())
        partial.rename(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return len(records)


def read_export(path: Path, passphrase: str, *,
                min_params: Argon2Params | None = None) -> list[ExportRecord]:
    """The records of an export file, all verified.

    Raises:
        ExportError: not an export, wrong passphrase, damaged, reordered or truncated.
    """
    with path.open("rb") as data:
        return _read(data, passphrase, min_params or Argon2Params(time_cost=1, memory_kib=8,
                                                                    parallelism=1))


def _read(data: BinaryIO, passphrase: str, floor: Argon2Params) -> list[ExportRecord]:
    header = data.read(_HEADER.size)
    if len(header) != _HEADER.size:
        raise ExportError("not a Cipherpost export file")
    magic, version, t, m, p, salt, prefix = _HEADER.unpack(header)
    if magic != MAGIC:
        raise ExportError("not a Cipherpost export file")
    if version != VERSION:
        raise ExportError(f"an export of version {version}; this Cipherpost reads {VERSION}")
    # Before any key derivation: parameters Argon2 refuses (less than 8 KiB per lane)
    # would fail inside it, and ones past MAX_PARAMS would let the file's maker choose
    # how much memory and time this machine spends.
    params = Argon2Params(t, m, p)
    try:
        check_params(params)
    except UnusableParams as exc:
        raise ExportError(f"the export file's key parameters are refused: {exc}") from None
    if t < floor.time_cost or m < floor.memory_kib:
        raise ExportError("the export file's key parameters are weaker than allowed")
    aead = AESGCM(_key(passphrase, salt, params))
    records: list[ExportRecord] = []
    counter = 0
    while True:
        length_bytes = data.read(4)
        if len(length_bytes) != 4:
            raise ExportError("the export file is truncated")
        (length,) = struct.unpack(">I", length_bytes)
        if not 16 <= length <= _MAX_CHUNK:
            raise ExportError("the export file is damaged")
        sealed = data.read(length)
        if len(sealed) != length:
            raise ExportError("the export file is truncated")
        plaintext = None
        for last in (False, True):
            position = struct.pack(">IB", counter, last)
            try:
                plaintext = aead.decrypt(prefix + position[:4], sealed, header + position)
                break
            except InvalidTag:
                continue
        if plaintext is None:
            raise ExportError("wrong passphrase, or the export file is damaged" if counter == 0
                              else "the export file is damaged")
        try:
            record = ExportRecord.FromString(plaintext)
            check_integers(record)
        except (DecodeError, InvalidContent):
            raise ExportError("the export file is damaged") from None
        records.append(record)
        counter += 1
        if last:
            if data.read(1):
                raise ExportError("the export file has data after its end")
            return records


async def import_account(source: Path, path: Path, server: str, export_passphrase: str, *,
                         passphrase: str | None = None, device_name: str | None = None,
                         argon2: Argon2Params | None = None, proxy: str | None = None,
                         options: ClientOptions | None = None,
                         progress: Callable[[int, int], None] | None = None) -> Client:
    """Make this machine a device of the exported account (joining through the recovery
    key's derived values the export carries) with its contacts, groups and, if exported,
    its conversations; then read the server-stored history if the account keeps one.

    Raises:
        ExportError: see :func:`read_export`. ClientError: the relay no longer knows that
            recovery key (a newer one was made after the export).
    """
    records = read_export(source, export_passphrase)
    if len(records) < 2 or records[0].WhichOneof("body") != "account" \
            or records[1].WhichOneof("body") != "recovery_secrets":
        raise ExportError("the export file does not start with an account")
    blob = records[0].account
    secrets = Secrets.from_bytes(records[1].recovery_secrets)
    found = {"account_id": blob.account_id}
    try:
        client = await _join(path, server, found, blob, secrets.release(),
                             RelayApi.recovery_device, passphrase, device_name, argon2, proxy,
                             options)
    except RelayError as exc:
        if exc.status == 403:
            raise ClientError("the relay no longer knows the recovery key in this export "
                              "(a newer one was made since)") from None
        raise
    try:
        events = [r.event for r in records[2:] if r.WhichOneof("body") == "event"]
        if blob.HasField("history_keys"):   # first, so replayed messages are named
            history.set_keys(client.store, history.Keys.from_proto(blob.history_keys),
                             on=blob.history_enabled)
        with client.store.transaction():
            client.store.set_secret(RECOVERY_SECRET, secrets.to_bytes())
            for done, event in enumerate(events, 1):
                history.replay_event(client.store, event)
                if progress is not None:
                    progress(done, len(events))
    except BaseException:
        await client.close()
        raise
    return await _finish(client, blob, device_name, None)
