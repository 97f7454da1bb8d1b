"""Sealed sender v1 scenarios (digest §10.10, interop/README.md) between implementations.

The directions are those of the other scenarios (``conftest.DIRECTIONS``). The left side
seals to the right side with a certificate its own peer issued, so each implementation's
certificates are validated by the other; the right side answers sealed, too. The
TypeScript peer (web/) takes part in its directions with Python and with libsignal.
"""

from __future__ import annotations

import itertools
import os
import uuid
from typing import Any

import pytest

from cipherpost.protocol.keys import PrivateKey

from .conftest import DIRECTIONS
from .peers import Actor, PeerClient, b64, unb64

pytestmark = pytest.mark.interop

SEALED_DIRECTIONS = [pytest.param((a, b), id=f"{a}->{b}") for a, b in DIRECTIONS]
EXPIRES = 1_900_000_000_000  # ms; every certificate here expires then unless told
REVOKED_ID = 0xDEADC357
_key_ids = itertools.count(100)


@pytest.fixture(params=SEALED_DIRECTIONS)
def pair(request: pytest.FixtureRequest,
         peers: dict[str, PeerClient]) -> tuple[PeerClient, PeerClient]:
    a, b = request.param
    return peers[a], peers[b]


def _private() -> bytes:
    return PrivateKey(os.urandom(32)).serialize()  # clamped, as libsignal stores keys


class Issuer:
    """A trust root and a server key, issuing certificates through one peer."""

    def __init__(self, peer: PeerClient, *, key_id: int | None = None) -> None:
        self.peer = peer
        self.root_private = _private()
        self.server_private = _private()
        r = peer.ok("server_certificate", trust_root_private=b64(self.root_private),
                    server_private=b64(self.server_private),
                    key_id=next(_key_ids) if key_id is None else key_id)
        self.server_certificate = r["certificate"]
        self.trust_root = r["trust_root"]

    def certify(self, actor: Actor, *, expires: int = EXPIRES,
                identity_key: bytes | None = None, e164: str | None = None) -> str:
        key = identity_key if identity_key is not None else actor.identity_key
        assert key is not None
        fields: dict[str, Any] = {"server_certificate": self.server_certificate,
                                  "server_private": b64(self.server_private),
                                  "sender": actor.address, "identity_key": b64(key),
                                  "expires": expires}
        if e164 is not None:
            fields["sender_e164"] = e164
        certificate: str = self.peer.ok("sender_certificate", **fields)["certificate"]
        return certificate


def seal(sender: Actor, recipient: Actor, certificate: str, plaintext: bytes) -> str:
    r = sender.peer.ok("sealed_encrypt", actor=sender.address, remote=recipient.address,
                       sender_certificate=certificate, plaintext=b64(plaintext))
    ciphertext: str = r["ciphertext"]
    assert unb64(ciphertext)[0] == 0x11
    return ciphertext


def unseal(recipient: Actor, ciphertext: str, trust_root: str,
           now: int = EXPIRES) -> dict[str, Any]:
    return recipient.peer.ok("sealed_decrypt", actor=recipient.address, ciphertext=ciphertext,
                             trust_root=trust_root, now=now)


def unseal_error(recipient: Actor, ciphertext: str, trust_root: str,
                 now: int = EXPIRES) -> str:
    return recipient.peer.error("sealed_decrypt", actor=recipient.address,
                                ciphertext=ciphertext, trust_root=trust_root, now=now)


def _uuid() -> str:
    return str(uuid.uuid4())


def start(pair: tuple[PeerClient, PeerClient]) -> tuple[Actor, Actor]:
    """Alice (left, uuid name) has processed Bob's (right) bundle; nothing sent yet."""
    alice = Actor(pair[0], _uuid())
    bob = Actor(pair[1], _uuid())
    alice.process_bundle(bob, bob.bundle())
    return alice, bob


def test_sealed_conversation(pair: tuple[PeerClient, PeerClient]) -> None:
    alice, bob = start(pair)
    alice_issuer, bob_issuer = Issuer(pair[0]), Issuer(pair[1])
    alice_cert = alice_issuer.certify(alice, e164="+15550001")
    bob_cert = bob_issuer.certify(bob)
    first = seal(alice, bob, alice_cert, b"hello bob, sealed")
    result = unseal(bob, first, alice_issuer.trust_root)
    assert unb64(result["plaintext"]) == b"hello bob, sealed"
    assert result["sender"] == alice.address
    assert result["sender_e164"] == "+15550001"
    assert bob.identity(alice) == alice.identity_key  # the PreKey inner message set it up
    for i in range(3):
        back = unseal(alice, seal(bob, alice, bob_cert, f"r{i}".encode()), bob_issuer.trust_root)
        assert unb64(back["plaintext"]) == f"r{i}".encode()
        assert back["sender"] == bob.address and back["sender_e164"] is None
        again = unseal(bob, seal(alice, bob, alice_cert, f"m{i}".encode()),
                       alice_issuer.trust_root)
        assert unb64(again["plaintext"]) == f"m{i}".encode()
    # Sealed and ordinary messages share the session.
    assert bob.decrypt(alice, alice.encrypt(bob, b"plain")) == b"plain"


def test_expiry_boundary(pair: tuple[PeerClient, PeerClient]) -> None:
    alice, bob = start(pair)
    issuer = Issuer(pair[0])
    expires = 1_800_000_000_123
    message = seal(alice, bob, issuer.certify(alice, expires=expires), b"just in time")
    assert unseal_error(bob, message, issuer.trust_root, now=expires + 1) == \
        "invalid_certificate"
    assert bob.identity(alice) is None  # the refused PreKey message stored nothing
    result = unseal(bob, message, issuer.trust_root, now=expires)  # == expires: valid
    assert unb64(result["plaintext"]) == b"just in time"
    later = seal(alice, bob, issuer.certify(alice, expires=expires), b"late")
    assert unseal_error(bob, later, issuer.trust_root, now=expires + 1) == \
        "invalid_certificate"
    assert unb64(unseal(bob, later, issuer.trust_root, now=expires - 1)["plaintext"]) == b"late"


def test_wrong_trust_root(pair: tuple[PeerClient, PeerClient]) -> None:
    alice, bob = start(pair)
    issuer, other = Issuer(pair[0]), Issuer(pair[1])
    message = seal(alice, bob, issuer.certify(alice), b"who signed this?")
    assert unseal_error(bob, message, other.trust_root) == "invalid_certificate"
    # A server certificate from another root, with the right root given, fails too.
    forged = seal(alice, bob, other.certify(alice), b"forged")
    assert unseal_error(bob, forged, issuer.trust_root) == "invalid_certificate"
    assert bob.identity(alice) is None
    assert unb64(unseal(bob, message, issuer.trust_root)["plaintext"]) == b"who signed this?"
    assert unb64(unseal(bob, forged, other.trust_root)["plaintext"]) == b"forged"


def test_revoked_server_certificate(pair: tuple[PeerClient, PeerClient]) -> None:
    alice, bob = start(pair)
    revoked = Issuer(pair[0], key_id=REVOKED_ID)
    message = seal(alice, bob, revoked.certify(alice), b"revoked")
    assert unseal_error(bob, message, revoked.trust_root) == "invalid_certificate"
    assert bob.identity(alice) is None
    # The same keys under another id are fine, and the refused message left nothing behind.
    good = Issuer(pair[0])
    retry = seal(alice, bob, good.certify(alice), b"not revoked")
    assert unb64(unseal(bob, retry, good.trust_root)["plaintext"]) == b"not revoked"
    assert unseal_error(bob, message, revoked.trust_root) == "invalid_certificate"


def test_self_send(pair: tuple[PeerClient, PeerClient]) -> None:
    # The same account on both sides: device 1 on the left, devices 1 and 2 on the right.
    name = _uuid()
    left = Actor(pair[0], name, 1)
    # One peer process serves both sides of python->python: there the left actor is it.
    right_same = left if pair[0] is pair[1] else Actor(pair[1], name, 1)
    right_other = Actor(pair[1], name, 2)
    issuer = Issuer(pair[0])
    cert = issuer.certify(left)
    left.process_bundle(right_other, right_other.bundle())
    to_other = seal(left, right_other, cert, b"to my other device")
    result = unseal(right_other, to_other, issuer.trust_root)
    assert unb64(result["plaintext"]) == b"to my other device"
    assert result["sender"] == left.address
    # A message whose certificate names the receiving device itself.
    left.process_bundle(right_same, right_same.bundle())
    to_self = seal(left, right_same, cert, b"to myself")
    assert unseal_error(right_same, to_self, issuer.trust_root) == "sealed_sender_self_send"


def test_tampering_and_key_mismatch(pair: tuple[PeerClient, PeerClient]) -> None:
    alice, bob = start(pair)
    issuer = Issuer(pair[0])
    message = seal(alice, bob, issuer.certify(alice), b"intact")
    data = unb64(message)
    for index in (4, 40, len(data) // 2, len(data) - 1):  # ephemeral key, static, body, tag
        changed = bytearray(data)
        changed[index] ^= 0x01
        assert unseal_error(bob, b64(bytes(changed)), issuer.trust_root) == "invalid_message"
    assert unseal_error(bob, b64(b"\x31" + data[1:]), issuer.trust_root) == "unknown_version"
    # A certificate for another identity key than the one that sealed the message.
    carol = Actor(pair[0], _uuid())
    assert carol.identity_key is not None
    mismatch = seal(alice, bob, issuer.certify(alice, identity_key=carol.identity_key), b"x")
    assert unseal_error(bob, mismatch, issuer.trust_root) == "invalid_message"
    assert bob.identity(alice) is None
    assert unb64(unseal(bob, message, issuer.trust_root)["plaintext"]) == b"intact"


def test_sealed_encrypt_without_session(pair: tuple[PeerClient, PeerClient]) -> None:
    alice = Actor(pair[0], _uuid())
    bob = Actor(pair[1], _uuid())
    cert = Issuer(pair[0]).certify(alice)
    assert alice.peer.error("sealed_encrypt", actor=alice.address, remote=bob.address,
                            sender_certificate=cert, plaintext=b64(b"x")) == "no_session"
