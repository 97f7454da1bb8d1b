"""SignalMessage field 6 (sender and recipient addresses under the MAC, libsignal 0.91+):
the encoding libsignal 0.103 wrote, sent on the PreKey path only, checked on receipt."""

from __future__ import annotations

import random

import pytest

from cipherpost.protocol import InvalidMessage, decrypt, encrypt, process_prekey_bundle
from cipherpost.protocol.address import (
    ProtocolAddress,
    addresses_field,
    service_id_fixed_width,
)
from cipherpost.protocol.messages import PREKEY_TYPE, PreKeySignalMessage, SignalMessage
from cipherpost.protocol.spqr.ratchet import SpqrSettings

from .parties import NOW, Party, make_party
from .spqr.helpers import load

ACI = "11111111-1111-4111-8111-111111111111"
ACI_B = "22222222-2222-4222-8222-222222222222"


def test_libsignal_0103_addresses_reproduce() -> None:
    for name in ("run-lockstep-0.103.0.json", "run-bursty-0.103.0.json"):
        run = load(name)
        alice = ProtocolAddress(run["alice"]["name"], run["alice"]["device"])
        bob = ProtocolAddress(run["bob_public"]["name"], run["bob_public"]["device"])
        recorded = {m["addresses_field6"] for m in run["messages"] if m["from"] == "A"}
        expected = addresses_field(alice, bob)
        assert expected is not None and expected.hex() in recorded
        # Only PreKey messages carry them.
        for m in run["messages"]:
            assert (m["addresses_field6"] is not None) == (m["ciphertext_type"] == PREKEY_TYPE)
    vector = load("v0-responder-to-libsignal.json")
    message = PreKeySignalMessage.parse(bytes.fromhex(vector["alice_prekey_message"]))
    assert message.message.addresses == addresses_field(ProtocolAddress(ACI, 1),
                                                        ProtocolAddress(ACI_B, 2))


@pytest.mark.parametrize(("name", "expected"), [
    (ACI, "00" + ACI.replace("-", "")),
    (ACI.upper(), "00" + ACI.replace("-", "")),
    ("PNI:" + ACI, "01" + ACI.replace("-", "")),
    ("alice", None), ("", None), ("PNI:", None), ("pni:" + ACI, None),
    (ACI.replace("-", ""), None), ("{" + ACI[1:-1] + "}", None),
    (ACI[:8] + " " + ACI[9:], None), (ACI[:-1] + "g", None), (ACI + "0", None),
    ("ACI:" + ACI, None), ("urn:uuid:" + ACI, None),
])
def test_service_ids(name: str, expected: str | None) -> None:
    value = service_id_fixed_width(name)
    assert (value.hex() if value is not None else None) == expected


def _parties(alice_name: str, bob_name: str) -> tuple[Party, Party, random.Random]:
    rnd = random.Random(4)
    alice = make_party(alice_name, rnd.randbytes, 11)
    bob = make_party(bob_name, rnd.randbytes, 22)
    process_prekey_bundle(alice.store, bob.address, bob.bundle(), rng=rnd.randbytes, now=NOW,
                          spqr=SpqrSettings.REQUIRED)
    return alice, bob, rnd


def test_prekey_messages_carry_and_check_addresses() -> None:
    alice, bob, rnd = _parties(ACI, "PNI:" + ACI_B)
    first = encrypt(alice.store, bob.address, b"hi", now=NOW, rng=rnd.randbytes,
                    local_address=alice.address)
    assert first.message_type == PREKEY_TYPE
    carried = PreKeySignalMessage.parse(first.serialized).message.addresses
    assert carried == addresses_field(alice.address, bob.address)
    assert carried is not None and carried[18] == 1  # the recipient's PNI kind byte
    # Received by another device of the recipient (or anyone else): refused, nothing kept.
    for wrong in (ProtocolAddress(ACI_B, 2), ProtocolAddress("PNI:" + ACI_B, 2),
                  ProtocolAddress("bob", 1)):
        with pytest.raises(InvalidMessage):
            decrypt(bob.store, alice.address, PREKEY_TYPE, first.serialized,
                    rng=rnd.randbytes, spqr=SpqrSettings.REQUIRED, local_address=wrong)
        assert bob.store.load_session(alice.address) is None
    # Claimed by another sender address: refused.
    with pytest.raises(InvalidMessage):
        decrypt(bob.store, ProtocolAddress(ACI, 3), PREKEY_TYPE, first.serialized,
                rng=rnd.randbytes, spqr=SpqrSettings.REQUIRED, local_address=bob.address)
    assert decrypt(bob.store, alice.address, PREKEY_TYPE, first.serialized,
                   rng=rnd.randbytes, spqr=SpqrSettings.REQUIRED,
                   local_address=bob.address) == b"hi"
    # Whisper messages carry none.
    reply = encrypt(bob.store, alice.address, b"yo", now=NOW, rng=rnd.randbytes,
                    local_address=bob.address)
    assert SignalMessage.parse(reply.serialized).addresses is None
    assert decrypt(alice.store, bob.address, reply.message_type, reply.serialized,
                   rng=rnd.randbytes, local_address=alice.address) == b"yo"


def test_addresses_are_under_the_mac() -> None:
    alice, bob, rnd = _parties(ACI, ACI_B)
    first = encrypt(alice.store, bob.address, b"hi", now=NOW, rng=rnd.randbytes,
                    local_address=alice.address)
    inner = PreKeySignalMessage.parse(first.serialized).message.serialized
    at = inner.find(addresses_field(alice.address, bob.address) or b"")
    assert at > 0
    forged = bytearray(first.serialized)
    outer_at = first.serialized.find(inner) + at + 17  # the sender's device id byte
    forged[outer_at] ^= 0x02
    with pytest.raises(InvalidMessage):
        decrypt(bob.store, alice.address, PREKEY_TYPE, bytes(forged), rng=rnd.randbytes,
                spqr=SpqrSettings.REQUIRED)  # even without a local address to check
    assert bob.store.load_session(alice.address) is None


def test_no_addresses_without_service_ids_or_local_address() -> None:
    alice, bob, rnd = _parties("alice", "bob")
    named = encrypt(alice.store, bob.address, b"x", now=NOW, rng=rnd.randbytes,
                    local_address=alice.address)
    assert PreKeySignalMessage.parse(named.serialized).message.addresses is None
    alice, bob, rnd = _parties(ACI, ACI_B)
    plain = encrypt(alice.store, bob.address, b"x", now=NOW, rng=rnd.randbytes)
    assert PreKeySignalMessage.parse(plain.serialized).message.addresses is None
    # A message without addresses is accepted where they would be checked.
    assert decrypt(bob.store, alice.address, PREKEY_TYPE, plain.serialized, rng=rnd.randbytes,
                   spqr=SpqrSettings.REQUIRED, local_address=bob.address) == b"x"
