"""Linking a device through a provisioning mailbox (docs/spec/linking.md).

New device::

    pending = await request_link("https://relay.example")
    show_qr(pending.uri)                       # the user scans it with a linked device
    client = await pending.complete(Path("device.db"), passphrase="...")

Existing device::

    await provision(client, scanned_uri)       # scanning is the approval
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cipherpost.protocol import IdentityKeyPair, ProtocolError, PublicKey

from . import history, linking
from .api import RelayApi, RelayError, check_server_url
from .client import Client
from .errors import ClientError
from .groups import Group, GroupChangeRejected
from .options import ClientOptions
from .proto.app_pb2 import ProvisionMessage
from .store.crypto import Argon2Params

WAIT_SECONDS = 25.0


class PendingLink:
    """A new device waiting for an existing device of the account to provision it."""

    def __init__(self, api: RelayApi, request: linking.LinkRequest,
                 private: X25519PrivateKey) -> None:
        self.api = api
        self.request = request
        self._private = private

    @property
    def uri(self) -> str:
        """Show this as a QR code (or let the user copy it) on the new device."""
        return self.request.uri()

    def __repr__(self) -> str:
        return f"PendingLink({self.request.server!r})"

    async def wait(self, timeout: float = 600.0) -> ProvisionMessage:
        """The provisioning message, once an existing device sent it.

        Raises:
            ClientError: the link code expired or nothing came in time.
            LinkError: what came does not open with our key (not for us).
        """
        deadline = time.monotonic() + timeout
        address = self.request.address
        while time.monotonic() < deadline:
            wait = min(WAIT_SECONDS, max(1.0, deadline - time.monotonic()))
            try:
                data = await self.api.request("GET", f"/v1/provisioning/{address}?wait={wait:.0f}",
                                              auth=False)
            except RelayError as exc:
                if exc.status == 404:
                    raise ClientError("the link code expired: start linking again") from None
                raise
            if data:
                return linking.open_envelope(self.request, self._private, bytes(data))
            await asyncio.sleep(0)
        raise ClientError("no device sent the link in time: start linking again")

    async def complete(self, path: Path, *, passphrase: str | None = None,
                       device_name: str | None = None, argon2: Argon2Params | None = None,
                       options: ClientOptions | None = None, timeout: float = 600.0,
                       progress: Callable[[int], None] | None = None) -> Client:
        """Wait for the provisioning message, register this device with the account, take
        over its contacts and groups, tell the account's other devices, and replay the
        server-stored history if the account keeps one (``progress`` gets the number of
        entries read so far)."""
        try:
            message = await self.wait(timeout)
        finally:
            await self.api.close()
        try:
            identity = IdentityKeyPair.deserialize(message.identity_key_pair)
        except ProtocolError:
            raise linking.LinkError("the provisioning message is malformed") from None
        client = await Client.link(path, self.request.server, message.link_code, identity,
                                   passphrase=passphrase, device_name=device_name,
                                   argon2=argon2, proxy=self.api.proxy, options=options)
        try:
            if client.account_id != message.account_id:
                raise ClientError("the link code joined another account than announced")
            adopt(client, message.contacts, message.group_states)
            if message.HasField("history_keys"):
                history.set_keys(client.store, history.Keys.from_proto(message.history_keys),
                                 on=message.history_enabled)
            if history.enabled(client.store):
                await history.download(client.api, client.store, progress=progress)
        except BaseException:
            await client.close()
            raise
        return client


async def request_link(server: str, *, proxy: str | None = None) -> PendingLink:
    """Open a provisioning mailbox on the relay for a new device."""
    api = RelayApi(check_server_url(server), proxy=proxy)
    try:
        data = await api.request("POST", "/v1/provisioning", auth=False)
    except BaseException:
        await api.close()
        raise
    request, private = linking.new_request(api.server, str(data["address"]))
    return PendingLink(api, request, private)


async def provision(client: Client, uri: str) -> None:
    """Send the device that shows ``uri`` what it needs to join our account: the identity
    key pair, a one-time link code, contacts with their keys and trust, and group states.

    Raises:
        LinkError: not a link code. ClientError: a link code for another relay.
    """
    request = linking.LinkRequest.parse(uri)
    if check_server_url(request.server) != client.api.server:
        raise ClientError("that link code is for another server")
    code = await client.create_link_code()
    me = await client.api.whoami()
    usernames = dict(client.store.contacts())
    message = ProvisionMessage(
        account_id=client.account_id,
        identity_key_pair=client.store.get_identity_key_pair().serialize(),
        link_code=code, username=me.get("username") or "",
        group_states=[s for s in (client.store.get_group(g) for g in client.store.group_ids())
                      if s is not None])
    found = history.keys(client.store)
    if found is not None:
        message.history_keys.CopyFrom(found.to_proto())
        message.history_enabled = history.enabled(client.store)
    for record in client.store.identity_records():
        if record.account != client.account_id:
            message.contacts.add(account_id=record.account,
                                 username=usernames.get(record.account) or "",
                                 identity_key=record.identity_key.serialize(),
                                 verified=record.verified,
                                 send_blocked=record.send_blocked)
    await client.api.request("PUT", f"/v1/provisioning/{request.address}",
                             content=linking.seal(request, message))


def adopt(client: Client, contacts: Iterable[ProvisionMessage.Contact],
          group_states: Iterable[bytes]) -> None:
    """Take over contacts (keys and trust) and groups another device of ours held."""
    with client.store.transaction():
        for contact in contacts:
            if contact.account_id == client.account_id:
                continue  # our own key came as the identity key pair
            try:
                key = PublicKey.deserialize(contact.identity_key)
            except ProtocolError:
                continue
            client.store.restore_identity(contact.account_id, key, verified=contact.verified,
                                          send_blocked=contact.send_blocked)
            if contact.username:
                client.store.set_contact(contact.account_id, contact.username)
        for state in group_states:
            try:
                group = Group.from_bytes(state)
            except GroupChangeRejected:
                continue
            client.store.save_group(group.id, group.state_bytes)
