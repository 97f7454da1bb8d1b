"""The SDK keeps its directory entry healthy: replenishes one-time keys, rotates the
signed and last-resort keys on schedule and keeps replaced ones for the grace period."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cipherpost.client.keys import DAY_MS, maintain
from cipherpost.client.options import now_ms

from .conftest import Devices, ThreadedRelay


def test_replenish_and_rotate(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            policy = alice.options.keys
            assert await alice.api.key_counts() == (policy.one_time_batch, policy.kyber_batch)
            assert not await alice.maintain_keys()        # nothing due yet
            for _ in range(policy.kyber_batch):             # others use up the keys
                await bob.api.bundles(alice.account_id, 1)
            ec, kyber = await alice.api.key_counts()
            assert kyber == 0 and ec == policy.one_time_batch - policy.kyber_batch
            assert await alice.maintain_keys()
            ec, kyber = await alice.api.key_counts()
            assert kyber == policy.kyber_batch
            first_signed = alice.store.signed_pre_keys()
            assert len(first_signed) == 1
            start = now_ms()
            assert await maintain(alice.api, alice.store, start + 8 * DAY_MS, policy)
            rotated = alice.store.signed_pre_keys()
            assert len(rotated) == 2 and rotated[0] == first_signed[0]
            served = (await bob.api.bundles(alice.account_id, 1))[0]
            assert served.signed_pre_key_id == rotated[1][0]
            assert len(alice.store.last_resort_kyber_pre_keys()) == 2
            # A replaced key stays 30 days after its replacement, then goes (and the
            # schedule rotates again meanwhile).
            await maintain(alice.api, alice.store, start + 37 * DAY_MS, policy)
            assert [k for k, _ in alice.store.signed_pre_keys()] == [1, 2, 3]
            await maintain(alice.api, alice.store, start + 39 * DAY_MS, policy)
            assert [k for k, _ in alice.store.signed_pre_keys()] == [2, 3]
            # A session started on a rotated key still works end to end.
            await bob.send_text("alice", "after rotation")
            got = [getattr(e, "text", None) for e in await alice.receive()]
            assert "after rotation" in got
        finally:
            await devices.close()

    asyncio.run(scenario())
