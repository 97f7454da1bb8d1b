"""Sending: encrypt for every device of an account, send over the socket or HTTP, and act
on the relay's 409/410 answers (docs/spec/README.md §5); group messages on sender keys
(docs/spec/groups.md). To a contact whose profile key we hold, the ciphertexts go sealed
(docs/spec/sealed-sender.md), falling back to an identified send of the same ciphertexts
when the relay refuses the sealed one (401: a stale access key, 403: a device that cannot
open sealed envelopes, 429: the recipient's sealed budget is spent) or no sender
certificate can be had.

Every encryption commits the advanced sessions before the request leaves, so a message key
is never used twice even when a request fails and is retried.
"""

from __future__ import annotations

import base64
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from cipherpost.protocol import (
    SENDERKEY_TYPE,
    PreKeyBundle,
    ProtocolAddress,
    UntrustedIdentity,
    encrypt,
    has_session,
    process_prekey_bundle,
)
from cipherpost.protocol.certificates import SenderCertificate
from cipherpost.protocol.sender_keys import (
    create_distribution_message,
    group_encrypt,
)

from . import content as codec
from . import sealed
from .api import (
    RelayApi,
    RelayError,
    RelayUnavailable,
    b64,
)
from .errors import ClientError, IdentityNotTrusted
from .groups import (
    Group,
)
from .options import ClientOptions
from .proto.app_pb2 import (
    Content,
    DataMessage,
    NullMessage,
)
from .socket import RelaySocket, SocketLost
from .store.database import Store

log = logging.getLogger(__name__)

#: After a 403 (a device that cannot open sealed envelopes), sends to that account stay
#: identified this long (seconds) before sealed is tried again.
IDENTIFIED_AFTER_REFUSAL = 3600.0
#: After a 429 on a sealed send, sends to that account stay identified this long (s).
IDENTIFIED_AFTER_LIMIT = 60.0


class Outbox:
    """One device's sending side."""

    def __init__(self, store: Store, api: RelayApi, account_id: str, device_id: int,
                 options: ClientOptions, timestamp: Callable[[], int]) -> None:
        self.store = store
        self.api = api
        self.account_id = account_id
        self.device_id = device_id
        self.options = options
        self._timestamp = timestamp
        #: The open WebSocket, while ``Client.listen`` runs.
        self.socket: RelaySocket | None = None
        #: Accounts whose sends stay identified until the given monotonic time.
        self._identified_until: dict[str, float] = {}
        #: Awaited after a sealed send was refused with 401 and went identified (the
        #: client checks that the relay still holds our own access key).
        self.after_sealed_refused: Callable[[], Awaitable[None]] | None = None

    def _now(self) -> int:
        return self.options.clock()

    @property
    def address(self) -> ProtocolAddress:
        return ProtocolAddress(self.account_id, self.device_id)

    async def deliver(self, account: str, content: Content, timestamp: int,
                       only_device: int | None = None,
                       record: Callable[[], None] | None = None,
                       registration_ids: dict[int, int] | None = None) -> list[int]:
        """Encrypt ``content`` for every device of ``account`` (our own account: every
        other device) and send; act on 409/410 and retry (spec §5). With ``only_device``
        the other devices get a NullMessage (the relay takes only whole device lists).
        ``registration_ids`` overrides what the sessions say (right after an identity
        reset, which gave every device of ours a new one). Returns the devices it was
        delivered to."""
        plaintext = codec.encode(content)
        filler = codec.encode(Content(null_message=NullMessage()))
        for _attempt in range(self.options.max_send_attempts):
            devices = await self.devices_for(account)
            if not devices or (only_device is not None and only_device not in devices):
                if record is not None:
                    with self.store.transaction():
                        record()
                return []
            try:
                with self.store.transaction():
                    if record is not None:
                        record()
                    messages = [self.encrypt_for(ProtocolAddress(account, d),
                                                  plaintext if only_device in (None, d)
                                                  else filler)
                                for d in devices]
            except _StaleSession as stale:
                # A session made under a key the contact has since replaced (and the user
                # accepted): start a new one from a fresh bundle.
                self.store.delete_session(stale.address)
                await self.start_session(account, stale.address.device_id)
                continue
            record = None
            for message in messages:
                if registration_ids and message["device_id"] in registration_ids:
                    message["registration_id"] = registration_ids[message["device_id"]]
            try:
                await self.send_to_account(account, timestamp, messages)
                return devices
            except RelayError as exc:
                if not await self.repair_device_list(account, exc):
                    raise
        raise ClientError(f"the device list of {account} kept changing; try again")

    async def send_to_account(self, account: str, timestamp: int,
                              messages: list[dict[str, Any]],
                              group_id: bytes | None = None) -> None:
        """Send ciphertexts for the devices of ``account``: sealed when we may (see the
        module comment), else, or when the relay refuses the sealed send, identified.

        Raises:
            RelayError: 409/410 (for the caller to repair), or any other refusal.
            RelayUnavailable: no answer.
        """
        access = await self._sealed_access(account)
        key_refused = False
        if access is not None:
            key, certificate = access
            try:
                sealed_messages = self._seal(account, certificate, messages, group_id)
                await self.api.send_sealed(account, key, sealed_messages)
                return
            except RelayError as exc:
                if exc.status == 401:
                    # The contact changed its profile key (or turned sealed sends off):
                    # identified until its next message shares the new one.
                    with self.store.relaxed_transaction():
                        sealed.forget_contact_profile_key(self.store, account)
                    key_refused = True
                elif exc.status == 403:
                    self._identified_until[account] = \
                        time.monotonic() + IDENTIFIED_AFTER_REFUSAL
                elif exc.status == 429:
                    # The recipient's sealed budget is spent, maybe by someone who holds
                    # its access key (any group co-member) to stop its mail: identified
                    # sends have budgets per sender, which no one else can spend. The
                    # relay learns the sender, as it could have by refusing with 401.
                    self._identified_until[account] = \
                        time.monotonic() + IDENTIFIED_AFTER_LIMIT
                else:
                    raise
                log.info("sealed send refused (%d): sending identified", exc.status)
        await self.send_request(account, timestamp, messages)
        if key_refused and self.after_sealed_refused is not None:
            await self.after_sealed_refused()

    async def _sealed_access(self, account: str) -> tuple[bytes, SenderCertificate] | None:
        """The contact's access key and our sender certificate, when this send may go
        sealed; None for an identified send."""
        if not self.options.sealed_sender or account == self.account_id:
            return None
        if self._identified_until.get(account, 0.0) > time.monotonic():
            return None
        profile_key = sealed.contact_profile_key(self.store, account)
        if profile_key is None:
            return None
        try:
            certificate = await sealed.sender_certificate(
                self.store, self._now(), self.api.sender_certificate,
                account=self.account_id, device=self.device_id)
        except (sealed.SealedError, RelayError, RelayUnavailable) as exc:
            log.info("no sender certificate (%s): sending identified", type(exc).__name__)
            return None
        return sealed.access_key(profile_key), certificate

    def _seal(self, account: str, certificate: SenderCertificate,
              messages: list[dict[str, Any]],
              group_id: bytes | None) -> list[dict[str, Any]]:
        """The identified ciphertexts, each sealed to the account's identity key."""
        identity = self.store.get_identity_key_pair()
        out = []
        for message in messages:
            recipient = self.store.get_identity(ProtocolAddress(account,
                                                                message["device_id"]))
            if recipient is None:
                raise ClientError(f"no identity key known for {account}")
            out.append({"device_id": message["device_id"],
                        "registration_id": message["registration_id"],
                        "content": b64(sealed.seal_message(
                            identity, recipient, certificate, message["type"],
                            base64.b64decode(message["content"]), group_id))})
        return out

    async def send_request(self, account: str, timestamp: int,
                            messages: list[dict[str, Any]]) -> None:
        """Over the open WebSocket when there is one (cheaper for the relay), else HTTP."""
        socket = self.socket
        if socket is not None and socket.open:
            try:
                await socket.send(account, timestamp, messages)
                return
            except SocketLost:
                pass  # the same ciphertexts again over HTTP: a repeat is dropped as duplicate
        await self.api.send(account, timestamp, messages)

    async def repair_device_list(self, account: str, exc: RelayError) -> bool:
        """Act on a 409 (missing/extra devices) or 410 (stale devices); False for any
        other error. Returns True when the device list shrank or changed keys too."""
        if exc.status == 409:
            extra = exc.body.get("extra_devices", [])
            for device in extra:
                self.store.delete_session(ProtocolAddress(account, int(device)))
            if extra:
                self.rotate_groups_with(account)
            for device in exc.body.get("missing_devices", []):
                if not (account == self.account_id and device == self.device_id):
                    await self.start_session(account, int(device))
            return True
        if exc.status == 410:
            for device in exc.body.get("stale_devices", []):
                self.store.delete_session(ProtocolAddress(account, int(device)))
                await self.start_session(account, int(device))
            self.rotate_groups_with(account)
            return True
        return False

    def rotate_groups_with(self, account: str) -> None:
        """A device of ``account`` went away or was replaced, whichever send found out:
        every group it shares with us starts a new chain before our next group message,
        so the old device cannot read on (docs/spec/groups.md)."""
        if account == self.account_id:
            return  # our own devices never hold our sending chains
        with self.store.transaction():
            for group_id in self.store.group_ids():
                state = self.store.get_group(group_id)
                if state is not None and Group.from_bytes(state).is_member(account):
                    self.store.rotate_group_key(group_id)

    async def devices_for(self, account: str) -> list[int]:
        """The devices to encrypt for, starting sessions where none exists."""
        devices = self.store.session_devices(account)
        if account == self.account_id:
            if not devices and self.store.get_meta("own_devices_checked") is None:
                devices = [d["device_id"] for d in await self.api.devices()]
                self.store.set_meta("own_devices_checked", "1")
            devices = [d for d in devices if d != self.device_id]
        elif not devices:
            await self.start_sessions(await self.api.bundles(account), account)
            devices = self.store.session_devices(account)
        for device in devices:
            if not has_session(self.store, ProtocolAddress(account, device), self._now() // 1000,
                               spqr=self.options.spqr):
                await self.start_session(account, device)
        return [d for d in self.store.session_devices(account)
                if account != self.account_id or d != self.device_id]

    async def start_session(self, account: str, device: int) -> None:
        try:
            bundles = await self.api.bundles(account, device)
        except RelayError as exc:
            if exc.status == 404:  # the device is gone; a 409 will say so
                self.store.delete_session(ProtocolAddress(account, device))
                return
            raise
        await self.start_sessions(bundles, account)

    async def start_sessions(self, bundles: Iterable[PreKeyBundle], account: str) -> None:
        """Sessions from fetched bundles. A bundle with another identity key than the one
        we know records the change (so the safety number shows it) and, unless the policy
        accepts changes, stops here.

        Raises:
            IdentityNotTrusted: the contact's key changed and the user has not accepted it.
        """
        for bundle in bundles:
            address = ProtocolAddress(account, bundle.device_id)
            blocked = False
            with self.store.transaction():
                try:
                    process_prekey_bundle(self.store, address, bundle, rng=os.urandom,
                                          now=self._now() // 1000, spqr=self.options.spqr)
                except UntrustedIdentity:
                    self.store.save_identity(address, bundle.identity_key)
                    record = self.store.identity_record(account)
                    blocked = record is None or record.send_blocked
                    if not blocked:
                        process_prekey_bundle(self.store, address, bundle, rng=os.urandom,
                                              now=self._now() // 1000,
                                              spqr=self.options.spqr)
            if blocked:
                raise IdentityNotTrusted(account)

    def encrypt_for(self, address: ProtocolAddress, plaintext: bytes) -> dict[str, Any]:
        try:
            # Our address goes under the MAC of PreKey messages (field 6), as libsignal
            # 0.91+ sends it, so a message cannot be replayed as from or to another device.
            message = encrypt(self.store, address, plaintext, now=self._now() // 1000,
                              rng=os.urandom, local_address=self.address)
        except UntrustedIdentity:
            record = self.store.identity_record(address.name)
            if record is not None and not record.send_blocked:
                raise _StaleSession(address) from None
            raise IdentityNotTrusted(address.name) from None
        return {"device_id": address.device_id,
                "registration_id": self.registration_id(address),
                "type": message.message_type,
                "content": b64(message.serialized)}

    async def send_group_data(self, group: Group, data: DataMessage) -> None:
        """A data message to the group (see :meth:`send_group_content`)."""
        await self.send_group_content(group, Content(data=data), data.timestamp)

    async def send_group_content(self, group: Group, content: Content, timestamp: int) -> None:
        """One sender-key ciphertext for every member device (our sender key distributed
        first where missing)."""
        plaintext = codec.encode(content)
        for _attempt in range(self.options.max_send_attempts):
            distribution = await self.distribute_sender_key(group)
            with self.store.transaction():
                ciphertext = group_encrypt(self.store, self.address, distribution, plaintext,
                                           rng=os.urandom)
            if await self.send_to_members(group, ciphertext, timestamp):
                return
        raise ClientError("the group's device lists kept changing; try again")

    async def distribute_sender_key(self, group: Group) -> uuid.UUID:
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
            devices = await self.devices_for(account)
            if set(devices) - self.store.key_sent_devices(group.id, distribution, account):
                reached = await self.deliver(account, content, self._timestamp())
                with self.store.transaction():
                    self.store.mark_key_sent(group.id, distribution, account, reached)
        return distribution

    async def send_to_members(self, group: Group, ciphertext: bytes, timestamp: int) -> bool:
        """Queue the sender-key ciphertext for every device of every other member; False
        when a member's device list changed (then the chain rotates and the caller
        encrypts again: docs/spec/groups.md)."""
        for account in sorted(set(group.members) - {self.account_id}):
            messages = [{"device_id": d,
                         "registration_id": self.registration_id(ProtocolAddress(account, d)),
                         "type": SENDERKEY_TYPE, "content": b64(ciphertext)}
                        for d in self.store.session_devices(account)]
            try:
                await self.send_to_account(account, timestamp, messages, group.id)
            except RelayError as exc:
                if not await self.repair_device_list(account, exc):
                    raise
                with self.store.transaction():
                    self.store.rotate_group_key(group.id)
                return False
        return True

    def registration_id(self, address: ProtocolAddress) -> int:
        record = self.store.load_session(address)
        if record is None or record.current is None:
            return 0
        return record.current.remote_registration_id


class _StaleSession(Exception):
    """A session whose remote identity is no longer the (accepted) key of its account."""

    def __init__(self, address: ProtocolAddress) -> None:
        super().__init__(str(address))
        self.address = address
