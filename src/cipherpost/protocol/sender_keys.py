"""Sender Keys for groups (digest §6).

A sender keeps one chain per distribution id and hands its chain key and public
signing key to each member in a :class:`SenderKeyDistributionMessage` (carried inside
1:1 messages by the application). Group messages are AES-256-CBC under keys from that
chain and signed with XEdDSA; the signature is checked before anything else.
As in :mod:`.session`, a rejected message changes no state.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from . import protobuf as pb
from . import xeddsa
from .address import ProtocolAddress
from .constants import (
    GROUP_INFO,
    MAX_FORWARD_JUMPS,
    MAX_MESSAGE_KEYS,
    MAX_SENDER_KEY_STATES,
    SENDER_KEY_VERSION,
)
from .errors import (
    DuplicatedMessage,
    InvalidMessage,
    InvalidSignature,
    NoSenderKey,
    ProtocolError,
)
from .keys import KeyPair, PrivateKey, PublicKey, Random
from .messages import SenderKeyDistributionMessage, SenderKeyMessage
from .ratchet import aes_cbc_decrypt, aes_cbc_encrypt, hkdf, message_key_seed, next_chain_key
from .stores import SenderKeyStore

RECORD_FORMAT = 1


def _group_keys(seed: bytes) -> tuple[bytes, bytes]:
    """``(cipher_key, iv)`` from a chain seed; the IV comes first in the HKDF output."""
    okm = hkdf(seed, None, GROUP_INFO, 48)
    return okm[16:48], okm[:16]


@dataclass(slots=True, repr=False)
class SenderKeyState:
    """One sender chain: its id, position, signing key, and skipped seeds."""

    chain_id: int
    iteration: int
    chain_key: bytes
    signing_key: PublicKey
    signing_private: PrivateKey | None = None
    skipped: dict[int, bytes] = field(default_factory=dict)
    version: int = SENDER_KEY_VERSION

    def __repr__(self) -> str:
        return f"SenderKeyState(chain_id={self.chain_id}, iteration={self.iteration}, <keys>)"


class SenderKeyRecord:
    """Up to five sender-key states for one (sender, distribution id), newest first."""

    __slots__ = ("states",)

    def __init__(self, states: list[SenderKeyState] | None = None) -> None:
        self.states: list[SenderKeyState] = states if states is not None else []

    def state_for_chain(self, chain_id: int) -> SenderKeyState | None:
        """The state with ``chain_id``, if held."""
        for state in self.states:
            if state.chain_id == chain_id:
                return state
        return None

    def add_state(self, state: SenderKeyState) -> None:
        """Add a state as libsignal does (digest §6.5)."""
        for existing in self.states:
            if existing.chain_id == state.chain_id and existing.signing_key == state.signing_key:
                self.states.remove(existing)
                self.states = [s for s in self.states if s.chain_id != state.chain_id]
                self.states.insert(0, existing)
                return
        self.states = [s for s in self.states if s.chain_id != state.chain_id]
        self.states.insert(0, state)
        del self.states[MAX_SENDER_KEY_STATES:]

    def serialize(self) -> bytes:
        """``format byte || SenderKeyRecordStructure``."""
        out = []
        for s in self.states:
            signing = pb.field_bytes(1, s.signing_key.serialize())
            if s.signing_private is not None:
                signing += pb.field_bytes(2, s.signing_private.serialize())
            keys = b"".join(
                pb.field_bytes(4, pb.field_varint(1, i) + pb.field_bytes(2, seed))
                for i, seed in s.skipped.items()
            )
            out.append(pb.field_bytes(1, b"".join((
                pb.field_varint(1, s.chain_id),
                pb.field_bytes(2, pb.field_varint(1, s.iteration) + pb.field_bytes(2, s.chain_key)),
                pb.field_bytes(3, signing),
                keys,
                pb.field_varint(5, s.version),
            ))))
        return bytes((RECORD_FORMAT,)) + b"".join(out)

    @classmethod
    def deserialize(cls, data: bytes) -> SenderKeyRecord:
        """Load a stored record.

        Raises:
            InvalidMessage: malformed or of an unknown format.
        """
        if not data or data[0] != RECORD_FORMAT:
            raise InvalidMessage("unknown sender key record format")
        try:
            states = []
            for raw in pb.get_repeated_bytes(pb.decode(data[1:]), 1):
                f = pb.decode(raw)
                chain = pb.decode(pb.get_bytes(f, 2) or b"")
                signing = pb.decode(pb.get_bytes(f, 3) or b"")
                private = pb.get_bytes(signing, 2)
                skipped = {}
                for mk in pb.get_repeated_bytes(f, 4):
                    mf = pb.decode(mk)
                    skipped[pb.get_int(mf, 1) or 0] = pb.get_bytes(mf, 2) or b""
                states.append(SenderKeyState(
                    chain_id=pb.get_int(f, 1) or 0,
                    iteration=pb.get_int(chain, 1) or 0,
                    chain_key=pb.get_bytes(chain, 2) or b"",
                    signing_key=PublicKey.deserialize(pb.get_bytes(signing, 1) or b""),
                    signing_private=PrivateKey(private) if private is not None else None,
                    skipped=skipped,
                    version=pb.get_int(f, 5) or SENDER_KEY_VERSION,
                ))
        except (pb.DecodeError, ValueError, ProtocolError) as exc:
            raise InvalidMessage("malformed sender key record") from exc
        return cls(states)

    def __repr__(self) -> str:
        return f"SenderKeyRecord(states={len(self.states)})"


def _load(store: SenderKeyStore, sender: ProtocolAddress,
          distribution_id: uuid.UUID) -> SenderKeyRecord | None:
    record = store.load_sender_key(sender, distribution_id)
    if record is None or isinstance(record, SenderKeyRecord):
        return record
    return SenderKeyRecord.deserialize(record.serialize())


def create_distribution_message(store: SenderKeyStore, sender: ProtocolAddress,
                                distribution_id: uuid.UUID, *,
                                rng: Random) -> SenderKeyDistributionMessage:
    """Our SKDM for ``distribution_id``, creating our sending chain on first use."""
    record = _load(store, sender, distribution_id)
    if record is None or not record.states:
        signing = KeyPair.generate(rng)
        state = SenderKeyState(
            chain_id=int.from_bytes(rng(4), "little") >> 1,
            iteration=0,
            chain_key=rng(32),
            signing_key=signing.public,
            signing_private=signing.private,
        )
        record = SenderKeyRecord([state])
        store.store_sender_key(sender, distribution_id, record)
    state = record.states[0]
    return SenderKeyDistributionMessage.build(distribution_id, state.chain_id, state.iteration,
                                              state.chain_key, state.signing_key)


def process_distribution_message(store: SenderKeyStore, sender: ProtocolAddress,
                                 data: bytes) -> None:
    """Accept a member's SKDM.

    Raises:
        InvalidMessage: malformed message.
        UnknownVersion: unsupported version.
    """
    message = SenderKeyDistributionMessage.parse(data)
    record = _load(store, sender, message.distribution_id) or SenderKeyRecord()
    record.add_state(SenderKeyState(message.chain_id, message.iteration, message.chain_key,
                                    message.signing_key))
    store.store_sender_key(sender, message.distribution_id, record)


def group_encrypt(store: SenderKeyStore, sender: ProtocolAddress, distribution_id: uuid.UUID,
                  plaintext: bytes, *, rng: Random) -> bytes:
    """Encrypt and sign a group message on our newest chain.

    Raises:
        NoSenderKey: we have not created a chain for ``distribution_id``.
    """
    record = _load(store, sender, distribution_id)
    if record is None or not record.states or record.states[0].signing_private is None:
        raise NoSenderKey(f"no sender key for {distribution_id}")
    state = record.states[0]
    assert state.signing_private is not None
    key, iv = _group_keys(message_key_seed(state.chain_key))
    body = SenderKeyMessage.encode_body(distribution_id, state.chain_id, state.iteration,
                                        aes_cbc_encrypt(key, iv, plaintext))
    signature = xeddsa.sign(state.signing_private, body, rng)
    state.chain_key = next_chain_key(state.chain_key)
    state.iteration += 1
    store.store_sender_key(sender, distribution_id, record)
    return body + signature


def group_decrypt(store: SenderKeyStore, sender: ProtocolAddress, data: bytes) -> bytes:
    """Verify and decrypt a group message from ``sender``.

    Raises:
        NoSenderKey: no state for this sender, distribution id and chain.
        InvalidSignature: the signature does not verify (checked first).
        DuplicatedMessage: the message's key was already used.
        InvalidMessage: malformed, too far ahead, or bad padding.
        UnknownVersion: unsupported version.
    """
    message = SenderKeyMessage.parse(data)
    record = _load(store, sender, message.distribution_id)
    state = record.state_for_chain(message.chain_id) if record is not None else None
    if record is None or state is None:
        raise NoSenderKey(f"no sender key state for {sender} / {message.distribution_id}")
    if not xeddsa.verify(state.signing_key, message.signed_part, message.signature):
        raise InvalidSignature("sender key message signature does not verify")
    target = message.iteration
    skipped: list[tuple[int, bytes]] = []
    if target < state.iteration:
        seed = state.skipped.get(target)
        if seed is None:
            raise DuplicatedMessage(
                f"duplicate group message (chain at {state.iteration}, got {target})")
        next_key = state.chain_key
    else:
        if target - state.iteration > MAX_FORWARD_JUMPS:
            raise InvalidMessage("message from too far into the future")
        ck = state.chain_key
        for i in range(state.iteration, target):
            skipped.append((i, message_key_seed(ck)))
            ck = next_chain_key(ck)
        seed = message_key_seed(ck)
        next_key = next_chain_key(ck)
    key, iv = _group_keys(seed)
    plaintext = aes_cbc_decrypt(key, iv, message.ciphertext)
    if target < state.iteration:
        del state.skipped[target]
    else:
        for i, s in skipped[-MAX_MESSAGE_KEYS:]:
            state.skipped[i] = s
        excess = len(state.skipped) - MAX_MESSAGE_KEYS
        for i in list(state.skipped)[:max(excess, 0)]:
            del state.skipped[i]
        state.chain_key = next_key
        state.iteration = target + 1
    store.store_sender_key(sender, message.distribution_id, record)
    return plaintext
