"""Sealed sender end to end: the SDK against a real relay. Contacts who shared a profile
key get sealed messages (no sender in the relay's rows); refusals fall back to identified
sends; envelopes whose certificate fails are reported and acknowledged, and leave the
session working."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import sqlite3
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from cipherpost.cli import cli
from cipherpost.client import Client, sealed
from cipherpost.client import events as ev
from cipherpost.client.devices import request_link
from cipherpost.client.recovery import restore
from cipherpost.client.store.crypto import TEST_PARAMS
from cipherpost.protocol import PrivateKey, ProtocolAddress

from .conftest import Devices, ThreadedRelay, relay_queue

SEALED = sealed.SEALED_TYPE
DAY_MS = 24 * 3600 * 1000


def _queued(tmp_path: Path, client: Client) -> list[tuple[str | None, int | None, int, int]]:
    """(sender account, sender device, type, client timestamp) of each envelope the
    relay holds for ``client``'s account, as stored."""
    return relay_queue(tmp_path / "relay" / "relay.db", client.account_id)


def _texts(events: list[ev.Event]) -> list[tuple[str, str]]:
    return [(e.author, e.text) for e in events if isinstance(e, ev.Message)]


async def _acquainted(devices: Devices) -> tuple[Client, Client]:
    """Alice and Bob, each holding the other's profile key: Bob says hi, Alice's receipt
    answers."""
    alice = await devices.register("alice")
    bob = await devices.register("bob")
    await bob.send_text("alice", "hi")
    await alice.receive()
    await bob.receive()  # alice's receipt
    return alice, bob


def test_contacts_get_sealed_messages(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice = await devices.register("alice")
            bob = await devices.register("bob")
            assert sealed.trust_root(alice.store) is not None
            # Alice holds no profile key of Bob's yet: identified.
            await alice.send_text("bob", "hello bob")
            assert [row[:3] for row in _queued(tmp_path, bob)] == \
                [(alice.account_id, 1, 3)]
            assert _texts(await bob.receive()) == [(alice.account_id, "hello bob")]
            # Bob learned Alice's profile key from her message: his answers go sealed,
            # the delivery receipt included.
            await bob.send_text("alice", "hi alice")
            rows = _queued(tmp_path, alice)
            assert len(rows) == 2
            assert all(row == (None, None, SEALED, 0) for row in rows)
            got = await alice.receive()
            assert _texts(got) == [(bob.account_id, "hi alice")]
            assert any(isinstance(e, ev.Receipt) and e.sender == bob.account_id for e in got)
            # And Alice, who now holds Bob's key, sends sealed too.
            await alice.send_text("bob", "sealed now")
            assert [row for row in _queued(tmp_path, bob) if row[2] != SEALED] == []
            assert _texts(await bob.receive()) == [(alice.account_id, "sealed now")]
            assert [h.text for h in bob.history(alice.account_id)] == \
                ["hello bob", "hi alice", "sealed now"]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_refused_sealed_sends_go_identified(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await _acquainted(devices)
            assert sealed.contact_profile_key(alice.store, bob.account_id) is not None
            # Bob's account registers another key: Alice's is refused (401), the message
            # goes identified, and she forgets the stale key.
            await bob.api.set_access_key(os.urandom(16))
            await alice.send_text("bob", "after a new key")
            assert [row[:3] for row in _queued(tmp_path, bob)] == [(alice.account_id, 1, 2)]
            assert sealed.contact_profile_key(alice.store, bob.account_id) is None
            assert _texts(await bob.receive()) == [(alice.account_id, "after a new key")]
            await bob.api.set_access_key(sealed.access_key(
                sealed.own_profile_key(bob.store)))
            await bob.send_text("alice", "my key again")
            await alice.receive()
            await bob.receive()
            # A device of Bob's that has not said it opens sealed envelopes: 403, and the
            # send goes identified to both devices.
            laptop = await devices.link(bob, "laptop")
            assert sealed.known_own_profile_key(laptop.store) is None
            await alice.send_text("bob", "to both")
            rows = _queued(tmp_path, bob)
            assert {row[2] for row in rows} != {SEALED}
            assert (alice.account_id, 1) in {row[:2] for row in rows}
            assert (alice.account_id, "to both") in _texts(await bob.receive())
            assert (alice.account_id, "to both") in _texts(await laptop.receive())
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_bad_certificates_are_reported_and_sessions_survive(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await _acquainted(devices)
            # Bob pins another trust root: Alice's sealed message is refused, not decrypted.
            real_root = sealed.trust_root(bob.store)
            assert real_root is not None
            with bob.store.transaction():
                sealed.pin_trust_root(bob.store, PrivateKey.generate(os.urandom).public_key())
            await alice.send_text("bob", "under a root bob does not trust")
            got = await bob.receive()
            assert [type(e) for e in got] == [ev.SealedRejected]
            assert got[0].kind == "invalid_certificate"  # type: ignore[union-attr]
            assert _queued(tmp_path, bob) == []  # acknowledged
            # Expired: Bob's clock is past the certificate's expiry.
            with bob.store.transaction():
                sealed.pin_trust_root(bob.store, real_root)
            real_clock = bob.options.clock
            bob.options.clock = lambda: real_clock() + DAY_MS + 60_000
            await alice.send_text("bob", "with a certificate bob finds expired")
            got = await bob.receive()
            bob.options.clock = real_clock
            assert [(type(e), getattr(e, "kind", "")) for e in got] == \
                [(ev.SealedRejected, "invalid_certificate")]
            # Neither advanced nor broke the session: an identified message decrypts...
            alice.options.sealed_sender = False
            await alice.send_text("bob", "identified")
            assert _texts(await bob.receive()) == [(alice.account_id, "identified")]
            # ...and so does a sealed one under the right root and time.
            alice.options.sealed_sender = True
            await alice.send_text("bob", "sealed and fine")
            assert {row[2] for row in _queued(tmp_path, bob)} == {SEALED}
            assert _texts(await bob.receive()) == [(alice.account_id, "sealed and fine")]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_group_messages_go_sealed(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await _acquainted(devices)
            group = await alice.create_group("trip", [bob.account_id])
            await bob.receive()
            await alice.send_group_text(group.id, "to the group")
            rows = _queued(tmp_path, bob)
            assert rows and {row[:2] for row in rows} == {(None, None)}
            assert (alice.account_id, "to the group") in _texts(await bob.receive())
        finally:
            await devices.close()

    asyncio.run(scenario())


@pytest.mark.usefixtures("cheap_store_kdf")
def test_cli_shows_and_repins_the_trust_root(tmp_path: Path, relay: ThreadedRelay) -> None:
    env = {"CIPHERPOST_PASSPHRASE": "a long local passphrase"}
    home = tmp_path / "home"

    def invoke(*args: str, answer: str | None = None) -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["--home", str(home), *args], env=env, input=answer,
                                    catch_exceptions=False)
        return result.exit_code, result.stdout

    assert invoke("register", "--no-history", "--server", relay.url)[0] == 0
    served = httpx.get(f"{relay.url}/v1/certificates/trust-root").json()["trust_root"]
    code, stdout = invoke("--json", "trust-root")
    assert code == 0 and json.loads(stdout) == {"trust_root": served}
    other = base64.b64encode(PrivateKey.generate(os.urandom).public_key().serialize()).decode()
    code, stdout = invoke("--json", "trust-root", "--set", other)
    assert code == 0 and json.loads(stdout) == {"trust_root": other}
    assert invoke("trust-root", "--set", "not a key")[0] == 2
    code, _ = invoke("trust-root", "--repin", answer="n\n")  # not confirmed: unchanged
    assert code == 1
    assert json.loads(invoke("--json", "trust-root")[1]) == {"trust_root": other}
    code, stdout = invoke("trust-root", "--repin", answer="y\n")
    assert code == 0 and served in stdout
    assert json.loads(invoke("--json", "trust-root")[1]) == {"trust_root": served}


def test_a_sealed_message_that_fails_to_decrypt_is_resent(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await _acquainted(devices)
            sent = await alice.send_text("bob", "lost, then found")
            assert {row[2] for row in _queued(tmp_path, bob)} == {SEALED}
            with bob.store.transaction():  # Bob's side of the session is gone
                bob.store.delete_session(ProtocolAddress(alice.account_id, 1))
            got = await bob.receive()
            failed = [e for e in got if isinstance(e, ev.DecryptionFailed)]
            assert [(e.sender, e.timestamp) for e in failed] == [(alice.account_id, 0)]
            # The request names no message: Alice resends what she sent Bob lately.
            got = await alice.receive()
            assert not [e for e in got if isinstance(e, ev.ResendUnavailable)]
            got = await bob.receive()
            assert [(e.text, e.timestamp) for e in got if isinstance(e, ev.Message)] == \
                [("lost, then found", sent)]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_linked_and_restored_devices(tmp_path: Path, relay: ThreadedRelay) -> None:
    """A device linked by QR code takes the account's profile key, its contacts' and the
    pinned root; a device restored from the recovery key makes a new profile key, and
    contacts holding the old one fall back, then learn the new one."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice = await devices.register("alice")
            bob = await devices.register("bob")
            await bob.send_text("alice", "hi")
            await alice.receive()
            await alice.send_text("bob", "hi bob")
            await bob.receive()
            await alice.receive()
            pending = await request_link(relay.url)
            joining = asyncio.create_task(pending.complete(
                tmp_path / "laptop.db", passphrase="pw", argon2=TEST_PARAMS,
                device_name="laptop", options=dataclasses.replace(devices.options)))
            await asyncio.sleep(0.2)
            await alice.provision(pending.uri)
            laptop = await asyncio.wait_for(joining, 30)
            devices.clients.append(laptop)
            assert sealed.known_own_profile_key(laptop.store) == \
                sealed.known_own_profile_key(alice.store)
            assert sealed.contact_profile_key(laptop.store, bob.account_id) == \
                sealed.contact_profile_key(alice.store, bob.account_id)
            assert sealed.trust_root(laptop.store) == sealed.trust_root(alice.store)
            await alice.receive()
            # Both of Alice's devices open sealed envelopes: Bob's send is sealed to both.
            await bob.send_text("alice", "to both of you")
            rows = _queued(tmp_path, alice)
            assert len(rows) == 2 and {row[:3] for row in rows} == {(None, None, SEALED)}
            assert (bob.account_id, "to both of you") in _texts(await laptop.receive())
            assert (bob.account_id, "to both of you") in _texts(await alice.receive())
            await bob.receive()
            # Restored from the recovery key on a fresh machine: a new profile key.
            key = await alice.create_recovery_key()
            restored = await restore(tmp_path / "restored.db", relay.url, key,
                                     passphrase="pw", argon2=TEST_PARAMS,
                                     options=dataclasses.replace(devices.options))
            devices.clients.append(restored)
            await restored.receive()
            new_key = sealed.known_own_profile_key(restored.store)
            assert new_key is not None and new_key != sealed.known_own_profile_key(alice.store)
            await bob.send_text("alice", "the old key is refused")  # 401: identified
            assert sealed.contact_profile_key(bob.store, alice.account_id) is None
            assert (bob.account_id, "the old key is refused") in \
                _texts(await restored.receive())
            await restored.send_text("bob", "my new key")
            await bob.receive()
            assert sealed.contact_profile_key(bob.store, alice.account_id) == new_key
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_register_with_the_published_trust_root(tmp_path: Path, relay: ThreadedRelay) -> None:
    env = {"CIPHERPOST_PASSPHRASE": "a long local passphrase"}
    served = httpx.get(f"{relay.url}/v1/certificates/trust-root").json()["trust_root"]
    other = base64.b64encode(PrivateKey.generate(os.urandom).public_key().serialize()).decode()

    def invoke(home: Path, *args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(cli, ["--home", str(home), *args], env=env)
        return result.exit_code, result.stdout, result.stderr

    # Another root than the relay shows: nothing is registered, no store is left.
    code, _, stderr = invoke(tmp_path / "a", "register", "--no-history", "--server",
                             relay.url, "--trust-root", other)
    assert code != 0 and "trust root" in stderr
    assert not list((tmp_path / "a").rglob("*.db"))
    code, _, _ = invoke(tmp_path / "b", "register", "--no-history", "--server", relay.url,
                        "--trust-root", served)
    assert code == 0
    assert json.loads(invoke(tmp_path / "b", "--json", "trust-root")[1]) == \
        {"trust_root": served}


def test_the_access_key_is_registered_again_daily(tmp_path: Path,
                                                  relay: ThreadedRelay) -> None:
    """Review R5: a relay restored from a backup older than the access key (simulated:
    the rows are deleted) refuses sealed sends to the account with 401, and senders go
    identified. The SDK registers the key again once a day, so sealed delivery comes
    back without anyone doing anything."""

    def stored_key(client: Client) -> list[tuple[int, int]]:
        with sqlite3.connect(tmp_path / "relay" / "relay.db") as db:
            return db.execute(
                "SELECT COUNT(u.key_hash), d.sealed_sender FROM devices d LEFT JOIN "
                "unidentified_access u ON u.account_id = d.account_id "
                "WHERE d.account_id = ?", (client.account_id,)).fetchall()

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await _acquainted(devices)
            assert stored_key(bob) == [(1, 1)]
            with sqlite3.connect(tmp_path / "relay" / "relay.db") as db:  # "restored"
                db.execute("DELETE FROM unidentified_access WHERE account_id = ?",
                           (bob.account_id,))
                db.execute("UPDATE devices SET sealed_sender = 0 WHERE account_id = ?",
                           (bob.account_id,))
            await bob.receive()  # registered less than a day ago: not again yet
            assert stored_key(bob) == [(0, 0)]
            await alice.send_text("bob", "refused sealed")  # 401: sent identified
            assert [row[:2] for row in _queued(tmp_path, bob)] == [(alice.account_id, 1)]
            real_clock = bob.options.clock
            bob.options.clock = lambda: real_clock() + DAY_MS + 60_000
            assert _texts(await bob.receive()) == [(alice.account_id, "refused sealed")]
            assert stored_key(bob) == [(1, 1)]  # registered again
            # Back to the real time (Alice's certificates would look expired to Bob):
            # a registration time ahead of the clock counts as due, once.
            bob.options.clock = real_clock
            assert sealed.access_key_due(bob.store, real_clock())
            # Alice forgot Bob's key on the 401; his next message brings it back, and
            # her sends go sealed again.
            await bob.send_text("alice", "still here")
            await alice.receive()
            await bob.receive()  # her receipt
            await alice.send_text("bob", "sealed again")
            assert [row[:3] for row in _queued(tmp_path, bob)] == [(None, None, SEALED)]
            assert _texts(await bob.receive()) == [(alice.account_id, "sealed again")]
            # Within the day that follows, nothing is registered again.
            with sqlite3.connect(tmp_path / "relay" / "relay.db") as db:
                db.execute("DELETE FROM unidentified_access WHERE account_id = ?",
                           (bob.account_id,))
            await bob.receive()
            assert stored_key(bob)[0][0] == 0
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_lost_access_key_is_registered_again_before_the_day_is_out(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    """R5 follow-up: the relay loses the access keys and device marks (a restore from an
    older backup; simulated by deleting the rows). A recipient never sees the 401 its
    contacts' sealed sends get, so the daily registration alone left them identified for
    up to a day. Now a 401 to one of our own sealed sends makes us check our own key at
    once (the relay may have lost every key), a new connection checks it (the relay
    restarted), and a relay that still holds it gets no write."""

    def stored(client: Client) -> list[tuple[int, int, int | None]]:
        with sqlite3.connect(tmp_path / "relay" / "relay.db") as db:
            return db.execute(
                "SELECT COUNT(u.key_hash), d.sealed_sender, MAX(u.updated_at) FROM devices "
                "d LEFT JOIN unidentified_access u ON u.account_id = d.account_id "
                "WHERE d.account_id = ? GROUP BY d.device_id", (client.account_id,)
            ).fetchall()

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await _acquainted(devices)
            # A relay that holds the key: the checks read and write nothing.
            held = stored(alice)
            await alice.sealed_sender_upkeep(check_after_ms=0)
            assert stored(alice) == held and held[0][:2] == (1, 1)
            with sqlite3.connect(tmp_path / "relay" / "relay.db") as db:  # "restored"
                db.execute("DELETE FROM unidentified_access")
                db.execute("UPDATE devices SET sealed_sender = 0")
            await alice.receive()  # checked less than an hour ago: not again yet
            assert stored(alice)[0][:2] == (0, 0)
            # Alice's sealed send to Bob is refused (401) and goes identified; Alice
            # then finds the relay lost her own key too and registers it at once (a
            # minute after her last check: more often, a 401 checks nothing).
            alice_clock = alice.options.clock
            alice.options.clock = lambda: alice_clock() + 2 * 60_000
            await alice.send_text("bob", "refused sealed")
            assert [row[:2] for row in _queued(tmp_path, bob)] == [(alice.account_id, 1)]
            assert stored(alice)[0][:2] == (1, 1)
            assert stored(bob)[0][:2] == (0, 0)  # Bob sent nothing: not yet
            # Bob connects (the relay restarted): the connection checks his key.
            bob_clock = bob.options.clock
            bob.options.clock = lambda: bob_clock() + 2 * 60_000
            received: list[str] = []

            async def listen() -> None:
                async for event in bob.listen():
                    if isinstance(event, ev.Message):
                        received.append(event.text)
                        return

            await asyncio.wait_for(listen(), timeout=30)
            assert received == ["refused sealed"]
            assert stored(bob)[0][:2] == (1, 1)
            alice.options.clock, bob.options.clock = alice_clock, bob_clock
            # Alice forgot Bob's key on the 401; his next message brings it back, and
            # her sends go sealed again, a day before the daily registration would have.
            await bob.send_text("alice", "still here")
            await alice.receive()
            await bob.receive()  # her receipt
            await alice.send_text("bob", "sealed again")
            assert [row[:3] for row in _queued(tmp_path, bob)] == [(None, None, SEALED)]
            assert _texts(await bob.receive()) == [(alice.account_id, "sealed again")]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_store_that_kept_the_old_flag_registers_again(tmp_path: Path,
                                                        relay: ThreadedRelay) -> None:
    """A store written before R5 holds "1" for the access key: the next upkeep
    registers the key again and keeps the time instead."""

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice = await devices.register("alice")
            now = alice.options.clock()
            assert not sealed.access_key_due(alice.store, now)
            alice.store.set_meta("access_key_registered", "1")
            assert sealed.access_key_due(alice.store, now)
            assert sealed.upkeep_due(alice.store, now)
            await alice.sealed_sender_upkeep()
            assert not sealed.access_key_due(alice.store, alice.options.clock())
            assert sealed.access_key_due(alice.store, alice.options.clock() + DAY_MS)
        finally:
            await devices.close()

    asyncio.run(scenario())
