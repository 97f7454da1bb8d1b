from __future__ import annotations
import asyncio, os
from pathlib import Path
from tests.client.conftest import Devices, ThreadedRelay, relay  # noqa: F401
from cipherpost.client import events as ev
from cipherpost.client.groups import ADMIN, MEMBER, encode_state, sign_change
from cipherpost.client.proto.app_pb2 import Content, DataMessage, GroupContext


def test_group_id_squatting(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario():
        d = Devices(tmp_path, relay)
        try:
            admin, rem, victim = (await d.register("admin"), await d.register("rem"),
                                  await d.register("victim"))
            group = await admin.create_group("team", ["rem"])
            await rem.receive()
            await admin.remove_members(group.id, ["rem"])
            await rem.receive()
            # rem (removed) forges a "creation" of the same group id, listing only itself
            state = encode_state(group.id, 0, "team", {rem.account_id: ADMIN})
            signed = sign_change(rem.store.get_identity_key_pair(), rem.account_id, None,
                                 state, rem._timestamp(), os.urandom)
            data = DataMessage(timestamp=rem._timestamp(), group_change=signed,
                               group=GroupContext(id=group.id, revision=0))
            await rem.outbox.deliver(victim.account_id, Content(data=data), data.timestamp)
            print("victim:", [type(e).__name__ for e in await victim.receive()])
            print("victim holds group, member?", victim.group(group.id) is not None,
                  victim.group(group.id).is_member(victim.account_id))
            await admin.add_members(group.id, ["victim"])
            got = await victim.receive()
            print("victim after real add:", [(type(e).__name__, getattr(e, 'reason', '')) for e in got])
            await admin.send_text(group.id, "welcome")
            print("victim msgs:", [(type(e).__name__, getattr(e, 'text', getattr(e, 'reason', ''))) for e in await victim.receive()])
        finally:
            await d.close()
    asyncio.run(scenario())
