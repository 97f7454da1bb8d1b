"""Conformance scenarios (digest §10, PEER.md) between every pair of implementations.

Each test runs in twenty directions: python->python, python->libsignal, libsignal->python
and libsignal->libsignal (the last checks the scenario's own expectations against
libsignal), then typescript->python, python->typescript, typescript->libsignal and
libsignal->typescript (the browser client's protocol core, web/), then with SPQR:
python-spqr (the Python peer requiring it) with libsignal-0.103, with itself and with
libsignal (0.90), both ways, and libsignal-0.103 with itself, and typescript-spqr (the
TypeScript peer requiring it) with python-spqr, libsignal-0.103 and libsignal (0.90),
both ways. `make test` runs the forward-jump test (25,002 messages) in six of them
only, each implementation receiving once; `make interop` runs it in all. The left side
initiates: it processes the right side's bundle. A failure's test id names the scenario
and the direction, e.g. ``test_basic_session[typescript->libsignal-one-time]``.
"""

from __future__ import annotations

import itertools
import random
import uuid

import pytest

from cipherpost.protocol import protobuf as pb
from cipherpost.protocol.spqr.wire import SpqrMessage

from .conftest import DIRECTIONS
from .peers import Actor, PeerClient, b64, unb64

pytestmark = pytest.mark.interop

_names = itertools.count()


def _name(role: str) -> str:
    return f"{role}-{next(_names)}-{uuid.uuid4().hex[:6]}"


def establish(pair: tuple[PeerClient, PeerClient], *, one_time: bool = True,
              reply: bool = True) -> tuple[Actor, Actor]:
    """Alice (left) starts a session with Bob (right); Bob answers once if ``reply``."""
    alice = Actor(pair[0], _name("alice"))
    bob = Actor(pair[1], _name("bob"))
    alice.process_bundle(bob, bob.bundle(one_time=one_time))
    first = alice.encrypt(bob, b"hello bob")
    assert first[0] == "prekey"
    assert bob.decrypt(alice, first) == b"hello bob"
    if reply:
        answer = bob.encrypt(alice, b"hello alice")
        assert answer[0] == "whisper"
        assert alice.decrypt(bob, answer) == b"hello alice"
    return alice, bob


def flip(ciphertext: str, index: int, bit: int = 1) -> str:
    data = bytearray(unb64(ciphertext))
    data[index] ^= bit
    return b64(bytes(data))


def whisper_fields(ciphertext: str) -> pb.Fields:
    return pb.decode(unb64(ciphertext)[1:-8])


# -- 1. basic PQXDH ---------------------------------------------------------------------------


@pytest.mark.parametrize("one_time", [True, False], ids=["one-time", "no-one-time"])
def test_basic_session(pair: tuple[PeerClient, PeerClient], one_time: bool) -> None:
    alice, bob = establish(pair, one_time=one_time)
    assert alice.identity(bob) == bob.identity_key
    assert bob.identity(alice) == alice.identity_key
    for actor, remote in ((alice, bob), (bob, alice)):
        state = actor.has_session(remote)
        assert state["has_session"] is True
        assert state["session_version"] == 4
    # With a side without SPQR (Python with SPQR off, TypeScript) libsignal 0.90
    # downgrades: no field 5 after the reply.
    downgraded = bool({"python", "typescript"} & {pair[0].name, pair[1].name})
    for i in range(3):
        message = alice.encrypt(bob, f"m{i}".encode())
        assert message[0] == "whisper"
        assert (5 not in whisper_fields(message[1])) == downgraded
        assert bob.decrypt(alice, message) == f"m{i}".encode()
        back = bob.encrypt(alice, f"r{i}".encode())
        assert (5 not in whisper_fields(back[1])) == downgraded
        assert alice.decrypt(bob, back) == f"r{i}".encode()


def test_empty_and_large_plaintexts(pair: tuple[PeerClient, PeerClient]) -> None:
    alice, bob = establish(pair)
    for size in (0, 1, 15, 16, 17, 65536):
        data = random.Random(size).randbytes(size)
        assert bob.decrypt(alice, alice.encrypt(bob, data)) == data


# -- 2. several PreKey messages before any reply -------------------------------------------


def test_prekey_messages_out_of_order(pair: tuple[PeerClient, PeerClient]) -> None:
    alice = Actor(pair[0], _name("alice"))
    bob = Actor(pair[1], _name("bob"))
    bundle = bob.bundle()
    alice.process_bundle(bob, bundle)
    first = alice.encrypt(bob, b"one")
    second = alice.encrypt(bob, b"two")
    assert first[0] == second[0] == "prekey"
    assert bob.decrypt(alice, second) == b"two"
    assert bob.decrypt(alice, first) == b"one"
    assert alice.decrypt(bob, bob.encrypt(alice, b"ack")) == b"ack"
    # The one-time prekey was consumed once: a new session from the same bundle fails.
    carol = Actor(pair[0], _name("carol"))
    carol.process_bundle(bob, bundle)
    assert bob.decrypt_error(carol, carol.encrypt(bob, b"late")) == "invalid_prekey_id"


# -- 3. out of order within and across chains ------------------------------------------------


def test_out_of_order_across_chains(pair: tuple[PeerClient, PeerClient]) -> None:
    alice, bob = establish(pair)
    held: list[tuple[bytes, tuple[str, str]]] = []
    for step in range(4):  # four of Alice's sending chains, each answered by Bob
        for i in range(3):
            text = f"chain{step}-{i}".encode()
            message = alice.encrypt(bob, text)
            if i == 1:
                held.append((text, message))
            else:
                assert bob.decrypt(alice, message) == text
        alice.decrypt(bob, bob.encrypt(alice, f"ack{step}".encode()))
    random.Random(3).shuffle(held)
    for text, message in held:
        assert bob.decrypt(alice, message) == text


def test_reorder_within_chain(pair: tuple[PeerClient, PeerClient]) -> None:
    alice, bob = establish(pair)
    messages = [(f"x{i}".encode(), alice.encrypt(bob, f"x{i}".encode())) for i in range(20)]
    random.Random(7).shuffle(messages)
    for text, message in messages:
        assert bob.decrypt(alice, message) == text


# -- 4. large gaps ----------------------------------------------------------------------------


# 25,002 messages per direction: in `make test` each implementation receives them once,
# from another implementation; `make interop` runs every direction (marked slow here).
QUICK_JUMPS = {("libsignal", "python"), ("python", "libsignal"), ("libsignal", "typescript"),
               ("libsignal-0.103", "python-spqr"), ("python-spqr", "libsignal-0.103"),
               ("libsignal-0.103", "typescript-spqr")}


@pytest.mark.parametrize("pair", [
    pytest.param((a, b), id=f"{a}->{b}", marks=() if (a, b) in QUICK_JUMPS else pytest.mark.slow)
    for a, b in DIRECTIONS], indirect=True)
def test_forward_jump_limit(pair: tuple[PeerClient, PeerClient]) -> None:
    alice, bob = establish(pair)
    messages = alice.encrypt_many(bob, [b"j%d" % i for i in range(25_002)])
    assert bob.decrypt_error(alice, messages[25_001]) == "invalid_message"
    assert bob.decrypt(alice, messages[24_000]) == b"j24000"


def test_skipped_keys_bounded(pair: tuple[PeerClient, PeerClient]) -> None:
    alice, bob = establish(pair)
    messages = alice.encrypt_many(bob, [b"s%d" % i for i in range(2_301)])
    assert bob.decrypt(alice, messages[2_300]) == b"s2300"
    assert bob.decrypt_error(alice, messages[0]) == "duplicated_message"
    assert bob.decrypt_error(alice, messages[299]) == "duplicated_message"
    assert bob.decrypt(alice, messages[300]) == b"s300"
    assert bob.decrypt(alice, messages[2_299]) == b"s2299"


# -- 5. duplicates ----------------------------------------------------------------------------


def test_duplicate_rejected_without_state_change(pair: tuple[PeerClient, PeerClient]) -> None:
    alice, bob = establish(pair)
    message = alice.encrypt(bob, b"once")
    assert bob.decrypt(alice, message) == b"once"
    assert bob.decrypt_error(alice, message) == "duplicated_message"
    following = alice.encrypt(bob, b"next")
    assert bob.decrypt(alice, following) == b"next"
    assert alice.decrypt(bob, bob.encrypt(alice, b"still fine")) == b"still fine"


def test_repeated_prekey_message(pair: tuple[PeerClient, PeerClient]) -> None:
    alice = Actor(pair[0], _name("alice"))
    bob = Actor(pair[1], _name("bob"))
    alice.process_bundle(bob, bob.bundle())
    first = alice.encrypt(bob, b"first")
    assert bob.decrypt(alice, first) == b"first"
    assert bob.decrypt_error(alice, first) == "duplicated_message"


# -- 6. simultaneous initiation ------------------------------------------------------------


def test_simultaneous_initiation(pair: tuple[PeerClient, PeerClient]) -> None:
    alice = Actor(pair[0], _name("alice"))
    bob = Actor(pair[1], _name("bob"))
    alice_bundle = alice.bundle()
    bob_bundle = bob.bundle()
    alice.process_bundle(bob, bob_bundle)
    bob.process_bundle(alice, alice_bundle)
    to_bob = alice.encrypt(bob, b"hi bob")
    to_alice = bob.encrypt(alice, b"hi alice")
    assert to_bob[0] == to_alice[0] == "prekey"
    assert bob.decrypt(alice, to_bob) == b"hi bob"
    assert alice.decrypt(bob, to_alice) == b"hi alice"
    # One more round trip converges on one session, which keeps working both ways.
    assert bob.decrypt(alice, alice.encrypt(bob, b"round")) == b"round"
    assert alice.decrypt(bob, bob.encrypt(alice, b"trip")) == b"trip"
    for i in range(3):
        a = alice.encrypt(bob, b"a%d" % i)
        b = bob.encrypt(alice, b"b%d" % i)
        assert a[0] == b[0] == "whisper"
        assert bob.decrypt(alice, a) == b"a%d" % i
        assert alice.decrypt(bob, b) == b"b%d" % i


# -- 7. identity change ------------------------------------------------------------------------


def test_identity_change(pair: tuple[PeerClient, PeerClient]) -> None:
    """Bob re-installs (new identity and registration id) and writes to Alice again."""
    alice, bob = establish(pair)
    reinstalled = Actor(pair[1], _name("bob-reinstalled"))
    reinstalled.process_bundle(alice, alice.bundle())
    message = reinstalled.encrypt(alice, b"new phone")
    # Alice addresses the new install as Bob: strict TOFU refuses it and stores nothing.
    assert alice.decrypt_error(bob.address, message) == "untrusted_identity"
    assert alice.identity(bob) == bob.identity_key
    assert bob.decrypt(alice, alice.encrypt(bob, b"old session still works")) == \
        b"old session still works"
    # Alice accepts the new key: the old session may no longer send.
    assert reinstalled.identity_key is not None
    alice.peer.ok("trust", actor=alice.address, remote=bob.address,
                  identity_key=b64(reinstalled.identity_key))
    assert alice.peer.error("encrypt", actor=alice.address, remote=bob.address,
                            plaintext=b64(b"x")) == "untrusted_identity"
    assert alice.decrypt(bob.address, message) == b"new phone"
    reply = alice.encrypt(bob.address, b"welcome back")
    assert reply[0] == "whisper"
    assert reinstalled.decrypt(alice, reply) == b"welcome back"


# -- 8. tampering -----------------------------------------------------------------------------


def test_tampered_whisper_messages(pair: tuple[PeerClient, PeerClient]) -> None:
    alice, bob = establish(pair)
    message = alice.encrypt(bob, b"integrity")
    kind, text = message
    raw = unb64(text)
    ratchet_offset = raw.index(b"\x0a\x21\x05") + 3  # inside the 32 key bytes
    cases = {
        "mac": (len(raw) - 1, "invalid_message"),
        "ciphertext": (len(raw) - 12, "invalid_message"),
        "ratchet key": (ratchet_offset + 5, "invalid_message"),
        "version nibble 3": (0, None),
    }
    for name, (index, expected) in cases.items():
        if name == "version nibble 3":
            forged = b64(b"\x34" + raw[1:])
            expected = "invalid_message"
        else:
            forged = flip(text, index)
        got = bob.decrypt_error(alice, (kind, forged))
        assert got == expected, f"{name}: {got}"
    for nibble, expected in ((0, "unknown_version"), (1, "unknown_version"),
                             (2, "unknown_version"), (5, "unknown_version"),
                             (15, "unknown_version")):
        forged = b64(bytes(((nibble << 4) | 4,)) + raw[1:])
        assert bob.decrypt_error(alice, (kind, forged)) == expected, nibble
    assert bob.decrypt_error(alice, (kind, b64(b"\x43" + raw[1:]))) == "invalid_message"
    assert bob.decrypt_error(alice, (kind, b64(raw[:5]))) == "invalid_message"
    assert bob.decrypt_error(alice, (kind, b64(b""))) == "invalid_message"
    # Nothing above changed Bob's state.
    assert bob.decrypt(alice, message) == b"integrity"


def _prekey_message(pair: tuple[PeerClient, PeerClient]) -> tuple[Actor, Actor, bytes]:
    alice = Actor(pair[0], _name("alice"))
    bob = Actor(pair[1], _name("bob"))
    alice.process_bundle(bob, bob.bundle())
    kind, text = alice.encrypt(bob, b"first")
    assert kind == "prekey"
    return alice, bob, unb64(text)


def _rebuild(raw: bytes, drop: set[int] = frozenset(), replace: dict[int, bytes] | None = None,
             version: int | None = None) -> str:
    fields = pb.decode(raw[1:])
    out = []
    for number in sorted(fields):
        if number in drop:
            continue
        for value in fields[number]:
            if replace and number in replace:
                value = replace[number]
            if isinstance(value, bytes):
                out.append(pb.field_bytes(number, value))
            else:
                out.append(pb.field_varint(number, value))
    head = bytes((version,)) if version is not None else raw[:1]
    return b64(head + b"".join(out))


def test_tampered_prekey_messages(pair: tuple[PeerClient, PeerClient]) -> None:
    alice, bob, raw = _prekey_message(pair)
    # A small-order point is not canonical: libsignal refuses it as a base key.
    small_order = b"\x05" + bytes(32)
    cases = [
        ("x3dh version", _rebuild(raw, version=0x34), "invalid_message"),
        ("no kyber fields", _rebuild(raw, drop={7, 8}), "invalid_message"),
        ("kyber id without ciphertext", _rebuild(raw, drop={8}), "invalid_message"),
        ("non-canonical base key", _rebuild(raw, replace={2: small_order}), "invalid_message"),
        ("future version", _rebuild(raw, version=0x54), "unknown_version"),
        ("truncated", b64(raw[:40]), "invalid_message"),
        ("inner MAC", _rebuild(raw, replace={4: _flip_last(pb.get_bytes(pb.decode(raw[1:]), 4))}),
         "invalid_message"),
        ("unknown signed prekey", _rebuild(raw, replace={6: 999_999}), "invalid_prekey_id"),
        ("unknown kyber prekey", _rebuild(raw, replace={7: 999_999}), "invalid_kyber_prekey_id"),
        ("unknown one-time prekey", _rebuild(raw, replace={1: 999_999}), "invalid_prekey_id"),
    ]
    for name, forged, expected in cases:
        got = bob.decrypt_error(alice, ("prekey", forged))
        assert got == expected, f"{name}: got {got}, expected {expected}"
    # The low nibble of the outer version byte is not authenticated and is ignored.
    assert bob.decrypt(alice, ("prekey", b64(b"\x41" + raw[1:]))) == b"first"
    assert bob.has_session(alice)["has_session"] is True


def _flip_last(data: bytes | None) -> bytes:
    assert data is not None
    return data[:-1] + bytes((data[-1] ^ 1,))


def test_bad_bundle_signatures(pair: tuple[PeerClient, PeerClient]) -> None:
    alice = Actor(pair[0], _name("alice"))
    bob = Actor(pair[1], _name("bob"))
    bundle = bob.bundle()
    for field in ("signed_prekey_signature", "kyber_prekey_signature"):
        for index in (0, 31, 32, 63):
            forged = dict(bundle, **{field: flip(bundle[field], index)})
            kind = alice.peer.error("process_bundle", actor=alice.address, remote=bob.address,
                                    bundle=forged)
            assert kind == "invalid_signature", (field, index)
    assert alice.has_session(bob)["has_session"] is False
    assert alice.identity(bob) is None
    alice.process_bundle(bob, bundle)
    assert bob.decrypt(alice, alice.encrypt(bob, b"good")) == b"good"


# -- SPQR over several epochs ------------------------------------------------------------


def _spqr_epoch(message: tuple[str, str]) -> int | None:
    """The SCKA epoch in a whisper message's field 5, if it has one."""
    if message[0] != "whisper":
        return None
    field = pb.get_bytes(whisper_fields(message[1]), 5)
    return SpqrMessage.decode(field).epoch if field else None


def test_spqr_epochs_under_loss_and_reordering(pair: tuple[PeerClient, PeerClient]) -> None:
    """A long conversation in bursts, with 5% loss and neighbours swapped, until SPQR has
    completed three key exchanges (message epoch 4 both ways). A side without SPQR makes
    it a plain Double Ratchet conversation, which must work all the same."""
    rnd = random.Random(20261130)
    alice, bob = establish(pair)
    spqr = not {"python", "typescript"} & {pair[0].name, pair[1].name}
    actors = {"A": alice, "B": bob}
    queues: dict[str, list[tuple[tuple[str, str], bytes]]] = {"A": [], "B": []}
    epochs = {"A": 0, "B": 0}  # highest epoch seen in messages *from* each side
    sent = lost = delivered = 0
    while sent < 1600 and (min(epochs.values()) < 4 if spqr else sent < 300):
        name = rnd.choice("AB")
        other = "B" if name == "A" else "A"
        texts = [rnd.randbytes(rnd.randrange(1, 64)) for _ in range(rnd.randint(1, 5))]
        for message, text in zip(actors[name].encrypt_many(actors[other], texts), texts,
                                 strict=True):
            sent += 1
            epochs[name] = max(epochs[name], _spqr_epoch(message) or 0)
            if rnd.random() < 0.05:
                lost += 1
            else:
                queues[other].append((message, text))
        queue = queues[other]
        take = rnd.randint(0, len(queue))
        batch, queues[other] = queue[:take], queue[take:]
        for i in range(len(batch) - 1):  # reordering: swap some neighbours
            if rnd.random() < 0.3:
                batch[i], batch[i + 1] = batch[i + 1], batch[i]
        responses = actors[other].peer.call_many([
            {"op": "decrypt", "actor": actors[other].address, "remote": actors[name].address,
             "message_type": m[0], "ciphertext": m[1]} for m, _ in batch])
        for (_, text), response in zip(batch, responses, strict=True):
            assert response.get("ok"), (sent, response.get("error"))
            assert unb64(response["plaintext"]) == text
            delivered += 1
    assert lost > 5 and delivered > 200
    if spqr:
        assert min(epochs.values()) >= 4, (epochs, sent)
    else:
        assert epochs == {"A": 0, "B": 0}


# -- archived sessions, has_session -----------------------------------------------------


def test_archived_session_still_decrypts(pair: tuple[PeerClient, PeerClient]) -> None:
    alice, bob = establish(pair)
    in_flight = alice.encrypt(bob, b"sent before archive")
    bob.peer.ok("archive_session", actor=bob.address, remote=alice.address)
    state = bob.has_session(alice)
    assert (state["has_session"], state["session_version"]) == (False, None)
    assert bob.peer.error("encrypt", actor=bob.address, remote=alice.address,
                          plaintext=b64(b"x")) == "no_session"
    assert bob.decrypt(alice, in_flight) == b"sent before archive"
    assert bob.has_session(alice)["has_session"] is True
    assert alice.decrypt(bob, bob.encrypt(alice, b"back")) == b"back"


def test_no_session(pair: tuple[PeerClient, PeerClient]) -> None:
    alice, bob = establish(pair)
    stranger = Actor(pair[1], _name("stranger"))
    message = alice.encrypt(bob, b"not for you")
    assert stranger.decrypt_error(alice, message) == "no_session"
    assert stranger.peer.error("encrypt", actor=stranger.address, remote=alice.address,
                               plaintext=b64(b"x")) == "no_session"


# -- 9. sender keys ---------------------------------------------------------------------------


def _group(pair: tuple[PeerClient, PeerClient]) -> tuple[Actor, Actor, str]:
    sender = Actor(pair[0], _name("gsender"))
    member = Actor(pair[1], _name("gmember"))
    distribution = str(uuid.uuid4())
    skdm = sender.peer.ok("sender_key_distribution", actor=sender.address,
                          distribution_id=distribution)["skdm"]
    member.peer.ok("process_sender_key_distribution", actor=member.address,
                   sender=sender.address, skdm=skdm)
    return sender, member, distribution


def _gencrypt(sender: Actor, distribution: str, texts: list[bytes]) -> list[str]:
    responses = sender.peer.call_many([
        {"op": "group_encrypt", "actor": sender.address, "distribution_id": distribution,
         "plaintext": b64(t)} for t in texts])
    assert all(r["ok"] for r in responses), responses[0]
    return [r["ciphertext"] for r in responses]


def _gdecrypt(member: Actor, sender: Actor, ciphertext: str) -> dict[str, object]:
    return member.peer.call("group_decrypt", actor=member.address, sender=sender.address,
                            ciphertext=ciphertext)


def test_sender_keys_out_of_order_and_duplicates(pair: tuple[PeerClient, PeerClient]) -> None:
    sender, member, distribution = _group(pair)
    texts = [b"g%d" % i for i in range(5)]
    ciphertexts = _gencrypt(sender, distribution, texts)
    for i in (3, 0, 4, 1, 2):
        r = _gdecrypt(member, sender, ciphertexts[i])
        assert r["ok"] and unb64(str(r["plaintext"])) == texts[i]
    for c in ciphertexts:
        assert _gdecrypt(member, sender, c)["error"]["kind"] == "duplicated_message"  # type: ignore[index]


def test_sender_keys_gap_and_limits(pair: tuple[PeerClient, PeerClient]) -> None:
    sender, member, distribution = _group(pair)
    ciphertexts = _gencrypt(sender, distribution, [b"k%d" % i for i in range(2_301)])
    assert _gdecrypt(member, sender, ciphertexts[2_300])["ok"]
    assert _gdecrypt(member, sender, ciphertexts[0])["error"]["kind"] == "duplicated_message"  # type: ignore[index]
    assert _gdecrypt(member, sender, ciphertexts[300])["ok"]


def test_sender_keys_signature_and_reprocess(pair: tuple[PeerClient, PeerClient]) -> None:
    sender, member, distribution = _group(pair)
    first, second = _gencrypt(sender, distribution, [b"one", b"two"])
    sig_flip = flip(first, len(unb64(first)) - 5)
    assert _gdecrypt(member, sender, sig_flip)["error"]["kind"] == "invalid_signature"  # type: ignore[index]
    body_flip = flip(first, len(unb64(first)) - 70)
    assert _gdecrypt(member, sender, body_flip)["error"]["kind"] == "invalid_signature"  # type: ignore[index]
    assert _gdecrypt(member, sender, first)["ok"]
    # Re-processing the same SKDM keeps the chain position: the used key stays used.
    skdm = sender.peer.ok("sender_key_distribution", actor=sender.address,
                          distribution_id=distribution)["skdm"]
    member.peer.ok("process_sender_key_distribution", actor=member.address,
                   sender=sender.address, skdm=skdm)
    assert _gdecrypt(member, sender, first)["error"]["kind"] == "duplicated_message"  # type: ignore[index]
    assert _gdecrypt(member, sender, second)["ok"]


def test_sender_key_states_rotate_and_evict(pair: tuple[PeerClient, PeerClient]) -> None:
    """Six chains arrive under one sender address: the oldest state is evicted."""
    member = Actor(pair[1], _name("gmember"))
    address = {"name": _name("gsender"), "device_id": 1}
    distribution = str(uuid.uuid4())
    chains = []
    for i in range(6):
        sender = Actor(pair[0], _name(f"chain{i}"))
        skdm = sender.peer.ok("sender_key_distribution", actor=sender.address,
                              distribution_id=distribution)["skdm"]
        member.peer.ok("process_sender_key_distribution", actor=member.address,
                       sender=address, skdm=skdm)
        chains.append(_gencrypt(sender, distribution, [b"c%d" % i])[0])
    oldest = member.peer.call("group_decrypt", actor=member.address, sender=address,
                              ciphertext=chains[0])
    assert oldest["error"]["kind"] == "no_sender_key"
    for i in range(1, 6):
        r = member.peer.call("group_decrypt", actor=member.address, sender=address,
                             ciphertext=chains[i])
        assert r["ok"] and unb64(r["plaintext"]) == b"c%d" % i


def test_group_without_distribution(pair: tuple[PeerClient, PeerClient]) -> None:
    sender, _member, distribution = _group(pair)
    other = str(uuid.uuid4())
    assert sender.peer.error("group_encrypt", actor=sender.address, distribution_id=other,
                             plaintext=b64(b"x")) == "no_sender_key"
    stranger = Actor(pair[1], _name("stranger"))
    message = _gencrypt(sender, distribution, [b"x"])[0]
    assert stranger.peer.error("group_decrypt", actor=stranger.address, sender=sender.address,
                               ciphertext=message) == "no_sender_key"


# -- 11. fingerprints ---------------------------------------------------------------------


def test_fingerprints_agree(pair: tuple[PeerClient, PeerClient]) -> None:
    alice, bob = establish(pair)
    a_id, b_id = b"alice-stable-id", b"bob-stable-id"
    ours = alice.peer.ok("fingerprint", actor=alice.address, local_id=b64(a_id),
                         remote=bob.address, remote_id=b64(b_id))
    theirs = bob.peer.ok("fingerprint", actor=bob.address, local_id=b64(b_id),
                         remote=alice.address, remote_id=b64(a_id))
    assert ours["displayable"] == theirs["displayable"]
    assert len(ours["displayable"]) == 60 and ours["displayable"].isdigit()
    assert bob.peer.ok("compare_scannable", actor=bob.address, local_id=b64(b_id),
                       remote=alice.address, remote_id=b64(a_id),
                       scanned=ours["scannable"])["match"] is True
    wrong = alice.peer.ok("fingerprint", actor=alice.address, local_id=b64(b"someone else"),
                          remote=bob.address, remote_id=b64(b_id))
    assert bob.peer.ok("compare_scannable", actor=bob.address, local_id=b64(b_id),
                       remote=alice.address, remote_id=b64(a_id),
                       scanned=wrong["scannable"])["match"] is False
    stranger = {"name": _name("nobody"), "device_id": 1}
    assert alice.peer.error("fingerprint", actor=alice.address, local_id=b64(a_id),
                            remote=stranger, remote_id=b64(b_id)) == "bad_request"


# -- 12. key encodings --------------------------------------------------------------------


def test_public_key_trailing_bytes_accepted(pair: tuple[PeerClient, PeerClient]) -> None:
    alice = Actor(pair[0], _name("alice"))
    bob = Actor(pair[1], _name("bob"))
    bundle = bob.bundle()
    bundle["prekey"] = b64(unb64(bundle["prekey"]) + b"\x00\x01")
    alice.process_bundle(bob, bundle)
    assert bob.decrypt(alice, alice.encrypt(bob, b"trailing")) == b"trailing"


def test_bad_key_encodings(pair: tuple[PeerClient, PeerClient]) -> None:
    alice = Actor(pair[0], _name("alice"))
    bob = Actor(pair[1], _name("bob"))
    bundle = bob.bundle()
    for field, value in (("signed_prekey", unb64(bundle["signed_prekey"])[1:]),
                         ("identity_key", b"\x06" + unb64(bundle["identity_key"])[1:]),
                         ("kyber_prekey", unb64(bundle["kyber_prekey"])[:-1]),
                         ("kyber_prekey", b"\x07" + unb64(bundle["kyber_prekey"])[1:])):
        forged = dict(bundle, **{field: b64(value)})
        assert alice.peer.error("process_bundle", actor=alice.address, remote=bob.address,
                                bundle=forged) == "invalid_key", field


def test_mlkem_bundles(pair: tuple[PeerClient, PeerClient]) -> None:
    """ML-KEM-1024 (0x0A) works where both sides support it; libsignal 0.90 declines it."""
    initiator, responder = pair
    bob = Actor(responder, _name("bob"))
    response = responder.call("generate_bundle", actor=bob.address, signed_prekey_id=1,
                              kyber_prekey_id=2, prekey_id=3, kem="mlkem1024")
    if responder.name.startswith("libsignal"):
        assert response["error"]["kind"] == "bad_request"
        return
    bundle = response["bundle"]
    assert unb64(bundle["kyber_prekey"])[0] == 0x0A
    alice = Actor(initiator, _name("alice"))
    if initiator.name.startswith("libsignal"):
        assert alice.peer.error("process_bundle", actor=alice.address, remote=bob.address,
                                bundle=bundle) == "invalid_key"
        return
    alice.process_bundle(bob, bundle)
    message = alice.encrypt(bob, b"ml-kem")
    kyber_ct = pb.get_bytes(pb.decode(unb64(message[1])[1:]), 8)
    assert kyber_ct is not None and kyber_ct[0] == 0x0A
    assert bob.decrypt(alice, message) == b"ml-kem"
    assert alice.decrypt(bob, bob.encrypt(alice, b"ok")) == b"ok"


# -- the peer itself ------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["python", "libsignal", "typescript", "python-spqr",
                                  "libsignal-0.103", "typescript-spqr"])
def test_malformed_requests(peers: dict[str, PeerClient], impl: str) -> None:
    peer = peers[impl]
    actor = Actor(peer, _name("solo"))
    assert peer.send_raw("this is not json")["error"]["kind"] == "bad_request"
    response = peer.send_raw("[1, 2]")
    assert (response["id"], response["ok"], response["error"]["kind"]) == (
        None, False, "bad_request")
    bad = [
        {"op": "no_such_op"},
        {"op": "create_actor", "actor": {"name": "x", "device_id": 0}, "registration_id": 1},
        {"op": "create_actor", "actor": {"name": "x", "device_id": 128}, "registration_id": 1},
        {"op": "create_actor", "actor": {"name": "", "device_id": 1}, "registration_id": 1},
        {"op": "create_actor", "actor": {"name": "y", "device_id": 1}, "registration_id": 0},
        {"op": "create_actor", "actor": {"name": "y", "device_id": 1}, "registration_id": 16381},
        {"op": "create_actor", "actor": actor.address, "registration_id": 5},
        {"op": "encrypt", "actor": {"name": "ghost", "device_id": 1},
         "remote": actor.address, "plaintext": ""},
        {"op": "encrypt", "actor": actor.address, "remote": actor.address,
         "plaintext": "not base64!"},
        {"op": "decrypt", "actor": actor.address, "remote": actor.address,
         "message_type": "carrier-pigeon", "ciphertext": ""},
        {"op": "generate_bundle", "actor": actor.address, "signed_prekey_id": -1,
         "kyber_prekey_id": 1, "prekey_id": None},
        {"op": "generate_bundle", "actor": actor.address, "signed_prekey_id": 1,
         "kyber_prekey_id": 2 ** 32, "prekey_id": None},
        {"op": "sender_key_distribution", "actor": actor.address, "distribution_id": "nope"},
        {"op": "process_bundle", "actor": actor.address, "remote": actor.address,
         "bundle": "nope"},
        {"op": "trust", "actor": actor.address, "remote": actor.address},
    ]
    for index, request in enumerate(bad):
        response = peer.call_many([request])[0]
        assert response["ok"] is False, (index, request)
        assert response["error"]["kind"] == "bad_request", (index, request, response)
    assert peer.ok("has_session", actor=actor.address, remote=actor.address)["ok"]
