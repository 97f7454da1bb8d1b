"""Resetting a compromised identity: every device of the account moves to the new key,
contacts see the safety number change and must accept it before sending again."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from cipherpost.client import ClientError, IdentityNotTrusted
from cipherpost.client import events as ev
from cipherpost.client.api import RelayError, RelayUnavailable, b64
from cipherpost.client.recovery import restore
from cipherpost.client.store.crypto import TEST_PARAMS

from .conftest import Devices, ThreadedRelay


def texts(events: list[ev.Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, ev.Message)]


def test_identity_reset(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice = await devices.register("alice")
            alice2 = await devices.link(alice, "laptop")
            bob = await devices.register("bob")
            await alice.receive()
            await bob.send_text("alice", "hi")
            await alice.receive()
            await alice2.receive()
            old_number = bob.safety_number(alice.account_id).displayable
            old_key = alice.store.get_identity_key_pair().public

            await alice.reset_identity()
            new_key = alice.store.get_identity_key_pair().public
            assert new_key != old_key
            got = await alice2.receive()          # takes the new key, publishes new prekeys
            assert any(isinstance(e, ev.IdentityChanged) for e in got)
            assert alice2.store.get_identity_key_pair().public == new_key
            me = await alice.api.whoami()
            assert me["identity_key"] != old_key.serialize().hex()

            # Bob's sessions name the old registration ids: the relay answers 410, the new
            # bundles carry the new key, and sending stops until Bob accepts it.
            with pytest.raises(IdentityNotTrusted):
                await bob.send_text("alice", "are you still you?")
            assert bob.safety_number(alice.account_id).displayable != old_number
            bob.trust_identity(alice.account_id)
            await bob.send_text("alice", "accepted")
            assert texts(await alice.receive()) == ["accepted"]
            assert texts(await alice2.receive()) == ["accepted"]

            # Alice writes on new sessions; a contact who had not sent yet sees the change.
            carol = await devices.register("carol")
            await carol.send_text("alice", "before")
            await alice.receive()
            await alice.reset_identity()
            await alice2.receive()
            await alice.send_text("carol", "new key here")
            got = await carol.receive()
            assert any(isinstance(e, ev.IdentityChanged) and e.account == alice.account_id
                       for e in got)
            assert texts(got) == ["new key here"]
            assert carol.safety_number(alice.account_id).displayable == \
                alice.safety_number(carol.account_id).displayable
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_restore_after_a_reset_gets_the_new_identity(tmp_path: Path,
                                                       relay: ThreadedRelay) -> None:
    """The recovery blob carries the identity key pair: a reset seals it again, on the
    device that reset or, when that one holds no recovery secrets (a linked laptop), on
    the device that does once it takes the new key. A restore then joins with the
    current identity, never an old one."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice = await devices.register("alice")
            laptop = await devices.link(alice, "laptop")
            key = await alice.create_recovery_key()
            for n, resetter in enumerate((alice, laptop)):
                await resetter.reset_identity()
                current = resetter.store.get_identity_key_pair().public
                await alice.receive()  # the laptop's reset: alice takes it and reseals
                await laptop.receive()
                restored = await restore(tmp_path / f"restored{n}.db", relay.url, key,
                                         passphrase="pw", argon2=TEST_PARAMS,
                                         options=dataclasses.replace(devices.options))
                devices.clients.append(restored)
                assert restored.store.get_identity_key_pair().public == current
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_reset_reaches_a_device_we_never_wrote_to(tmp_path: Path,
                                                  relay: ThreadedRelay) -> None:
    """No session with the other device yet: one is made from its bundle (still signed
    with the old key) before the relay drops it, so the reset reaches it too."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice = await devices.register("alice")
            laptop = await devices.link(alice, "laptop")
            assert alice.store.session_devices(alice.account_id) == []
            assert await alice.reset_identity() == []
            new_key = alice.store.get_identity_key_pair().public
            got = await laptop.receive()
            assert any(isinstance(e, ev.IdentityChanged) for e in got)
            assert laptop.store.get_identity_key_pair().public == new_key
            bob = await devices.register("bob")
            await bob.send_text("alice", "hello both")
            assert texts(await alice.receive()) == ["hello both"]
            assert texts(await laptop.receive()) == ["hello both"]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_reset_whose_answer_is_lost_asks_the_relay(
        tmp_path: Path, relay: ThreadedRelay, monkeypatch: pytest.MonkeyPatch) -> None:
    """The relay took the new key but its answer never arrived: the device asks which key
    the relay holds and finishes the reset instead of going back to the old key. When the
    relay refused, the old key stays."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice = await devices.register("alice")
            laptop = await devices.link(alice, "laptop")
            old_key = alice.store.get_identity_key_pair().public
            real_request = alice.api.request

            async def lost_answer(method: str, path: str, **kw: Any) -> Any:
                result = await real_request(method, path, **kw)
                if path == "/v1/accounts/me/identity":
                    raise RelayUnavailable("connection reset")
                return result

            monkeypatch.setattr(alice.api, "request", lost_answer)
            assert await alice.reset_identity() == []
            new_key = alice.store.get_identity_key_pair().public
            assert new_key != old_key
            me = await alice.api.whoami()
            assert me["identity_key"] == b64(new_key.serialize())
            await laptop.receive()
            assert laptop.store.get_identity_key_pair().public == new_key

            async def refused(method: str, path: str, **kw: Any) -> Any:
                if path == "/v1/accounts/me/identity":
                    raise RelayError(429, "rate_limited", "slow down", {})
                return await real_request(method, path, **kw)

            monkeypatch.setattr(alice.api, "request", refused)
            with pytest.raises(ClientError, match="refused"):
                await alice.reset_identity()
            assert alice.store.get_identity_key_pair().public == new_key
            monkeypatch.setattr(alice.api, "request", real_request)
            bob = await devices.register("bob")     # nothing was left half-done
            await bob.send_text("alice", "same key still")
            assert texts(await alice.receive()) == ["same key still"]
            assert texts(await laptop.receive()) == ["same key still"]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_the_account_stays_reachable_while_its_devices_catch_up(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    """After a reset the other devices hold no keys until they process it: a contact
    can write to the account meanwhile (the relay does not ask for key-less devices), and
    reaches every device again once they have published new keys."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice = await devices.register("alice")
            laptop = await devices.link(alice, "laptop")
            bob = await devices.register("bob")
            bob.store.accept_changed_identities = True
            await bob.send_text("alice", "before")
            await alice.receive()
            await laptop.receive()
            await alice.reset_identity()
            await bob.send_text("alice", "while the laptop is away")   # no endless 409s
            assert texts(await alice.receive()) == ["while the laptop is away"]
            await laptop.receive()              # takes the new key, publishes new keys
            await bob.send_text("alice", "to both again")
            assert texts(await alice.receive()) == ["to both again"]
            assert texts(await laptop.receive()) == ["to both again"]
        finally:
            await devices.close()

    asyncio.run(scenario())
