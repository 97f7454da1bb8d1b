"""Sealed sender against hostile peers and a hostile relay (findings of
reviews/2026-11-29-sealed-ops): what a repeated resend request, a certificate the relay
made for another device, or a sealed envelope posing as one of our devices may do."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from pathlib import Path

import httpx

from cipherpost.client import Client, sealed
from cipherpost.client import content as codec
from cipherpost.client import events as ev
from cipherpost.client.api import Envelope
from cipherpost.client.proto.app_pb2 import (
    Content,
    DecryptionErrorMessage,
    SyncMessage,
)
from cipherpost.client.store.crypto import TEST_PARAMS
from cipherpost.client.store.database import Store
from cipherpost.protocol import (
    IdentityKeyPair,
    ProtocolAddress,
    PublicKey,
    encrypt,
    process_prekey_bundle,
)
from cipherpost.server import key_chain
from cipherpost.server.settings import sealed_sender_key_file

from .conftest import Devices, ThreadedRelay, relay_queue

DAY_MS = 24 * 3600 * 1000


def _queued_for(tmp_path: Path, client: Client) -> list[tuple[str | None, int | None, int]]:
    """(sender account, sender device, type) of each envelope the relay holds for
    ``client``'s account, as stored."""
    return [row[:3] for row in relay_queue(tmp_path / "relay" / "relay.db", client.account_id)]


async def _contacts(devices: Devices) -> tuple[Client, Client]:
    """Alice and Bob, each holding the other's profile key (sends go sealed)."""
    alice, bob = await devices.register("alice"), await devices.register("bob")
    await bob.send_text("alice", "hi")
    await alice.receive()
    await alice.send_text("bob", "hello")
    await bob.receive()
    await alice.receive()
    return alice, bob


def test_a_repeated_request_for_recent_messages_resends_nothing_twice(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    """R1: a decryption-error message naming timestamp 0 (a failed sealed envelope) makes
    the sender resend its recent 1:1 messages. Repeating it must not make the sender
    encrypt and send them again and again (20 messages per request of the peer)."""
    async def ask(alice: Client, bob: Client) -> list[ev.Event]:
        request = Content(decryption_error=DecryptionErrorMessage(
            timestamp=0, device_id=bob.device_id))
        await bob.outbox.deliver(alice.account_id, request, bob._timestamp(),
                                 only_device=alice.device_id)
        return await alice.receive()

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await _contacts(devices)
            await alice.send_text("bob", "one")
            await alice.send_text("bob", "two")
            await bob.receive()
            await alice.receive()
            assert _queued_for(tmp_path, bob) == []
            # The first request: the recent messages go again, to Bob's device.
            await ask(alice, bob)
            first = len(_queued_for(tmp_path, bob))
            assert first == 3  # "hello", "one", "two"
            await bob.receive()  # copies Bob holds: dropped by name
            # The same request again: nothing more is sent.
            got = await ask(alice, bob)
            assert _queued_for(tmp_path, bob) == []
            assert [type(e) for e in got if isinstance(e, ev.ResendUnavailable)] == \
                [ev.ResendUnavailable]
            # A message sent since is resent for a new request, alone.
            await alice.send_text("bob", "three")
            await bob.receive()
            await alice.receive()
            await ask(alice, bob)
            assert len(_queued_for(tmp_path, bob)) == 1
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_certificate_for_another_device_is_not_used(tmp_path: Path,
                                                       relay: ThreadedRelay) -> None:
    """R2: the relay hands out a sender certificate naming another device of our account
    (same identity key). Sealed under it, our messages would be opened as that device's;
    the SDK refuses the certificate and sends identified instead."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await _contacts(devices)
            chain = key_chain.load_or_create(sealed_sender_key_file(relay.settings))
            identity = alice.store.get_identity_key_pair().public
            for account, device in ((alice.account_id, 2), (bob.account_id, 1)):
                wrong = chain.issue(account, device, identity, alice._now() + DAY_MS)

                async def fetch(served: bytes = wrong.serialized) -> bytes:
                    return served

                with alice.store.transaction():
                    sealed.forget_sender_certificate(alice.store)
                alice.api.sender_certificate = fetch  # type: ignore[method-assign]
                await alice.send_text("bob", f"as {device}")
                assert _queued_for(tmp_path, bob)[0][:2] == (alice.account_id, 1)
                got = await bob.receive()
                assert [(e.author, e.author_device, e.text) for e in got
                        if isinstance(e, ev.Message)] == [(alice.account_id, 1, f"as {device}")]
                await alice.receive()
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_relay_cannot_pose_as_one_of_our_devices_in_a_sealed_envelope(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    """S1 of reviews/2026-11-29-client, through sealed sender: the relay holds the server
    key, so it can make a valid certificate naming "alice, device 99" with an identity key
    of its own. The sealed envelope opens, but the PreKey message inside is refused as an
    untrusted identity; a certificate naming Alice's own device is refused outright."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await _contacts(devices)
            own_key = alice.store.get_identity_key_pair().public
            chain = key_chain.load_or_create(sealed_sender_key_file(relay.settings))
            target = ProtocolAddress(alice.account_id, 1)
            evil_identity = IdentityKeyPair.generate(os.urandom)
            evil = Store.create(tmp_path / "evil.db", passphrase="x", params=TEST_PARAMS)
            evil.set_identity(evil_identity, 1234)
            [bundle] = await bob.api.bundles(alice.account_id, 1)
            now = alice._now()
            process_prekey_bundle(evil, target, bundle, rng=os.urandom, now=now // 1000)
            forged = Content(sync=SyncMessage(identity_reset=SyncMessage.IdentityReset(
                identity_key_pair=IdentityKeyPair.generate(os.urandom).serialize(),
                registration_id=77)))
            message = encrypt(evil, target, codec.encode(forged), now=now // 1000, rng=os.urandom)
            for device, expected in ((99, (ev.DecryptionFailed, "untrusted_identity")),
                                     (1, (ev.SealedRejected, "sealed_sender_self_send"))):
                certificate = chain.issue(alice.account_id, device, evil_identity.public,
                                          now + DAY_MS)
                content = sealed.seal_message(evil_identity, own_key, certificate,
                                              message.message_type, message.serialized)
                envelope = Envelope(str(uuid.uuid4()), None, None, sealed.SEALED_TYPE,
                                    content, 0, now)
                events, _ = alice.inbox.process(envelope)
                assert [(type(e), e.kind if isinstance(e, ev.SealedRejected)
                         else getattr(e, "reason", "")) for e in events] == [expected]
            evil.close()
            assert alice.store.get_identity_key_pair().public == own_key
            record = alice.store.identity_record(alice.account_id)
            assert record is not None and record.identity_key == own_key
            await bob.send_text("alice", "still here")
            assert "still here" in [e.text for e in await alice.receive()
                                    if isinstance(e, ev.Message)]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_contact_spending_the_sealed_budget_does_not_stop_mail(tmp_path: Path) -> None:
    """R3: the recipient's sealed budget can be spent by anyone holding its access key
    (every contact and group co-member learns the profile key). Once it is spent, sealed
    sends get 429; the SDK then sends identified (budgets per sender pair) instead of
    failing, so a co-member cannot stop an account's incoming mail."""
    (tmp_path / "relay").mkdir()
    server = ThreadedRelay(tmp_path / "relay", rate_sealed_per_recipient="3/0.001")
    server.start()

    async def scenario() -> None:
        devices = Devices(tmp_path, server)
        try:
            alice, bob = await _contacts(devices)
            profile_key = sealed.known_own_profile_key(bob.store)
            assert profile_key is not None
            header = {"Unidentified-Access-Key": base64.b64encode(
                sealed.access_key(profile_key)).decode()}
            junk = {"messages": [{"device_id": 1, "registration_id": 0, "content": "AA=="}]}
            statuses = []
            async with httpx.AsyncClient(base_url=server.url) as http:
                for _ in range(5):
                    answer = await http.put(f"/v1/sealed/{bob.account_id}", json=junk,
                                            headers=header)
                    statuses.append(answer.status_code)
            assert statuses[-1] == 429
            await alice.send_text("bob", "through anyway")
            assert _queued_for(tmp_path, bob)[0][:2] == (alice.account_id, 1)
            assert [e.text for e in await bob.receive() if isinstance(e, ev.Message)] == \
                ["through anyway"]
        finally:
            await devices.close()

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_certificates_under_a_revoked_server_key_are_refused(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    """R4: after a leak of the server key the operator rotates with ``--revoke-old``, and
    the relay lists the old key id with its trust root. A device that fetched the list
    refuses sealed envelopes whose certificate that key signed (whatever their expiry),
    sends identified while its own certificate is under it, and never forgets the
    revocation when a later list leaves it out."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await _contacts(devices)
            leaked = key_chain.load_or_create(sealed_sender_key_file(relay.settings))
            root = leaked.trust_root
            served: list[int] = [leaked.server_certificate.key_id]

            async def revocations() -> tuple[PublicKey, list[int]]:
                return root, served

            # The relay's real answer lists nothing yet.
            assert (await bob.api.certificate_revocations()) == (root, [])
            for client in (alice, bob):
                client.api.certificate_revocations = revocations  # type: ignore[method-assign]
            async def check_now(client: Client) -> None:  # not waiting for the hour
                with client.store.transaction():
                    client.store.set_meta("revoked_server_key_ids_checked", "0")
                await client.sealed_sender_upkeep()

            await check_now(bob)
            assert sealed.revoked_key_ids(bob.store) == {1}
            # A forged certificate under the leaked key, valid for a year: refused.
            forged = leaked.issue(alice.account_id, 1, alice.store.get_identity_key_pair().public,
                                  alice._now() + 365 * DAY_MS)
            with alice.store.transaction():
                alice.store.set_secret("sender_certificate", forged.serialized)
            await alice.send_text("bob", "under the leaked key")
            got = await bob.receive()
            assert [(type(e), getattr(e, "kind", "")) for e in got] == \
                [(ev.SealedRejected, "invalid_certificate")]
            # Alice learns it: her certificate (the relay still issues under key 1 until
            # it restarts) is refused, and she sends identified.
            with alice.store.transaction():
                sealed.forget_sender_certificate(alice.store)
            await check_now(alice)
            await alice.send_text("bob", "identified now")
            assert _queued_for(tmp_path, bob)[0][:2] == (alice.account_id, 1)
            assert [e.text for e in await bob.receive() if isinstance(e, ev.Message)] == \
                ["identified now"]
            # A later list without the id does not take the revocation back.
            served.clear()
            await check_now(bob)
            assert sealed.revoked_key_ids(bob.store) == {1}
        finally:
            await devices.close()

    asyncio.run(scenario())
