"""Device linking (docs/spec/linking.md): the new device's link request (a URI shown as a
QR code), and the provisioning message an existing device encrypts to it.

The URI carries the new device's ephemeral X25519 public key and a 128-bit secret; the
message key is derived from both the X25519 agreement and that secret, so the relay, which
only ever sees the mailbox address and the ciphertext, cannot read the message or replace
it with its own.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from google.protobuf.message import DecodeError

from .proto.app_pb2 import ProvisionEnvelope, ProvisionMessage

SCHEME = "cipherpost"
VERSION = 1
SECRET_BYTES = 16
_INFO = b"Cipherpost provisioning v1"


class LinkError(ValueError):
    """A link URI or provisioning message that is malformed, or not meant for us."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class LinkRequest:
    """What the new device shows: the relay, its mailbox, its key and the secret."""

    server: str
    address: str
    public_key: bytes
    secret: bytes

    def uri(self) -> str:
        query = urlencode({"v": VERSION, "s": self.server, "a": self.address,
                           "k": _b64(self.public_key), "x": _b64(self.secret)})
        return f"{SCHEME}://link?{query}"

    @classmethod
    def parse(cls, uri: str) -> LinkRequest:
        """Raises: LinkError for anything but a well-formed version-1 link URI."""
        parts = urlsplit(uri.strip())
        if parts.scheme != SCHEME or parts.netloc != "link":
            raise LinkError("not a Cipherpost link code")
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        try:
            if int(query.get("v", "0")) != VERSION:
                raise LinkError("this link code is from another Cipherpost version")
            request = cls(query["s"], query["a"], _unb64(query["k"]), _unb64(query["x"]))
        except (KeyError, ValueError) as exc:
            raise LinkError("the link code is incomplete or damaged") from exc
        if len(request.public_key) != 32 or len(request.secret) != SECRET_BYTES:
            raise LinkError("the link code is incomplete or damaged")
        return request

    def __repr__(self) -> str:
        return f"LinkRequest(server={self.server!r}, address=<hidden>)"


def _keys(shared: bytes, request: LinkRequest) -> tuple[bytes, bytes]:
    okm = HKDF(hashes.SHA256(), 44, request.secret,
               _INFO + request.address.encode()).derive(shared)
    return okm[:32], okm[32:]


def new_request(server: str, address: str) -> tuple[LinkRequest, X25519PrivateKey]:
    """A link request for a mailbox, with the private key that opens what arrives."""
    private = X25519PrivateKey.generate()
    return LinkRequest(server, address, private.public_key().public_bytes_raw(),
                       os.urandom(SECRET_BYTES)), private


def seal(request: LinkRequest, message: ProvisionMessage) -> bytes:
    """Encrypt a provisioning message to the device that showed ``request``."""
    ephemeral = X25519PrivateKey.generate()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(request.public_key))
    key, nonce = _keys(shared, request)
    ciphertext = AESGCM(key).encrypt(nonce, message.SerializeToString(),
                                     request.address.encode())
    return ProvisionEnvelope(version=VERSION,
                             public_key=ephemeral.public_key().public_bytes_raw(),
                             ciphertext=ciphertext).SerializeToString()


def open_envelope(request: LinkRequest, private: X25519PrivateKey,
                  data: bytes) -> ProvisionMessage:
    """Decrypt what arrived in our mailbox.

    Raises:
        LinkError: malformed, another version, or not encrypted to this request.
    """
    try:
        envelope = ProvisionEnvelope.FromString(data)
        if envelope.version != VERSION or len(envelope.public_key) != 32:
            raise LinkError("an unsupported provisioning message")
        shared = private.exchange(X25519PublicKey.from_public_bytes(envelope.public_key))
        key, nonce = _keys(shared, request)
        plaintext = AESGCM(key).decrypt(nonce, envelope.ciphertext, request.address.encode())
        return ProvisionMessage.FromString(plaintext)
    except (DecodeError, InvalidTag, ValueError) as exc:
        raise LinkError("the provisioning message does not open with this link code") \
            from exc
