"""Device linking (docs/spec/linking.md): the new device's link request (a URI shown as a
QR code), and the provisioning message an existing device encrypts to it.

The URI carries the new device's ephemeral X25519 public key and a 128-bit secret; the
message key is derived from both the X25519 agreement and that secret, so the relay, which
only ever sees the mailbox address and the ciphertext, cannot read the message or replace
it with its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from google.protobuf.message import DecodeError

from .proto.app_pb2 import CodeLinkMessage, ProvisionEnvelope, ProvisionMessage

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
        try:
            parts = urlsplit(uri.strip())
        except ValueError:  # urllib's own refusals ("Invalid IPv6 URL", for one)
            raise LinkError("not a Cipherpost link code") from None
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


# -- typed-code linking (docs/spec/linking.md, "Typed code") ----------------------------
#
# Theory of operation: the relay hands out a short code for the new device's mailbox and
# carries an X25519 agreement between the two devices. A short code cannot carry a key,
# so the user compares a 6-digit SAS derived from that agreement on both screens; the new
# device commits to its key before the existing device sends its own, so a relay in the
# middle cannot search for keys that make the two screens agree. Sans-I/O: devices.py
# moves the messages.

CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 8
_CODE_LABEL = b"Cipherpost code link v1 "
_COMMIT_LABEL = b"Cipherpost code link v1 commit"
_CONFIRM_TEXT = b"new device confirmed"
_SAS_MODULUS = 10**6
#: The fields of a CodeLinkMessage, each with its length (None: any, up to the relay's cap).
CODE_FIELDS: dict[str, int | None] = {"commitment": 32, "public_key": 32, "confirm": 32,
                                      "sealed": None}


def normalize_code(text: str) -> str:
    """A typed link code as the relay knows it: Crockford base32 read leniently (any
    case, spaces and dashes ignored, O read as 0, I and L as 1).

    Raises:
        LinkError: not 8 characters of that alphabet.
    """
    code = "".join(text.split()).replace("-", "").upper()
    code = code.translate(str.maketrans("OIL", "011"))
    if len(code) != CODE_LENGTH or not all(c in CODE_ALPHABET for c in code):
        raise LinkError("a link code is 8 characters: digits and letters other than "
                        "I, L, O and U")
    return code


def format_code(code: str) -> str:
    """``XXXX-XXXX``, for reading off one screen and typing on another."""
    return f"{code[:4]}-{code[4:]}"


def commitment(public_key: bytes) -> bytes:
    """What the new device sends first: it fixes its key without showing it."""
    return hashlib.sha256(_COMMIT_LABEL + public_key).digest()


def check_commitment(expected: bytes, public_key: bytes) -> None:
    """Raises: LinkError if ``public_key`` is not the key the commitment fixed."""
    if not hmac.compare_digest(expected, commitment(public_key)):
        raise LinkError("the new device's key does not match what it committed to: "
                        "someone may be in the middle; nothing was sent")


class CodeLinkKeys:
    """What both devices derive from their X25519 agreement: the SAS they show and the
    keys of the confirmation and of the sealed provisioning message."""

    def __init__(self, private: X25519PrivateKey, peer_public: bytes, *, new_public: bytes,
                 existing_public: bytes, address: str) -> None:
        """Raises: LinkError if ``peer_public`` is not a usable X25519 key."""
        try:
            shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError:
            raise LinkError("the other device's key is not a valid X25519 key") from None

        def derive(label: str, length: int) -> bytes:
            info = (_CODE_LABEL + label.encode() + b"\x00" + new_public + existing_public
                    + address.encode())
            return HKDF(hashes.SHA256(), length, b"", info).derive(shared)

        number = int.from_bytes(derive("sas", 5), "big") % _SAS_MODULUS
        self.sas = f"{number // 1000:03d} {number % 1000:03d}"
        self._confirm_key = derive("confirm", 32)
        provision = derive("provision", 44)
        self._key, self._nonce = provision[:32], provision[32:]
        self._aad = address.encode()

    def __repr__(self) -> str:
        return "CodeLinkKeys(<hidden>)"

    def confirm_tag(self) -> bytes:
        return hmac.new(self._confirm_key, _CONFIRM_TEXT, hashlib.sha256).digest()

    def check_confirm(self, tag: bytes) -> None:
        """Raises: LinkError if ``tag`` is not the new device's confirmation."""
        if not hmac.compare_digest(tag, self.confirm_tag()):
            raise LinkError("the new device's confirmation does not verify: someone may be "
                            "in the middle; nothing was sent")

    def seal(self, message: ProvisionMessage) -> bytes:
        return AESGCM(self._key).encrypt(self._nonce, message.SerializeToString(), self._aad)

    def open(self, sealed: bytes) -> ProvisionMessage:
        """Raises: LinkError if it was not sealed in this exchange, or is damaged."""
        try:
            return ProvisionMessage.FromString(
                AESGCM(self._key).decrypt(self._nonce, sealed, self._aad))
        except (InvalidTag, DecodeError):
            raise LinkError("the provisioning message does not open in this link (replayed "
                            "or altered)") from None


def encode_step(field: str, value: bytes) -> bytes:
    """One message of the exchange."""
    message = CodeLinkMessage(version=VERSION)
    setattr(message, field, value)
    return message.SerializeToString()


def decode_step(data: bytes, field: str) -> bytes:
    """The value of ``field`` from one message of the exchange.

    Raises:
        LinkError: malformed, another version, another field, or the wrong length.
    """
    try:
        message = CodeLinkMessage.FromString(data)
    except DecodeError:
        raise LinkError("a malformed link message") from None
    if message.version != VERSION:
        raise LinkError("a link message from another Cipherpost version")
    if message.WhichOneof("body") != field:
        raise LinkError(f"a link message out of place (expected {field.replace('_', ' ')})")
    value: bytes = getattr(message, field)
    length = CODE_FIELDS[field]
    if (length is not None and len(value) != length) or not value:
        raise LinkError(f"a link message with a malformed {field.replace('_', ' ')}")
    return value
