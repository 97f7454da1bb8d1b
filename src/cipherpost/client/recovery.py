"""The recovery key: getting an account back on a fresh machine (docs/spec/history.md).

A recovery key is 32 random bytes shown once to the user as Crockford base32 in groups of
four (52 characters and a 4-character check). Three keys are derived from it, and the key
itself never leaves the user's hands:

* ``lookup_id`` = HKDF(key, info "Cipherpost recovery id v1")[:16] names the blob;
* ``auth`` = HKDF(key, info "Cipherpost recovery auth v1") is what the relay releases the
  blob (and lets a new device join the account) for; it keeps only a hash of it;
* ``K_rec`` = HKDF(key, info "Cipherpost recovery v1") seals the :class:`RecoveryBlob`
  (account id, identity key pair, username, history keys, contacts with their trust,
  group states) with AES-256-GCM.

A device keeps the three derived values (sealed in its store) so it can seal the blob again
when what it holds changes (a new history epoch); it never keeps the recovery key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from google.protobuf.message import DecodeError
from zxcvbn import zxcvbn

from cipherpost.protocol import IdentityKeyPair, ProtocolError

from . import history
from .api import Credentials, RelayApi, RelayError, b64, check_server_url, unb64
from .client import Client
from .devices import adopt
from .errors import ClientError
from .options import ClientOptions
from .proto.app_pb2 import RecoveryBlob
from .store.crypto import MAX_PARAMS as MAX_PARAMS  # re-exported: the relay's bound too
from .store.crypto import Argon2Params, UnusableParams, check_params

log = logging.getLogger(__name__)

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
_DECODE = {c: i for i, c in enumerate(_ALPHABET)} | {"O": 0, "I": 1, "L": 1}
KEY_BYTES = 32
_BLOB_AAD = b"Cipherpost recovery blob v1"
_SECRET = "recovery_secrets"  # noqa: S105 - the name of a store secret, not a secret
#: The store secret holding the recovery key's derived values.
RECOVERY_SECRET = _SECRET


class RecoveryKeyError(ClientError):
    """Not a recovery key (a typo, or something else pasted)."""


def _encode(data: bytes) -> str:
    bits = int.from_bytes(data, "big")
    count = (len(data) * 8 + 4) // 5
    bits <<= count * 5 - len(data) * 8
    return "".join(_ALPHABET[(bits >> (5 * (count - 1 - i))) & 31] for i in range(count))


def _check(key: bytes) -> str:
    return _encode(hashlib.sha256(b"Cipherpost recovery check\x00" + key).digest()[:3])[:4]


def format_key(key: bytes) -> str:
    """The recovery key as the user writes it down: groups of four characters."""
    text = _encode(key) + _check(key)
    return " ".join(text[i:i + 4] for i in range(0, len(text), 4))


def parse_key(text: str) -> bytes:
    """The 32 bytes of a written-down recovery key (spaces, dashes and case ignored;
    O/I/L read as 0/1/1).

    Raises:
        RecoveryKeyError: wrong length, a character outside the alphabet, or a failed check.
    """
    cleaned = "".join(c for c in text.upper() if c not in " -\t\n")
    length = (KEY_BYTES * 8 + 4) // 5
    if len(cleaned) != length + 4 or any(c not in _DECODE for c in cleaned):
        raise RecoveryKeyError("that is not a recovery key (it has 56 letters and digits)")
    value = 0
    for c in cleaned[:length]:
        value = value << 5 | _DECODE[c]
    value >>= length * 5 - KEY_BYTES * 8
    key = value.to_bytes(KEY_BYTES, "big")
    written = "".join(_ALPHABET[_DECODE[c]] for c in cleaned[length:])
    if not hmac.compare_digest(_check(key).encode(), written.encode()):
        raise RecoveryKeyError("the recovery key has a typo (its check does not match)")
    return key


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=b"", info=info).derive(key)


@dataclass(frozen=True)
class Secrets:
    """What a recovery key derives: the blob's name, its release secret, its sealing key."""

    lookup_id: bytes
    auth: bytes
    seal_key: bytes

    def __repr__(self) -> str:
        return "recovery.Secrets(<secret>)"

    @classmethod
    def derive(cls, key: bytes) -> Secrets:
        return cls(_hkdf(key, b"Cipherpost recovery id v1")[:16],
                   _hkdf(key, b"Cipherpost recovery auth v1"),
                   _hkdf(key, b"Cipherpost recovery v1"))

    def to_bytes(self) -> bytes:
        return self.lookup_id + self.auth + self.seal_key

    @classmethod
    def from_bytes(cls, data: bytes) -> Secrets:
        """Parse :meth:`to_bytes` (from this device's store or an export file).

        Raises:
            ClientError: not the 80 bytes it must be.
        """
        if len(data) != 80:
            raise ClientError("malformed recovery secrets")
        return cls(data[:16], data[16:48], data[48:80])

    def release(self) -> dict[str, str]:
        """The fields that ask the relay for the blob."""
        return {"lookup_id": b64(self.lookup_id), "auth": b64(self.auth)}

    def seal(self, blob: RecoveryBlob) -> bytes:
        nonce = os.urandom(12)
        return nonce + AESGCM(self.seal_key).encrypt(nonce, blob.SerializeToString(),
                                                     _BLOB_AAD + self.lookup_id)

    def open(self, sealed: bytes) -> RecoveryBlob:
        """Raises: ClientError when the blob does not open (not this key's)."""
        try:
            plaintext = AESGCM(self.seal_key).decrypt(sealed[:12], sealed[12:],
                                                      _BLOB_AAD + self.lookup_id)
            return RecoveryBlob.FromString(plaintext)
        except (InvalidTag, DecodeError, ValueError):
            raise ClientError("the recovery blob does not open with this key") from None


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)



# -- with a client --------------------------------------------------------------------


def _blob(client: Client, username: str) -> RecoveryBlob:
    """What a restored device needs, from this device's store."""
    store = client.store
    blob = RecoveryBlob(account_id=client.account_id,
                        identity_key_pair=store.get_identity_key_pair().serialize(),
                        username=username, history_enabled=history.enabled(store))
    found = history.keys(store)
    if found is not None:
        blob.history_keys.CopyFrom(found.to_proto())
    usernames = dict(store.contacts())
    for record in store.identity_records():
        if record.account != client.account_id:
            blob.contacts.add(account_id=record.account,
                              username=usernames.get(record.account) or "",
                              identity_key=record.identity_key.serialize(),
                              verified=record.verified, send_blocked=record.send_blocked)
    for group_id in store.group_ids():
        state = store.get_group(group_id)
        if state is not None:
            blob.group_states.append(state)
    return blob


async def create_key(client: Client) -> str:
    """Make a new recovery key for the account, store its sealed blob on the relay
    (replacing an earlier key's), and return the key to show the user once."""
    key = new_key()
    secrets = Secrets.derive(key)
    me = await client.api.whoami()
    sealed = secrets.seal(_blob(client, me.get("username") or ""))
    await client.api.request("PUT", "/v1/recovery",
                             json={**secrets.release(), "blob": b64(sealed)})
    with client.store.transaction():
        client.store.set_secret(_SECRET, secrets.to_bytes())
    return format_key(key)


async def update_blob(client: Client) -> bool:
    """Seal the blobs again (recovery key and passphrase) from what this device holds now
    (after a new history epoch, for example); False when it holds no recovery secrets
    that the account still uses.

    A reseal never installs a secret: when another device has since made a new key or
    passphrase (or deleted it), the relay answers 409 ``recovery_changed`` and this
    device forgets its stale copy instead of bringing the replaced secret back."""
    data = client.store.get_secret(_SECRET)
    me = await client.api.whoami()
    username = me.get("username") or ""
    updated = await _update_passphrase_blob(client, username)
    if data is None:
        return updated
    secrets = Secrets.from_bytes(data)
    return await _reseal(client, _SECRET, "/v1/recovery", {
        **secrets.release(), "blob": b64(secrets.seal(_blob(client, username)))})


async def _reseal(client: Client, secret: str, path: str, body: dict[str, object]) -> bool:
    """PUT a resealed blob; on ``recovery_changed`` drop the stale local secret (False)."""
    try:
        await client.api.request("PUT", path, json={**body, "reseal": True})
    except RelayError as exc:
        if exc.status != 409 or exc.code != "recovery_changed":
            raise
        log.warning("a recovery secret was replaced on another device: this device's "
                    "copy is forgotten")
        with client.store.transaction():
            client.store.delete_secret(secret)
        return False
    return True


async def restore(path: Path, server: str, recovery_key: str, *,
                  passphrase: str | None = None, device_name: str | None = None,
                  argon2: Argon2Params | None = None, proxy: str | None = None,
                  options: ClientOptions | None = None,
                  progress: Callable[[int], None] | None = None,
                  second_factor: str | None = None) -> Client:
    """Get the account back on a fresh machine: open its recovery blob, join the account
    as a new device under the same identity key (contacts see no safety number change),
    take over contacts, trust and groups, and replay the server-stored history if the
    account keeps one. ``passphrase``/``argon2`` are the new local store's;
    ``second_factor`` a code from the authenticator (or a recovery code) when the account
    has one.

    Raises:
        RecoveryKeyError: not a recovery key. ClientError: no blob for it on this relay.
        RelayError: 429 after too many wrong keys (wait and retry); 403
        ``second_factor_required``/``_invalid``.
    """
    secrets = Secrets.derive(parse_key(recovery_key))
    found = await _ask(server, proxy, "/v1/recovery/open", secrets.release(),
                       "this relay holds no account for that recovery key", second_factor)
    blob = secrets.open(unb64(str(found["blob"])))
    release, joining = _joining(found, secrets.release(), RelayApi.recovery_device)
    client = await _join(path, server, found, blob, release, joining,
                         passphrase, device_name, argon2, proxy, options)
    with client.store.transaction():
        client.store.set_secret(_SECRET, secrets.to_bytes())
    return await _finish(client, blob, device_name, progress)


async def _ask(server: str, proxy: str | None, path: str, body: dict[str, str],
               refused: str, second_factor: str | None = None) -> dict[str, Any]:
    api = RelayApi(check_server_url(server), proxy=proxy)
    if second_factor:
        api.extra_headers[SECOND_FACTOR_HEADER] = second_factor
    try:
        found: dict[str, Any] = await api.request("POST", path, json=body, auth=False)
        return found
    except RelayError as exc:
        if exc.status == 403 and not exc.code.startswith("second_factor"):
            raise ClientError(refused) from None
        raise
    finally:
        await api.close()


#: The header of a second-factor code (docs/server.md, "Account security").
SECOND_FACTOR_HEADER = "X-Second-Factor"


def _joining(found: dict[str, Any], release: dict[str, str],
             request: Callable[[RelayApi, dict[str, Any]], Awaitable[Credentials]],
             ) -> tuple[dict[str, str],
                        Callable[[RelayApi, dict[str, Any]], Awaitable[Credentials]]]:
    """How the new device joins: with the one-time link code the relay handed out with
    the blob (an account with a second factor: its code was spent opening the blob), else
    with the recovery secret again."""
    link_code = found.get("link_code")
    if isinstance(link_code, str) and link_code:
        return {"link_code": link_code}, RelayApi.link_device
    return release, request


async def _join(path: Path, server: str, found: dict[str, Any], blob: RecoveryBlob,
                release: dict[str, str],
                request: Callable[[RelayApi, dict[str, Any]], Awaitable[Credentials]],
                passphrase: str | None, device_name: str | None, argon2: Argon2Params | None,
                proxy: str | None, options: ClientOptions | None) -> Client:
    if blob.account_id != found["account_id"]:
        raise ClientError("the recovery blob names another account")
    try:
        identity = IdentityKeyPair.deserialize(blob.identity_key_pair)
    except ProtocolError:
        raise ClientError("the recovery blob is malformed") from None
    return await Client._set_up(path, server, identity, release, request, passphrase,
                                device_name, argon2, proxy, options)


async def _finish(client: Client, blob: RecoveryBlob, device_name: str | None,
                  progress: Callable[[int], None] | None) -> Client:
    """Take over what the blob carries, announce the device, replay the history."""
    try:
        adopt(client, blob.contacts, blob.group_states)
        if blob.HasField("history_keys"):
            history.set_keys(client.store, history.Keys.from_proto(blob.history_keys),
                             on=blob.history_enabled)
        await client.announce_device(device_name or "")
        if history.enabled(client.store):
            await history.download(client.api, client.store, progress=progress)
    except BaseException:
        await client.close()
        raise
    return client


# -- the recovery passphrase ------------------------------------------------------------

#: zxcvbn's score (0-4) a recovery passphrase must reach: 3 is "safely unguessable:
#: moderate protection from an offline slow-hash scenario" (about 10^10 guesses).
MIN_SCORE = 3
_PASSPHRASE_SECRET = "recovery_passphrase"  # noqa: S105 - a store secret's name
_PASSPHRASE_AAD = b"Cipherpost recovery passphrase blob v1"


class WeakPassphrase(ClientError):
    """A recovery passphrase too easy to guess offline (with zxcvbn's advice)."""


def check_passphrase(passphrase: str, *, user_inputs: Iterable[str] = (),
                     what: str = "recovery passphrase") -> None:
    """Refuse a passphrase that guards something open to offline guessing (a recovery
    blob the relay holds, an export file) below :data:`MIN_SCORE`.

    Raises: WeakPassphrase."""
    result = zxcvbn(passphrase[:100], user_inputs=["cipherpost", *user_inputs])
    if int(result["score"]) < MIN_SCORE:
        advice = " ".join([result["feedback"].get("warning") or "",
                           *result["feedback"].get("suggestions", [])]).strip()
        raise WeakPassphrase(f"that {what} is too easy to guess"
                             + (f": {advice}" if advice else ""))


def _passphrase_keys(passphrase: str, salt: bytes, params: Argon2Params) -> tuple[bytes, bytes]:
    """Argon2id of the passphrase: (the blob's sealing key, the verifier for the relay).

    Raises:
        UnusableParams: see :func:`check_params`.
    """
    check_params(params)
    raw = hash_secret_raw(passphrase.encode(), salt, time_cost=params.time_cost,
                          memory_cost=params.memory_kib, parallelism=params.parallelism,
                          hash_len=64, type=Type.ID)
    return raw[:32], raw[32:]


def _seal_with(key: bytes, salt: bytes, blob: RecoveryBlob) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, blob.SerializeToString(), _PASSPHRASE_AAD + salt)


async def set_passphrase(client: Client, passphrase: str, *,
                         params: Argon2Params | None = None) -> None:
    """Let ``passphrase`` (checked for strength) recover the account too: the recovery
    blob sealed under a key derived from it with Argon2id, and a verifier (derived
    separately) whose hash the relay keeps and asks for before releasing the blob.

    Raises:
        WeakPassphrase: too easy to guess.
    """
    me = await client.api.whoami()
    username = me.get("username") or ""
    if not username:
        raise ClientError("set a username first: a recovery passphrase is found by it")
    check_passphrase(passphrase, user_inputs=[username])
    params = check_params(params or Argon2Params())
    salt = os.urandom(16)
    key, verifier = _passphrase_keys(passphrase, salt, params)
    await client.api.request("PUT", "/v1/recovery/passphrase", json={
        "salt": b64(salt), "params": params.encode(), "verifier": b64(verifier),
        "blob": b64(_seal_with(key, salt, _blob(client, username)))})
    with client.store.transaction():
        client.store.set_secret(_PASSPHRASE_SECRET,
                                key + verifier + salt + params.encode().encode())


async def _update_passphrase_blob(client: Client, username: str) -> bool:
    data = client.store.get_secret(_PASSPHRASE_SECRET)
    if data is None:
        return False
    key, verifier, salt, params = data[:32], data[32:64], data[64:80], data[80:].decode()
    return await _reseal(client, _PASSPHRASE_SECRET, "/v1/recovery/passphrase", {
        "salt": b64(salt), "params": params, "verifier": b64(verifier),
        "blob": b64(_seal_with(key, salt, _blob(client, username)))})


# The most costly passphrase hashing a relay may ask for is MAX_PARAMS (four times each
# default, store.crypto): past it a hostile relay could exhaust the restoring machine's
# memory or time. set_passphrase writes nothing above it.


def relay_params(salted: Any, floor: Argon2Params) -> tuple[Argon2Params, bytes]:
    """The Argon2id parameters and salt of the relay's answer for a recovery passphrase
    (``GET /v1/recovery/passphrase/{username}``), within bounds.

    Raises:
        ClientError: malformed; weaker than ``floor`` (a relay must not make the verifier
            it receives cheap to attack); costlier than :data:`MAX_PARAMS`, or
            parameters Argon2 refuses (less than 8 KiB per lane).
    """
    try:
        params = Argon2Params.decode(str(salted["params"]))
        salt = unb64(str(salted["salt"]))
    except (ValueError, KeyError, TypeError):
        raise ClientError("the relay sent malformed passphrase parameters") from None
    if params.time_cost < floor.time_cost or params.memory_kib < floor.memory_kib \
            or not 16 <= len(salt) <= 32 or params.parallelism < 1:
        raise ClientError("the relay asks for weaker passphrase hashing than allowed")
    try:
        check_params(params)
    except UnusableParams as exc:
        raise ClientError(f"the relay asks for passphrase hashing this device will not do: "
                          f"{exc}") from None
    return params, salt


async def restore_with_passphrase(path: Path, server: str, username: str, recovery: str, *,
                                  passphrase: str | None = None, device_name: str | None = None,
                                  argon2: Argon2Params | None = None,
                                  min_params: Argon2Params | None = None,
                                  proxy: str | None = None,
                                  options: ClientOptions | None = None,
                                  progress: Callable[[int], None] | None = None,
                                  second_factor: str | None = None) -> Client:
    """Like :func:`restore`, with the username and the recovery passphrase. The relay
    says which Argon2id parameters the passphrase was hashed with; parameters weaker than
    ``min_params`` (the local store's defaults) are refused, so a relay cannot make the
    verifier it receives cheap to attack.

    Raises:
        ClientError: wrong username or passphrase (the relay slows repeated failures).
    """
    api = RelayApi(check_server_url(server), proxy=proxy)
    try:
        salted = await api.request("GET", f"/v1/recovery/passphrase/{username}", auth=False)
    except RelayError as exc:
        if exc.status == 404:
            raise ClientError("no recovery passphrase is set for that username") from None
        raise
    finally:
        await api.close()
    params, salt = relay_params(salted, min_params or Argon2Params())
    key, verifier = _passphrase_keys(recovery, salt, params)
    release = {"username": username, "verifier": b64(verifier)}
    found = await _ask(server, proxy, "/v1/recovery/passphrase/open", release,
                       "wrong username or recovery passphrase", second_factor)
    sealed = unb64(str(found["blob"]))
    try:
        blob = RecoveryBlob.FromString(AESGCM(key).decrypt(sealed[:12], sealed[12:],
                                                           _PASSPHRASE_AAD + salt))
    except (InvalidTag, DecodeError, ValueError):
        raise ClientError("the recovery blob does not open with this passphrase") from None
    joining_body, joining = _joining(found, release, RelayApi.passphrase_device)
    client = await _join(path, server, found, blob, joining_body, joining,
                         passphrase, device_name, argon2, proxy, options)
    with client.store.transaction():
        client.store.set_secret(_PASSPHRASE_SECRET,
                                key + verifier + salt + params.encode().encode())
    return await _finish(client, blob, device_name, progress)
