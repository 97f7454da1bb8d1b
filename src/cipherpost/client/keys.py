"""This device's prekeys: generate them into the store, publish them, keep the directory
healthy (replenish one-time keys, rotate the signed and last-resort keys on a schedule).

Uploads are bounded against amplification (review 2026-11-29, S11). What triggers one is
outside our control: the relay reports the counts that trigger a replenish, and anyone who
can send us a PreKey message can name a prekey id we do not hold, which triggers a full
republish. Every upload costs key generation (Kyber1024 key pairs and signatures), the
upload, and store space (the private halves stay until used), so:

* a replenish after another one backs off (1 min, doubling to 1 day) until the relay
  reports a healthy count again; skipping one is logged, never silent;
* a full republish runs at most once an hour, except when the identity key changed since
  the last one (after an identity reset it is required, whoever triggered the last one).

Neither starves the directory: a bundle without a one-time EC prekey still has the signed
prekey and the last-resort Kyber prekey, so sessions can always start.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import secrets
from dataclasses import dataclass
from typing import Any

from cipherpost.protocol import (
    IdentityKeyPair,
    InvalidKyberPreKeyId,
    InvalidPreKeyId,
    KyberPreKeyRecord,
    PreKeyRecord,
    SignedPreKeyRecord,
)

from .api import RelayApi, RelayError, RelayUnavailable, b64
from .store.database import Store

DAY_MS = 24 * 3600 * 1000
MINUTE_MS = 60 * 1000
#: Meta entry naming the key set a failed republish left unpublished (ids and the
#: identity label, JSON), empty once published.
REPUBLISH_PENDING = "keys_republish_pending"

log = logging.getLogger("cipherpost.client.keys")


@dataclass(frozen=True)
class KeyPolicy:
    """How many keys to publish and when to rotate; the defaults follow Signal's."""

    one_time_batch: int = 100
    kyber_batch: int = 40
    #: Replenish when the server holds fewer than this many one-time keys of a kind.
    low_water: int = 20
    #: Rotate the signed prekey and the last-resort Kyber prekey this often...
    rotate_after_ms: int = 7 * DAY_MS
    #: ...and keep replaced ones this long for messages still in flight.
    keep_old_ms: int = 30 * DAY_MS
    #: A replenish within this long of the previous one waits; the wait doubles with each
    #: replenish until a healthy count resets it, up to ``replenish_max_backoff_ms``.
    replenish_min_backoff_ms: int = MINUTE_MS
    replenish_max_backoff_ms: int = DAY_MS
    #: At most one full republish this often (an identity change always republishes).
    republish_interval_ms: int = 60 * MINUTE_MS


def new_registration_id() -> int:
    return 1 + secrets.randbelow(16380)


def _signed_json(record: SignedPreKeyRecord | KyberPreKeyRecord) -> dict[str, Any]:
    return {"key_id": record.id, "public_key": b64(record.key_pair.public.serialize()),
            "signature": b64(record.signature)}


def make_signed(store: Store, now_ms: int) -> dict[str, Any]:
    """A new signed prekey, saved; its upload form."""
    identity = store.get_identity_key_pair()
    record = SignedPreKeyRecord.generate(store.next_id("next_signed_prekey_id"), identity,
                                         now_ms, os.urandom)
    store.save_signed_pre_key(record)
    return _signed_json(record)


def make_last_resort(store: Store, now_ms: int) -> dict[str, Any]:
    """A new last-resort Kyber prekey, saved; its upload form."""
    identity = store.get_identity_key_pair()
    record = KyberPreKeyRecord.generate(store.next_id("next_kyber_prekey_id"), identity,
                                        now_ms, os.urandom, last_resort=True)
    store.save_kyber_pre_key(record)
    return _signed_json(record)


def make_one_time(store: Store, count: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(count):
        record = PreKeyRecord.generate(store.next_id("next_prekey_id"), os.urandom)
        store.save_pre_key(record)
        out.append({"key_id": record.id, "public_key": b64(record.key_pair.public.serialize())})
    return out


def make_one_time_kyber(store: Store, count: int, now_ms: int) -> list[dict[str, Any]]:
    identity = store.get_identity_key_pair()
    out = []
    for _ in range(count):
        record = KyberPreKeyRecord.generate(store.next_id("next_kyber_prekey_id"), identity,
                                            now_ms, os.urandom)
        store.save_kyber_pre_key(record)
        out.append(_signed_json(record))
    return out


def new_device_body(store: Store, identity: IdentityKeyPair, registration_id: int,
                    now_ms: int, policy: KeyPolicy, name: str | None) -> dict[str, Any]:
    """Make this device's identity and complete key set; the register/link body."""
    with store.transaction():
        store.set_identity(identity, registration_id)
        body: dict[str, Any] = {
            "registration_id": registration_id,
            "identity_key": b64(identity.public.serialize()),
            "signed_prekey": make_signed(store, now_ms),
            "last_resort_kyber_prekey": make_last_resort(store, now_ms),
            "one_time_prekeys": make_one_time(store, policy.one_time_batch),
            "kyber_prekeys": make_one_time_kyber(store, policy.kyber_batch, now_ms),
        }
        store.set_meta("keys_rotated_at", str(now_ms))
    if name:
        body["name"] = name
    return body


async def maintain(api: RelayApi, store: Store, now_ms: int, policy: KeyPolicy) -> bool:
    """Replenish and rotate as needed; True if anything was uploaded.

    Keys are saved locally (committed) before they are published, so a crash between
    the two leaves unused local keys, never a published key without its private half.
    """
    ec, kyber = await api.key_counts()
    rotated_at = int(store.get_meta("keys_rotated_at") or 0)
    body: dict[str, Any] = {}
    with store.transaction():
        if (ec < policy.low_water or kyber < policy.low_water) \
                and _replenish_allowed(store, now_ms, policy, ec, kyber):
            if ec < policy.low_water:
                body["one_time_prekeys"] = make_one_time(store, policy.one_time_batch)
            if kyber < policy.low_water:
                body["kyber_prekeys"] = make_one_time_kyber(store, policy.kyber_batch,
                                                            now_ms)
        elif ec >= policy.low_water and kyber >= policy.low_water \
                and store.get_meta("keys_replenish_backoff_ms") not in (None, "0"):
            store.set_meta("keys_replenish_backoff_ms", "0")  # healthy again: no back-off
        if now_ms - rotated_at >= policy.rotate_after_ms:
            body["signed_prekey"] = make_signed(store, now_ms)
            body["last_resort_kyber_prekey"] = make_last_resort(store, now_ms)
            store.set_meta("keys_rotated_at", str(now_ms))
        _drop_old(store, now_ms, policy)
    if body:
        await api.upload_keys(body)
    return bool(body)


def _replenish_allowed(store: Store, now_ms: int, policy: KeyPolicy, ec: int,
                       kyber: int) -> bool:
    """Whether a replenish may run now; if so, record it and lengthen the back-off."""
    last = int(store.get_meta("keys_replenished_at") or 0)
    backoff = int(store.get_meta("keys_replenish_backoff_ms") or 0)
    if 0 <= now_ms - last < backoff:
        log.warning("the relay reports %d one-time and %d Kyber prekeys left, below %d; "
                    "replenishing again in %d s", ec, kyber, policy.low_water,
                    (backoff - (now_ms - last)) // 1000)
        return False
    backoff = min(max(2 * backoff, policy.replenish_min_backoff_ms),
                  policy.replenish_max_backoff_ms)
    store.set_meta("keys_replenished_at", str(now_ms))
    store.set_meta("keys_replenish_backoff_ms", str(backoff))
    return True


def _identity_label(store: Store) -> str:
    """Which identity key the keys were last republished under (a digest of the public
    key, so that the unsealed meta table holds nothing new)."""
    public = store.get_identity_key_pair().public.serialize()
    return hashlib.sha256(b"cipherpost republish " + public).hexdigest()[:32]


async def republish(api: RelayApi, store: Store, now_ms: int, policy: KeyPolicy) -> bool:
    """Repair a directory that disagrees with the local keys (after a server restore, or
    keys lost on either side, or a new identity key): publish a fresh complete set,
    replacing every one-time key the relay still holds. True if it was published.

    Anyone who can send us a PreKey message can trigger this (by naming a prekey id we do
    not hold), so it runs at most once per ``policy.republish_interval_ms``; a repeat
    sooner is skipped (and logged) unless the identity key changed since the last one. A
    republish repairs the whole directory, so a second one within the hour would only
    matter if the directory lost keys again; senders whose message failed are asked to
    resend meanwhile, on a fresh bundle.

    A set whose upload failed stays pending: the next try sends its signed and
    last-resort keys again, without one-time keys (see :func:`_pending_again`), so a
    relay that is down or refusing makes no new keys at every trigger. A new identity
    key or a rotation since makes a new set.
    """
    label = _identity_label(store)
    last = int(store.get_meta("keys_republished_at") or 0)
    if store.get_meta("keys_republished_identity") == label \
            and 0 <= now_ms - last < policy.republish_interval_ms:
        log.warning("prekey republish skipped: the last one was %d s ago",
                    (now_ms - last) // 1000)
        return False
    with store.transaction():
        body = _pending_again(store, label)
        resent = body is not None
        mark_replaced(store, now_ms)
        if body is None:
            body = {
                "signed_prekey": make_signed(store, now_ms),
                "last_resort_kyber_prekey": make_last_resort(store, now_ms),
                "one_time_prekeys": make_one_time(store, policy.one_time_batch),
                "kyber_prekeys": make_one_time_kyber(store, policy.kyber_batch, now_ms),
                "replace_one_time": True,
            }
            store.set_meta("keys_rotated_at", str(now_ms))
            # Ids only (the records are in the store): the next try after a failed
            # upload sends these again instead of making a new set.
            store.set_meta(REPUBLISH_PENDING, json.dumps({
                "identity": label, "rotated_at": now_ms,
                "signed": body["signed_prekey"]["key_id"],
                "last_resort": body["last_resort_kyber_prekey"]["key_id"]}))
    await api.upload_keys(body)
    with store.transaction():  # only once published: a failed upload is retried next time
        store.set_meta("keys_republished_at", str(now_ms))
        store.set_meta("keys_republished_identity", label)
        store.set_meta(REPUBLISH_PENDING, "")
    if resent:
        await _fresh_one_time(api, store, now_ms, policy)
    return True


async def _fresh_one_time(api: RelayApi, store: Store, now_ms: int,
                          policy: KeyPolicy) -> None:
    """After a retried republish (which dropped the relay's one-time keys and sent none):
    a fresh batch of new ids at once, added, not replacing. Left to the usual
    replenishment, a long-lived connection would have given every new session a
    last-resort key only (no one-time EC key) until it reconnected, or longer under the
    replenish back-off (review of 749616e). A failure here leaves that to it."""
    with store.transaction():
        body = {"one_time_prekeys": make_one_time(store, policy.one_time_batch),
                "kyber_prekeys": make_one_time_kyber(store, policy.kyber_batch, now_ms)}
    try:
        await api.upload_keys(body)
    except (RelayError, RelayUnavailable) as exc:
        log.warning("one-time prekeys not published after a republish (%s); the next "
                    "replenishment publishes them", type(exc).__name__)


def _pending_again(store: Store, label: str) -> dict[str, Any] | None:
    """The upload form of the set a failed republish left pending, without one-time keys;
    None if there is none, or it was made under another identity key or before a
    rotation (its signed prekey is no longer the current one).

    No one-time key is sent again: the failed try may have reached the relay, which may
    have handed some out to senders whose messages have not arrived yet, and uploading
    one again would let it be served twice. The relay's one-time keys are dropped
    instead (``replace_one_time``) and the usual replenishment publishes fresh ones;
    the pending set's stay here for the grace period, as replaced keys (the caller
    marks them so)."""
    raw = store.get_meta(REPUBLISH_PENDING)
    if not raw:
        return None
    try:
        pending = json.loads(raw)
        if pending["identity"] != label \
                or str(pending["rotated_at"]) != store.get_meta("keys_rotated_at"):
            return None
        signed = store.get_signed_pre_key(int(pending["signed"]))
        last_resort = store.get_kyber_pre_key(int(pending["last_resort"]))
    except (ValueError, KeyError, TypeError, InvalidPreKeyId, InvalidKyberPreKeyId):
        return None  # unreadable, or its keys are gone: a new set
    return {"signed_prekey": _signed_json(signed),
            "last_resort_kyber_prekey": _signed_json(last_resort),
            "one_time_prekeys": [], "kyber_prekeys": [], "replace_one_time": True}


def mark_replaced(store: Store, now_ms: int) -> None:
    """Every one-time key made so far is being replaced on the relay (a republish or an
    identity reset): their private halves go once the grace period has passed (a bundle
    handed out just before may still be used by a message in flight)."""
    store.set_meta("one_time_replaced_below",
                   f"{store.get_meta('next_prekey_id') or 1}:"
                   f"{store.get_meta('next_kyber_prekey_id') or 1}")
    store.set_meta("one_time_replaced_at", str(now_ms))


def _drop_old(store: Store, now_ms: int, policy: KeyPolicy) -> None:
    """Delete replaced signed and last-resort keys once their replacement is older than
    the grace period (the newest of each kind always stays), and one-time keys replaced
    by a republish or identity reset once that is older than the grace period."""
    replaced_at = int(store.get_meta("one_time_replaced_at") or 0)
    if replaced_at and now_ms - replaced_at > policy.keep_old_ms:
        ec_below, kyber_below = (int(n) for n in
                                 (store.get_meta("one_time_replaced_below") or "1:1").split(":"))
        store.remove_one_time_keys_below(ec_below, kyber_below)
        store.set_meta("one_time_replaced_at", "0")
    for keys, remove in ((store.signed_pre_keys(), store.remove_signed_pre_key),
                         (store.last_resort_kyber_pre_keys(), store.remove_kyber_pre_key)):
        for (key_id, _created), (_next_id, replaced_at) in itertools.pairwise(keys):
            if now_ms - replaced_at > policy.keep_old_ms:
                remove(key_id)
