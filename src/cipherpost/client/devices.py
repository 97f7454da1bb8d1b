"""Linking a device through a provisioning mailbox (docs/spec/linking.md).

New device::

    pending = await request_link("https://relay.example")
    show_qr(pending.uri)                       # the user scans it with a linked device
    client = await pending.complete(Path("device.db"), passphrase="...")

Existing device::

    await provision(client, scanned_uri)       # scanning is the approval

Without a camera (typed code, docs/spec/linking.md "Typed code"), new device::

    pending = await request_link_by_code("https://relay.example")
    show(pending.code)                         # typed on a linked device
    show(await pending.sas())                  # the user compares it with the other screen
    await pending.confirm()                    # or: await pending.cancel()
    client = await pending.complete(Path("device.db"), passphrase="...")

and existing device::

    await provision_by_code(client, typed_code, confirm=ask_user_whether_sas_matches)
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cipherpost.protocol import IdentityKeyPair, ProtocolError, PublicKey

from . import archive, history, linking, sealed
from .api import RelayApi, RelayError, RelayUnavailable, check_server_url
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
        return await _join(message, path, self.request.server, proxy=self.api.proxy,
                           passphrase=passphrase, device_name=device_name, argon2=argon2,
                           options=options, progress=progress)


async def _join(message: ProvisionMessage, path: Path, server: str, *, proxy: str | None,
                passphrase: str | None, device_name: str | None, argon2: Argon2Params | None,
                options: ClientOptions | None,
                progress: Callable[[int], None] | None) -> Client:
    """Register this device with the account a provisioning message names and take over
    what it carries."""
    try:
        identity = IdentityKeyPair.deserialize(message.identity_key_pair)
    except ProtocolError:
        raise linking.LinkError("the provisioning message is malformed") from None
    client = await Client.link(path, server, message.link_code, identity,
                               passphrase=passphrase, device_name=device_name,
                               argon2=argon2, proxy=proxy, options=options)
    try:
        if client.account_id != message.account_id:
            raise ClientError("the link code joined another account than announced")
        adopt(client, message.contacts, message.group_states)
        await _adopt_sealed_sender(client, message)
        if message.HasField("history_keys"):
            history.set_keys(client.store, history.Keys.from_proto(message.history_keys),
                             on=message.history_enabled)
        if history.enabled(client.store):
            await history.download(client.api, client.store, progress=progress)
        if message.HasField("archive"):
            archive.keep(client.store, message.archive)
            await archive.receive(client.api, client.store, progress=None if progress is None
                                  else lambda done, _total: progress(done))
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
    message = await _provision_message(client)
    await client.api.request("PUT", f"/v1/provisioning/{request.address}",
                             content=linking.seal(request, message))


async def _provision_message(client: Client) -> ProvisionMessage:
    """What a new device of our account needs: the identity key pair, a one-time link
    code, contacts with their keys and trust, group states, history keys."""
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
    if not history.enabled(client.store):
        # No history on the relay to replay: the conversations travel once, sealed.
        carried = await archive.upload(client.api, client.store)
        if carried is not None:
            message.archive.CopyFrom(carried)
    for record in client.store.identity_records():
        if record.account != client.account_id:
            message.contacts.add(account_id=record.account,
                                 username=usernames.get(record.account) or "",
                                 identity_key=record.identity_key.serialize(),
                                 verified=record.verified,
                                 send_blocked=record.send_blocked,
                                 profile_key=sealed.contact_profile_key(
                                     client.store, record.account) or b"")
    profile_key = sealed.known_own_profile_key(client.store)
    if profile_key is not None:
        message.profile_key = profile_key
    root = sealed.trust_root(client.store)
    if root is not None:
        message.trust_root = root.serialize()
    return message


async def _adopt_sealed_sender(client: Client, message: ProvisionMessage) -> None:
    """Take the account's profile key, the contacts' and the pinned trust root from the
    provisioning message (a root the existing device pinned beats one this device was
    just told by the relay), then register as a device that opens sealed envelopes."""
    with client.store.transaction():
        if message.trust_root:
            with contextlib.suppress(ProtocolError):  # a malformed one: ours stays
                sealed.pin_trust_root(client.store, PublicKey.deserialize(message.trust_root))
        if message.profile_key:
            sealed.adopt_own_profile_key(client.store, message.profile_key)
        for contact in message.contacts:
            if contact.profile_key and contact.account_id != client.account_id:
                sealed.set_contact_profile_key(client.store, contact.account_id,
                                               contact.profile_key)
    await client.sealed_sender_upkeep()


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


# -- typed-code linking (docs/spec/linking.md, "Typed code") ----------------------------

Confirm = Callable[[str], bool | Awaitable[bool]]
_GONE = "the link was cancelled on the other device, or its code expired: start linking again"


class LinkDeclined(ClientError):
    """The user said the two screens do not show the same number: nothing was linked."""


async def _fetch(api: RelayApi, path: str, deadline: float, *, auth: bool) -> bytes:
    """A message of a code mailbox, waiting for it until ``deadline`` (monotonic).

    Raises:
        ClientError: the mailbox is gone (cancelled, done or expired) or nothing came.
    """
    while time.monotonic() < deadline:
        wait = min(WAIT_SECONDS, max(1.0, deadline - time.monotonic()))
        try:
            data = await api.request("GET", f"{path}?wait={wait:.0f}", auth=auth)
        except RelayError as exc:
            if exc.status == 404:
                raise ClientError(_GONE) from None
            raise
        if data:
            return bytes(data)
        await asyncio.sleep(0)
    raise ClientError("the other device did not answer in time: start linking again")


class PendingCodeLink:
    """A new device linking by a typed code: show :attr:`code`, then the :meth:`sas` that
    the user compares with the other screen; :meth:`confirm` (or :meth:`cancel`), then
    :meth:`complete`."""

    def __init__(self, api: RelayApi, address: str, code: str, expires_at: int,
                 private: X25519PrivateKey) -> None:
        self.api = api
        self.expires_at = expires_at
        self._address = address
        self._code = code
        self._private = private
        self._public = private.public_key().public_bytes_raw()
        self._keys: linking.CodeLinkKeys | None = None
        self._confirmed = False

    @property
    def code(self) -> str:
        """Show this on the new device; the user types it on a device already linked."""
        return linking.format_code(self._code)

    def __repr__(self) -> str:
        return f"PendingCodeLink({self.api.server!r})"

    def _path(self, side: str, index: int) -> str:
        return f"/v1/provisioning/{self._address}/{side}/{index}"

    async def _send(self, index: int, field: str, value: bytes) -> None:
        try:
            await self.api.request("PUT", self._path("new", index), auth=False,
                                   content=linking.encode_step(field, value))
        except RelayError as exc:
            if exc.status == 404:
                raise ClientError(_GONE) from None
            raise

    async def sas(self, timeout: float = 600.0) -> str:
        """Wait for the existing device's key, reveal ours, and return the 6-digit number
        to compare with the existing device's screen.

        Raises:
            ClientError: cancelled, expired, or no answer in time.
            LinkError: what came is malformed.
        """
        if self._keys is None:
            deadline = time.monotonic() + timeout
            peer = linking.decode_step(
                await _fetch(self.api, self._path("existing", 0), deadline, auth=False),
                "public_key")
            keys = linking.CodeLinkKeys(self._private, peer, new_public=self._public,
                                        existing_public=peer, address=self._address)
            await self._send(1, "public_key", self._public)
            self._keys = keys
        return self._keys.sas

    async def confirm(self) -> None:
        """The user saw the same number on both screens: tell the existing device."""
        if self._keys is None:
            raise ClientError("compare the numbers first (sas())")
        await self._send(2, "confirm", self._keys.confirm_tag())
        self._confirmed = True

    async def cancel(self) -> None:
        """The numbers differ, or the user gave up: close the mailbox; nothing is linked."""
        try:
            with contextlib.suppress(RelayError):
                await self.api.request("DELETE", f"/v1/provisioning/{self._address}",
                                       auth=False)
        finally:
            await self.api.close()

    async def complete(self, path: Path, *, passphrase: str | None = None,
                       device_name: str | None = None, argon2: Argon2Params | None = None,
                       options: ClientOptions | None = None, timeout: float = 600.0,
                       progress: Callable[[int], None] | None = None) -> Client:
        """After :meth:`confirm`: wait for the sealed provisioning message, then join as
        :meth:`PendingLink.complete` does.

        Raises:
            ClientError: not confirmed yet, cancelled, expired, or no answer in time.
            LinkError: the message does not open in this exchange (replayed or altered).
        """
        if self._keys is None or not self._confirmed:
            raise ClientError("confirm the numbers on both devices first")
        try:
            sealed = linking.decode_step(
                await _fetch(self.api, self._path("existing", 1),
                             time.monotonic() + timeout, auth=False), "sealed")
            message = self._keys.open(sealed)
        finally:
            await self.cancel()  # the mailbox is done with, whatever came
        return await _join(message, path, self.api.server, proxy=self.api.proxy,
                           passphrase=passphrase, device_name=device_name, argon2=argon2,
                           options=options, progress=progress)


async def request_link_by_code(server: str, *, proxy: str | None = None) -> PendingCodeLink:
    """Open a code mailbox on the relay for a new device and commit to its key."""
    api = RelayApi(check_server_url(server), proxy=proxy)
    try:
        data = await api.request("POST", "/v1/provisioning/codes", auth=False)
        private = X25519PrivateKey.generate()
        pending = PendingCodeLink(api, str(data["address"]), str(data["code"]),
                                  int(data["expires_at"]), private)
        await pending._send(0, "commitment", linking.commitment(pending._public))
    except BaseException:
        await api.close()
        raise
    return pending


async def provision_by_code(client: Client, code: str, *, confirm: Confirm,
                            timeout: float = 600.0) -> None:
    """Link the new device that shows ``code`` to our account, once the user confirmed
    (``confirm`` gets the 6-digit number and answers whether the new device shows the
    same). Nothing leaves this device before both the user here and the one on the new
    device confirmed.

    Raises:
        LinkError: a malformed code or message; a key that does not match its commitment,
            or a confirmation that does not verify (someone in the middle).
        LinkDeclined: the user said the numbers differ.
        ClientError: a wrong, used or expired code; the new device cancelled; no answer.
    """
    normalized = linking.normalize_code(code)
    try:
        data = await client.api.request("POST", "/v1/provisioning/codes/claim",
                                        json={"code": normalized})
    except RelayError as exc:
        if exc.code == "unknown_code":
            raise ClientError("no new device is waiting with that code: check it, or start "
                              "again on the new device (a code works once, for 10 minutes)"
                              ) from None
        raise
    address = str(data["address"])
    try:
        await _provision_by_code(client, address, confirm, time.monotonic() + timeout)
    except BaseException:
        # Declined, or something went wrong: the new device stops waiting at once.
        with contextlib.suppress(RelayError, RelayUnavailable):
            await client.api.request("DELETE", f"/v1/provisioning/{address}")
        raise


async def _provision_by_code(client: Client, address: str, confirm: Confirm,
                             deadline: float) -> None:
    base = f"/v1/provisioning/{address}"
    committed = linking.decode_step(await _fetch(client.api, f"{base}/new/0", deadline,
                                                 auth=True), "commitment")
    private = X25519PrivateKey.generate()
    public = private.public_key().public_bytes_raw()
    await client.api.request("PUT", f"{base}/existing/0",
                             content=linking.encode_step("public_key", public))
    peer = linking.decode_step(await _fetch(client.api, f"{base}/new/1", deadline, auth=True),
                               "public_key")
    linking.check_commitment(committed, peer)
    keys = linking.CodeLinkKeys(private, peer, new_public=peer, existing_public=public,
                                address=address)
    answer = confirm(keys.sas)
    if not (await answer if inspect.isawaitable(answer) else answer):
        raise LinkDeclined("the numbers differ: nothing was sent; start again on the new "
                           "device")
    keys.check_confirm(linking.decode_step(
        await _fetch(client.api, f"{base}/new/2", deadline, auth=True), "confirm"))
    message = await _provision_message(client)
    await client.api.request("PUT", f"{base}/existing/1", content=linking.encode_step(
        "sealed", keys.seal(message)))
