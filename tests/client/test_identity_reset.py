"""Resetting a compromised identity: every device of the account moves to the new key,
contacts see the safety number change and must accept it before sending again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cipherpost.client import IdentityNotTrusted
from cipherpost.client import events as ev

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
