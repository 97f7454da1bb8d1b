"""Resetting the account's identity key after a compromise (docs/spec/README.md §7).

The order matters, because the relay drops every device's keys when it takes the new
identity key:

1. sessions with every other device of ours, while their bundles (signed with the old key)
   are still published;
2. the new key pair encrypted for each of them over those sessions (nothing sent yet);
3. the new identity and this device's new keys stored, then published (PUT). If the
   relay's answer is lost, it is asked which key it holds before anything is undone;
4. the encrypted resets sent; the sessions under the old key forgotten.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from cipherpost.protocol import IdentityKeyPair, ProtocolAddress, has_session

from . import content as codec
from .api import RelayError, RelayUnavailable, b64
from .errors import ClientError
from .keys import mark_replaced, new_device_body, new_registration_id
from .proto.app_pb2 import Content, SyncMessage

if TYPE_CHECKING:
    from .client import Client


async def reset_identity(client: Client) -> list[int]:
    """Replace the account's identity key on every device; returns the devices of ours
    that could not be given the new key (no session could be made with them: remove
    them and link them again).

    Raises:
        ClientError: the relay refused the reset, or its answer was lost and it could not
            be asked which key it holds (run the reset again).
    """
    store, outbox, own = client.store, client.outbox, client.account_id
    devices = sorted(int(d["device_id"]) for d in await client.api.devices())
    others = [d for d in devices if d != client.device_id]
    now_s = client._now() // 1000
    unreachable: list[int] = []
    spqr = client.options.spqr
    for device in others:
        if not has_session(store, ProtocolAddress(own, device), now_s, spqr=spqr):
            await outbox.start_session(own, device)
        if not has_session(store, ProtocolAddress(own, device), now_s, spqr=spqr):
            unreachable.append(device)

    identity = IdentityKeyPair.generate(os.urandom)
    registration_ids = {d: new_registration_id() for d in devices}
    old_identity = store.get_identity_key_pair()
    old_registration = store.get_local_registration_id()
    timestamp = client._timestamp()
    messages: list[dict[str, Any]] = []
    with store.transaction():
        for device in others:
            if device in unreachable:
                continue
            reset = SyncMessage.IdentityReset(identity_key_pair=identity.serialize(),
                                              registration_id=registration_ids[device])
            message = outbox.encrypt_for(
                ProtocolAddress(own, device),
                codec.encode(Content(sync=SyncMessage(identity_reset=reset))))
            message["registration_id"] = registration_ids[device]
            messages.append(message)
        mark_replaced(store, client._now())  # the old identity's one-time keys go later
        body = new_device_body(store, identity, registration_ids[client.device_id],
                               client._now(), client.options.keys, None)
    body.pop("registration_id", None)
    body["registration_ids"] = [{"device_id": d, "registration_id": r}
                                for d, r in sorted(registration_ids.items())]
    try:
        await client.api.request("PUT", "/v1/accounts/me/identity", json=body)
    except (RelayError, RelayUnavailable) as exc:
        if not await _relay_holds(client, identity):
            with store.transaction():  # the relay kept the old key: so do we
                store.set_identity(old_identity, old_registration)
            if isinstance(exc, RelayError):
                raise ClientError(f"the relay refused the identity reset: {exc}") from exc
            raise ClientError("the relay could not be reached; nothing was changed") from exc
    try:
        unreachable += await _send_resets(client, timestamp, messages)
    finally:
        with store.transaction():
            store.trust_identity(own, identity.public, verified=True)
            store.forget_sessions()
    return sorted(unreachable)


async def _relay_holds(client: Client, identity: IdentityKeyPair) -> bool:
    """Whether the relay took the new key after all (its answer to the PUT was lost).

    Raises:
        ClientError: it cannot be asked either; the outcome is unknown.
    """
    try:
        me = await client.api.whoami()
    except (RelayError, RelayUnavailable) as exc:
        raise ClientError("the relay did not answer whether it took the new identity key; "
                          "run the reset again once it is reachable") from exc
    return bool(me.get("identity_key") == b64(identity.public.serialize()))


async def _send_resets(client: Client, timestamp: int,
                       messages: list[dict[str, Any]]) -> list[int]:
    """Send the encrypted resets in one request (the relay takes whole device lists);
    devices the relay no longer lists are dropped. Returns the devices not reached."""
    for _attempt in range(2):
        if not messages:
            return []
        try:
            await client.outbox.send_request(client.account_id, timestamp, messages)
            return []
        except RelayError as exc:
            if exc.status != 409:
                raise
            extra = {int(d) for d in exc.body.get("extra_devices", [])}
            messages = [m for m in messages if m["device_id"] not in extra]
            if exc.body.get("missing_devices"):
                # A device linked during the reset has no session to carry the key.
                break
    return [int(m["device_id"]) for m in messages]
