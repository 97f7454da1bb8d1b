"""Sealed sender v1 (digest §8): libsignal-made vectors, validation edges, round trips."""

from __future__ import annotations

import base64
import contextlib
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cipherpost.protocol import protobuf as pb
from cipherpost.protocol import sealed_sender as ss
from cipherpost.protocol import xeddsa
from cipherpost.protocol.address import ProtocolAddress
from cipherpost.protocol.errors import (
    ExpiredCertificate,
    InvalidCertificate,
    InvalidMessage,
    NoSession,
    ProtocolError,
    RevokedCertificate,
    SealedSenderSelfSend,
    UnknownServerCertificate,
    UnknownVersion,
    UntrustedCertificate,
)
from cipherpost.protocol.keys import IdentityKeyPair, PrivateKey, PublicKey
from cipherpost.protocol.session import process_prekey_bundle
from tests.conftest import load_vectors

from .parties import NOW, Party, make_party

H = bytes.fromhex
V = load_vectors("sealed-sender.json")
NOW_MS = NOW * 1000
UUID_A = "0b8d7a3e-58b4-4c47-9a0e-4f5f6a1b2c3d"
UUID_B = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b"


def _key(fill: int) -> PrivateKey:
    return PrivateKey(bytes([fill]) * 32)


def _identity(fill: int) -> IdentityKeyPair:
    private = _key(fill)
    return IdentityKeyPair(private.public_key(), private)


def _flips(data: bytes) -> list[bytes]:
    out = []
    for i in range(len(data)):
        changed = bytearray(data)
        changed[i] ^= 1 << (i % 8)
        out.append(bytes(changed))
    return out


# -- vectors ------------------------------------------------------------------------------


def test_aes_ctr_vector() -> None:
    # digest appendix A: AES-256-CTR of 35 zero bytes from a zero counter.
    key = H("603DEB1015CA71BE2B73AEF0857D77811F352C073B6108D72D9810A30914DFF4")
    sealed = ss.aes256_ctr_hmac_encrypt(key, bytes(32), bytes(35))
    assert sealed[:-10] == H("e568f68194cf76d6174d4cc04310a85491151e5d0b7a1f1bc0d7acd0ae3e51e4"
                             "170e23")
    assert ss.aes256_ctr_hmac_decrypt(key, bytes(32), sealed) == bytes(35)
    for bad in (*_flips(sealed), sealed[:-1], sealed[:9], b""):
        with pytest.raises(InvalidMessage):
            ss.aes256_ctr_hmac_decrypt(key, bytes(32), bad)


@pytest.mark.parametrize(("key_id", "root"), [
    (2, "BYhU6tPjqP46KGZEzRs1OL4U39V5dlPJ/X09ha4rErkm"),
    (3, "BUkY0I+9+oPgDCn4+Ac6Iu813yvqkDr/ga8DzLxFxuk6"),
    (0x7357C357, "BS/lfaNHzWJDFSjarF+7KQcw//aEr8TPwu2QmV9Yyzt0"),
])
def test_builtin_server_certificates(key_id: int, root: str) -> None:
    trust_root = PublicKey.deserialize(base64.b64decode(root))
    cert = ss.KNOWN_SERVER_CERTIFICATES[key_id]
    assert cert.key_id == key_id
    assert cert.is_signed_by(trust_root)
    others = [k for k in ss.KNOWN_SERVER_CERTIFICATES if k != key_id]
    assert not any(cert.is_signed_by(ss.KNOWN_SERVER_CERTIFICATES[o].key) for o in others)
    for bad in _flips(cert.serialized):
        try:
            changed = ss.ServerCertificate.deserialize(bad)
        except ProtocolError:
            continue
        if changed.certificate == cert.certificate and changed.signature == cert.signature:
            continue  # the flip hit framing that reads back the same
        assert not changed.is_signed_by(trust_root)


def test_test_root_is_the_zero_private_key() -> None:
    # digest §8.4: the test certificate's root is the all-zero private key's public key,
    # its server key the all-0xFF one; a certificate referring to it by id validates.
    root = PrivateKey(bytes(32)).public_key()
    server = PrivateKey(b"\xff" * 32)
    assert ss.KNOWN_SERVER_CERTIFICATES[0x7357C357].key == server.public_key()
    rng = random.Random(5).randbytes
    made = ss.SenderCertificate.create(
        sender_uuid=UUID_A, sender_e164=None, sender_device_id=1,
        identity_key=_key(9).public_key(), expires=NOW_MS,
        signer=ss.KNOWN_SERVER_CERTIFICATES[0x7357C357], signer_key=server, rng=rng)
    # Re-encode the body with the id reference (field 8) instead of the embedded signer.
    body = (pb.field_varint(2, 1) + pb.field_fixed64(3, NOW_MS)
            + pb.field_bytes(4, _key(9).public_key().serialize())
            + pb.field_bytes(6, UUID_A.encode()) + pb.field_varint(8, 0x7357C357))
    by_id = ss.SenderCertificate.deserialize(
        pb.field_bytes(1, body) + pb.field_bytes(2, xeddsa.sign(server, body, rng)))
    assert by_id.signer == 0x7357C357
    by_id.validate([root], NOW_MS)
    made.validate([root], NOW_MS)
    unknown = ss.SenderCertificate.deserialize(
        pb.field_bytes(1, body + pb.field_varint(8, 4))
        + pb.field_bytes(2, bytes(64)))
    with pytest.raises(UnknownServerCertificate):
        unknown.validate([root], NOW_MS)


def test_libsignal_certificates_parse_and_validate() -> None:
    root = PublicKey.deserialize(H(V["trust_root_public"]))
    assert root == _key(V["trust_root_fill"]).public_key()
    cert = ss.SenderCertificate.deserialize(H(V["sender_certificate"]))
    assert cert.serialized == H(V["sender_certificate"])
    assert cert.certificate == H(V["sender_certificate_body"])
    assert (cert.sender_uuid, cert.sender_e164, cert.sender_device_id, cert.expires) == (
        V["sender_uuid"], V["sender_e164"], V["sender_device_id"], V["expires"])
    assert cert.identity_key == _key(V["sender_identity_fill"]).public_key()
    server = cert.server_certificate()
    assert server.serialized == H(V["server_certificate"])
    assert server.key_id == V["server_certificate_id"]
    cert.validate([root], V["expires"])
    with pytest.raises(ExpiredCertificate):
        cert.validate([root], V["expires"] + 1)
    with pytest.raises(UntrustedCertificate):
        cert.validate([_key(99).public_key()], V["expires"])
    # Any one of several roots will do.
    cert.validate([_key(99).public_key(), root], V["expires"])


def test_certificate_bodies_match_libsignal_byte_for_byte() -> None:
    # Signatures are randomized; everything else is deterministic.
    rng = random.Random(1).randbytes
    server = ss.ServerCertificate.create(V["server_certificate_id"], _key(2).public_key(),
                                         _key(1), rng=rng)
    theirs = ss.ServerCertificate.deserialize(H(V["server_certificate"]))
    assert server.certificate == theirs.certificate
    sender = ss.SenderCertificate.create(
        sender_uuid=V["sender_uuid"], sender_e164=V["sender_e164"],
        sender_device_id=V["sender_device_id"], identity_key=_key(3).public_key(),
        expires=V["expires"], signer=theirs, signer_key=_key(2), rng=rng)
    assert sender.certificate == H(V["sender_certificate_body"])
    content = ss.UnidentifiedSenderMessageContent.create(
        V["usmc_type"], ss.SenderCertificate.deserialize(H(V["sender_certificate"])),
        H(V["usmc_contents"]), content_hint=V["usmc_content_hint"],
        group_id=H(V["usmc_group_id"]))
    assert content.serialized == H(V["usmc"])


def test_libsignal_sealed_message_opens() -> None:
    recipient = _identity(V["recipient_identity_fill"])
    content = ss.open_sealed(recipient, H(V["sealed"]))
    assert content.serialized == H(V["usmc"])
    assert content.message_type == V["usmc_type"]
    assert content.content_hint == V["usmc_content_hint"]
    assert content.group_id == H(V["usmc_group_id"])
    assert content.contents == H(V["usmc_contents"])
    reparsed = ss.UnidentifiedSenderMessageContent.deserialize(content.serialized)
    assert reparsed == content
    with pytest.raises(InvalidMessage):
        ss.open_sealed(_identity(5), H(V["sealed"]))
    for bad in _flips(H(V["sealed"])):
        if bad[0] >> 4 in (0, 1) and bad[1:] == H(V["sealed"])[1:]:
            assert ss.open_sealed(recipient, bad) == content  # the minor version is free
            continue
        with pytest.raises(ProtocolError):
            ss.open_sealed(recipient, bad)


# -- validation edges ---------------------------------------------------------------------


def _chain(rng: Callable[[int], bytes], *, key_id: int = 1, expires: int = NOW_MS,
           identity: PublicKey | None = None, uuid: str = UUID_A,
           device: int = 1) -> tuple[PublicKey, ss.SenderCertificate]:
    root = PrivateKey.generate(rng)
    server_key = PrivateKey.generate(rng)
    server = ss.ServerCertificate.create(key_id, server_key.public_key(), root, rng=rng)
    sender = ss.SenderCertificate.create(
        sender_uuid=uuid, sender_e164=None, sender_device_id=device,
        identity_key=identity or PrivateKey.generate(rng).public_key(), expires=expires,
        signer=server, signer_key=server_key, rng=rng)
    return root.public_key(), sender


def test_expiry_boundary(rng) -> None:  # type: ignore[no-untyped-def]
    root, cert = _chain(rng, expires=NOW_MS)
    cert.validate([root], NOW_MS - 1)
    cert.validate([root], NOW_MS)
    with pytest.raises(ExpiredCertificate) as info:
        cert.validate([root], NOW_MS + 1)
    assert info.value.kind == "invalid_certificate"


def test_revoked_and_wrong_root(rng) -> None:  # type: ignore[no-untyped-def]
    root, cert = _chain(rng, key_id=0xDEADC357)
    with pytest.raises(RevokedCertificate):
        cert.validate([root], NOW_MS)
    root, cert = _chain(rng)
    with pytest.raises(UntrustedCertificate):
        cert.validate([], NOW_MS)
    with pytest.raises(UntrustedCertificate):
        cert.validate([PrivateKey.generate(rng).public_key()], NOW_MS)
    # A sender certificate signed by another key than the server's.
    other = ss.SenderCertificate.create(
        sender_uuid=UUID_A, sender_e164=None, sender_device_id=1,
        identity_key=cert.identity_key, expires=NOW_MS, signer=cert.server_certificate(),
        signer_key=PrivateKey.generate(rng), rng=rng)
    with pytest.raises(UntrustedCertificate):
        other.validate([root], NOW_MS)
    for bad in _flips(cert.serialized):
        try:
            changed = ss.SenderCertificate.deserialize(bad)
        except ProtocolError:
            continue
        if changed.certificate == cert.certificate and changed.signature == cert.signature:
            continue
        with pytest.raises(InvalidCertificate):
            changed.validate([root], NOW_MS)


def test_last_oneof_member_wins_and_wire_types_are_checked() -> None:
    cert = ss.SenderCertificate.deserialize(H(V["sender_certificate"]))
    raw = bytes(range(16))
    body = cert.certificate + pb.field_bytes(7, raw)
    changed = ss.SenderCertificate.deserialize(pb.field_bytes(1, body)
                                               + pb.field_bytes(2, cert.signature))
    assert changed.sender_uuid == "00010203-0405-0607-0809-0a0b0c0d0e0f"
    with pytest.raises(InvalidMessage):  # expires sent as a varint
        ss.SenderCertificate.deserialize(pb.field_bytes(1, cert.certificate
                                                        + pb.field_varint(3, 5))
                                         + pb.field_bytes(2, cert.signature))
    for device in (0, 128):
        with pytest.raises(InvalidMessage):
            ss.SenderCertificate.deserialize(pb.field_bytes(1, cert.certificate
                                                            + pb.field_varint(2, device))
                                             + pb.field_bytes(2, cert.signature))


# -- whole messages -----------------------------------------------------------------------


def _parties(rng: Callable[[int], bytes]) -> tuple[Party, Party]:
    alice = make_party(UUID_A, rng, 11)
    bob = make_party(UUID_B, rng, 22)
    assert alice.address == ProtocolAddress(UUID_A, 1)
    process_prekey_bundle(alice.store, bob.address, bob.bundle(), rng=rng, now=NOW)
    return alice, bob


def _snapshot(party: Party, remote: Party) -> bytes | None:
    record = party.store.load_session(remote.address)
    return record.serialize() if record is not None else None


def test_sealed_conversation(rng) -> None:  # type: ignore[no-untyped-def]
    alice, bob = _parties(rng)
    root, cert = _chain(rng, identity=alice.store.get_identity_key_pair().public, uuid=UUID_A)
    for i in range(3):
        sealed = ss.encrypt_message(alice.store, bob.address, cert, f"m{i}".encode(), now=NOW,
                                    rng=rng)
        assert sealed[0] == 0x11
        result = ss.decrypt(bob.store, sealed, trust_roots=[root], now_ms=NOW_MS,
                            local_uuid=UUID_B, local_device_id=1, rng=rng)
        assert result.plaintext == f"m{i}".encode()
        assert result.sender == alice.address
        assert "redacted" in repr(result) and f"m{i}" not in repr(result)


def test_seal_round_trips_byte_for_byte(rng) -> None:  # type: ignore[no-untyped-def]
    sender, recipient = _identity(3), _identity(4)
    _, cert = _chain(rng, identity=sender.public)
    for hint, group in ((0, None), (1, b"g"), (2, None), (0xFFFFFFFF, b"group")):
        content = ss.UnidentifiedSenderMessageContent.create(
            7, cert, b"inner", content_hint=hint, group_id=group)
        opened = ss.open_sealed(recipient, ss.seal(sender, recipient.public, content, rng=rng))
        assert opened.serialized == content.serialized
        assert opened == content


def test_static_key_must_match_certificate(rng) -> None:  # type: ignore[no-untyped-def]
    sender, recipient = _identity(3), _identity(4)
    _, cert = _chain(rng)  # certifies some other identity key
    content = ss.UnidentifiedSenderMessageContent.create(2, cert, b"x")
    with pytest.raises(InvalidMessage):
        ss.open_sealed(recipient, ss.seal(sender, recipient.public, content, rng=rng))


def test_version_nibble(rng) -> None:  # type: ignore[no-untyped-def]
    sender, recipient = _identity(3), _identity(4)
    _, cert = _chain(rng, identity=sender.public)
    sealed = ss.seal(sender, recipient.public,
                     ss.UnidentifiedSenderMessageContent.create(2, cert, b"x"), rng=rng)
    assert ss.open_sealed(recipient, b"\x01" + sealed[1:]).contents == b"x"  # 0 is v1 too
    for byte in (0x22, 0x23, 0x31, 0xF1):
        with pytest.raises(UnknownVersion):
            ss.open_sealed(recipient, bytes((byte,)) + sealed[1:])


def test_rejections_change_no_session_state(rng) -> None:  # type: ignore[no-untyped-def]
    alice, bob = _parties(rng)
    identity = alice.store.get_identity_key_pair().public
    root, good = _chain(rng, identity=identity, uuid=UUID_A, expires=NOW_MS)
    first = ss.encrypt_message(alice.store, bob.address, good, b"first", now=NOW, rng=rng)
    before_bob = _snapshot(bob, alice)
    assert before_bob is None
    kwargs = {"local_uuid": UUID_B, "local_device_id": 1, "rng": rng}
    cases: list[tuple[bytes, list[PublicKey], int, type[ProtocolError]]] = [
        (first, [root], NOW_MS + 1, ExpiredCertificate),
        (first, [PrivateKey.generate(rng).public_key()], NOW_MS, UntrustedCertificate),
        (first[:-1], [root], NOW_MS, InvalidMessage),
    ]
    for data, roots, now_ms, error in cases:
        with pytest.raises(error):
            ss.decrypt(bob.store, data, trust_roots=roots, now_ms=now_ms, **kwargs)
        assert _snapshot(bob, alice) is None
        assert bob.store.get_identity(alice.address) is None
    result = ss.decrypt(bob.store, first, trust_roots=[root], now_ms=NOW_MS, **kwargs)
    assert result.plaintext == b"first"
    # Now with an established session: a revoked chain leaves it untouched.
    _, revoked = _chain(rng, identity=identity, key_id=0xDEADC357)
    second = ss.encrypt_message(alice.store, bob.address, revoked, b"second", now=NOW, rng=rng)
    state = _snapshot(bob, alice)
    with pytest.raises(RevokedCertificate):
        ss.decrypt(bob.store, second, trust_roots=[root], now_ms=NOW_MS, **kwargs)
    assert _snapshot(bob, alice) == state


def test_self_send(rng) -> None:  # type: ignore[no-untyped-def]
    alice = make_party(UUID_A, rng, 11)
    identity = alice.store.get_identity_key_pair()
    root, cert = _chain(rng, identity=identity.public, uuid=UUID_A, device=1)
    sealed = ss.seal(identity, identity.public,
                     ss.UnidentifiedSenderMessageContent.create(2, cert, b"x"), rng=rng)
    with pytest.raises(SealedSenderSelfSend) as info:
        ss.decrypt(alice.store, sealed, trust_roots=[root], now_ms=NOW_MS, local_uuid=UUID_A,
                   local_device_id=1, rng=rng)
    assert info.value.kind == "sealed_sender_self_send"
    # The same account's other device is not a self-send (it fails later: no session).
    with pytest.raises(InvalidMessage):
        ss.decrypt(alice.store, sealed, trust_roots=[root], now_ms=NOW_MS, local_uuid=UUID_A,
                   local_device_id=2, rng=rng)


def test_encrypt_needs_the_recipient_identity(rng) -> None:  # type: ignore[no-untyped-def]
    alice = make_party(UUID_A, rng, 11)
    _, cert = _chain(rng)
    content = ss.UnidentifiedSenderMessageContent.create(2, cert, b"x")
    bob = make_party(UUID_B, rng, 22)
    with pytest.raises(NoSession):
        ss.encrypt(alice.store, bob.address, content, rng=rng)
    with pytest.raises(NoSession):
        ss.encrypt_message(alice.store, bob.address, cert, b"x", now=NOW, rng=rng)


def test_sealed_other_types_are_not_1to1(rng) -> None:  # type: ignore[no-untyped-def]
    alice, bob = _parties(rng)
    identity = alice.store.get_identity_key_pair()
    root, cert = _chain(rng, identity=identity.public)
    bob_key = bob.store.get_identity_key_pair().public
    for kind in (7, 8):
        sealed = ss.seal(identity, bob_key,
                         ss.UnidentifiedSenderMessageContent.create(kind, cert, b"x"), rng=rng)
        with pytest.raises(InvalidMessage):
            ss.decrypt(bob.store, sealed, trust_roots=[root], now_ms=NOW_MS,
                       local_uuid=UUID_B, local_device_id=1, rng=rng)


# -- hostile bytes ------------------------------------------------------------------------


_RECIPIENT = _identity(4)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_raise_only_protocol_errors(data: bytes) -> None:
    for parse in (ss.SenderCertificate.deserialize, ss.ServerCertificate.deserialize,
                  ss.UnidentifiedSenderMessageContent.deserialize):
        with contextlib.suppress(ProtocolError):
            parse(data)
    for prefix in (b"\x11", b""):
        with contextlib.suppress(ProtocolError):
            ss.open_sealed(_RECIPIENT, prefix + data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(H(V["sealed"])) - 1), st.integers(0, 255)),
                min_size=1, max_size=4))
def test_mutated_libsignal_message_raises_only_protocol_errors(
        edits: list[tuple[int, int]]) -> None:
    data = bytearray(H(V["sealed"]))
    for index, value in edits:
        data[index] = value
    with contextlib.suppress(ProtocolError):
        ss.open_sealed(_RECIPIENT, bytes(data))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_certificate_body_raises_only_protocol_errors(body: bytes) -> None:
    try:
        cert = ss.SenderCertificate.deserialize(pb.field_bytes(1, body)
                                                + pb.field_bytes(2, bytes(64)))
    except ProtocolError:
        return
    with pytest.raises(ProtocolError):
        cert.validate([_RECIPIENT.public], NOW_MS)
