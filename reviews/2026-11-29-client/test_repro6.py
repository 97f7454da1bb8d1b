from __future__ import annotations
import asyncio, os, uuid
from pathlib import Path
from tests.client.conftest import Devices, ThreadedRelay, relay  # noqa: F401
from cipherpost.client import events as ev
from cipherpost.client import content as codec
from cipherpost.client.api import Envelope
from cipherpost.client.store.database import Store
from cipherpost.client.store.crypto import TEST_PARAMS
from cipherpost.client.proto.app_pb2 import Content, SyncMessage, DataMessage
from cipherpost.protocol import IdentityKeyPair, ProtocolAddress, encrypt, process_prekey_bundle


def test_relay_forges_own_account_sync(tmp_path: Path, relay: ThreadedRelay) -> None:
    """The relay stamps sender = victim's own account, device 99, and delivers a PreKey
    message made with an identity key of its own: the victim accepts it as a sync."""
    async def scenario():
        d = Devices(tmp_path, relay)
        try:
            alice, bob = await d.register("alice"), await d.register("bob")
            [bundle] = await bob.api.bundles(alice.account_id, 1)   # the relay has these anyway
            evil = Store.create(tmp_path / "evil.db", passphrase="x", params=TEST_PARAMS)
            evil_identity = IdentityKeyPair.generate(os.urandom)
            evil.set_identity(evil_identity, 1234)
            target = ProtocolAddress(alice.account_id, 1)
            process_prekey_bundle(evil, target, bundle, rng=os.urandom, now=alice._now() // 1000)
            planted = IdentityKeyPair.generate(os.urandom)          # a key pair the relay knows
            forged = Content(sync=SyncMessage(identity_reset=SyncMessage.IdentityReset(
                identity_key_pair=planted.serialize(), registration_id=77)))
            msg = encrypt(evil, target, codec.encode(forged), now=alice._now() // 1000)
            env = Envelope(str(uuid.uuid4()), alice.account_id, 99, msg.message_type,
                           msg.serialized, alice._now(), alice._now())
            events, follow_ups = alice.inbox.process(env)
            print("events", events, "follow-ups", [f.kind for f in follow_ups])
            print("alice now uses the relay's key pair:",
                  alice.store.get_identity_key_pair().public == planted.public)
            # and a forged "sent from my other device" message in alice's history
            sent = Content(sync=SyncMessage(sent=SyncMessage.Sent(
                destination=bob.account_id, message=DataMessage(timestamp=5, text="I owe you $1000"))))
            evil2 = Store.create(tmp_path / "evil2.db", passphrase="x", params=TEST_PARAMS)
            evil2.set_identity(IdentityKeyPair.generate(os.urandom), 99)
            [bundle] = await bob.api.bundles(alice.account_id, 1)
            process_prekey_bundle(evil2, target, bundle, rng=os.urandom, now=alice._now() // 1000)
        finally:
            await d.close()
    asyncio.run(scenario())
