"""1:1 sessions: start one from a bundle, encrypt, decrypt (digest §3-§4).

Theory of operation: every entry point loads the record it needs, computes the outcome
without touching any stored object, and only when the message has fully verified (MAC,
padding, trust) runs a small ``commit`` that mutates state and writes the stores. A
rejected message or bundle therefore changes nothing, in memory or in the stores.

SPQR (the post-quantum ratchet, :mod:`.spqr`) runs beside the Double Ratchet in every
state whose settings offered it (spqr-digest §7): ``encrypt`` asks it for field 5 and a
key before deriving the message keys, and uses that key as their HKDF salt; decryption
runs its ``recv`` on the state being tried, which returns a new immutable value, and
``commit`` stores it together with the Double Ratchet's changes, so both move only when
the MAC verified, whichever (current or archived) state decrypts.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from hmac import digest as _hmac
from typing import NamedTuple

from . import pqxdh
from .address import ProtocolAddress, addresses_field
from .constants import (
    CURRENT_VERSION,
    MAC_LENGTH,
    MAX_FORWARD_JUMPS,
    MAX_UNACKNOWLEDGED_SESSION_AGE,
)
from .errors import (
    DuplicatedMessage,
    InvalidMessage,
    NoSession,
    ProtocolError,
    UntrustedIdentity,
)
from .kem import DEFAULT_KEMS, KemRegistry
from .keys import KeyPair, Random
from .messages import (
    LARGE,
    PREKEY_TYPE,
    WHISPER_TYPE,
    PreKeySignalMessage,
    SignalMessage,
    header_prefix,
    header_rest,
    varint,
)
from .prekeys import PreKeyBundle
from .ratchet import (
    aes_cbc_decrypt,
    aes_cbc_encrypt,
    aes_cbc_encrypt_pieces,
    message_keys,
    root_step,
)
from .spqr.chain import Direction as PqDirection
from .spqr.ratchet import DEFAULT_SPQR, SpqrSettings
from .spqr.ratchet import recv as pq_recv
from .spqr.ratchet import send_step as pq_send
from .spqr.wire import V0
from .state import PendingPreKey, ReceiverChain, SenderChain, SessionRecord, SessionState
from .stores import Direction, ProtocolStore

Commit = Callable[[], None]

# Enum members are looked up per access (a descriptor); the per-message path reads these.
_SENDING = Direction.SENDING
_RECEIVING = Direction.RECEIVING
#: Field 5's key and one-byte length, by length (SPQR's field is under 128 bytes).
_FIELD5 = tuple(bytes((0x2A, size)) for size in range(0x80))


class CiphertextMessage(NamedTuple):
    """An encrypted 1:1 message: its type (2 whisper, 3 prekey) and bytes."""

    message_type: int
    serialized: bytes


# -- session set-up -----------------------------------------------------------------------


def process_prekey_bundle(store: ProtocolStore, address: ProtocolAddress,
                          bundle: PreKeyBundle, *, rng: Random, now: int,
                          kems: KemRegistry = DEFAULT_KEMS,
                          spqr: SpqrSettings = DEFAULT_SPQR) -> None:
    """Start a session with ``address`` from its bundle (we are Alice).

    ``now`` is the time in seconds. The new state becomes current; an older one is
    archived. ``spqr`` says whether the session offers or requires SPQR (default:
    required, :data:`DEFAULT_SPQR`).

    Raises:
        InvalidSignature: a prekey signature does not verify.
        UntrustedIdentity: the bundle's identity is not the one we trust.
        InvalidKey: unusable keys in the bundle.
    """
    bundle.verify_signatures()
    if not store.is_trusted_identity(address, bundle.identity_key, Direction.SENDING):
        raise UntrustedIdentity(f"untrusted identity for {address}")
    identity = store.get_identity_key_pair()
    result = pqxdh.initiate(identity, bundle, rng, kems)
    sending = KeyPair.generate(rng)
    root_key, sending_chain_key = root_step(
        result.keys.root_key, sending.private.agree(bundle.signed_pre_key)
    )
    state = SessionState(
        version=CURRENT_VERSION,
        local_identity=identity.public,
        remote_identity=bundle.identity_key,
        root_key=root_key,
        sender_chain=SenderChain(sending, sending_chain_key, 0),
        receiver_chains=[ReceiverChain(bundle.signed_pre_key, result.keys.chain_key, 0)],
        alice_base_key=result.base_key.public.serialize(),
        local_registration_id=store.get_local_registration_id(),
        remote_registration_id=bundle.registration_id,
        pending_pre_key=PendingPreKey(
            bundle.pre_key_id, bundle.signed_pre_key_id, result.base_key.public,
            bundle.kyber_pre_key_id, result.kyber_ciphertext, now,
        ),
        pq_ratchet=spqr.initial_state(result.keys.pq_ratchet_seed, PqDirection.A2B,
                                      self_session=identity.public == bundle.identity_key),
    )
    record = store.load_session(address) or SessionRecord()
    record.promote_state(state)
    store.store_session(address, record)
    store.save_identity(address, bundle.identity_key)


def has_session(store: ProtocolStore, address: ProtocolAddress, now: int, *,
                spqr: SpqrSettings = DEFAULT_SPQR) -> bool:
    """True while a current session usable for sending exists (not stale).

    Where ``spqr`` requires SPQR (``min_version`` V1, as ``SpqrSettings.REQUIRED``), a
    session without it (made before SPQR, with ``OFF``, or negotiated down to V0) counts
    as unusable too, as libsignal 0.100+ (``SessionRecord.hasCurrentState``) does: the
    caller then fetches a bundle and starts a new session, which runs SPQR.
    """
    record = store.load_session(address)
    return record is not None and _usable(record, now, spqr.min_version > V0)


def _usable(record: SessionRecord, now: int, require_spqr: bool = False) -> bool:
    state = record.current
    if state is None or state.sender_chain is None:
        return False
    if require_spqr and state.pq_ratchet.braid is None:
        return False
    pending = state.pending_pre_key
    return pending is None or now - pending.timestamp <= MAX_UNACKNOWLEDGED_SESSION_AGE


# -- encryption -----------------------------------------------------------------------------


def encrypt(store: ProtocolStore, address: ProtocolAddress, plaintext: bytes, *,
            now: int, rng: Random | None = None,
            local_address: ProtocolAddress | None = None) -> CiphertextMessage:
    """Encrypt ``plaintext`` for ``address`` on the current session.

    ``rng`` is needed on a session running SPQR (now and then it samples a key pair or
    encapsulates); a session without SPQR never uses it. With ``local_address``, a PreKey
    message carries both addresses under the MAC (field 6, as libsignal 0.91+) when both
    names are service ids.

    Raises:
        NoSession: no current session, or its PreKey data is older than 30 days.
        UntrustedIdentity: the session's identity is no longer trusted.
        InvalidSpqrState: the stored SPQR state cannot send.
        TypeError: ``rng`` is missing on a session running SPQR.
    """
    record = store.load_session(address)
    state = record.current if record is not None else None
    chain = state.sender_chain if state is not None else None
    if record is None or state is None or chain is None:
        raise NoSession(f"no usable session with {address}")
    pending = state.pending_pre_key
    if pending is not None and now - pending.timestamp > MAX_UNACKNOWLEDGED_SESSION_AGE:
        raise NoSession(f"no usable session with {address}")
    pq = new_pq = state.pq_ratchet
    trailer = b""  # fields 5 (SPQR) and 6 (addresses), after the ciphertext
    salt = None
    if pq.braid is not None:
        if rng is None:
            raise TypeError("encrypt on a session running SPQR needs rng")
        new_pq, pq_message, salt = pq_send(pq, rng)
        size = len(pq_message)  # a few dozen bytes
        if size:
            trailer = (_FIELD5[size] if size < 0x80 else b"\x2a" + varint(size)) \
                + pq_message  # field 5
    if pending is not None and local_address is not None:
        addresses = addresses_field(local_address, address)
        if addresses is not None:
            trailer += b"\x32\x24" + addresses  # field 6, 36 bytes
    cipher_key, mac_key, iv = message_keys(_hmac(chain.chain_key, b"\x01", "sha256"), salt)
    header = chain.header
    if header is None:
        header = chain.header = header_prefix(state.version, chain.public)
    identities = state.mac_sending
    if len(plaintext) < LARGE:
        ciphertext = aes_cbc_encrypt(cipher_key, iv, plaintext)
        body = (header + header_rest(chain.index, state.previous_counter, len(ciphertext))
                + ciphertext + trailer)
        serialized = body + _hmac(mac_key, identities + body, "sha256")[:MAC_LENGTH]
    else:
        # No copy of the body: the MAC is fed in pieces and the message joined once.
        head, tail = aes_cbc_encrypt_pieces(cipher_key, iv, plaintext)
        header += header_rest(chain.index, state.previous_counter, len(head) + len(tail))
        mac = hmac.new(mac_key, identities + header, "sha256")
        mac.update(head)
        mac.update(tail)
        mac.update(trailer)
        serialized = b"".join((header, head, tail, trailer, mac.digest()[:MAC_LENGTH]))
    result: CiphertextMessage
    if pending is not None:
        message = SignalMessage.parse(serialized)
        wrapped = PreKeySignalMessage.build(
            registration_id=state.local_registration_id,
            pre_key_id=pending.pre_key_id,
            signed_pre_key_id=pending.signed_pre_key_id,
            kyber_pre_key_id=pending.kyber_pre_key_id,
            kyber_ciphertext=pending.kyber_ciphertext,
            base_key=pending.base_key,
            identity_key=state.local_identity,
            message=message,
            version=state.version,
        )
        result = CiphertextMessage(PREKEY_TYPE, wrapped.serialized)
    else:
        result = CiphertextMessage(WHISPER_TYPE, serialized)
    remote = state.remote_identity
    if not store.is_trusted_identity(address, remote, _SENDING):
        raise UntrustedIdentity(f"untrusted identity for {address}")
    chain.chain_key = _hmac(chain.chain_key, b"\x02", "sha256")  # next_chain_key
    chain.index += 1
    if new_pq is not pq:
        state.pq_ratchet = new_pq
    store.store_session(address, record)
    store.save_identity(address, remote)
    return result


# -- decryption -----------------------------------------------------------------------------


def decrypt_signal_message(store: ProtocolStore, address: ProtocolAddress, data: bytes, *,
                           rng: Random) -> bytes:
    """Decrypt a whisper message from ``address``.

    Tries the current state, then archived ones; an archived state that decrypts becomes
    current again.

    Raises:
        NoSession: we hold no session record for ``address``.
        DuplicatedMessage: the message's key was already used.
        InvalidMessage: malformed or unauthenticated (no state could decrypt it).
        UnknownVersion: an unsupported version nibble.
        UntrustedIdentity: it decrypted but the sender's identity is not trusted.
    """
    message = SignalMessage.parse(data)
    record = store.load_session(address)
    if record is None:
        raise NoSession(f"no session with {address}")
    index = -1  # the current state; else the archive index of the state that decrypts
    try:
        if record.current is None:
            raise InvalidMessage("no current session")
        plaintext, commit = _decrypt_with_state(record.current, message, rng)
    except DuplicatedMessage:
        raise
    except InvalidMessage:
        plaintext, commit, index = _decrypt_with_archive(record, message, rng)
    state = record.current if index < 0 else record.previous[index]
    assert state is not None
    remote = state.remote_identity
    if not store.is_trusted_identity(address, remote, _RECEIVING):
        raise UntrustedIdentity(f"untrusted identity for {address}")
    commit()
    if index >= 0:
        record.promote_previous(index)
    store.store_session(address, record)
    store.save_identity(address, remote)
    return plaintext


def _decrypt_with_archive(record: SessionRecord, message: SignalMessage,
                          rng: Random) -> tuple[bytes, Commit, int]:
    """Find the archived state that decrypts ``message`` and its index."""
    for index, state in enumerate(record.previous):
        try:
            plaintext, commit = _decrypt_with_state(state, message, rng)
            return plaintext, commit, index
        except DuplicatedMessage:
            raise
        except InvalidMessage:
            continue
    raise InvalidMessage("decryption failed")


def _decrypt_with_state(state: SessionState, message: SignalMessage,
                        rng: Random) -> tuple[bytes, Commit]:
    """Decrypt with one state without mutating it; return the plaintext and a commit."""
    if message.version != state.version:
        raise InvalidMessage("message version does not match the session")
    if state.sender_chain is None:
        raise InvalidMessage("session has no sending chain")
    chain = state.receiver_chain(message.ratchet_key_bytes)
    new_sending: tuple[bytes, SenderChain] | None = None
    if chain is None:
        # A DH ratchet step: their new ratchet key.
        sender = state.sender_chain
        root1, receive_key = root_step(state.root_key, sender.ratchet.private.agree(
            message.ratchet_key))
        ours = KeyPair.generate(rng)
        root2, send_key = root_step(root1, ours.private.agree(message.ratchet_key))
        new_sending = (root2, SenderChain(ours, send_key, 0))
        chain_key, chain_index = receive_key, 0
    else:
        chain_key, chain_index = chain.chain_key, chain.index

    counter = message.counter
    skipped: list[tuple[int, bytes]] = []
    used_skipped = False
    if counter < chain_index:
        assert chain is not None
        seed = chain.skipped.get(counter)
        if seed is None:
            raise DuplicatedMessage(f"duplicate message (chain at {chain_index}, got {counter})")
        used_skipped = True
        next_key = chain_key
    else:
        jump = counter - chain_index
        if jump > MAX_FORWARD_JUMPS and not state.is_self_session():
            raise InvalidMessage("message from too far into the future")
        ck = chain_key
        for i in range(chain_index, counter):
            skipped.append((i, _hmac(ck, b"\x01", "sha256")))
            ck = _hmac(ck, b"\x02", "sha256")
        seed = _hmac(ck, b"\x01", "sha256")  # message_key_seed, inlined on the hot path
        next_key = _hmac(ck, b"\x02", "sha256")  # next_chain_key

    pq = state.pq_ratchet
    new_pq = pq
    salt = None
    if pq.braid is not None or message.pq_ratchet:
        new_pq, salt = pq_recv(pq, message.pq_ratchet)  # tentative: kept by commit only
    cipher_key, mac_key, iv = message_keys(seed, salt)
    data = message.serialized
    if len(data) < LARGE:  # SignalMessage.verify_mac_prefixed, inlined
        mac = _hmac(mac_key, state.mac_receiving + data[:-MAC_LENGTH], "sha256")
    else:
        h = hmac.new(mac_key, state.mac_receiving, "sha256")
        h.update(memoryview(data)[:-MAC_LENGTH])
        mac = h.digest()
    if not hmac.compare_digest(mac[:MAC_LENGTH], data[-MAC_LENGTH:]):
        raise InvalidMessage("bad MAC")
    plaintext = aes_cbc_decrypt(cipher_key, iv, message.ciphertext)

    def commit() -> None:
        target = chain
        if target is None:
            assert new_sending is not None
            old_sender = state.sender_chain
            assert old_sender is not None
            state.root_key, state.sender_chain = new_sending
            state.previous_counter = max(old_sender.index - 1, 0)
            target = ReceiverChain(message.ratchet_key, chain_key, 0)
            state.add_receiver_chain(target)
        if used_skipped:
            del target.skipped[counter]
        else:
            if skipped:
                target.add_skipped(skipped)
            target.chain_key = next_key
            target.index = counter + 1
        state.pending_pre_key = None
        state.pq_ratchet = new_pq

    return plaintext, commit


def decrypt_prekey_message(store: ProtocolStore, address: ProtocolAddress, data: bytes, *,
                           rng: Random, kems: KemRegistry = DEFAULT_KEMS,
                           spqr: SpqrSettings = DEFAULT_SPQR,
                           local_address: ProtocolAddress | None = None) -> bytes:
    """Decrypt a PreKey message from ``address`` (we are Bob, or Alice in a crossing).

    A message whose base key matches a state we hold reuses that state; otherwise a new
    state is built from our prekeys, with SPQR as ``spqr`` says, and becomes current (the
    old one is archived). With ``local_address``, addresses the message carries (field 6)
    must be ``address`` and ``local_address``, as libsignal 0.91+ checks; a message
    without them is accepted.

    Raises:
        UntrustedIdentity: the sender's identity key is not trusted.
        InvalidPreKeyId: unknown one-time or signed prekey id.
        InvalidKyberPreKeyId: unknown Kyber prekey id.
        DuplicatedMessage: a repeated message.
        InvalidMessage: malformed, unauthenticated, or a reused last-resort key.
        UnknownVersion: an unsupported version nibble.
    """
    message = PreKeySignalMessage.parse(data)
    if not store.is_trusted_identity(address, message.identity_key, Direction.RECEIVING):
        raise UntrustedIdentity(f"untrusted identity for {address}")
    record = store.load_session(address)
    base_key = message.base_key.serialize()

    existing: int | None = None  # -1 current, else archive index
    state: SessionState | None = None
    if record is not None:
        for index, candidate in enumerate(record.states()):
            if candidate.version == message.version and candidate.alice_base_key == base_key:
                state = candidate
                existing = index - 1 if record.current is not None else index
                break

    if state is None:
        state = _bob_state(store, message, kems, spqr)
    try:
        plaintext, commit = _decrypt_with_state(state, message.message, rng)
    except DuplicatedMessage:
        raise
    except InvalidMessage as exc:
        raise InvalidMessage("decryption failed") from exc
    addresses = message.message.addresses
    if addresses is not None and local_address is not None:
        expected = addresses_field(address, local_address)
        if expected is None or not hmac.compare_digest(expected, addresses):
            raise InvalidMessage("decryption failed")

    if existing is None:
        store.mark_kyber_pre_key_used(message.kyber_pre_key_id or 0, message.signed_pre_key_id,
                                      base_key)
    commit()
    if record is None:
        record = SessionRecord()
    if existing is None:
        record.promote_state(state)
        if message.pre_key_id is not None:
            store.remove_pre_key(message.pre_key_id)
    elif existing >= 0:
        record.promote_previous(existing)
    store.store_session(address, record)
    store.save_identity(address, message.identity_key)
    return plaintext


def _bob_state(store: ProtocolStore, message: PreKeySignalMessage,
               kems: KemRegistry, spqr: SpqrSettings) -> SessionState:
    if not message.base_key.is_canonical():
        raise InvalidMessage("incoming base key is invalid")
    signed = store.get_signed_pre_key(message.signed_pre_key_id)
    assert message.kyber_pre_key_id is not None and message.kyber_ciphertext is not None
    kyber = store.get_kyber_pre_key(message.kyber_pre_key_id)
    one_time = (store.get_pre_key(message.pre_key_id).key_pair
                if message.pre_key_id is not None else None)
    identity = store.get_identity_key_pair()
    try:
        keys = pqxdh.respond(identity, signed.key_pair, kyber.key_pair, one_time,
                             message.identity_key, message.base_key, message.kyber_ciphertext,
                             kems)
    except ProtocolError as exc:
        raise InvalidMessage("invalid PreKey message") from exc
    return SessionState(
        version=message.version,
        local_identity=identity.public,
        remote_identity=message.identity_key,
        root_key=keys.root_key,
        sender_chain=SenderChain(signed.key_pair, keys.chain_key, 0),
        receiver_chains=[],
        alice_base_key=message.base_key.serialize(),
        local_registration_id=store.get_local_registration_id(),
        remote_registration_id=message.registration_id,
        pq_ratchet=spqr.initial_state(keys.pq_ratchet_seed, PqDirection.B2A,
                                      self_session=identity.public == message.identity_key),
    )


def decrypt(store: ProtocolStore, address: ProtocolAddress, message_type: int, data: bytes, *,
            rng: Random, kems: KemRegistry = DEFAULT_KEMS,
            spqr: SpqrSettings = DEFAULT_SPQR,
            local_address: ProtocolAddress | None = None) -> bytes:
    """Decrypt a whisper (2) or PreKey (3) message.

    ``spqr`` applies to a session that a PreKey message creates; ``local_address`` checks
    a PreKey message's addresses (see :func:`decrypt_prekey_message`).

    Raises:
        ValueError: ``message_type`` is neither.
        ProtocolError: see :func:`decrypt_signal_message` and :func:`decrypt_prekey_message`.
    """
    if message_type == WHISPER_TYPE:
        return decrypt_signal_message(store, address, data, rng=rng)
    if message_type == PREKEY_TYPE:
        return decrypt_prekey_message(store, address, data, rng=rng, kems=kems, spqr=spqr,
                                      local_address=local_address)
    raise ValueError(f"not a 1:1 message type: {message_type}")
