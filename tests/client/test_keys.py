"""The SDK keeps its directory entry healthy: replenishes one-time keys, rotates the
signed and last-resort keys on schedule and keeps replaced ones for the grace period."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, cast

import pytest

from cipherpost.client import RelayUnavailable
from cipherpost.client import events as ev
from cipherpost.client.keys import DAY_MS, MINUTE_MS, KeyPolicy, maintain, republish
from cipherpost.client.options import now_ms
from cipherpost.client.store.crypto import TEST_PARAMS
from cipherpost.client.store.database import Store
from cipherpost.protocol import IdentityKeyPair

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


# -- review 2026-11-29, S11: what others trigger cannot make us upload keys over and over ----


class CountingApi:
    """The two calls key upkeep makes, with counts the test (as the relay) chooses."""

    def __init__(self, counts: tuple[int, int] = (0, 0)) -> None:
        self.counts = counts
        self.uploads: list[dict[str, Any]] = []

    async def key_counts(self) -> tuple[int, int]:
        return self.counts

    async def upload_keys(self, body: dict[str, Any]) -> None:
        self.uploads.append(body)


def _store(tmp_path: Path) -> Store:
    store = Store.create(tmp_path / "keys.db", passphrase="x", params=TEST_PARAMS)
    store.set_identity(IdentityKeyPair.generate(os.urandom), 1234)
    return store


def test_a_relay_reporting_low_counts_gets_backed_off_uploads(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A relay that always says "no one-time keys left" (or a client reconnecting in a
    loop) got a full batch uploaded, and kept locally, at every call."""
    api, store = CountingApi((0, 0)), _store(tmp_path)
    policy = KeyPolicy(one_time_batch=5, kyber_batch=2, low_water=3,
                       rotate_after_ms=10**15)   # no scheduled rotation in the way
    relay = cast(Any, api)
    now = 1_790_000_000_000

    async def upkeep(at: int) -> int:
        before = len(api.uploads)
        for _ in range(10):
            await maintain(relay, store, at, policy)
        return len(api.uploads) - before

    async def scenario() -> None:
        with caplog.at_level(logging.WARNING, "cipherpost.client.keys"):
            assert await upkeep(now) == 1                  # ten calls, one upload
        assert "replenishing again in" in caplog.text      # skipping is never silent
        assert await upkeep(now + MINUTE_MS) == 1          # after the first back-off...
        assert await upkeep(now + 2 * MINUTE_MS) == 0      # ...which doubled
        assert await upkeep(now + 3 * MINUTE_MS) == 1
        at = now + 3 * MINUTE_MS
        for _ in range(20):                                # capped at a day
            at += DAY_MS
            assert await upkeep(at) == 1
        assert await upkeep(at + DAY_MS - 1) == 0
        api.counts = (policy.low_water, policy.low_water)  # healthy: the back-off resets
        assert await upkeep(at + DAY_MS - 1) == 0
        api.counts = (0, 0)
        assert await upkeep(at + DAY_MS - 1) == 1          # a real drain is served at once
        assert all(set(body) <= {"one_time_prekeys", "kyber_prekeys"}
                   for body in api.uploads)

    asyncio.run(scenario())
    assert len(api.uploads) == 3 + 20 + 1


def test_republish_at_most_hourly_except_for_a_new_identity(tmp_path: Path) -> None:
    api, store = CountingApi(), _store(tmp_path)
    policy, relay, now = KeyPolicy(one_time_batch=5, kyber_batch=2), cast(Any, api), 10**12

    async def scenario() -> None:
        assert await republish(relay, store, now, policy)
        assert not await republish(relay, store, now + 1, policy)
        assert not await republish(relay, store, now + policy.republish_interval_ms - 1,
                                    policy)
        # After an identity reset the keys must be signed anew, whoever republished last.
        store.set_identity(IdentityKeyPair.generate(os.urandom), 4321)
        assert await republish(relay, store, now + 2, policy)
        assert not await republish(relay, store, now + 3, policy)
        assert await republish(relay, store, now + 2 + policy.republish_interval_ms, policy)

    asyncio.run(scenario())
    assert len(api.uploads) == 3 and all(b["replace_one_time"] for b in api.uploads)


def test_a_failed_republish_is_not_counted(tmp_path: Path) -> None:
    store, policy = _store(tmp_path), KeyPolicy(one_time_batch=5, kyber_batch=2)

    class Down(CountingApi):
        async def upload_keys(self, body: dict[str, Any]) -> None:
            raise RelayUnavailable("the relay is down")

    async def scenario() -> None:
        with pytest.raises(RelayUnavailable):
            await republish(cast(Any, Down()), store, 10**12, policy)
        api = CountingApi()
        assert await republish(cast(Any, api), store, 10**12 + 1, policy)  # retried at once

    asyncio.run(scenario())


class FailingApi(CountingApi):
    """A relay whose uploads fail (down, or a 5xx); what was sent is recorded."""

    async def upload_keys(self, body: dict[str, Any]) -> None:
        self.uploads.append(body)
        raise RelayUnavailable("the relay is down")


def test_a_retried_republish_reuses_its_keys_and_sends_no_one_time_key(
        tmp_path: Path) -> None:
    """Each failed republish made a whole new key set (signed, last-resort and one-time
    keys, all kept in the store), so a relay down for a while made the store grow at
    every trigger. A retry now sends the pending set's signed and last-resort keys again
    and no one-time key (the failed try may have reached the relay, which may have
    handed some out: one uploaded again could be served twice)."""
    store, policy = _store(tmp_path), KeyPolicy(one_time_batch=5, kyber_batch=2)
    down, api, now = FailingApi(), CountingApi(counts=(100, 100)), 10**12

    def held() -> tuple[Any, ...]:
        return (store.one_time_key_ids(), store.signed_pre_keys(),
                store.last_resort_kyber_pre_keys())

    async def scenario() -> None:
        with pytest.raises(RelayUnavailable):
            await republish(cast(Any, down), store, now, policy)
        first, after_first = down.uploads[0], held()
        assert len(first["one_time_prekeys"]) == 5 and len(first["kyber_prekeys"]) == 2
        for i in range(1, 4):
            with pytest.raises(RelayUnavailable):
                await republish(cast(Any, down), store, now + i, policy)
        assert held() == after_first                      # no new keys for each try
        assert await republish(cast(Any, api), store, now + 10, policy)
        retry = {**first, "one_time_prekeys": [], "kyber_prekeys": []}
        assert retry["replace_one_time"] is True
        assert down.uploads[1:] == [retry] * 3 and api.uploads[0] == retry
        # The retry dropped the relay's one-time keys: a fresh batch, new ids, follows at
        # once, added (review of 749616e: else a long-lived connection gave new sessions
        # no one-time EC key until it reconnected).
        assert len(api.uploads) == 2
        batch = api.uploads[1]
        assert set(batch) == {"one_time_prekeys", "kyber_prekeys"}
        sent_before = {k["key_id"] for k in first["one_time_prekeys"]}
        assert len(batch["one_time_prekeys"]) == 5 and len(batch["kyber_prekeys"]) == 2
        assert not sent_before & {k["key_id"] for k in batch["one_time_prekeys"]}
        ec_ids, kyber_ids = store.one_time_key_ids()
        assert [k["key_id"] for k in batch["one_time_prekeys"]] == ec_ids[-5:]
        assert [k["key_id"] for k in batch["kyber_prekeys"]] == kyber_ids[-2:]
        assert held()[1:] == after_first[1:]  # no new signed or last-resort key
        # Published: the pending set is done with, so the next republish (and a retry
        # of it) is a new set.
        later = now + 10 + policy.republish_interval_ms
        with pytest.raises(RelayUnavailable):
            await republish(cast(Any, down), store, later, policy)
        fresh = down.uploads[-1]
        assert fresh["signed_prekey"]["key_id"] > first["signed_prekey"]["key_id"]
        assert len(fresh["one_time_prekeys"]) == 5
        # The first set's one-time keys, never used, go after the grace period.
        await maintain(cast(Any, api), store, later + policy.keep_old_ms + 1, policy)
        assert store.one_time_key_ids() == ([k["key_id"] for k in fresh["one_time_prekeys"]],
                                            [k["key_id"] for k in fresh["kyber_prekeys"]])

    asyncio.run(scenario())


def test_a_pending_republish_is_made_anew_after_a_rotation_or_identity_reset(
        tmp_path: Path) -> None:
    """A pending set is sent again only under the identity and rotation it was made in."""
    store, policy = _store(tmp_path), KeyPolicy(one_time_batch=5, kyber_batch=2)
    down, now = FailingApi(counts=(100, 100)), 10**12

    async def signed_sent(at: int) -> int:
        with pytest.raises(RelayUnavailable):
            await republish(cast(Any, down), store, at, policy)
        return int(down.uploads[-1]["signed_prekey"]["key_id"])

    async def scenario() -> None:
        first = await signed_sent(now)
        assert await signed_sent(now + 1) == first
        # a scheduled rotation replaced the signed prekey meanwhile (its upload failed too)
        with pytest.raises(RelayUnavailable):
            await maintain(cast(Any, down), store, now + policy.rotate_after_ms, policy)
        rotated = await signed_sent(now + policy.rotate_after_ms + 1)
        assert rotated not in (first, down.uploads[-2]["signed_prekey"]["key_id"])
        assert down.uploads[-1]["one_time_prekeys"]
        store.set_identity(IdentityKeyPair.generate(os.urandom), 4321)
        assert await signed_sent(now + policy.rotate_after_ms + 2) > rotated

    asyncio.run(scenario())


def test_forged_prekey_messages_trigger_one_republish(tmp_path: Path,
                                                      relay: ThreadedRelay) -> None:
    """Any sender can name a one-time prekey id we never had: each such PreKey message
    made the client generate and upload a complete new key set (Kyber keys, signatures,
    ~140 keys kept in the store). Now one per hour."""
    now = [now_ms()]

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        devices.options.clock = lambda: now[0]
        try:
            bob, mallory = await devices.register("bob"), await devices.register("mallory")
            uploads: list[dict[str, Any]] = []
            upload = bob.api.upload_keys

            async def counted(body: dict[str, Any]) -> None:
                uploads.append(body)
                await upload(body)

            bob.api.upload_keys = counted  # type: ignore[method-assign]

            async def forge(count: int) -> None:
                bundle = (await mallory.api.bundles(bob.account_id, 1))[0]
                assert bundle.pre_key_id is not None
                forged = dataclasses.replace(bundle, pre_key_id=999_000 + len(uploads))
                await mallory.outbox.start_sessions([forged], bob.account_id)
                for i in range(count):
                    await mallory.send_text("bob", f"forged {i}")

            await forge(5)
            failed = [e for e in await bob.receive() if isinstance(e, ev.DecryptionFailed)]
            assert [f.reason for f in failed] == ["invalid_prekey_id"] * 5
            assert len(uploads) == 1 and uploads[0]["replace_one_time"]
            now[0] += bob.options.keys.republish_interval_ms
            await forge(3)
            await bob.receive()
            assert len(uploads) == 2
            # The directory stayed usable: a genuine first message still arrives.
            carol = await devices.register("carol")
            await carol.send_text("bob", "hello")
            assert "hello" in [getattr(e, "text", None) for e in await bob.receive()]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_replaced_one_time_keys_are_erased_after_the_grace_period(tmp_path: Path) -> None:
    """A republish replaces every one-time key on the relay; their private halves stay
    for messages in flight, then go (spent keys are erased, not kept forever)."""
    api, store = CountingApi(counts=(100, 100)), _store(tmp_path)
    policy, relay, now = KeyPolicy(one_time_batch=5, kyber_batch=2), cast(Any, api), 10**12

    async def scenario() -> None:
        assert await republish(relay, store, now, policy)
        first_ec, first_kyber = store.one_time_key_ids()
        assert len(first_ec) == 5 and len(first_kyber) == 2
        assert await republish(relay, store, now + policy.republish_interval_ms, policy)
        second_ec, second_kyber = store.one_time_key_ids()
        assert second_ec[:5] == first_ec and len(second_ec) == 10
        await maintain(relay, store, now + policy.republish_interval_ms + policy.keep_old_ms,
                       policy)
        assert store.one_time_key_ids() == (second_ec, second_kyber)   # not yet
        await maintain(relay, store,
                       now + policy.republish_interval_ms + policy.keep_old_ms + 1, policy)
        assert store.one_time_key_ids() == (second_ec[5:], second_kyber[2:])
        assert store.last_resort_kyber_pre_keys()       # the last-resort keys stay

    asyncio.run(scenario())
