"""The SDK's entry point: one device of one account, with its encrypted local store.

All work runs on the caller's asyncio loop. Store work that must be atomic (decrypting an
envelope, storing what it carried, remembering its id) is one transaction with no
``await`` inside, and an envelope is acknowledged only after that transaction commits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import connect as ws_connect
from websockets.typing import Subprotocol

from cipherpost.protocol import (
    Fingerprint,
    IdentityKeyPair,
    ProtocolAddress,
    ProtocolError,
    PublicKey,
)

from . import attachments, identity_reset, sealed
from . import events as ev
from . import history as history_keys
from .api import (
    Credentials,
    RelayApi,
    RelayError,
    RelayUnavailable,
    check_server_url,
)
from .errors import AccountSuspended, ClientError, DeviceRemoved, IdentityNotTrusted
from .groups import (
    ADMIN,
    MEMBER,
    Group,
    GroupChangeRejected,
    encode_state,
    sign_change,
    verify_change,
)
from .inbox import FollowUp, Inbox, revise_sent_text
from .keys import maintain, new_device_body, new_registration_id, republish
from .options import ClientOptions
from .outbox import Outbox
from .padding import padme
from .proto.app_pb2 import (
    AttachmentPointer,
    Content,
    DataMessage,
    DecryptionErrorMessage,
    GroupContext,
    HistoryKeys,
    MessageRef,
    Reaction,
    ReceiptMessage,
    SyncMessage,
    TypingMessage,
)
from .socket import SUBPROTOCOLS, RelaySocket, SocketLost
from .store.crypto import Argon2Params
from .store.database import FAILED, SENDING, SENT, Store, StoredMessage

log = logging.getLogger("cipherpost.client")

RESEND_LOG_MS = 24 * 3600 * 1000
#: Store meta: the disappearing-message timer of conversations this device starts.
DEFAULT_TIMER = "default_expire_timer"
#: Meta entry: the account's username as this device last set or saw it.
OWN_USERNAME = "own_username"
ENVELOPE_MEMORY_MS = 31 * 24 * 3600 * 1000
#: Messages resent when a contact could not decrypt a sealed envelope of ours, which
#: names no message (docs/spec/sealed-sender.md).
RECENT_RESENDS = 20
#: Meta key prefix (+ "account.device"): the newest message resent to that device for such
#: a request; older ones are not resent to it that way again.
RECENT_RESENT_MARK = "recent_resent:"


class Client:
    """One device of an account."""

    def __init__(self, store: Store, api: RelayApi, credentials: Credentials,
                 options: ClientOptions | None = None) -> None:
        self.store = store
        self.api = api
        self.credentials = credentials
        self.options = options or ClientOptions()
        self.store.accept_changed_identities = self.options.accept_changed_identities
        self._last_timestamp = 0
        self.inbox = Inbox(store, credentials.account_id, credentials.device_id, self.options)
        self.outbox = Outbox(store, api, credentials.account_id, credentials.device_id,
                             self.options, self._timestamp)
        self.outbox.after_sealed_refused = self._sealed_send_refused
        #: When the relay's copy of our access key was last checked or registered (ms,
        #: ``options.clock``); None: not by this process.
        self._access_checked: int | None = None

    def __repr__(self) -> str:
        return f"Client({self.account_id!r}, device {self.device_id})"

    def _now(self) -> int:
        return self.options.clock()

    # -- set-up ---------------------------------------------------------------------------

    @classmethod
    async def register(cls, path: Path, server: str, *, history: bool,
                       username: str | None = None,
                       passphrase: str | None = None, device_name: str | None = None,
                       argon2: Argon2Params | None = None, proxy: str | None = None,
                       options: ClientOptions | None = None,
                       invite: str | None = None,
                       trust_root: PublicKey | None = None) -> Client:
        """Create an account with this device as its first, and a local store at ``path``.
        ``invite`` is an invite code from the relay's operators, for a relay that
        registers by invitation only. ``trust_root`` is the relay's sealed-sender trust
        root as its operators publish it: the relay must show the same one (else nothing
        is registered), and it is pinned; without it, the one the relay shows is pinned.

        ``history`` is the account's choice (no default on purpose): keep an encrypted
        copy of the conversations on the relay, so that new and restored devices show them
        (whoever later obtains a history key can read that part of it: forward secrecy then
        holds against the relay only; docs/threat-model.md), or keep them on devices only.
        Change it later with :meth:`set_server_history`.

        Raises:
            ValueError: a bad server URL.
            StoreError: a store already exists at ``path``, or no key source.
            RelayError: the relay refused (username taken, rate limited...).
            ClientError: the relay shows another trust root than ``trust_root``.
        """
        if trust_root is not None:
            await _check_trust_root(server, trust_root, proxy)
        extra = {"username": username} if username else {}
        if invite:
            extra["invite"] = invite
        client = await cls._set_up(path, server, IdentityKeyPair.generate(os.urandom), extra,
                                   RelayApi.register, passphrase, device_name, argon2, proxy,
                                   options)
        history_keys.set_keys(client.store, history_keys.Keys.new(client._now())
                              if history else None, on=history)
        sealed.own_profile_key(client.store)  # the account's, shared with its contacts
        if username:
            client.remember_own_username(username)
        if trust_root is not None:
            with client.store.transaction():
                sealed.pin_trust_root(client.store, trust_root)
        await client.sealed_sender_upkeep()
        return client

    @classmethod
    async def link(cls, path: Path, server: str, link_code: str, identity: IdentityKeyPair,
                   *, passphrase: str | None = None, device_name: str | None = None,
                   argon2: Argon2Params | None = None, proxy: str | None = None,
                   options: ClientOptions | None = None) -> Client:
        """Join an existing account as a new device with a link code and the account's
        identity key pair, then announce this device to the account's other devices.

        The identity key pair comes from an existing device; carrying it over an encrypted
        provisioning channel (QR code) is the device-linking feature of the history work.
        """
        client = await cls._set_up(path, server, identity, {"link_code": link_code},
                                   RelayApi.link_device, passphrase, device_name, argon2,
                                   proxy, options)
        # No profile key of its own: the account's comes with the provisioning message
        # (or a sync copy of a message from another of our devices).
        with client.store.transaction():
            sealed.await_profile_key(client.store)
        await client.announce_device(device_name or "")
        return client

    @classmethod
    async def _set_up(cls, path: Path, server: str, identity: IdentityKeyPair,
                      extra: dict[str, Any],
                      request: Callable[[RelayApi, dict[str, Any]], Awaitable[Credentials]],
                      passphrase: str | None, device_name: str | None,
                      argon2: Argon2Params | None, proxy: str | None,
                      options: ClientOptions | None) -> Client:
        """A new store with a new device's keys, sent to the relay by ``request``; on any
        failure the half-made store is removed."""
        server = check_server_url(server)
        options = options or ClientOptions()
        store = Store.create(path, passphrase=passphrase, params=argon2)
        api = RelayApi(server, proxy=proxy)
        try:
            body = new_device_body(store, identity, new_registration_id(), options.clock(),
                                   options.keys, device_name)
            credentials = await request(api, {**body, **extra})
        except BaseException:
            await api.close()
            store.close()
            for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                leftover.unlink(missing_ok=True)
            raise
        return cls._finish_setup(store, api, credentials, server, options)

    @classmethod
    def _finish_setup(cls, store: Store, api: RelayApi, credentials: Credentials,
                      server: str, options: ClientOptions) -> Client:
        with store.transaction():
            store.set_meta("server", server)
            store.set_meta("account_id", credentials.account_id)
            store.set_meta("device_id", str(credentials.device_id))
            store.set_secret("token", credentials.token.encode())
            store.trust_identity(credentials.account_id,
                                 store.get_identity_key_pair().public, verified=True)
        api.set_token(credentials.token)
        return cls(store, api, credentials, options)

    @classmethod
    async def open(cls, path: Path, *, passphrase: str | None = None,
                   proxy: str | None = None, options: ClientOptions | None = None) -> Client:
        """Open a device registered or linked earlier.

        Raises:
            StoreError: no store, or it cannot be unlocked without a passphrase.
            WrongKey: wrong passphrase.
        """
        store = Store.open(path, passphrase=passphrase)
        token = store.get_secret("token")
        server, account = store.get_meta("server"), store.get_meta("account_id")
        if token is None or server is None or account is None:
            store.close()
            raise ClientError("this store has no account: register or link a device")
        credentials = Credentials(account, int(store.get_meta("device_id") or 0),
                                  token.decode())
        return cls(store, RelayApi(server, token=credentials.token, proxy=proxy),
                   credentials, options)

    async def close(self) -> None:
        await self.api.close()
        self.store.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def account_id(self) -> str:
        return self.credentials.account_id

    @property
    def device_id(self) -> int:
        return self.credentials.device_id

    @property
    def address(self) -> ProtocolAddress:
        return ProtocolAddress(self.account_id, self.device_id)

    # -- sealed sender --------------------------------------------------------------------

    async def sealed_sender_upkeep(
            self, *, check_after_ms: int = sealed.ACCESS_KEY_CHECK_MS) -> None:
        """Pin the relay's trust root if none is (a store from before sealed sender: trust
        on first use), fetch the server key ids the relay revoked (hourly), and register
        the account's unidentified-access key (again every day, in case the relay lost
        it, e.g. restored from a backup: review 2026-11-29-sealed-ops, R5), which also
        tells the relay that this device opens sealed envelopes. In between, when the
        relay's copy was not checked for ``check_after_ms``, it is checked (one read)
        and the key registered again if the relay lost it or no longer marks this device:
        contacts' sealed sends get 401 meanwhile, which only they see. A device with no profile
        key makes one (a first device, or one restored from the recovery key), except a
        linked one, which waits for the account's (provisioning message, or a copy of a
        message of a lower device). Failures are retried at the next connection."""
        try:
            if sealed.trust_root(self.store) is None:
                root = await self.api.trust_root()
                with self.store.transaction():
                    sealed.pin_trust_root(self.store, root)
            if sealed.revocations_due(self.store, self._now()):
                served, revoked = await self.api.certificate_revocations()
                with self.store.relaxed_transaction():
                    # A list for another root than ours says nothing about our certificates.
                    sealed.add_revoked_key_ids(
                        self.store, revoked if served == sealed.trust_root(self.store) else [],
                        self._now())
            now = self._now()
            due = sealed.access_key_due(self.store, now)
            checked = self._access_checked
            check = not due and (checked is None or not 0 <= now - checked < check_after_ms)
            if not due and not check:
                return
            key = sealed.known_own_profile_key(self.store)
            if key is None and sealed.may_make_profile_key(self.store):
                key = sealed.own_profile_key(self.store)
            if key is None:
                return
            if check:
                held, marked = await self.api.access_key_state()
                self._access_checked = now
                if marked and sealed.access_key_held(key, held):
                    return
                log.info("the relay lost the access key or this device's mark: "
                         "registering it again")
            await self.api.set_access_key(sealed.access_key(key))
            with self.store.relaxed_transaction():
                sealed.mark_access_key_registered(self.store, self._now())
            self._access_checked = self._now()
        except (RelayError, RelayUnavailable, ProtocolError, OSError) as exc:
            log.info("sealed sender set-up postponed: %s", type(exc).__name__)

    async def _sealed_send_refused(self) -> None:
        """A contact's access key was refused (401): the contact changed its profile key,
        or the relay lost its keys (a restore), ours too maybe. Check ours now."""
        await self.sealed_sender_upkeep(check_after_ms=sealed.ACCESS_KEY_RECHECK_MS)

    # -- directory ------------------------------------------------------------------------

    async def maintain_keys(self) -> bool:
        """Replenish one-time prekeys and rotate signed/last-resort keys when due."""
        return await maintain(self.api, self.store, self._now(), self.options.keys)

    async def provision(self, uri: str) -> None:
        """Link the new device that shows ``uri`` (scanned from its QR code) to our
        account (docs/spec/linking.md)."""
        from .devices import provision
        await provision(self, uri)

    async def provision_by_code(self, code: str, *,
                                confirm: Callable[[str], bool | Awaitable[bool]],
                                timeout: float = 600.0) -> None:
        """Link the new device that shows the typed ``code`` to our account, once
        ``confirm`` (shown the 6-digit number) answers that the new device shows the same
        (docs/spec/linking.md, "Typed code").

        Raises:
            LinkError, LinkDeclined, ClientError: see :func:`devices.provision_by_code`.
        """
        from .devices import provision_by_code
        await provision_by_code(self, code, confirm=confirm, timeout=timeout)

    async def receive_link_archive(self, *,
                                   progress: Callable[[int, int], None] | None = None) -> int:
        """Finish taking the one-time history archive this device was linked with, after
        an interruption (linking takes it at once); the number of messages newly stored,
        0 when nothing is left (docs/spec/history.md, "Archive").

        Raises:
            ArchiveError: a part does not open or is gone from the relay.
        """
        from . import archive
        return await archive.receive(self.api, self.store, progress=progress)

    async def create_link_code(self) -> str:
        return await self.api.create_link_code()

    async def remove_device(self, device_id: int) -> None:
        """Remove a device of the account (its token dies, its queue goes). With server
        history, a new history epoch starts that the removed device never receives."""
        await self.api.remove_device(device_id)
        if history_keys.keys(self.store) is not None:
            await self.rotate_history_epoch()

    # -- server-stored history and recovery (docs/spec/history.md) -----------------------

    @property
    def server_history(self) -> bool:
        """Whether this account keeps an encrypted copy of its history on the relay."""
        return history_keys.enabled(self.store)

    async def set_server_history(self, on: bool) -> None:
        """Turn server-stored history on (this device's stored messages are uploaded) or
        off (what the relay stores is deleted); every device of the account follows."""
        found = history_keys.keys(self.store)
        if on:
            found = found or history_keys.Keys.new(self._now())
            history_keys.set_keys(self.store, found, on=True)
            history_keys.backfill(self.store, self.inbox.history)
            await self._sync_history_keys(found.to_proto())
            await self._flush_history()
        else:
            history_keys.set_keys(self.store, None, on=False)
            await self.api.request("DELETE", "/v1/history")
            await self._sync_history_keys(HistoryKeys(history_off=True))
        await self._update_recovery()

    async def set_history_retention(self, days: int | None) -> None:
        """Have the relay delete history entries older than ``days`` (None: keep them
        until deleted)."""
        if days is not None and not 1 <= days <= 36500:
            raise ClientError("the retention is 1 to 36500 days, or none")
        await self.api.request("PUT", "/v1/history/settings", json={"retention_days": days})

    async def rotate_history_epoch(self) -> None:
        """Start a new history epoch and give its key to our other devices over their
        sessions (a device removed before cannot read what is written after)."""
        found = history_keys.keys(self.store)
        if found is None:
            return
        rotated = found.rotated(self._now())
        history_keys.set_keys(self.store, rotated, on=history_keys.enabled(self.store))
        await self._sync_history_keys(rotated.to_proto())
        await self._update_recovery()

    async def sync_history(self, *, progress: Callable[[int], None] | None = None
                           ) -> history_keys.Replayed:
        """Read what other devices wrote to the server-stored history since this device
        last did (a new device does this when it is linked or restored)."""
        return await history_keys.download(self.api, self.store, progress=progress)

    async def create_recovery_key(self) -> str:
        """A new recovery key for the account (shown to the user once; it replaces an
        earlier one): with it, :func:`cipherpost.client.recovery.restore` gets the account
        back on a fresh machine, same identity, and its server-stored history."""
        from .recovery import create_key
        return await create_key(self)

    async def _update_recovery(self) -> None:
        from .recovery import update_blob
        try:
            await update_blob(self)
        except (RelayError, RelayUnavailable) as exc:
            log.warning("the recovery blob could not be updated: %s", type(exc).__name__)

    async def _reseal_after(self, events: list[ev.Event]) -> None:
        """Another device turned server history on or off, or reset the identity: seal the
        recovery blobs this device keeps the secrets of again, so that a restore takes the
        change (the device that made it may hold no recovery secrets: a linked device, or
        the browser)."""
        if any(isinstance(e, ev.ServerHistoryChanged)
               or (isinstance(e, ev.IdentityChanged) and e.account == self.account_id)
               for e in events):  # the blobs carry history's state and the identity key pair
            await self._update_recovery()

    async def _sync_history_keys(self, keys: HistoryKeys) -> None:
        await self.outbox.deliver(self.account_id,
                                  Content(sync=SyncMessage(history_keys=keys)),
                                  self._timestamp())

    async def _history_upkeep(self) -> None:
        """A new epoch when the current one is 30 days old."""
        found = history_keys.keys(self.store)
        if found is not None and history_keys.enabled(self.store) \
                and self._now() - found.current_started_at >= history_keys.EPOCH_MS:
            try:
                await self.rotate_history_epoch()
            except (RelayError, RelayUnavailable, ClientError) as exc:
                log.info("history epoch rotation postponed: %s", type(exc).__name__)

    async def set_username(self, username: str | None) -> None:
        await self.api.set_username(username)
        self.remember_own_username(username)

    def own_username(self) -> str | None:
        """The account's username as this device last set or saw it (None: none known).
        Another device may have changed it since; the relay's ``whoami`` says."""
        return self.store.get_meta(OWN_USERNAME) or None

    def remember_own_username(self, username: str | None) -> None:
        """Keep the account's username (from a registration, a change, or ``whoami``)
        for checks that run without the relay, such as an export passphrase's."""
        with self.store.transaction():
            self.store.set_meta(OWN_USERNAME, username or "")

    async def resolve(self, recipient: str) -> str:
        """An account id for a username or account id (usernames are remembered)."""
        if _is_account_id(recipient):
            return recipient
        username = recipient.removeprefix("@").lower()
        known = self.store.find_contact(username)
        if known is not None:
            return known
        try:
            account = await self.api.lookup_username(username)
        except RelayError as exc:
            if exc.status == 404:
                raise ClientError(f"no account has the username {username!r}") from None
            raise
        self.store.set_contact(account, username)
        return account

    # -- identity -------------------------------------------------------------------------

    def safety_number(self, account: str) -> Fingerprint:
        """Our safety number with ``account`` (its identity key must be known: after one
        message either way).

        Raises:
            ClientError: the contact's identity key is not known yet.
        """
        record = self.store.identity_record(account)
        if record is None:
            raise ClientError(f"no identity key known for {account} yet: exchange a message "
                              "first")
        mine = self.store.get_identity_key_pair().public
        return Fingerprint.create(self.account_id.encode(), mine, account.encode(),
                                  record.identity_key)

    async def reset_identity(self) -> list[int]:
        """Replace the account's identity key after a compromise: a new key pair and new
        registration ids for every device, new prekeys here, then the new key pair sent to
        our other devices over their sessions. Contacts see the safety number change (their
        sessions with us are replaced, and sending to us waits for their consent).

        Returns the devices of ours that could not be given the new key (remove and link
        them again). Raises ClientError when the relay refused or its answer was lost
        (see :mod:`cipherpost.client.identity_reset`)."""
        unreachable = await identity_reset.reset_identity(self)
        await self._update_recovery()  # the recovery blobs carry the identity key pair
        return unreachable

    def trust_identity(self, account: str, *, verified: bool = False) -> None:
        """Accept the contact's current identity key (and mark it verified after the user
        compared safety numbers)."""
        record = self.store.identity_record(account)
        if record is None:
            raise ClientError(f"no identity key known for {account}")
        self.store.trust_identity(account, record.identity_key, verified=verified)

    # -- sending --------------------------------------------------------------------------

    def _timestamp(self) -> int:
        """Strictly increasing per device (spec §4)."""
        self._last_timestamp = max(self._now(), self._last_timestamp + 1)
        return self._last_timestamp

    async def conversation_for(self, recipient: str | bytes) -> str:
        """The conversation key for a username, an account id, or a group id."""
        if isinstance(recipient, bytes):
            return self._member_group(recipient).conversation
        if recipient.startswith("group:"):
            return self._member_group(bytes.fromhex(recipient[6:])).conversation
        account = await self.resolve(recipient)
        if account == self.account_id:
            raise ClientError("sending to yourself is not supported yet")
        return account

    def _new_data(self, conversation: str, **fields: Any) -> DataMessage:
        """A data message carrying the conversation's timer (spec §9)."""
        timer, version = self.store.conversation_timer(conversation)
        data = DataMessage(timestamp=self._timestamp(), expire_timer=timer,
                           expire_timer_version=version, **fields)
        profile_key = sealed.known_own_profile_key(self.store)
        if profile_key is not None:  # our contacts may then send to us sealed
            data.profile_key = profile_key
        if conversation.startswith("group:"):
            group = self._member_group(bytes.fromhex(conversation[6:]))
            data.group.CopyFrom(GroupContext(id=group.id, revision=group.revision))
        return data

    async def send_text(self, recipient: str | bytes, text: str, *,
                        attachments: Iterable[ev.Attachment] = (),
                        quote: tuple[str, int] | None = None) -> int:
        """Send a message to a person (username or account id: every device of theirs) or
        a group (its id), with copies to our other devices; return its timestamp (its
        name, with our account id). It is in our history once this returns."""
        conversation = await self.conversation_for(recipient)
        await self._default_timer_for(conversation)
        data = self._new_data(conversation, text=text,
                              attachments=[_pointer(a) for a in attachments])
        if quote is not None:
            data.quote.CopyFrom(MessageRef(author=quote[0], timestamp=quote[1]))
        sent = self._now()
        group = self._member_group(bytes.fromhex(conversation[6:])) \
            if conversation.startswith("group:") else None

        def record() -> None:
            self.store.add_message(
                conversation=conversation, author=self.account_id,
                author_device=self.device_id, timestamp=data.timestamp, received_at=sent,
                outgoing=True, body=data.SerializeToString(), expire_timer=data.expire_timer,
                expires_at=sent + data.expire_timer * 1000 if data.expire_timer else None,
                status=SENDING)
            self.store.log_sent(conversation, data.timestamp,
                                Content(data=data).SerializeToString(), sent,
                                recipients=group.members if group is not None else ())
            self.inbox.history.message(conversation, self.account_id, self.device_id, sent,
                                       True, data)

        if group is not None:
            with self.store.transaction():
                record()
            timestamp = await self._send_data(conversation, data, track=True)
        else:
            # One commit for the history entry and the advanced sessions (fewer fsyncs).
            timestamp = await self._send_data(conversation, data, record=record, track=True)
        await self._flush_history()
        return timestamp

    async def send_data(self, account: str, data: DataMessage) -> int:
        """Send a prepared data message to ``account`` (not stored in our history)."""
        if not data.timestamp:
            data.timestamp = self._timestamp()
        return await self._send_data(await self.conversation_for(account), data)

    async def _send_data(self, conversation: str, data: DataMessage,
                         record: Callable[[], None] | None = None, *,
                         track: bool = False) -> int:
        """Send to the conversation's members and a sync copy to our other devices;
        ``record`` runs in the first encryption's transaction. With ``track`` the message
        in our history is marked sent, or failed if the send to the members fails."""
        try:
            if conversation.startswith("group:"):
                await self.outbox.send_group_data(
                    self._member_group(bytes.fromhex(conversation[6:])), data)
                destination = ""
            else:
                await self.outbox.deliver(conversation, Content(data=data), data.timestamp,
                                          record=record)
                destination = conversation
        except BaseException:
            if track:
                with self.store.transaction():
                    self.store.set_status(self.account_id, data.timestamp, FAILED)
            raise
        if track:
            with self.store.relaxed_transaction():
                self.store.set_status(self.account_id, data.timestamp, SENT)
        sync = Content(sync=SyncMessage(sent=SyncMessage.Sent(destination=destination,
                                                              message=data)))
        await self.outbox.deliver(self.account_id, sync, data.timestamp)
        return data.timestamp

    async def react(self, conversation: str | bytes, target: tuple[str, int], emoji: str, *,
                    remove: bool = False) -> None:
        """React to the message ``target`` = (author, timestamp); ``remove`` takes it back."""
        conv = await self.conversation_for(conversation)
        data = self._new_data(conv, reaction=Reaction(
            emoji=emoji, remove=remove, target=MessageRef(author=target[0],
                                                          timestamp=target[1])))
        with self.store.transaction():
            self.store.set_reaction(target[0], target[1], self.account_id,
                                    None if remove else emoji)
            self.inbox.history.change(conv, self.account_id, self.device_id, data)
        await self._send_data(conv, data)
        await self._flush_history()

    async def edit(self, conversation: str | bytes, timestamp: int, text: str) -> None:
        """Replace the text of one of our messages on every device of both sides."""
        conv = await self.conversation_for(conversation)
        data = self._new_data(conv, text=text,
                              edit=MessageRef(author=self.account_id, timestamp=timestamp))
        with self.store.transaction():
            if not self.store.replace_body(self.account_id, timestamp, data.SerializeToString()):
                raise ClientError("no message of ours with that timestamp")
            revise_sent_text(self.store, conv, timestamp, text)
            self.inbox.history.change(conv, self.account_id, self.device_id, data)
        await self._send_data(conv, data)
        await self._flush_history()

    async def delete_for_everyone(self, conversation: str | bytes, timestamp: int) -> None:
        """Delete one of our messages on every device of both sides."""
        conv = await self.conversation_for(conversation)
        with self.store.transaction():
            self.store.delete_message(self.account_id, timestamp)
            self.inbox.history.deleted(conv, self.account_id, timestamp)
        data = self._new_data(conv, delete=MessageRef(author=self.account_id,
                                                      timestamp=timestamp))
        await self._send_data(conv, data)
        self.store.checkpoint()
        await self._flush_history()

    def default_expire_timer(self) -> int:
        """Seconds after reading that messages of conversations this device starts
        disappear (0: off); see :meth:`set_default_expire_timer`."""
        value = self.store.get_meta(DEFAULT_TIMER) or ""
        return int(value) if value.isdigit() else 0

    def set_default_expire_timer(self, seconds: int) -> None:
        """The disappearing-message default (issue #9): a conversation with a person that
        this device starts (its first message, where nobody ever set a timer) gets this
        timer first, as if :meth:`set_expire_timer` were called; 0 turns it off.
        Conversations with messages, and groups, keep theirs."""
        if not 0 <= seconds <= 0xFFFFFFFF:
            raise ClientError("the timer is 0 (off) or a number of seconds")
        with self.store.transaction():
            self.store.set_meta(DEFAULT_TIMER, str(seconds))

    async def _default_timer_for(self, conversation: str) -> None:
        seconds = self.default_expire_timer()
        if seconds and not conversation.startswith("group:") \
                and self.store.conversation_timer(conversation) == (0, 0) \
                and not self.store.messages(conversation, limit=1):
            await self.set_expire_timer(conversation, seconds)

    async def set_expire_timer(self, conversation: str | bytes, seconds: int) -> None:
        """Turn disappearing messages on (seconds after reading) or off (0)."""
        if not 0 <= seconds <= 0xFFFFFFFF:
            raise ClientError("the timer is 0 (off) or a number of seconds")
        conv = await self.conversation_for(conversation)
        if conv.startswith("group:"):
            # Part of the group's signed state: a group change, checked like any other.
            group = self._member_group(bytes.fromhex(conv[6:]))
            await self._edit_group(group, expire_timer=seconds)
            return
        version = self.store.conversation_timer(conv)[1] + 1
        with self.store.transaction():
            self.store.set_conversation_timer(conv, seconds, version)
        data = self._new_data(conv, expire_timer_update=True)
        await self._send_data(conv, data)

    async def send_typing(self, recipient: str | bytes, started: bool = True) -> None:
        """A typing indicator to a person or a group (none when the user turned them
        off)."""
        if not self.options.typing_indicators:
            return
        conversation = await self.conversation_for(recipient)
        typing = TypingMessage(timestamp=self._timestamp(),
                               action=TypingMessage.ACTION_STARTED if started
                               else TypingMessage.ACTION_STOPPED)
        if conversation.startswith("group:"):
            group = self._member_group(bytes.fromhex(conversation[6:]))
            typing.group_id = group.id
            await self.outbox.send_group_content(group, Content(typing=typing),
                                                 typing.timestamp)
            return
        await self.outbox.deliver(conversation, Content(typing=typing), typing.timestamp)

    async def mark_read(self, conversation: str | bytes,
                        messages: Iterable[tuple[str, int]]) -> None:
        """The user has seen these (author, timestamp) messages: their disappearing timers
        start, our other devices are told, and (unless turned off) read receipts go to
        their authors."""
        conv = await self.conversation_for(conversation)
        refs = list(messages)
        now = self._now()
        with self.store.transaction():
            for author, timestamp in refs:
                self.store.start_expiry(author, timestamp, now)
        read = SyncMessage.Read(messages=[MessageRef(author=a, timestamp=t) for a, t in refs])
        await self.outbox.deliver(self.account_id, Content(sync=SyncMessage(read=read)),
                            self._timestamp())
        if not self.options.read_receipts:
            return
        by_author: dict[str, list[int]] = {}
        for author, timestamp in refs:
            if author != self.account_id:
                by_author.setdefault(author, []).append(timestamp)
        for author, timestamps in sorted(by_author.items()):
            receipt = ReceiptMessage(type=ReceiptMessage.TYPE_READ, timestamps=timestamps)
            await self.outbox.deliver(author, Content(receipt=receipt), self._timestamp())
        del conv

    def housekeeping(self) -> None:
        """Forget what is no longer needed: the resend log after 24 hours, processed
        envelope ids once the relay can no longer redeliver them (30 days)."""
        now = self._now()
        with self.store.transaction():
            self.store.prune_resend_log(now - RESEND_LOG_MS)
            self.store.forget_envelopes(now - ENVELOPE_MEMORY_MS)

    def expire_messages(self) -> list[ev.Event]:
        """Delete the messages whose disappearing timer ran out (and erase them)."""
        with self.store.transaction():
            gone = self.store.expire(self._now())
            for conversation, author, timestamp in gone:
                self.inbox.history.deleted(conversation, author, timestamp)
        if gone:
            self.store.checkpoint()
        return [ev.MessageDeleted(c, a, t) for c, a, t in gone]

    # -- attachments ----------------------------------------------------------------------

    async def upload_attachment(self, data: bytes, *, file_name: str = "",
                                content_type: str = "application/octet-stream",
                                caption: str = "",
                                progress: Callable[[int, int], None] | None = None,
                                ) -> ev.Attachment:
        """Encrypt and upload a file; what to pass to ``send_text(attachments=...)`` (its
        repr hides the key)."""
        encrypted = attachments.encrypt(data)
        attachment_id = await self.api.upload_attachment(encrypted.blob, progress)
        return ev.Attachment(attachment_id, encrypted.key, encrypted.digest, encrypted.size,
                             content_type, file_name, caption)

    async def download(self, attachment: ev.Attachment,
                       progress: Callable[[int, int], None] | None = None) -> bytes:
        """Download, check (digest, MAC) and decrypt an attachment.

        Raises:
            AttachmentError: it does not match its pointer.
        """
        bound = attachments.IV_BYTES + padme(attachment.size) + 16 + attachments.MAC_BYTES
        blob = await self.api.download_attachment(attachment.id, max_bytes=bound,
                                                  progress=progress)
        return attachments.decrypt(blob, attachment.key, attachment.digest, attachment.size)

    async def announce_device(self, name: str) -> None:
        """Tell our other devices that this device joined (spec §8)."""
        content = Content(sync=SyncMessage(device_added=SyncMessage.DeviceAdded(
            device_id=self.device_id, name=name)))
        await self.outbox.deliver(self.account_id, content, self._timestamp())

    # -- groups ---------------------------------------------------------------------------

    def group(self, group_id: bytes) -> Group | None:
        """The group state this device holds, if any."""
        return self.inbox.group(group_id)

    def groups(self) -> list[Group]:
        return [g for g in (self.group(i) for i in self.store.group_ids()) if g is not None]

    def _member_group(self, group_id: bytes) -> Group:
        group = self.group(group_id)
        if group is None or not group.is_member(self.account_id):
            raise ClientError("you are not a member of that group")
        return group

    async def create_group(self, title: str, members: Iterable[str]) -> Group:
        """A new group with us as its admin and ``members`` (usernames or account ids)."""
        roles = {await self.resolve(m): MEMBER for m in members}
        roles[self.account_id] = ADMIN
        return await self._change_group(None, encode_state(os.urandom(32), 0, title, roles))

    async def add_members(self, group_id: bytes, members: Iterable[str]) -> Group:
        group = self._member_group(group_id)
        roles = dict(group.members)
        for member in members:
            roles.setdefault(await self.resolve(member), MEMBER)
        return await self._edit_group(group, roles=roles)

    async def remove_members(self, group_id: bytes, members: Iterable[str]) -> Group:
        group = self._member_group(group_id)
        roles = dict(group.members)
        for member in members:
            roles.pop(await self.resolve(member), None)
        return await self._edit_group(group, roles=roles)

    async def leave_group(self, group_id: bytes) -> Group:
        return await self.remove_members(group_id, [self.account_id])

    async def set_group_title(self, group_id: bytes, title: str) -> Group:
        group = self._member_group(group_id)
        return await self._edit_group(group, title=title)

    async def set_group_admin(self, group_id: bytes, member: str, admin: bool = True) -> Group:
        group = self._member_group(group_id)
        account = await self.resolve(member)
        if not group.is_member(account):
            raise ClientError(f"{member} is not a member of the group")
        return await self._edit_group(group, roles={**group.members,
                                                    account: ADMIN if admin else MEMBER})

    async def _edit_group(self, group: Group, *, roles: dict[str, int] | None = None,
                          title: str | None = None, expire_timer: int | None = None) -> Group:
        state = encode_state(group.id, group.revision + 1,
                             group.title if title is None else title,
                             dict(group.members) if roles is None else roles,
                             expire_timer=group.expire_timer if expire_timer is None
                             else expire_timer,
                             attributes_by_admins_only=group.attributes_by_admins_only)
        return await self._change_group(group, state)

    async def _change_group(self, current: Group | None, state: bytes) -> Group:
        """Sign a change, check it as every member will, apply it, and send it to the old
        and new members and to our other devices."""
        timestamp = self._timestamp()
        identity = self.store.get_identity_key_pair()
        signed = sign_change(identity, self.account_id, current, state, timestamp, os.urandom)
        try:
            new = verify_change(signed, current, identity.public)
        except GroupChangeRejected as exc:
            raise ClientError(f"that group change is not allowed: {exc}") from None
        with self.store.transaction():
            self.inbox.save_group(current, new)
        data = DataMessage(timestamp=timestamp, group_change=signed,
                           group=GroupContext(id=new.id, revision=new.revision))
        everyone = set(new.members) | set(current.members if current else ())
        for account in sorted(everyone - {self.account_id}):
            await self.outbox.deliver(account, Content(data=data), timestamp)
        await self.outbox.deliver(self.account_id, Content(sync=SyncMessage(
            sent=SyncMessage.Sent(message=data))), timestamp)
        return new

    async def send_group_text(self, group_id: bytes, text: str, *,
                              attachments: Iterable[ev.Attachment] = ()) -> int:
        """Send a text to a group (see :meth:`send_text`)."""
        return await self.send_text(group_id, text, attachments=attachments)

    # -- receiving ------------------------------------------------------------------------

    async def receive(self) -> list[ev.Event]:
        """Fetch and process everything queued for this device over HTTP (the fallback
        for apps without a WebSocket); return the events, in order."""
        self.housekeeping()
        await self.sealed_sender_upkeep()
        out: list[ev.Event] = self.expire_messages()
        while True:
            envelopes, more = await self.api.fetch()
            batch: list[ev.Event] = []
            for envelope in envelopes:  # each one committed before the batch is acknowledged
                events, _later = self.inbox.process(envelope)
                batch.extend(events)
            if envelopes:
                await self.api.ack([e.id for e in envelopes])
            out.extend(batch)
            out.extend(await self._follow_up())
            await self._flush_history()
            await self._reseal_after(batch)
            if not more or not envelopes:
                # After the queue: an epoch another device started is taken, not doubled.
                await self._history_upkeep()
                return out

    async def listen(self, *, reconnect: bool = True) -> AsyncIterator[ev.Event]:
        """Events as they arrive over the WebSocket; reconnects with back-off.

        Raises:
            DeviceRemoved: the account removed this device.
            AccountSuspended: the relay's operators suspended the account.
        """
        delay = 0.5
        while True:
            try:
                async with ws_connect(
                        _websocket_url(self.api.server), additional_headers=self.api.auth_header,
                        proxy=self.api.proxy or None, max_size=1 << 20,
                        compression=None, subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS]
                        ) as ws:
                    socket = RelaySocket(ws)
                    self.outbox.socket = socket
                    delay = 0.5
                    try:
                        self.housekeeping()
                        await self._maintain_quietly()
                        # A new connection: the relay may have restarted from a restore.
                        await self.sealed_sender_upkeep(
                            check_after_ms=sealed.ACCESS_KEY_RECHECK_MS)
                        await self._history_upkeep()
                        for event in await self._follow_up():  # left from last time
                            yield event
                        while True:
                            envelope = await socket.next_envelope()
                            events, _later = self.inbox.process(envelope)
                            await socket.ack([envelope.id])
                            if sealed.upkeep_due(self.store, self._now()):  # a long connection
                                await self.sealed_sender_upkeep()
                            # Follow-ups (receipts, resend requests) before the events: an
                            # app that stops listening after an event must not lose them.
                            events += await self._follow_up()
                            await self._flush_history()
                            await self._reseal_after(events)
                            events += self.expire_messages()
                            for event in events:
                                yield event
                    finally:
                        self.outbox.socket = None
                        await socket.close()
            except SocketLost:
                log.info("websocket ended")
            except websockets.ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                if code == 4401:
                    raise DeviceRemoved("this device was removed from its account") from None
                if code == 4403:
                    raise AccountSuspended("the server's operators suspended this account") \
                        from None
                if code == 4409:
                    raise ClientError("another connection of this device replaced this one") \
                        from None
            except (OSError, websockets.InvalidHandshake, TimeoutError) as exc:
                log.info("websocket unavailable: %s", type(exc).__name__)
            if not reconnect:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _maintain_quietly(self) -> None:
        """Key upkeep at each connection; a failure is retried at the next one."""
        try:
            await self.maintain_keys()
        except (RelayError, RelayUnavailable, ClientError, OSError) as exc:
            log.info("key maintenance failed: %s", type(exc).__name__)

    async def _flush_history(self) -> None:
        """Upload the queued history entries (docs/spec/history.md); what fails stays
        queued for the next time."""
        if not history_keys.enabled(self.store):
            return
        try:
            await history_keys.flush(self.api, self.store)
        except (RelayError, RelayUnavailable, OSError) as exc:
            log.info("history upload postponed: %s", type(exc).__name__)

    async def _follow_up(self) -> list[ev.Event]:
        """Do the network work that processing decided (kept in the store with the
        envelope, so none is lost when an acknowledgement fails or the app stops). Work
        that fails because the relay is unreachable stays for the next time."""
        events: list[ev.Event] = []
        done: list[str] = []
        try:
            for key, value in self.store.follow_ups():
                item = FollowUp.decode(value)
                try:
                    events.extend(await self._run_follow_up(item))
                except (RelayUnavailable, OSError) as exc:
                    log.info("follow-up %s postponed: %s", item.kind, type(exc).__name__)
                    break
                except (ClientError, RelayError, ProtocolError) as exc:
                    log.info("follow-up %s failed: %s", item.kind, type(exc).__name__)
                done.append(key)
        finally:
            # One commit for the lot; after a crash in between, some are done twice
            # (a repeated receipt or resend is dropped by name).
            if done:
                with self.store.relaxed_transaction():
                    for key in done:
                        self.store.remove_follow_up(key)
        return events

    async def _run_follow_up(self, item: FollowUp) -> list[ev.Event]:
        if item.kind == "receipt":
            receipt = Content(receipt=ReceiptMessage(type=ReceiptMessage.TYPE_DELIVERY,
                                                     timestamps=[item.timestamp]))
            await self.outbox.deliver(item.account, receipt, self._timestamp())
        elif item.kind == "decryption_error" and item.device is not None:
            # A fresh session, so the request is a PreKey message the sender can read
            # whatever state its session with us is in (spec §6).
            address = ProtocolAddress(item.account, item.device)
            self.store.delete_session(address)
            error = Content(decryption_error=DecryptionErrorMessage(
                timestamp=item.timestamp, device_id=self.device_id,
                ratchet_key=item.ratchet_key))
            await self.outbox.deliver(item.account, error, self._timestamp(),
                                only_device=item.device)
        elif item.kind == "republish":
            await republish(self.api, self.store, self._now(), self.options.keys)
        elif item.kind == "resend" and item.device is not None:
            return await self._resend(item.account, item.device, item.timestamp)
        return []

    async def _resend(self, account: str, device: int, timestamp: int) -> list[ev.Event]:
        if account == self.account_id:
            return []  # copies to our own devices are not resent (their history syncs later)
        if timestamp == 0:
            # A sealed envelope failed (it carries no client timestamp): resend what we
            # sent them lately; they drop the copies they hold already (spec §4).
            # Each message goes at most once to a device this way: a contact repeating
            # the request gets nothing more (it cannot make us encrypt and send 20 messages
            # per request of its own).
            mark = f"{RECENT_RESENT_MARK}{account}.{device}"
            since = int(self.store.get_meta(mark) or 0)
            recent = self.store.recent_sent(account, RECENT_RESENDS, after=since)
            for sent_at, logged_content in recent:
                await self.outbox.deliver(account, Content.FromString(logged_content),
                                          sent_at, only_device=device)
            if not recent:
                return [ev.ResendUnavailable(account, device, timestamp)]
            with self.store.relaxed_transaction():
                self.store.set_meta(mark, str(recent[-1][0]))
            return []
        # A 1:1 message to them, or a group message that went to them (never one sent
        # before they joined); a group message goes again over the 1:1 session.
        logged = self.store.find_sent(account, timestamp) \
            or self.store.find_group_sent(account, timestamp)
        if logged is None:
            return [ev.ResendUnavailable(account, device, timestamp)]
        await self.outbox.deliver(account, Content.FromString(logged), timestamp,
                                  only_device=device)
        return []

    # -- history --------------------------------------------------------------------------

    def history(self, conversation: str, limit: int = 100) -> list[HistoryItem]:
        """The latest messages of a conversation in display order (expired ones are
        deleted first)."""
        self.expire_messages()
        return [HistoryItem.from_stored(m) for m in self.store.messages(conversation, limit)]



@dataclass(frozen=True)
class HistoryItem:
    author: str
    author_device: int
    timestamp: int
    text: str
    outgoing: bool
    #: Our messages: "sending" (or the app stopped while sending), "sent" or "failed".
    status: str = SENT
    #: Its author replaced the text (an edited message's stored body is the edit).
    edited: bool = False

    @classmethod
    def from_stored(cls, m: StoredMessage) -> HistoryItem:
        data = DataMessage.FromString(m.body)
        return cls(m.author, m.author_device, m.timestamp, data.text, m.outgoing, m.status,
                   data.HasField("edit"))


def _pointer(attachment: ev.Attachment) -> AttachmentPointer:
    return AttachmentPointer(id=attachment.id, key=attachment.key, digest=attachment.digest,
                             size=attachment.size, content_type=attachment.content_type,
                             file_name=attachment.file_name, caption=attachment.caption)


async def _check_trust_root(server: str, expected: PublicKey, proxy: str | None) -> None:
    """Raises: ClientError when the relay shows another trust root than ``expected``."""
    api = RelayApi(check_server_url(server), proxy=proxy)
    try:
        shown = await api.trust_root()
    finally:
        await api.close()
    if shown != expected:
        raise ClientError("the relay's sealed-sender trust root is not the one given: "
                          "check it with the relay's operators")


def _is_account_id(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def _websocket_url(server: str) -> str:
    parts = urlsplit(server)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path + "/v1/websocket", "", ""))


__all__ = ["AccountSuspended", "Client", "ClientError", "ClientOptions", "DeviceRemoved",
           "IdentityNotTrusted"]
