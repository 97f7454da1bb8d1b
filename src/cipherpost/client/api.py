"""The relay's HTTP API as typed async calls (httpx), and its errors as exceptions.

Plain HTTP is refused except to loopback addresses; a SOCKS5 proxy (Tor, for example)
can carry every request.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from cipherpost.protocol import KemPublicKey, PreKeyBundle, PublicKey
from cipherpost.protocol.errors import ProtocolError

TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class RelayError(Exception):
    """The relay answered with an error: ``status``, a stable ``code`` and the body."""

    def __init__(self, status: int, code: str, message: str, body: dict[str, Any]) -> None:
        super().__init__(f"{message} ({status} {code})")
        self.status = status
        self.code = code
        self.body = body


class RelayUnavailable(Exception):
    """The relay could not be reached (network error or timeout)."""


def check_server_url(url: str) -> str:
    """``url`` without a trailing slash; plain http only to loopback.

    Raises:
        ValueError: not http(s), or plain http to a non-loopback host.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a server URL: {url!r}")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ValueError("plain http is allowed only to loopback addresses; use https")
    return url.rstrip("/")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


@dataclass(frozen=True)
class Credentials:
    account_id: str
    device_id: int
    token: str

    def __repr__(self) -> str:
        return f"Credentials(account_id={self.account_id!r}, device_id={self.device_id})"


class MalformedEnvelope(ProtocolError):
    """The relay sent an envelope (or a page or frame of them) that is not well-formed."""

    kind = "malformed_envelope"


#: Bounds of an envelope's fields as the relay sends them (docs/websocket.md): ids are
#: UUIDs, device ids 1..127, types a byte, timestamps milliseconds in a signed 64 bits.
MAX_ENVELOPE_ID = 64
MAX_ACCOUNT_ID = 64


def _int_in(data: dict[str, Any], key: str, low: int, high: int) -> int:
    value = data.get(key)
    if type(value) is not int or not low <= value <= high:
        raise MalformedEnvelope(f"malformed envelope: {key}")
    return value


@dataclass(frozen=True)
class Envelope:
    """A queued ciphertext as the relay delivers it."""

    id: str
    sender_account_id: str | None
    sender_device_id: int | None
    type: int
    content: bytes
    client_timestamp: int
    server_timestamp: int

    @classmethod
    def from_json(cls, data: object) -> Envelope:
        """An envelope of the relay's JSON, every field checked (the relay is not trusted
        to be well-formed: a field of the wrong type must not reach the decryption path).

        Raises:
            MalformedEnvelope: not an object, a field missing, of the wrong type or out of
                range, or content that is not base64.
        """
        if not isinstance(data, dict):
            raise MalformedEnvelope("malformed envelope: not an object")
        guid = data.get("id")
        if not isinstance(guid, str) or not 0 < len(guid) <= MAX_ENVELOPE_ID:
            raise MalformedEnvelope("malformed envelope: id")
        sender = data.get("sender_account_id")
        if sender is not None and (not isinstance(sender, str)
                                   or not 0 < len(sender) <= MAX_ACCOUNT_ID):
            raise MalformedEnvelope("malformed envelope: sender_account_id")
        device = None if data.get("sender_device_id") is None \
            else _int_in(data, "sender_device_id", 1, 127)
        content = data.get("content")
        try:
            raw = unb64(content) if isinstance(content, str) else None
        except ValueError:
            raw = None
        if raw is None:
            raise MalformedEnvelope("malformed envelope: content")
        return cls(guid, sender, device, _int_in(data, "type", 0, 255), raw,
                   _int_in(data, "client_timestamp", 0, 2**63 - 1),
                   _int_in(data, "server_timestamp", 0, 2**63 - 1))


def parse_messages(data: object) -> tuple[list[Envelope], bool]:
    """The envelopes of a ``GET /v1/messages`` answer, and whether more are queued.

    Raises:
        MalformedEnvelope: the page, or an envelope in it, is malformed.
    """
    messages = data.get("messages") if isinstance(data, dict) else None
    more = data.get("more") if isinstance(data, dict) else None
    if not isinstance(messages, list) or not isinstance(more, bool):
        raise MalformedEnvelope("malformed page of messages")
    return [Envelope.from_json(e) for e in messages], more


def _field(obj: object, key: str, kind: type) -> Any:
    """``obj[key]``, which must be a JSON value of ``kind`` (booleans are not integers).

    Raises:
        ProtocolError: ``obj`` is not an object, the key is absent, or the type is wrong.
    """
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"malformed bundle answer: {key}")
    return value


def _u32(obj: object, key: str) -> int:
    value = _field(obj, key, int)
    if not 0 <= value <= 0xFFFFFFFF:
        raise ProtocolError(f"malformed bundle answer: {key} out of range")
    return int(value)


def _key_bytes(obj: object, key: str) -> bytes:
    try:
        return unb64(_field(obj, key, str))
    except ValueError:
        raise ProtocolError(f"malformed bundle answer: {key} is not base64") from None


def parse_bundles(data: object) -> list[PreKeyBundle]:
    """The bundles of a ``GET /v1/keys/{account}/{device}`` answer (from a relay we do not
    trust to be well-formed).

    Raises:
        ProtocolError: anything malformed in the answer, or a malformed key.
    """
    identity = PublicKey.deserialize(_key_bytes(data, "identity_key"))
    bundles = []
    for d in _field(data, "devices", list):
        signed = _field(d, "signed_prekey", dict)
        kyber = _field(d, "kyber_prekey", dict)
        one_time = d.get("one_time_prekey")
        if one_time is not None and not isinstance(one_time, dict):
            raise ProtocolError("malformed bundle answer: one_time_prekey")
        try:
            bundles.append(PreKeyBundle(
                registration_id=_u32(d, "registration_id"),
                device_id=_u32(d, "device_id"),
                identity_key=identity,
                signed_pre_key_id=_u32(signed, "key_id"),
                signed_pre_key=PublicKey.deserialize(_key_bytes(signed, "public_key")),
                signed_pre_key_signature=_key_bytes(signed, "signature"),
                kyber_pre_key_id=_u32(kyber, "key_id"),
                kyber_pre_key=KemPublicKey.deserialize(_key_bytes(kyber, "public_key")),
                kyber_pre_key_signature=_key_bytes(kyber, "signature"),
                pre_key_id=_u32(one_time, "key_id") if one_time else None,
                pre_key=PublicKey.deserialize(_key_bytes(one_time, "public_key"))
                if one_time else None,
            ))
        except (TypeError, ValueError) as exc:  # out-of-range ids, mismatched halves
            raise ProtocolError(f"malformed bundle answer: {exc}") from None
    return bundles


class RelayApi:
    """One device's view of the relay's HTTP API."""

    def __init__(self, server: str, *, token: str | None = None, proxy: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.server = check_server_url(server)
        self.proxy = proxy
        self._token = token
        #: Sent with every request, e.g. ``X-Second-Factor`` for a protected action.
        self.extra_headers: dict[str, str] = {}
        if transport is None and proxy is not None:
            from httpx_socks import AsyncProxyTransport
            transport = AsyncProxyTransport.from_url(proxy)
        self._http = httpx.AsyncClient(base_url=self.server, timeout=TIMEOUT,
                                       transport=transport)
        #: A transport the caller injected (tests run the relay in process through one).
        self._injected = transport if proxy is None else None
        #: Sealed sends go over connections of their own, never one that carried this
        #: device's token (the relay could link them by connection); made when first used.
        self._sealed_http: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"RelayApi({self.server!r})"

    async def close(self) -> None:
        await self._http.aclose()
        if self._sealed_http is not None:
            await self._sealed_http.aclose()

    def set_token(self, token: str) -> None:
        self._token = token

    @property
    def auth_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    async def request(self, method: str, path: str, *, json: Any = None,
                      content: bytes | None = None, auth: bool = True) -> Any:
        """Make a request; the decoded JSON answer (None for 204).

        Raises:
            RelayError: an error answer.
            RelayUnavailable: no answer.
        """
        headers = {**(self.auth_header if auth else {}), **self.extra_headers}
        try:
            response = await self._http.request(method, path, json=json, content=content,
                                                headers=headers)
        except httpx.HTTPError as exc:
            raise RelayUnavailable(f"cannot reach {self.server}: {exc}") from None
        _raise_for(response)
        if response.status_code == 204 or not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    # -- accounts and devices ---------------------------------------------------------

    async def register(self, body: dict[str, Any]) -> Credentials:
        data = await self.request("POST", "/v1/accounts", json=body, auth=False)
        return Credentials(data["account_id"], int(data["device_id"]), data["token"])

    async def link_device(self, body: dict[str, Any]) -> Credentials:
        data = await self.request("POST", "/v1/devices", json=body, auth=False)
        return Credentials(data["account_id"], int(data["device_id"]), data["token"])

    async def recovery_device(self, body: dict[str, Any]) -> Credentials:
        """Join an account as a new device with its recovery secrets (in ``body``)."""
        data = await self.request("POST", "/v1/recovery/devices", json=body, auth=False)
        return Credentials(data["account_id"], int(data["device_id"]), data["token"])

    async def passphrase_device(self, body: dict[str, Any]) -> Credentials:
        """Join an account as a new device with its recovery passphrase's verifier."""
        data = await self.request("POST", "/v1/recovery/passphrase/devices", json=body,
                                  auth=False)
        return Credentials(data["account_id"], int(data["device_id"]), data["token"])

    async def create_link_code(self) -> str:
        return str((await self.request("POST", "/v1/devices/link-codes"))["link_code"])

    async def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", "/v1/accounts/me")
        return result

    async def devices(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("GET", "/v1/devices")
        return result

    async def remove_device(self, device_id: int) -> None:
        await self.request("DELETE", f"/v1/devices/{device_id}")

    async def set_username(self, username: str | None) -> None:
        await self.request("PUT", "/v1/accounts/me/username", json={"username": username})

    async def lookup_username(self, username: str) -> str:
        return str((await self.request("GET", f"/v1/usernames/{username}"))["account_id"])

    # -- keys -------------------------------------------------------------------------

    async def upload_keys(self, body: dict[str, Any]) -> None:
        await self.request("PUT", "/v1/keys", json=body)

    async def key_counts(self) -> tuple[int, int]:
        data = await self.request("GET", "/v1/keys/count")
        return int(data["one_time_prekeys"]), int(data["kyber_prekeys"])

    async def bundles(self, account_id: str, device: int | None = None) -> list[PreKeyBundle]:
        """Bundles of one device or all devices of an account.

        Raises:
            RelayError: unknown account or device (404), rate limited (429).
            RelayUnavailable: no answer.
            ProtocolError: malformed keys in the answer.
        """
        which = "*" if device is None else str(device)
        return parse_bundles(await self.request("GET", f"/v1/keys/{account_id}/{which}"))

    # -- messages ---------------------------------------------------------------------

    async def send(self, account_id: str, timestamp: int,
                   messages: list[dict[str, Any]]) -> int:
        data = await self.request("PUT", f"/v1/messages/{account_id}",
                                  json={"timestamp": timestamp, "messages": messages})
        return int(data["queued"])

    async def send_sealed(self, account_id: str, access_key: bytes,
                          messages: list[dict[str, Any]]) -> int:
        """A sealed send (docs/spec/sealed-sender.md): no token, on a connection that never
        carried one, authorised by the recipient's unidentified-access key.

        Raises:
            RelayError: 401 (the key is refused), 403 (a device cannot open sealed
                envelopes), 409/410 as for :meth:`send`, 429, 507.
            RelayUnavailable: no answer.
        """
        if self._sealed_http is None:
            transport = self._injected
            if self.proxy is not None:
                from httpx_socks import AsyncProxyTransport
                transport = AsyncProxyTransport.from_url(self.proxy)  # a pool of its own
            self._sealed_http = httpx.AsyncClient(base_url=self.server, timeout=TIMEOUT,
                                                  transport=transport)
        try:
            response = await self._sealed_http.put(
                f"/v1/sealed/{account_id}", json={"messages": messages},
                headers={"Unidentified-Access-Key": b64(access_key)})
        except httpx.HTTPError as exc:
            raise RelayUnavailable(f"cannot reach {self.server}: {exc}") from None
        _raise_for(response)
        return int(response.json()["queued"])

    async def trust_root(self) -> PublicKey:
        """The relay's sealed-sender trust root (to pin once, at registration or link).

        Raises:
            ProtocolError: a malformed key in the answer.
        """
        data = await self.request("GET", "/v1/certificates/trust-root", auth=False)
        return PublicKey.deserialize(_key_bytes(data, "trust_root"))

    async def certificate_revocations(self) -> tuple[PublicKey, list[int]]:
        """The relay's trust root and the server key ids it revoked (leaked keys: their
        certificates are refused). Ids that are not u32 integers are left out.

        Raises:
            ProtocolError: a malformed key in the answer.
        """
        data = await self.request("GET", "/v1/certificates/trust-root", auth=False)
        ids = data.get("revoked_server_key_ids") if isinstance(data, dict) else None
        revoked = [i for i in ids if isinstance(i, int) and not isinstance(i, bool)
                   and 0 <= i <= 0xFFFFFFFF] if isinstance(ids, list) else []
        return PublicKey.deserialize(_key_bytes(data, "trust_root")), revoked

    async def sender_certificate(self) -> bytes:
        """A fresh sender certificate for this device (serialized)."""
        return _key_bytes(await self.request("GET", "/v1/certificates/sender"), "certificate")

    async def set_access_key(self, key: bytes) -> None:
        """Register the account's unidentified-access key; this device opens sealed
        envelopes."""
        await self.request("PUT", "/v1/accounts/me/unidentified-access",
                           json={"key": b64(key)})

    async def access_key_state(self) -> tuple[bytes | None, bool]:
        """The SHA-256 of the account's access key as the relay holds it (None: it holds
        none) and whether it marks this device as opening sealed envelopes.

        Raises:
            ProtocolError: a malformed answer.
        """
        data = await self.request("GET", "/v1/accounts/me/unidentified-access")
        digest = data.get("key_sha256") if isinstance(data, dict) else None
        opens = data.get("device_opens_sealed") if isinstance(data, dict) else None
        if not isinstance(opens, bool):
            raise ProtocolError("the relay's access-key state is malformed")
        if digest is None:
            return None, opens
        return _key_bytes(data, "key_sha256"), opens

    async def fetch(self, limit: int = 100) -> tuple[list[Envelope], bool]:
        """A page of the queue.

        Raises:
            MalformedEnvelope: the page, or an envelope in it, is malformed.
        """
        return parse_messages(await self.request("GET", f"/v1/messages?limit={limit}"))

    async def ack(self, ids: list[str]) -> None:
        await self.request("POST", "/v1/messages/ack", json={"ids": ids})

    # -- attachments ------------------------------------------------------------------

    async def upload_attachment(self, blob: bytes,
                                progress: Callable[[int, int], None] | None = None) -> str:
        """Upload an encrypted blob in chunks (``progress(sent, total)``); its id."""

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(blob), _CHUNK):
                yield blob[start:start + _CHUNK]
                if progress is not None:
                    progress(min(start + _CHUNK, len(blob)), len(blob))

        headers = {**self.auth_header, "Content-Length": str(len(blob)),
                   "Content-Type": "application/octet-stream"}
        try:
            response = await self._http.post("/v1/attachments", content=chunks(),
                                             headers=headers)
        except httpx.HTTPError as exc:
            raise RelayUnavailable(f"cannot reach {self.server}: {exc}") from None
        _raise_for(response)
        return str(response.json()["id"])

    async def download_attachment(self, attachment_id: str, *, max_bytes: int,
                                  progress: Callable[[int, int], None] | None = None) -> bytes:
        """Download a blob (at most ``max_bytes``), reporting ``progress(received, total)``."""
        parts: list[bytes] = []
        received = 0
        try:
            async with self._http.stream("GET", f"/v1/attachments/{attachment_id}",
                                         headers=self.auth_header) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _raise_for(response)
                total = int(response.headers.get("content-length") or 0)
                async for chunk in response.aiter_bytes(_CHUNK):
                    received += len(chunk)
                    if received > max_bytes:
                        raise RelayError(413, "too_large", "the attachment is larger than "
                                         "its pointer says", {})
                    parts.append(chunk)
                    if progress is not None:
                        progress(received, total or received)
        except httpx.HTTPError as exc:
            raise RelayUnavailable(f"cannot reach {self.server}: {exc}") from None
        return b"".join(parts)


_CHUNK = 256 * 1024


def _raise_for(response: httpx.Response) -> None:
    """Raises: RelayError for an error answer."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
        error = body.get("error", {})
        code, message = str(error.get("code")), str(error.get("message"))
    except (ValueError, AttributeError):
        body, code, message = {}, "unknown", response.text[:200]
    raise RelayError(response.status_code, code, message, body)
