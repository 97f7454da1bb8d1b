"""Wire messages of the 1:1 protocol and of sender keys (digest §5, §6.1, §6.2).

Each class parses from bytes (strictly: anything malformed raises a :class:`ProtocolError`)
and keeps the exact bytes it came from, because MACs and signatures cover the bytes
received, never a re-encoding.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass

from . import protobuf as pb
from .constants import CURRENT_VERSION, MAC_LENGTH, SENDER_KEY_VERSION
from .errors import InvalidKey, InvalidMessage, ProtocolError, UnknownVersion
from .keys import IdentityKey, PublicKey

WHISPER_TYPE = 2
PREKEY_TYPE = 3
SENDERKEY_TYPE = 7
PLAINTEXT_TYPE = 8


def _version_byte(version: int) -> bytes:
    return bytes(((version << 4) | CURRENT_VERSION,))


def _check_version(first: int, *, exact: int | None = None) -> int:
    """High nibble of a version byte; legacy and future versions are refused."""
    version = first >> 4
    if exact is not None:
        if version != exact:
            raise UnknownVersion(f"unsupported message version {version}")
        return version
    if version < 3 or version > CURRENT_VERSION:
        raise UnknownVersion(f"unsupported message version {version}")
    return version


def _decode(data: bytes, what: str) -> pb.Fields:
    try:
        return pb.decode(data)
    except pb.DecodeError as exc:
        raise InvalidMessage(f"malformed {what}") from exc


def _required_bytes(fields: pb.Fields, number: int, what: str) -> bytes:
    try:
        value = pb.get_bytes(fields, number)
    except pb.DecodeError as exc:
        raise InvalidMessage(f"malformed {what}") from exc
    if value is None:
        raise InvalidMessage(f"{what} lacks field {number}")
    return value


def _optional_uint32(fields: pb.Fields, number: int, what: str) -> int | None:
    try:
        return pb.get_uint32(fields, number)
    except pb.DecodeError as exc:
        raise InvalidMessage(f"malformed {what}") from exc


def _required_uint32(fields: pb.Fields, number: int, what: str) -> int:
    value = _optional_uint32(fields, number, what)
    if value is None:
        raise InvalidMessage(f"{what} lacks field {number}")
    return value


def _public_key(data: bytes) -> PublicKey:
    try:
        return PublicKey.deserialize(data)
    except InvalidKey as exc:
        raise InvalidMessage("invalid key in message") from exc


#: From this size on, message bodies are handled as pieces and views, never copied whole.
LARGE = 4096
_ONE_BYTE = tuple(bytes((i,)) for i in range(0x80))


def varint(value: int) -> bytes:
    """:func:`.protobuf.encode_varint` with the one- and two-byte cases (counters and
    lengths below 16384, nearly every message) taken without a loop."""
    if 0 <= value < 0x80:
        return _ONE_BYTE[value]
    if 0x80 <= value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    return pb.encode_varint(value)


def header_prefix(version: int, ratchet_key: bytes) -> bytes:
    """The part of a SignalMessage body before the counter, fixed per sending chain:
    version byte, field 1 (the 33-byte ratchet key) and field 2's tag."""
    return _version_byte(version) + b"\x0a\x21" + ratchet_key + b"\x10"


def header_rest(counter: int, previous_counter: int, length: int) -> bytes:
    """The body after :func:`header_prefix` up to the ciphertext: counter, field 3
    (previous counter) and field 4's tag and length."""
    if 0 <= counter < 0x4000 and 0 <= previous_counter < 0x80 and 0 <= length < 0x4000:
        # The usual case, in one call: a previous counter below 128, a counter and a
        # length below 16384.
        head = ((counter,) if counter < 0x80 else ((counter & 0x7F) | 0x80, counter >> 7))
        tail = ((length,) if length < 0x80 else ((length & 0x7F) | 0x80, length >> 7))
        return bytes((*head, 0x18, previous_counter, 0x22, *tail))
    return (varint(counter) + b"\x18" + varint(previous_counter) + b"\x22"
            + varint(length))


def mac_prefixed(mac_key: bytes, identities: bytes, body: bytes | memoryview) -> bytes:
    """The 8-byte MAC over ``sender || receiver`` identities and a message body.

    Small bodies take one concatenation and OpenSSL's one-shot HMAC; large ones are fed
    in pieces so the body is never copied.
    """
    if len(body) < LARGE:
        return hmac.digest(mac_key, identities + body, "sha256")[:MAC_LENGTH]
    h = hmac.new(mac_key, identities, "sha256")
    h.update(body)
    return h.digest()[:MAC_LENGTH]


def compute_mac(mac_key: bytes, sender: IdentityKey, receiver: IdentityKey, body: bytes) -> bytes:
    """The 8-byte MAC of a SignalMessage body (version byte + protobuf)."""
    return mac_prefixed(mac_key, sender.serialize() + receiver.serialize(), body)


class SignalMessage:
    """A ratchet ("whisper") message: ``version || protobuf || mac(8)``.

    This is the per-message hot path, so it is a plain slotted class, keeps the ratchet
    key as its 33 serialized bytes (a :class:`PublicKey` is made only when needed), and
    parses libsignal's canonical layout directly before falling back to a general decode.
    The ciphertext of a large message (:data:`LARGE` bytes or more) is a ``memoryview``
    into ``serialized`` rather than a copy.
    """

    __slots__ = ("_ratchet_key", "addresses", "ciphertext", "counter", "pq_ratchet",
                 "previous_counter", "ratchet_key_bytes", "serialized", "version")

    def __init__(self, version: int, ratchet_key_bytes: bytes, counter: int,
                 previous_counter: int, ciphertext: bytes | memoryview, pq_ratchet: bytes,
                 addresses: bytes | None, serialized: bytes) -> None:
        self.version = version
        self.ratchet_key_bytes = ratchet_key_bytes
        self.counter = counter
        self.previous_counter = previous_counter
        self.ciphertext = ciphertext
        self.pq_ratchet = pq_ratchet
        self.addresses = addresses
        self.serialized = serialized
        self._ratchet_key: PublicKey | None = None

    @property
    def ratchet_key(self) -> PublicKey:
        """The sender's ratchet public key."""
        if self._ratchet_key is None:  # 33 bytes starting 0x05, as parse checked
            self._ratchet_key = PublicKey.from_stored(self.ratchet_key_bytes)
        return self._ratchet_key

    def __repr__(self) -> str:
        return (f"SignalMessage(v{self.version}, counter={self.counter}, "
                f"{len(self.ciphertext)} ciphertext bytes)")

    @staticmethod
    def encode_body(version: int, ratchet_key: bytes, counter: int, previous_counter: int,
                    ciphertext: bytes, pq_ratchet: bytes = b"") -> bytes:
        """Version byte and protobuf, fields in libsignal's order 1, 2, 3, 4, 5."""
        body = (header_prefix(version, ratchet_key)
                + header_rest(counter, previous_counter, len(ciphertext)) + ciphertext)
        if pq_ratchet:
            body += pb.field_bytes(5, pq_ratchet)
        return body

    @classmethod
    def build(
        cls,
        *,
        mac_key: bytes,
        ratchet_key: PublicKey,
        counter: int,
        previous_counter: int,
        ciphertext: bytes,
        sender_identity: IdentityKey,
        receiver_identity: IdentityKey,
        version: int = CURRENT_VERSION,
        pq_ratchet: bytes = b"",
    ) -> SignalMessage:
        """Encode and MAC a message."""
        key = ratchet_key.serialize()
        body = cls.encode_body(version, key, counter, previous_counter, ciphertext, pq_ratchet)
        mac = compute_mac(mac_key, sender_identity, receiver_identity, body)
        return cls(version, key, counter, previous_counter, ciphertext, pq_ratchet, None,
                   body + mac)

    @classmethod
    def parse(cls, data: bytes) -> SignalMessage:
        """Parse a serialized SignalMessage.

        Raises:
            UnknownVersion: a version nibble below 3 or above 4.
            InvalidMessage: anything else malformed.
        """
        if len(data) < 1 + MAC_LENGTH:
            raise InvalidMessage("message too short")
        version = data[0] >> 4
        if version != CURRENT_VERSION:
            _check_version(data[0])
        if type(data) is not bytes:
            data = bytes(data)
        fast = _parse_canonical(data)
        if fast is not None:
            counter, previous, ciphertext, pq, addresses = fast
            return cls(version, data[3:36], counter, previous, ciphertext, pq, addresses, data)
        fields = _decode(data[1:-MAC_LENGTH], "SignalMessage")
        ratchet_key = _public_key(_required_bytes(fields, 1, "SignalMessage")).serialize()
        counter = _required_uint32(fields, 2, "SignalMessage")
        previous = _optional_uint32(fields, 3, "SignalMessage") or 0
        ciphertext = _required_bytes(fields, 4, "SignalMessage")
        try:
            pq = pb.get_bytes(fields, 5) or b""
            addresses = pb.get_bytes(fields, 6)
        except pb.DecodeError as exc:
            raise InvalidMessage("malformed SignalMessage") from exc
        return cls(version, ratchet_key, counter, previous, ciphertext, pq, addresses, data)

    def verify_mac(self, mac_key: bytes, sender: IdentityKey, receiver: IdentityKey) -> bool:
        """Constant-time check of the trailing MAC over the bytes received."""
        return self.verify_mac_prefixed(mac_key, sender.serialize() + receiver.serialize())

    def verify_mac_prefixed(self, mac_key: bytes, identities: bytes) -> bool:
        """As :meth:`verify_mac`, given ``sender || receiver`` serialized identities."""
        data = self.serialized
        body = data[:-MAC_LENGTH] if len(data) < LARGE else memoryview(data)[:-MAC_LENGTH]
        return hmac.compare_digest(mac_prefixed(mac_key, identities, body),
                                   data[-MAC_LENGTH:])


Canonical = tuple[int, int, bytes | memoryview, bytes, bytes | None]


def _parse_canonical(data: bytes) -> Canonical | None:
    """Parse the exact layout libsignal (and we) write, or return None to decode generally.

    Layout: ``version | 0a 21 <33-byte key starting 05> | 10 <varint> | 18 <varint> |
    22 <varint len> <ciphertext> | [2a <len> <SPQR bytes>] | [32 <len> <addresses>] |
    mac(8)`` with nothing else. Varints of one or two bytes (values below 16384) are read
    inline; longer ones go through the protobuf reader. A ciphertext of :data:`LARGE` bytes
    or more is a view into ``data``, not a copy. Returns ``(counter, previous counter,
    ciphertext, field 5 (empty if absent), field 6 or None)``.
    """
    end = len(data) - MAC_LENGTH
    if end < 42 or data[1] != 0x0A or data[2] != 0x21 or data[3] != 0x05 or data[36] != 0x10:
        return None
    # Every index read below is under 48 < len(data); a read past ``end`` (into the MAC)
    # can only leave ``pos`` past ``end``, which the final length check refuses.
    counter = data[37]
    pos = 38
    if counter >= 0x80:
        if data[38] >= 0x80:
            return _parse_long_varints(data, end)
        counter = (counter & 0x7F) | data[38] << 7
        pos = 39
    if data[pos] != 0x18:
        return None
    previous = data[pos + 1]
    pos += 2
    if previous >= 0x80:
        if data[pos] >= 0x80:
            return _parse_long_varints(data, end)
        previous = (previous & 0x7F) | data[pos] << 7
        pos += 1
    if data[pos] != 0x22:
        return None
    length = data[pos + 1]
    pos += 2
    if length >= 0x80:
        if data[pos] >= 0x80:
            return _parse_long_varints(data, end)
        length = (length & 0x7F) | data[pos] << 7
        pos += 1
    stop = pos + length
    if stop != end:
        return _parse_trailer(data, pos, stop, end, counter, previous)
    return (counter, previous, data[pos:end] if length < LARGE else memoryview(data)[pos:end],
            b"", None)


def _parse_trailer(data: bytes, pos: int, stop: int, end: int, counter: int,
                   previous: int) -> Canonical | None:
    """The fields after a ciphertext at ``data[pos:stop]``: SPQR bytes (field 5, every
    message of an SPQR session) and addresses (field 6), each at most once and in this
    order, lengths below 16384; anything else goes to the general decode."""
    if stop + 2 <= end and data[stop] == 0x2A and data[stop + 1] < 0x80 \
            and stop + 2 + data[stop + 1] == end:
        # Field 5 alone, under 128 bytes: every message of an SPQR session but a PreKey one.
        return (counter, previous,
                data[pos:stop] if stop - pos < LARGE else memoryview(data)[pos:stop],
                data[stop + 2:end], None)
    at = stop
    fields: list[bytes | None] = [b"", None]
    for slot, key in ((0, 0x2A), (1, 0x32)):   # protobuf field keys of fields 5 and 6
        if at + 2 > end or data[at] != key:
            continue
        length = data[at + 1]
        at += 2
        if length >= 0x80:
            if at >= end or data[at] >= 0x80:
                return None
            length = (length & 0x7F) | data[at] << 7
            at += 1
        if at + length > end:
            return None
        fields[slot] = data[at:at + length]
        at += length
    if at != end:
        return None
    pq, addresses = fields
    assert pq is not None
    ciphertext = data[pos:stop] if stop - pos < LARGE else memoryview(data)[pos:stop]
    return counter, previous, ciphertext, pq, addresses


def _parse_long_varints(data: bytes, end: int) -> Canonical | None:
    """:func:`_parse_canonical` for varints of any length."""
    pos = 37
    values = []
    for tag in (0x18, 0x22, None):
        try:
            value, pos = pb.read_varint(data, pos, end)
        except pb.DecodeError:
            return None
        if value >= 1 << 32:
            return None
        values.append(value)
        if tag is not None:
            if pos >= end or data[pos] != tag:
                return None
            pos += 1
    length = values[2]
    stop = pos + length
    if stop != end:
        return _parse_trailer(data, pos, stop, end, values[0], values[1])
    return values[0], values[1], (data[pos:end] if length < LARGE
                                  else memoryview(data)[pos:end]), b"", None


@dataclass(frozen=True, slots=True)
class PreKeySignalMessage:
    """The first messages of a session: PQXDH parameters around a SignalMessage."""

    version: int
    registration_id: int
    pre_key_id: int | None
    signed_pre_key_id: int
    kyber_pre_key_id: int | None
    kyber_ciphertext: bytes | None
    base_key: PublicKey
    identity_key: IdentityKey
    message: SignalMessage
    serialized: bytes

    @classmethod
    def build(
        cls,
        *,
        registration_id: int,
        pre_key_id: int | None,
        signed_pre_key_id: int,
        kyber_pre_key_id: int,
        kyber_ciphertext: bytes,
        base_key: PublicKey,
        identity_key: IdentityKey,
        message: SignalMessage,
        version: int = CURRENT_VERSION,
    ) -> PreKeySignalMessage:
        """Encode in libsignal's field order 1..8."""
        body = b"".join(
            (
                _version_byte(version),
                pb.field_varint(1, pre_key_id) if pre_key_id is not None else b"",
                pb.field_bytes(2, base_key.serialize()),
                pb.field_bytes(3, identity_key.serialize()),
                pb.field_bytes(4, message.serialized),
                pb.field_varint(5, registration_id),
                pb.field_varint(6, signed_pre_key_id),
                pb.field_varint(7, kyber_pre_key_id),
                pb.field_bytes(8, kyber_ciphertext),
            )
        )
        return cls(version, registration_id, pre_key_id, signed_pre_key_id, kyber_pre_key_id,
                   kyber_ciphertext, base_key, identity_key, message, body)

    @classmethod
    def parse(cls, data: bytes) -> PreKeySignalMessage:
        """Parse a serialized PreKeySignalMessage.

        Raises:
            UnknownVersion: a version nibble below 3 or above 4.
            InvalidMessage: anything else malformed, including an X3DH (v3) message,
                which libsignal no longer accepts, and missing Kyber fields.
        """
        if not data:
            raise InvalidMessage("empty message")
        version = _check_version(data[0])
        fields = _decode(data[1:], "PreKeySignalMessage")
        what = "PreKeySignalMessage"
        registration_id = _optional_uint32(fields, 5, what) or 0
        pre_key_id = _optional_uint32(fields, 1, what)
        signed_pre_key_id = _required_uint32(fields, 6, what)
        kyber_id = _optional_uint32(fields, 7, what)
        try:
            kyber_ct = pb.get_bytes(fields, 8)
        except pb.DecodeError as exc:
            raise InvalidMessage("malformed PreKeySignalMessage") from exc
        if (kyber_id is None) != (kyber_ct is None):
            raise InvalidMessage("both or neither Kyber pre key id and ciphertext")
        if version == CURRENT_VERSION and kyber_id is None:
            raise InvalidMessage("Kyber pre key must be present for this session version")
        if version < CURRENT_VERSION:
            raise InvalidMessage("X3DH no longer supported")
        base_key = _public_key(_required_bytes(fields, 2, what))
        identity_key = _public_key(_required_bytes(fields, 3, what))
        message = SignalMessage.parse(_required_bytes(fields, 4, what))
        return cls(version, registration_id, pre_key_id, signed_pre_key_id, kyber_id, kyber_ct,
                   base_key, identity_key, message, bytes(data))


@dataclass(frozen=True, slots=True)
class SenderKeyDistributionMessage:
    """Carries a sender's chain key and signing key to a group member (digest §6.1)."""

    distribution_id: uuid.UUID
    chain_id: int
    iteration: int
    chain_key: bytes
    signing_key: PublicKey
    serialized: bytes

    @classmethod
    def build(cls, distribution_id: uuid.UUID, chain_id: int, iteration: int,
              chain_key: bytes, signing_key: PublicKey) -> SenderKeyDistributionMessage:
        """Encode as ``0x33 || protobuf``."""
        body = b"".join(
            (
                bytes(((SENDER_KEY_VERSION << 4) | SENDER_KEY_VERSION,)),
                pb.field_bytes(1, distribution_id.bytes),
                pb.field_varint(2, chain_id),
                pb.field_varint(3, iteration),
                pb.field_bytes(4, chain_key),
                pb.field_bytes(5, signing_key.serialize()),
            )
        )
        return cls(distribution_id, chain_id, iteration, chain_key, signing_key, body)

    @classmethod
    def parse(cls, data: bytes) -> SenderKeyDistributionMessage:
        """Parse an SKDM.

        Raises:
            UnknownVersion: the version nibble is not 3.
            InvalidMessage: malformed or missing fields.
        """
        if len(data) < 65:
            raise InvalidMessage("sender key distribution message too short")
        _check_version(data[0], exact=SENDER_KEY_VERSION)
        what = "SenderKeyDistributionMessage"
        fields = _decode(data[1:], what)
        dist = _required_bytes(fields, 1, what)
        chain_id = _required_uint32(fields, 2, what)
        iteration = _required_uint32(fields, 3, what)
        chain_key = _required_bytes(fields, 4, what)
        signing = _required_bytes(fields, 5, what)
        if len(dist) != 16 or len(chain_key) != 32 or len(signing) != 33:
            raise InvalidMessage("malformed SenderKeyDistributionMessage")
        return cls(uuid.UUID(bytes=dist), chain_id, iteration, chain_key, _public_key(signing),
                   bytes(data))


SENDER_KEY_SIGNATURE_LENGTH = 64


@dataclass(frozen=True, slots=True)
class SenderKeyMessage:
    """A group message: ``0x33 || protobuf || XEdDSA signature(64)`` (digest §6.2)."""

    distribution_id: uuid.UUID
    chain_id: int
    iteration: int
    ciphertext: bytes
    serialized: bytes

    @staticmethod
    def encode_body(distribution_id: uuid.UUID, chain_id: int, iteration: int,
                    ciphertext: bytes) -> bytes:
        """The signed part of a message."""
        return b"".join(
            (
                bytes(((SENDER_KEY_VERSION << 4) | SENDER_KEY_VERSION,)),
                pb.field_bytes(1, distribution_id.bytes),
                pb.field_varint(2, chain_id),
                pb.field_varint(3, iteration),
                pb.field_bytes(4, ciphertext),
            )
        )

    @classmethod
    def parse(cls, data: bytes) -> SenderKeyMessage:
        """Parse (the signature is checked by the caller, who knows the key).

        Raises:
            UnknownVersion: the version nibble is not 3.
            InvalidMessage: malformed or missing fields.
        """
        if len(data) < 1 + SENDER_KEY_SIGNATURE_LENGTH:
            raise InvalidMessage("sender key message too short")
        _check_version(data[0], exact=SENDER_KEY_VERSION)
        what = "SenderKeyMessage"
        fields = _decode(data[1:-SENDER_KEY_SIGNATURE_LENGTH], what)
        dist = _required_bytes(fields, 1, what)
        if len(dist) != 16:
            raise InvalidMessage("malformed SenderKeyMessage")
        return cls(uuid.UUID(bytes=dist), _required_uint32(fields, 2, what),
                   _required_uint32(fields, 3, what), _required_bytes(fields, 4, what),
                   bytes(data))

    @property
    def signed_part(self) -> bytes:
        """The bytes the signature covers."""
        return self.serialized[:-SENDER_KEY_SIGNATURE_LENGTH]

    @property
    def signature(self) -> bytes:
        """The trailing XEdDSA signature."""
        return self.serialized[-SENDER_KEY_SIGNATURE_LENGTH:]


__all__ = [
    "PLAINTEXT_TYPE",
    "PREKEY_TYPE",
    "SENDERKEY_TYPE",
    "WHISPER_TYPE",
    "PreKeySignalMessage",
    "ProtocolError",
    "SenderKeyDistributionMessage",
    "SenderKeyMessage",
    "SignalMessage",
    "compute_mac",
]
