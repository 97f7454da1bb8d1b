"""Receiving, sans-I/O: one envelope in, the events for the app and the network work to
do afterwards (receipts, resend requests) out, with everything it carried stored.

The caller runs :meth:`Inbox.process` and acknowledges the envelope only after it returns:
the processing (decrypt, store, remember the envelope id) is one store transaction, so a
crash leaves either nothing done (the relay redelivers) or everything (the redelivered
envelope is recognised and dropped).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
from dataclasses import dataclass

from cipherpost.protocol import (
    PREKEY_TYPE,
    SENDERKEY_TYPE,
    WHISPER_TYPE,
    DuplicatedMessage,
    IdentityKeyPair,
    ProtocolAddress,
    ProtocolError,
    decrypt,
)
from cipherpost.protocol.messages import SenderKeyDistributionMessage, SenderKeyMessage
from cipherpost.protocol.sender_keys import (
    group_decrypt,
    process_distribution_message,
)

from . import content as codec
from . import events as ev
from . import history, notices, sealed
from .api import (
    Envelope,
)
from .groups import (
    GROUP_ID_BYTES,
    Group,
    GroupChangeRejected,
    change_author,
    verify_change,
)
from .history import Recorder
from .options import ClientOptions
from .proto.app_pb2 import (
    AttachmentPointer,
    Content,
    DataMessage,
    GroupChange,
    HistoryKeys,
    ReceiptMessage,
    SignedGroupChange,
    SyncMessage,
    TypingMessage,
)
from .store.database import Store


@dataclass(frozen=True)
class FollowUp:
    """Network work decided while processing an envelope, done after acknowledging it."""

    kind: str
    account: str
    device: int | None
    timestamp: int
    ratchet_key: bytes = b""

    def encode(self) -> bytes:
        return json.dumps({"kind": self.kind, "account": self.account, "device": self.device,
                           "timestamp": self.timestamp,
                           "ratchet_key": self.ratchet_key.hex()}).encode()

    @classmethod
    def decode(cls, data: bytes) -> FollowUp:
        value = json.loads(data)
        return cls(str(value["kind"]), str(value["account"]), value["device"],
                   int(value["timestamp"]), bytes.fromhex(value["ratchet_key"]))


log = logging.getLogger(__name__)


class Inbox:
    """One device's receiving side."""

    def __init__(self, store: Store, account_id: str, device_id: int,
                 options: ClientOptions) -> None:
        self.store = store
        self.account_id = account_id
        self.device_id = device_id
        self.options = options
        self.history = Recorder(store, options.clock)

    def _now(self) -> int:
        return self.options.clock()

    @property
    def _local_address(self) -> ProtocolAddress:
        """This device, checked against the addresses a PreKey message carries (field 6,
        libsignal 0.91+)."""
        return ProtocolAddress(self.account_id, self.device_id)

    def process(self, envelope: Envelope) -> tuple[list[ev.Event], list[FollowUp]]:
        """Decrypt and store one envelope in one transaction (nothing here awaits).
        Returns the events and the network work to do after it is acknowledged."""
        if self.store.envelope_seen(envelope.id):
            return [], []
        if envelope.type == notices.NOTICE_TYPE and envelope.sender_account_id is None:
            with self.store.transaction():
                self.store.mark_envelope(envelope.id, self._now())
            return [notices.parse(envelope.content)], []
        if envelope.type == sealed.SEALED_TYPE:
            opened = self._open_sealed(envelope)
            if isinstance(opened, ev.SealedRejected):
                with self.store.transaction():
                    self.store.mark_envelope(envelope.id, self._now())
                return [opened], []
            envelope = opened
        sender, device = envelope.sender_account_id, envelope.sender_device_id
        if sender is None or device is None or envelope.type not in (
                WHISPER_TYPE, PREKEY_TYPE, SENDERKEY_TYPE):
            with self.store.transaction():
                self.store.mark_envelope(envelope.id, self._now())
            return [ev.Unsupported(sender or "", device or 0,
                                   f"envelope type {envelope.type}")], []
        try:
            address = ProtocolAddress(sender, device)
        except ValueError:  # Envelope.from_json checks the relay's; one built otherwise may not
            with self.store.transaction():
                self.store.mark_envelope(envelope.id, self._now())
            return [ev.Unsupported(sender, 0, "an envelope from no valid address")], []
        before = self.store.get_identity(address)
        try:
            with self.store.transaction():
                if envelope.type == SENDERKEY_TYPE:
                    plaintext = group_decrypt(self.store, address, envelope.content)
                else:
                    plaintext = decrypt(self.store, address, envelope.type, envelope.content,
                                        rng=os.urandom, spqr=self.options.spqr,
                                        local_address=self._local_address)
                events: list[ev.Event] = []
                after = self.store.identity_record(sender)
                if before is not None and after is not None and after.identity_key != before:
                    events.append(ev.IdentityChanged(sender, after.send_blocked))
                follow_ups: list[FollowUp] = []
                events.extend(self._handle_plaintext(plaintext, envelope, follow_ups))
                self._finish(envelope, follow_ups)
            return events, follow_ups
        except DuplicatedMessage:
            with self.store.transaction():
                self.store.mark_envelope(envelope.id, self._now())
            return [], []
        except ProtocolError as exc:
            follow_ups = [FollowUp("decryption_error", sender, device,
                                   envelope.client_timestamp)]
            if exc.kind in ("invalid_prekey_id", "invalid_kyber_prekey_id"):
                # The relay served a key we do not hold: the directory disagrees with us.
                follow_ups.insert(0, FollowUp("republish", sender, device, 0))
            with self.store.transaction():
                self._finish(envelope, follow_ups)
            return ([ev.DecryptionFailed(sender, device, envelope.client_timestamp,
                                         exc.kind)], follow_ups)

    def _open_sealed(self, envelope: Envelope) -> Envelope | ev.SealedRejected:
        """A sealed envelope as the identified one it wraps (sender from its validated
        certificate), or why it was refused. Nothing is stored here: the unwrapped
        envelope goes through the same all-or-nothing path as any other."""
        try:
            opened = sealed.open_envelope(self.store, envelope.content, now_ms=self._now(),
                                          local_account=self.account_id,
                                          local_device=self.device_id)
            ProtocolAddress(opened.sender, opened.device)  # a usable address
        except sealed.SealedError as exc:
            log.info("a sealed envelope was refused: %s", exc.kind)
            return ev.SealedRejected(exc.kind, str(exc))
        except ValueError:
            return ev.SealedRejected("invalid_certificate",
                                     "the certificate names no usable sender")
        if opened.message_type not in (WHISPER_TYPE, PREKEY_TYPE, SENDERKEY_TYPE):
            return ev.SealedRejected("invalid_message",
                                     f"sealed content of type {opened.message_type}")
        return dataclasses.replace(envelope, sender_account_id=opened.sender,
                                   sender_device_id=opened.device, type=opened.message_type,
                                   content=opened.contents)

    def _finish(self, envelope: Envelope, follow_ups: list[FollowUp]) -> None:
        """In the envelope's transaction: remember it, and keep the network work it
        calls for, so that work survives a failed acknowledgement or a crash (the
        redelivered envelope is dropped as seen)."""
        now = self._now()
        self.store.mark_envelope(envelope.id, now)
        for item in follow_ups:
            self.store.add_follow_up(item.encode(), now)

    def _handle_plaintext(self, plaintext: bytes, envelope: Envelope,
                          follow_ups: list[FollowUp]) -> list[ev.Event]:
        """Decode and act on a decrypted plaintext. Whatever goes wrong here, the session
        keeps the decryption and the envelope is acknowledged: a content we cannot handle
        (even through a bug of ours) is reported, never left to jam the queue. Only a store
        that cannot write (disk full, locked) propagates, and the envelope stays queued."""
        sender = envelope.sender_account_id or ""
        device = envelope.sender_device_id or 0
        try:
            content = codec.decode(plaintext)
        except codec.InvalidContent as exc:
            return [ev.Unsupported(sender, device, f"invalid content: {exc}")]
        events: list[ev.Event] = []
        found: list[FollowUp] = []
        try:
            with self.store.savepoint():
                self.handle(content, envelope, events, found,
                            group_ciphertext=envelope.type == SENDERKEY_TYPE)
        except sqlite3.OperationalError:
            raise
        except Exception as exc:  # see the docstring
            log.warning("could not process a message from %s.%d: %s", sender, device,
                        type(exc).__name__)
            return [ev.Unsupported(sender, device,
                                   f"could not process the message ({type(exc).__name__})")]
        follow_ups.extend(found)
        return events

    def handle(self, content: Content, envelope: Envelope, events: list[ev.Event],
                follow_ups: list[FollowUp], *, group_ciphertext: bool) -> None:
        sender = envelope.sender_account_id or ""
        device = envelope.sender_device_id or 0
        own = sender == self.account_id
        body = content.WhichOneof("body")
        if content.sender_key_distribution and not group_ciphertext:
            self._take_sender_key(content, sender, device, events)
            if body is None:
                return
        if group_ciphertext:
            named = content.data.group.id if body == "data" and content.data.HasField(
                "group") else content.typing.group_id if body == "typing" else b""
            if not named:
                events.append(ev.Unsupported(sender, device,
                                             "a group ciphertext without a group"))
                return
            bound = self.store.sender_key_group(
                ProtocolAddress(sender, device),
                SenderKeyMessage.parse(envelope.content).distribution_id)
            if bound != named:
                events.append(ev.Unsupported(sender, device,
                                             "a group ciphertext under another group's key"))
                return
        if body == "data":
            if content.data.profile_key and not own:
                sealed.set_contact_profile_key(self.store, sender, content.data.profile_key)
            self.store_data(content.data, sender, device, sender, False, envelope, events)
            if self.options.delivery_receipts and not own:
                follow_ups.append(FollowUp("receipt", sender, None, content.data.timestamp))
        elif body == "sync" and own:
            sync = content.sync
            kind = sync.WhichOneof("body")
            if kind == "sent" and sync.sent.message.profile_key and device < self.device_id:
                # The account's profile key as a lower device holds it: all converge on
                # the first device's (docs/spec/sealed-sender.md).
                sealed.adopt_own_profile_key(self.store, sync.sent.message.profile_key)
            if kind == "sent" and (sync.sent.destination or sync.sent.message.HasField("group")):
                self.store_data(sync.sent.message, self.account_id, device,
                                 sync.sent.destination, True, envelope, events)
            elif kind == "read":
                refs = tuple((m.author, m.timestamp) for m in sync.read.messages)
                for author, timestamp in refs:
                    self.store.start_expiry(author, timestamp, self._now())
                events.append(ev.MessagesRead(refs))
            elif kind == "device_added":
                events.append(ev.DeviceAdded(sync.device_added.device_id,
                                             sync.device_added.name))
            elif kind == "identity_reset":
                self._apply_identity_reset(sync.identity_reset, events, follow_ups)
            elif kind == "history_keys":
                self._apply_history_keys(sync.history_keys, events)
        elif body == "receipt":
            read = content.receipt.type == ReceiptMessage.TYPE_READ
            if not read or self.options.read_receipts:
                events.append(ev.Receipt(sender, device, "read" if read else "delivery",
                                         tuple(content.receipt.timestamps)))
        elif body == "typing":
            group_id = content.typing.group_id or None
            if group_id is not None:
                group = self.group(group_id)
                if group is None or not group.is_member(sender) \
                        or not group.is_member(self.account_id):
                    return
            if self.options.typing_indicators:
                events.append(ev.Typing(sender, device,
                                        content.typing.action == TypingMessage.ACTION_STARTED,
                                        group_id))
        elif body == "decryption_error":
            error = content.decryption_error
            follow_ups.append(FollowUp("resend", sender, device, error.timestamp))
        elif body == "null_message":
            pass
        else:
            events.append(ev.Unsupported(sender, device, f"unknown content body {body!r}"))

    def _take_sender_key(self, content: Content, sender: str, device: int,
                         events: list[ev.Event]) -> None:
        """A member's sender key, tied to the group it names (docs/spec/groups.md) for
        good. The group may not be known yet (its change can arrive after another member's
        key); membership is checked for each message."""
        if len(content.sender_key_group) != GROUP_ID_BYTES:
            events.append(ev.Unsupported(sender, device, "a sender key without its group"))
            return
        address = ProtocolAddress(sender, device)
        try:
            distribution = SenderKeyDistributionMessage.parse(content.sender_key_distribution)
            if not self.store.bind_sender_key(address, distribution.distribution_id,
                                              content.sender_key_group):
                events.append(ev.Unsupported(sender, device,
                                             "a sender key already used for another group"))
                return
            process_distribution_message(self.store, address,
                                         content.sender_key_distribution)
        except ProtocolError as exc:
            events.append(ev.Unsupported(sender, device, f"bad sender key: {exc.kind}"))

    def store_data(self, data: DataMessage, author: str, author_device: int,
                    conversation: str, outgoing: bool, envelope: Envelope,
                    events: list[ev.Event]) -> None:
        if data.HasField("group"):
            if data.HasField("group_change"):
                self.apply_group_change(data.group_change, author, events)
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
                self.history.deleted(conversation, author, target.timestamp)
                events.append(ev.MessageDeleted(conversation, author, target.timestamp))
            return
        if data.HasField("edit"):
            target = data.edit
            if target.author == author and \
                    self.store.message_conversation(author, target.timestamp) == conversation \
                    and self.store.replace_body(author, target.timestamp,
                                                data.SerializeToString()):
                if author == self.account_id:  # ours, edited on another of our devices
                    revise_sent_text(self.store, conversation, target.timestamp, data.text)
                self.history.change(conversation, author, author_device, data)
                events.append(ev.MessageEdited(conversation, author, target.timestamp,
                                               data.text))
            return
        if data.HasField("reaction"):
            r = data.reaction
            if self.store.message_conversation(r.target.author, r.target.timestamp) \
                    != conversation:
                events.append(ev.Unsupported(author, author_device,
                                             "a reaction to a message not in its conversation"))
                return
            self.store.set_reaction(r.target.author, r.target.timestamp, author,
                                    None if r.remove else r.emoji)
            self.history.change(conversation, author, author_device, data)
            events.append(ev.Reaction(conversation, author, r.target.author,
                                      r.target.timestamp, r.emoji, r.remove))
            return
        timer, version = self.store.conversation_timer(conversation)
        if data.HasField("group"):
            pass  # a group's timer is part of its signed state (docs/spec/groups.md)
        elif data.expire_timer_version > version:
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
            self.history.message(conversation, author, author_device, self._now(), outgoing,
                                 data)
            events.append(ev.Message(
                conversation, author, author_device, data.timestamp, data.text, outgoing,
                envelope.id, tuple(_attachment(p) for p in data.attachments),
                (data.quote.author, data.quote.timestamp) if data.HasField("quote") else None,
                data.expire_timer))

    def apply_group_change(self, signed: SignedGroupChange, sender: str,
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
            if current is None and not new.is_member(self.account_id):
                # Storing it would make the real group's changes fail to chain.
                raise GroupChangeRejected("a group we are not a member of")
        except GroupChangeRejected as exc:
            events.append(ev.GroupChangeRejected(sender, str(exc)))
            return
        timer_changed = self.save_group(current, new)
        events.append(ev.GroupUpdated(new.id, new.revision, new.title,
                                      tuple(sorted(new.members)), author,
                                      removed=not new.is_member(self.account_id)))
        if timer_changed:
            events.append(ev.ExpireTimerChanged(new.conversation, author, new.expire_timer))

    def _apply_identity_reset(self, reset: SyncMessage.IdentityReset, events: list[ev.Event],
                              follow_ups: list[FollowUp]) -> None:
        """Another of our devices reset the account's identity (the relay already holds the
        new public key): adopt the new key pair, start new sessions with contacts, and
        publish new prekeys (a follow-up)."""
        try:
            identity = IdentityKeyPair.deserialize(reset.identity_key_pair)
        except ProtocolError:
            events.append(ev.Unsupported(self.account_id, 0, "a malformed identity reset"))
            return
        if not 1 <= reset.registration_id <= 16380:
            events.append(ev.Unsupported(self.account_id, 0, "a malformed identity reset"))
            return
        self.store.set_identity(identity, reset.registration_id)
        self.store.trust_identity(self.account_id, identity.public, verified=True)
        self.store.forget_sessions()
        follow_ups.append(FollowUp("republish", self.account_id, None, 0))
        events.append(ev.IdentityChanged(self.account_id, send_blocked=False))

    def _apply_history_keys(self, message: HistoryKeys, events: list[ev.Event]) -> None:
        """Another of our devices started a history epoch, or turned server history on
        or off (docs/spec/history.md)."""
        if message.history_off:
            history.set_keys(self.store, None, on=False)
            events.append(ev.ServerHistoryChanged(enabled=False))
            return
        try:
            keys = history.Keys.from_proto(message)
            was_on = history.enabled(self.store)
            history.set_keys(self.store, keys, on=True)
        except history.HistoryError as exc:
            events.append(ev.Unsupported(self.account_id, 0, f"history keys: {exc}"))
            return
        if not was_on:
            events.append(ev.ServerHistoryChanged(enabled=True))

    def save_group(self, current: Group | None, new: Group) -> bool:
        """Store an accepted state; True when it changed the conversation's timer."""
        self.store.save_group(new.id, new.state_bytes)
        self.history.group(new)
        if current is not None and set(current.members) != set(new.members):
            # A removed member must not read on; any change of membership starts a new
            # chain (docs/spec/groups.md).
            self.store.rotate_group_key(new.id)
        timer, _version = self.store.conversation_timer(new.conversation)
        self.store.set_conversation_timer(new.conversation, new.expire_timer, new.revision)
        return timer != new.expire_timer

    def group(self, group_id: bytes) -> Group | None:
        """The group state this device holds, if any."""
        data = self.store.get_group(group_id)
        return None if data is None else Group.from_bytes(data)


def _attachment(pointer: AttachmentPointer) -> ev.Attachment:
    return ev.Attachment(pointer.id, pointer.key, pointer.digest, pointer.size,
                         pointer.content_type, pointer.file_name, pointer.caption)


def revise_sent_text(store: Store, conversation: str, timestamp: int, text: str) -> None:
    """After an edit of our message: a resend of it (to a contact that could not decrypt
    it, or after a session reset) sends the edited text, not the original, which would
    undo the edit on their side for good (review of 44ea519)."""
    kept = store.find_sent(conversation, timestamp)
    if kept is None:
        return
    content = Content.FromString(kept)
    if not content.HasField("data"):
        return
    content.data.text = text
    store.revise_sent(conversation, timestamp, content.SerializeToString())
