"""The SDK's entry point: one device of one account, with its encrypted local store.

All work runs on the caller's asyncio loop. Store work that must be atomic (decrypting an
envelope, storing what it carried, remembering its id) is one transaction with no
``await`` inside, and an envelope is acknowledged only after that transaction commits.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import connect as ws_connect

from cipherpost.protocol import (
    PREKEY_TYPE,
    SENDERKEY_TYPE,
    WHISPER_TYPE,
    DuplicatedMessage,
    Fingerprint,
    IdentityKeyPair,
    PreKeyBundle,
    ProtocolAddress,
    ProtocolError,
    UntrustedIdentity,
    decrypt,
    encrypt,
    has_session,
    process_prekey_bundle,
)
from cipherpost.protocol.sender_keys import (
    create_distribution_message,
    group_decrypt,
    group_encrypt,
    process_distribution_message,
)

from . import attachments
from . import content as codec
from . import events as ev
from .api import (
    Credentials,
    Envelope,
    RelayApi,
    RelayError,
    RelayUnavailable,
    check_server_url,
)
from .groups import (
    ADMIN,
    MEMBER,
    Group,
    GroupChangeRejected,
    change_author,
    encode_state,
    sign_change,
    verify_change,
)
from .keys import KeyPolicy, maintain, new_device_body, new_registration_id, republish
from .padding import padme
from .proto.app_pb2 import (
    AttachmentPointer,
    Content,
    DataMessage,
    DecryptionErrorMessage,
    GroupChange,
    GroupContext,
    MessageRef,
    NullMessage,
    Reaction,
    ReceiptMessage,
    SignedGroupChange,
    SyncMessage,
    TypingMessage,
)
from .socket import RelaySocket, SocketLost
from .store.crypto import Argon2Params
from .store.database import Store, StoredMessage

log = logging.getLogger("cipherpost.client")

RESEND_LOG_MS = 24 * 3600 * 1000
ENVELOPE_MEMORY_MS = 31 * 24 * 3600 * 1000
MAX_SEND_ATTEMPTS = 4


class ClientError(Exception):
    """A failure explained in a sentence the app can show."""


class IdentityNotTrusted(ClientError):
    """Sending is blocked: the contact's identity key changed and was not accepted yet."""

    def __init__(self, account: str) -> None:
        super().__init__(f"the safety number with {account} changed; compare it and trust "
                         "the new key before sending")
        self.account = account


class DeviceRemoved(ClientError):
    """This device was removed from its account; its credentials no longer work."""


@dataclass
class ClientOptions:
    """What the user can turn off, and policies with safe defaults."""

    delivery_receipts: bool = True
    read_receipts: bool = True
    typing_indicators: bool = True
    #: Accept a contact's changed identity key for sending without asking (bots); a
    #: contact the user had verified is always blocked until re-verified.
    accept_changed_identities: bool = False
    keys: KeyPolicy = field(default_factory=KeyPolicy)
    #: Milliseconds since the epoch (tests move it to simulate days passing).
    clock: Callable[[], int] = field(default=lambda: time.time_ns() // 1_000_000)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


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
        self._socket: RelaySocket | None = None

    def __repr__(self) -> str:
        return f"Client({self.account_id!r}, device {self.device_id})"

    def _now(self) -> int:
        return self.options.clock()

    # -- set-up ---------------------------------------------------------------------------

    @classmethod
    async def register(cls, path: Path, server: str, *, username: str | None = None,
                       passphrase: str | None = None, device_name: str | None = None,
                       argon2: Argon2Params | None = None, proxy: str | None = None,
                       options: ClientOptions | None = None) -> Client:
        """Create an account with this device as its first, and a local store at ``path``.

        Raises:
            ValueError: a bad server URL.
            StoreError: a store already exists at ``path``, or no key source.
            RelayError: the relay refused (username taken, rate limited...).
        """
        extra = {"username": username} if username else {}
        return await cls._set_up(path, server, IdentityKeyPair.generate(os.urandom), extra,
                                 RelayApi.register, passphrase, device_name, argon2, proxy,
                                 options)

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

    # -- directory ------------------------------------------------------------------------

    async def maintain_keys(self) -> bool:
        """Replenish one-time prekeys and rotate signed/last-resort keys when due."""
        return await maintain(self.api, self.store, self._now(), self.options.keys)

    async def create_link_code(self) -> str:
        return await self.api.create_link_code()

    async def set_username(self, username: str | None) -> None:
        await self.api.set_username(username)

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
        if conversation.startswith("group:"):
            group = self._member_group(bytes.fromhex(conversation[6:]))
            data.group.CopyFrom(GroupContext(id=group.id, revision=group.revision))
        return data

    async def send_text(self, recipient: str | bytes, text: str, *,
                        attachments: Iterable[AttachmentPointer] = (),
                        quote: tuple[str, int] | None = None) -> int:
        """Send a message to a person (username or account id: every device of theirs) or
        a group (its id), with copies to our other devices; return its timestamp (its
        name, with our account id). It is in our history once this returns."""
        conversation = await self.conversation_for(recipient)
        data = self._new_data(conversation, text=text, attachments=list(attachments))
        if quote is not None:
            data.quote.CopyFrom(MessageRef(author=quote[0], timestamp=quote[1]))
        sent = self._now()

        def record() -> None:
            self.store.add_message(
                conversation=conversation, author=self.account_id,
                author_device=self.device_id, timestamp=data.timestamp, received_at=sent,
                outgoing=True, body=data.SerializeToString(), expire_timer=data.expire_timer,
                expires_at=sent + data.expire_timer * 1000 if data.expire_timer else None)
            self.store.log_sent(conversation, data.timestamp,
                                Content(data=data).SerializeToString(), sent)

        if conversation.startswith("group:"):
            with self.store.transaction():
                record()
            return await self._send_data(conversation, data)
        # One commit for the history entry and the advanced sessions (fewer fsyncs).
        return await self._send_data(conversation, data, record=record)

    async def send_data(self, account: str, data: DataMessage) -> int:
        """Send a prepared data message to ``account`` (not stored in our history)."""
        if not data.timestamp:
            data.timestamp = self._timestamp()
        return await self._send_data(await self.conversation_for(account), data)

    async def _send_data(self, conversation: str, data: DataMessage,
                         record: Callable[[], None] | None = None) -> int:
        """Send to the conversation's members and a sync copy to our other devices;
        ``record`` runs in the first encryption's transaction."""
        if conversation.startswith("group:"):
            await self._send_group_data(self._member_group(bytes.fromhex(conversation[6:])),
                                        data)
            destination = ""
        else:
            await self._deliver(conversation, Content(data=data), data.timestamp,
                                record=record)
            destination = conversation
        sync = Content(sync=SyncMessage(sent=SyncMessage.Sent(destination=destination,
                                                              message=data)))
        await self._deliver(self.account_id, sync, data.timestamp)
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
        await self._send_data(conv, data)

    async def edit(self, conversation: str | bytes, timestamp: int, text: str) -> None:
        """Replace the text of one of our messages on every device of both sides."""
        conv = await self.conversation_for(conversation)
        data = self._new_data(conv, text=text,
                              edit=MessageRef(author=self.account_id, timestamp=timestamp))
        with self.store.transaction():
            if not self.store.replace_body(self.account_id, timestamp, data.SerializeToString()):
                raise ClientError("no message of ours with that timestamp")
        await self._send_data(conv, data)

    async def delete_for_everyone(self, conversation: str | bytes, timestamp: int) -> None:
        """Delete one of our messages on every device of both sides."""
        conv = await self.conversation_for(conversation)
        with self.store.transaction():
            self.store.delete_message(self.account_id, timestamp)
        data = self._new_data(conv, delete=MessageRef(author=self.account_id,
                                                      timestamp=timestamp))
        await self._send_data(conv, data)
        self.store.checkpoint()

    async def set_expire_timer(self, conversation: str | bytes, seconds: int) -> None:
        """Turn disappearing messages on (seconds after reading) or off (0)."""
        if not 0 <= seconds <= 0xFFFFFFFF:
            raise ClientError("the timer is 0 (off) or a number of seconds")
        conv = await self.conversation_for(conversation)
        version = self.store.conversation_timer(conv)[1] + 1
        with self.store.transaction():
            self.store.set_conversation_timer(conv, seconds, version)
        data = self._new_data(conv, expire_timer_update=True)
        await self._send_data(conv, data)

    async def send_typing(self, recipient: str, started: bool = True) -> None:
        """A typing indicator to a person (none when the user turned them off)."""
        if not self.options.typing_indicators:
            return
        account = await self.conversation_for(recipient)
        if account.startswith("group:"):
            return  # group typing indicators are not sent yet
        typing = TypingMessage(timestamp=self._timestamp(),
                               action=TypingMessage.ACTION_STARTED if started
                               else TypingMessage.ACTION_STOPPED)
        await self._deliver(account, Content(typing=typing), typing.timestamp)

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
        await self._deliver(self.account_id, Content(sync=SyncMessage(read=read)),
                            self._timestamp())
        if not self.options.read_receipts:
            return
        by_author: dict[str, list[int]] = {}
        for author, timestamp in refs:
            if author != self.account_id:
                by_author.setdefault(author, []).append(timestamp)
        for author, timestamps in sorted(by_author.items()):
            receipt = ReceiptMessage(type=ReceiptMessage.TYPE_READ, timestamps=timestamps)
            await self._deliver(author, Content(receipt=receipt), self._timestamp())
        del conv

    def expire_messages(self) -> list[ev.Event]:
        """Delete the messages whose disappearing timer ran out (and erase them)."""
        with self.store.transaction():
            gone = self.store.expire(self._now())
        if gone:
            self.store.checkpoint()
        return [ev.MessageDeleted(c, a, t) for c, a, t in gone]

    # -- attachments ----------------------------------------------------------------------

    async def upload_attachment(self, data: bytes, *, file_name: str = "",
                                content_type: str = "application/octet-stream",
                                caption: str = "",
                                progress: Callable[[int, int], None] | None = None,
                                ) -> AttachmentPointer:
        """Encrypt and upload a file; the pointer to put in a message."""
        encrypted = attachments.encrypt(data)
        attachment_id = await self.api.upload_attachment(encrypted.blob, progress)
        return AttachmentPointer(id=attachment_id, key=encrypted.key, digest=encrypted.digest,
                                 size=encrypted.size, content_type=content_type,
                                 file_name=file_name, caption=caption)

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

    async def _deliver(self, account: str, content: Content, timestamp: int,
                       only_device: int | None = None,
                       record: Callable[[], None] | None = None) -> list[int]:
        """Encrypt ``content`` for every device of ``account`` (our own account: every
        other device) and send; act on 409/410 and retry (spec §5). With ``only_device``
        the other devices get a NullMessage (the relay takes only whole device lists).
        Returns the devices it was delivered to."""
        plaintext = codec.encode(content)
        filler = codec.encode(Content(null_message=NullMessage()))
        for _attempt in range(MAX_SEND_ATTEMPTS):
            devices = await self._devices_for(account)
            if not devices or (only_device is not None and only_device not in devices):
                if record is not None:
                    with self.store.transaction():
                        record()
                return []
            with self.store.transaction():
                if record is not None:
                    record()
                    record = None
                messages = [self._encrypt_for(ProtocolAddress(account, d),
                                              plaintext if only_device in (None, d) else filler)
                            for d in devices]
            try:
                await self._send_request(account, timestamp, messages)
                return devices
            except RelayError as exc:
                if not await self._repair_device_list(account, exc):
                    raise
        raise ClientError(f"the device list of {account} kept changing; try again")

    async def _send_request(self, account: str, timestamp: int,
                            messages: list[dict[str, Any]]) -> None:
        """Over the open WebSocket when there is one (cheaper for the relay), else HTTP."""
        socket = self._socket
        if socket is not None and socket.open:
            try:
                await socket.send(account, timestamp, messages)
                return
            except SocketLost:
                pass  # the same ciphertexts again over HTTP: a repeat is dropped as duplicate
        await self.api.send(account, timestamp, messages)

    async def _repair_device_list(self, account: str, exc: RelayError) -> bool:
        """Act on a 409 (missing/extra devices) or 410 (stale devices); False for any
        other error. Returns True when the device list shrank or changed keys too."""
        if exc.status == 409:
            for device in exc.body.get("extra_devices", []):
                self.store.delete_session(ProtocolAddress(account, int(device)))
            for device in exc.body.get("missing_devices", []):
                if not (account == self.account_id and device == self.device_id):
                    await self._start_session(account, int(device))
            return True
        if exc.status == 410:
            for device in exc.body.get("stale_devices", []):
                self.store.delete_session(ProtocolAddress(account, int(device)))
                await self._start_session(account, int(device))
            return True
        return False

    async def _devices_for(self, account: str) -> list[int]:
        """The devices to encrypt for, starting sessions where none exists."""
        devices = self.store.session_devices(account)
        if account == self.account_id:
            if not devices and self.store.get_meta("own_devices_checked") is None:
                devices = [d["device_id"] for d in await self.api.devices()]
                self.store.set_meta("own_devices_checked", "1")
            devices = [d for d in devices if d != self.device_id]
        elif not devices:
            await self._start_sessions(await self.api.bundles(account), account)
            devices = self.store.session_devices(account)
        for device in devices:
            if not has_session(self.store, ProtocolAddress(account, device), self._now() // 1000):
                await self._start_session(account, device)
        return [d for d in self.store.session_devices(account)
                if account != self.account_id or d != self.device_id]

    async def _start_session(self, account: str, device: int) -> None:
        try:
            bundles = await self.api.bundles(account, device)
        except RelayError as exc:
            if exc.status == 404:  # the device is gone; a 409 will say so
                self.store.delete_session(ProtocolAddress(account, device))
                return
            raise
        await self._start_sessions(bundles, account)

    async def _start_sessions(self, bundles: Iterable[PreKeyBundle], account: str) -> None:
        for bundle in bundles:
            address = ProtocolAddress(account, bundle.device_id)
            with self.store.transaction():
                try:
                    process_prekey_bundle(self.store, address, bundle, rng=os.urandom,
                                          now=self._now() // 1000)
                except UntrustedIdentity:
                    changed = self.store.save_identity(address, bundle.identity_key)
                    record = self.store.identity_record(account)
                    if changed and record is not None and not record.send_blocked:
                        process_prekey_bundle(self.store, address, bundle, rng=os.urandom,
                                              now=self._now() // 1000)
                        continue
                    raise IdentityNotTrusted(account) from None

    def _encrypt_for(self, address: ProtocolAddress, plaintext: bytes) -> dict[str, Any]:
        try:
            message = encrypt(self.store, address, plaintext, now=self._now() // 1000)
        except UntrustedIdentity:
            raise IdentityNotTrusted(address.name) from None
        return {"device_id": address.device_id,
                "registration_id": self._registration_id(address),
                "type": message.message_type,
                "content": _b64(message.serialized)}

    async def announce_device(self, name: str) -> None:
        """Tell our other devices that this device joined (spec §8)."""
        content = Content(sync=SyncMessage(device_added=SyncMessage.DeviceAdded(
            device_id=self.device_id, name=name)))
        await self._deliver(self.account_id, content, self._timestamp())

    # -- groups ---------------------------------------------------------------------------

    def group(self, group_id: bytes) -> Group | None:
        """The group state this device holds, if any."""
        data = self.store.get_group(group_id)
        return None if data is None else Group.from_bytes(data)

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
                          title: str | None = None) -> Group:
        state = encode_state(group.id, group.revision + 1,
                             group.title if title is None else title,
                             dict(group.members) if roles is None else roles,
                             expire_timer=group.expire_timer,
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
            self._save_group(current, new)
        data = DataMessage(timestamp=timestamp, group_change=signed,
                           group=GroupContext(id=new.id, revision=new.revision))
        everyone = set(new.members) | set(current.members if current else ())
        for account in sorted(everyone - {self.account_id}):
            await self._deliver(account, Content(data=data), timestamp)
        await self._deliver(self.account_id, Content(sync=SyncMessage(
            sent=SyncMessage.Sent(message=data))), timestamp)
        return new

    async def send_group_text(self, group_id: bytes, text: str, *,
                              attachments: Iterable[AttachmentPointer] = ()) -> int:
        """Send a text to a group (see :meth:`send_text`)."""
        return await self.send_text(group_id, text, attachments=attachments)

    async def _send_group_data(self, group: Group, data: DataMessage) -> None:
        """One sender-key ciphertext for every member device (our sender key distributed
        first where missing)."""
        plaintext = codec.encode(Content(data=data))
        for _attempt in range(MAX_SEND_ATTEMPTS):
            distribution = await self._distribute_sender_key(group)
            with self.store.transaction():
                ciphertext = group_encrypt(self.store, self.address, distribution, plaintext,
                                           rng=os.urandom)
            if await self._send_to_members(group, ciphertext, data.timestamp):
                return
        raise ClientError("the group's device lists kept changing; try again")

    async def _distribute_sender_key(self, group: Group) -> uuid.UUID:
        """Our current sending chain for the group (a new one after a rotation), its
        distribution message sent to every member device that lacks it."""
        distribution, rotate = self.store.group_distribution(group.id)
        if distribution is None or rotate:
            distribution = uuid.uuid4()
            with self.store.transaction():
                self.store.set_group_distribution(group.id, distribution)
        with self.store.transaction():
            skdm = create_distribution_message(self.store, self.address, distribution,
                                               rng=os.urandom)
        content = Content(sender_key_distribution=skdm.serialized, sender_key_group=group.id)
        for account in sorted(set(group.members) - {self.account_id}):
            devices = await self._devices_for(account)
            if set(devices) - self.store.key_sent_devices(group.id, distribution, account):
                reached = await self._deliver(account, content, self._timestamp())
                with self.store.transaction():
                    self.store.mark_key_sent(group.id, distribution, account, reached)
        return distribution

    async def _send_to_members(self, group: Group, ciphertext: bytes, timestamp: int) -> bool:
        """Queue the sender-key ciphertext for every device of every other member; False
        when a member's device list shrank or changed (then the chain must rotate)."""
        for account in sorted(set(group.members) - {self.account_id}):
            for _attempt in range(MAX_SEND_ATTEMPTS):
                messages = [{"device_id": d,
                             "registration_id": self._registration_id(ProtocolAddress(account, d)),
                             "type": SENDERKEY_TYPE, "content": _b64(ciphertext)}
                            for d in self.store.session_devices(account)]
                try:
                    await self._send_request(account, timestamp, messages)
                    break
                except RelayError as exc:
                    if not await self._repair_device_list(account, exc):
                        raise
                    if exc.status == 410 or exc.body.get("extra_devices"):
                        with self.store.transaction():
                            self.store.rotate_group_key(group.id)
                        return False
                    await self._distribute_sender_key(group)  # new devices need our key
            else:
                raise ClientError(f"the device list of {account} kept changing; try again")
        return True

    def _registration_id(self, address: ProtocolAddress) -> int:
        record = self.store.load_session(address)
        if record is None or record.current is None:
            return 0
        return record.current.remote_registration_id

    # -- receiving ------------------------------------------------------------------------

    async def receive(self) -> list[ev.Event]:
        """Fetch and process everything queued for this device over HTTP (the fallback
        for apps without a WebSocket); return the events, in order."""
        out: list[ev.Event] = self.expire_messages()
        while True:
            envelopes, more = await self.api.fetch()
            follow_ups: list[FollowUp] = []
            for envelope in envelopes:  # each one committed before the batch is acknowledged
                events, later = self._process(envelope)
                out.extend(events)
                follow_ups.extend(later)
            if envelopes:
                await self.api.ack([e.id for e in envelopes])
            out.extend(await self._follow_up(follow_ups))
            if not more or not envelopes:
                return out

    async def listen(self, *, reconnect: bool = True) -> AsyncIterator[ev.Event]:
        """Events as they arrive over the WebSocket; reconnects with back-off.

        Raises:
            DeviceRemoved: the account removed this device.
        """
        delay = 0.5
        while True:
            try:
                async with ws_connect(
                        _websocket_url(self.api.server), additional_headers=self.api.auth_header,
                        proxy=self.api.proxy or None, max_size=1 << 20,
                        compression=None) as ws:
                    socket = RelaySocket(ws)
                    self._socket = socket
                    delay = 0.5
                    try:
                        await self._maintain_quietly()
                        while True:
                            envelope = await socket.next_envelope()
                            events, follow_ups = self._process(envelope)
                            await socket.ack([envelope.id])
                            # Follow-ups (receipts, resend requests) before the events: an
                            # app that stops listening after an event must not lose them.
                            events += await self._follow_up(follow_ups)
                            events += self.expire_messages()
                            for event in events:
                                yield event
                    finally:
                        self._socket = None
                        await socket.close()
            except SocketLost:
                log.info("websocket ended")
            except websockets.ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                if code == 4401:
                    raise DeviceRemoved("this device was removed from its account") from None
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

    def _process(self, envelope: Envelope) -> tuple[list[ev.Event], list[FollowUp]]:
        """Decrypt and store one envelope in one transaction (nothing here awaits).
        Returns the events and the network work to do after it is acknowledged."""
        if self.store.envelope_seen(envelope.id):
            return [], []
        sender, device = envelope.sender_account_id, envelope.sender_device_id
        if sender is None or device is None or envelope.type not in (
                WHISPER_TYPE, PREKEY_TYPE, SENDERKEY_TYPE):
            with self.store.transaction():
                self.store.mark_envelope(envelope.id, self._now())
            return [ev.Unsupported(sender or "", device or 0,
                                   f"envelope type {envelope.type}")], []
        address = ProtocolAddress(sender, device)
        before = self.store.get_identity(address)
        try:
            with self.store.transaction():
                if envelope.type == SENDERKEY_TYPE:
                    plaintext = group_decrypt(self.store, address, envelope.content)
                else:
                    plaintext = decrypt(self.store, address, envelope.type, envelope.content,
                                        rng=os.urandom)
                events: list[ev.Event] = []
                after = self.store.identity_record(sender)
                if before is not None and after is not None and after.identity_key != before:
                    events.append(ev.IdentityChanged(sender, after.send_blocked))
                follow_ups: list[FollowUp] = []
                try:
                    content = codec.decode(plaintext)
                except codec.InvalidContent as exc:
                    events.append(ev.Unsupported(sender, device, f"invalid content: {exc}"))
                else:
                    self._handle(content, envelope, events, follow_ups,
                                 group_ciphertext=envelope.type == SENDERKEY_TYPE)
                self.store.mark_envelope(envelope.id, self._now())
            return events, follow_ups
        except DuplicatedMessage:
            with self.store.transaction():
                self.store.mark_envelope(envelope.id, self._now())
            return [], []
        except ProtocolError as exc:
            with self.store.transaction():
                self.store.mark_envelope(envelope.id, self._now())
            follow_ups = [FollowUp("decryption_error", sender, device,
                                   envelope.client_timestamp)]
            if exc.kind in ("invalid_prekey_id", "invalid_kyber_prekey_id"):
                # The relay served a key we do not hold: the directory disagrees with us.
                follow_ups.insert(0, FollowUp("republish", sender, device, 0))
            return ([ev.DecryptionFailed(sender, device, envelope.client_timestamp,
                                         exc.kind)], follow_ups)

    def _handle(self, content: Content, envelope: Envelope, events: list[ev.Event],
                follow_ups: list[FollowUp], *, group_ciphertext: bool) -> None:
        sender = envelope.sender_account_id or ""
        device = envelope.sender_device_id or 0
        own = sender == self.account_id
        body = content.WhichOneof("body")
        if content.sender_key_distribution and not group_ciphertext:
            try:
                process_distribution_message(self.store, ProtocolAddress(sender, device),
                                             content.sender_key_distribution)
            except ProtocolError as exc:
                events.append(ev.Unsupported(sender, device, f"bad sender key: {exc.kind}"))
            if body is None:
                return
        if group_ciphertext and (body != "data" or not content.data.HasField("group")):
            events.append(ev.Unsupported(sender, device, "a group ciphertext without a group"))
            return
        if body == "data":
            self._store_data(content.data, sender, device, sender, False, envelope, events)
            if self.options.delivery_receipts and not own:
                follow_ups.append(FollowUp("receipt", sender, None, content.data.timestamp))
        elif body == "sync" and own:
            sync = content.sync
            kind = sync.WhichOneof("body")
            if kind == "sent" and (sync.sent.destination or sync.sent.message.HasField("group")):
                self._store_data(sync.sent.message, self.account_id, device,
                                 sync.sent.destination, True, envelope, events)
            elif kind == "read":
                refs = tuple((m.author, m.timestamp) for m in sync.read.messages)
                for author, timestamp in refs:
                    self.store.start_expiry(author, timestamp, self._now())
                events.append(ev.MessagesRead(refs))
            elif kind == "device_added":
                events.append(ev.DeviceAdded(sync.device_added.device_id,
                                             sync.device_added.name))
        elif body == "receipt":
            read = content.receipt.type == ReceiptMessage.TYPE_READ
            if not read or self.options.read_receipts:
                events.append(ev.Receipt(sender, device, "read" if read else "delivery",
                                         tuple(content.receipt.timestamps)))
        elif body == "typing":
            if self.options.typing_indicators:
                events.append(ev.Typing(sender, device,
                                        content.typing.action == TypingMessage.ACTION_STARTED))
        elif body == "decryption_error":
            error = content.decryption_error
            follow_ups.append(FollowUp("resend", sender, device, error.timestamp))
        elif body == "null_message":
            pass
        else:
            events.append(ev.Unsupported(sender, device, f"unknown content body {body!r}"))

    def _store_data(self, data: DataMessage, author: str, author_device: int,
                    conversation: str, outgoing: bool, envelope: Envelope,
                    events: list[ev.Event]) -> None:
        if data.HasField("group"):
            if data.HasField("group_change"):
                self._apply_group_change(data.group_change, author, events)
                return
            group = self.group(data.group.id)
            if group is None or not group.is_member(author) \
                    or not group.is_member(self.account_id):
                events.append(ev.Unsupported(author, author_device,
                                             "a message for a group we do not share"))
                return
            conversation = group.conversation
        if data.HasField("delete"):
            target = data.delete
            if target.author == author and \
                    self.store.message_conversation(author, target.timestamp) == conversation \
                    and self.store.delete_message(author, target.timestamp):
                events.append(ev.MessageDeleted(conversation, author, target.timestamp))
            return
        if data.HasField("edit"):
            target = data.edit
            if target.author == author and \
                    self.store.message_conversation(author, target.timestamp) == conversation \
                    and self.store.replace_body(author, target.timestamp,
                                                data.SerializeToString()):
                events.append(ev.MessageEdited(conversation, author, target.timestamp,
                                               data.text))
            return
        if data.HasField("reaction"):
            r = data.reaction
            self.store.set_reaction(r.target.author, r.target.timestamp, author,
                                    None if r.remove else r.emoji)
            events.append(ev.Reaction(conversation, author, r.target.author,
                                      r.target.timestamp, r.emoji, r.remove))
            return
        timer, version = self.store.conversation_timer(conversation)
        if data.expire_timer_version > version:
            self.store.set_conversation_timer(conversation, data.expire_timer,
                                              data.expire_timer_version)
            if data.expire_timer != timer or data.expire_timer_update:
                events.append(ev.ExpireTimerChanged(conversation, author, data.expire_timer))
        if data.expire_timer_update:
            return
        expires_at = data.timestamp + data.expire_timer * 1000 \
            if outgoing and data.expire_timer else None
        stored = self.store.add_message(conversation=conversation, author=author,
                                        author_device=author_device, timestamp=data.timestamp,
                                        received_at=self._now(), outgoing=outgoing,
                                        body=data.SerializeToString(),
                                        expire_timer=data.expire_timer, expires_at=expires_at)
        if stored:  # a resend or a second copy of a known message is dropped (spec §4)
            events.append(ev.Message(
                conversation, author, author_device, data.timestamp, data.text, outgoing,
                envelope.id, tuple(_attachment(p) for p in data.attachments),
                (data.quote.author, data.quote.timestamp) if data.HasField("quote") else None,
                data.expire_timer))

    def _apply_group_change(self, signed: SignedGroupChange, sender: str,
                            events: list[ev.Event]) -> None:
        """Verify and apply a group change sent by ``sender`` (docs/spec/groups.md)."""
        try:
            author = change_author(signed)
            if author != sender:
                raise GroupChangeRejected("a change must come from its author")
            if author == self.account_id:
                key = self.store.get_identity_key_pair().public
            else:
                record = self.store.identity_record(author)
                if record is None:
                    raise GroupChangeRejected("the author's identity key is unknown")
                key = record.identity_key
            group_id = GroupChange.FromString(signed.change).group_id
            current = self.group(group_id)
            new = verify_change(signed, current, key)
        except GroupChangeRejected as exc:
            events.append(ev.GroupChangeRejected(sender, str(exc)))
            return
        self._save_group(current, new)
        events.append(ev.GroupUpdated(new.id, new.revision, new.title,
                                      tuple(sorted(new.members)), author,
                                      removed=not new.is_member(self.account_id)))

    def _save_group(self, current: Group | None, new: Group) -> None:
        self.store.save_group(new.id, new.state_bytes)
        if current is not None and set(current.members) - set(new.members):
            self.store.rotate_group_key(new.id)  # a removed member must not read on

    async def _follow_up(self, follow_ups: list[FollowUp]) -> list[ev.Event]:
        events: list[ev.Event] = []
        for item in follow_ups:
            try:
                events.extend(await self._run_follow_up(item))
            except (ClientError, RelayError, RelayUnavailable, ProtocolError) as exc:
                log.info("follow-up %s failed: %s", item.kind, type(exc).__name__)
        return events

    async def _run_follow_up(self, item: FollowUp) -> list[ev.Event]:
        if item.kind == "receipt":
            receipt = Content(receipt=ReceiptMessage(type=ReceiptMessage.TYPE_DELIVERY,
                                                     timestamps=[item.timestamp]))
            await self._deliver(item.account, receipt, self._timestamp())
        elif item.kind == "decryption_error" and item.device is not None:
            # A fresh session, so the request is a PreKey message the sender can read
            # whatever state its session with us is in (spec §6).
            address = ProtocolAddress(item.account, item.device)
            self.store.delete_session(address)
            error = Content(decryption_error=DecryptionErrorMessage(
                timestamp=item.timestamp, device_id=self.device_id,
                ratchet_key=item.ratchet_key))
            await self._deliver(item.account, error, self._timestamp(),
                                only_device=item.device)
        elif item.kind == "republish":
            await republish(self.api, self.store, self._now(), self.options.keys)
        elif item.kind == "resend" and item.device is not None:
            return await self._resend(item.account, item.device, item.timestamp)
        return []

    async def _resend(self, account: str, device: int, timestamp: int) -> list[ev.Event]:
        if account == self.account_id:
            return []  # copies to our own devices are not resent (their history syncs later)
        logged = self.store.find_sent(account, timestamp)
        if logged is None:
            found = self.store.find_sent_any(timestamp)
            group = self.group(bytes.fromhex(found[0].removeprefix("group:"))) \
                if found is not None and found[0].startswith("group:") else None
            if found is None or group is None or not group.is_member(account):
                return [ev.ResendUnavailable(account, device, timestamp)]
            logged = found[1]  # a group message goes again over the 1:1 session
        await self._deliver(account, Content.FromString(logged), timestamp, only_device=device)
        return []

    # -- history --------------------------------------------------------------------------

    def history(self, conversation: str, limit: int = 100) -> list[HistoryItem]:
        """The latest messages of a conversation in display order (expired ones are
        deleted first)."""
        self.expire_messages()
        return [HistoryItem.from_stored(m) for m in self.store.messages(conversation, limit)]


@dataclass(frozen=True)
class FollowUp:
    """Network work decided while processing an envelope, done after acknowledging it."""

    kind: str
    account: str
    device: int | None
    timestamp: int
    ratchet_key: bytes = b""


@dataclass(frozen=True)
class HistoryItem:
    author: str
    author_device: int
    timestamp: int
    text: str
    outgoing: bool

    @classmethod
    def from_stored(cls, m: StoredMessage) -> HistoryItem:
        data = DataMessage.FromString(m.body)
        return cls(m.author, m.author_device, m.timestamp, data.text, m.outgoing)


def _attachment(pointer: AttachmentPointer) -> ev.Attachment:
    return ev.Attachment(pointer.id, pointer.key, pointer.digest, pointer.size,
                         pointer.content_type, pointer.file_name, pointer.caption)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _is_account_id(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def _websocket_url(server: str) -> str:
    parts = urlsplit(server)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path + "/v1/websocket", "", ""))


__all__ = ["Client", "ClientError", "ClientOptions", "DeviceRemoved", "IdentityNotTrusted"]
