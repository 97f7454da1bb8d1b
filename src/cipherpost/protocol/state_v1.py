"""Session records of storage format 1 (libsignal's protobuf field numbers): read only.

Format 1 was the first format Cipherpost wrote; :mod:`.state` writes format 2 and hands
format-1 bytes here, so records stored by earlier versions keep loading.
"""

from __future__ import annotations

from . import protobuf as pb
from .constants import CURRENT_VERSION
from .errors import InvalidMessage, ProtocolError
from .keys import KeyPair, PrivateKey, PublicKey
from .state import PendingPreKey, ReceiverChain, SenderChain, SessionRecord, SessionState


def deserialize_v1(data: bytes) -> SessionRecord:
    """Load a format-1 record.

    Raises:
        InvalidMessage: malformed.
    """
    try:
        fields = pb.decode(data[1:])
        current = pb.get_bytes(fields, 1)
        return SessionRecord(
            _decode_state(current) if current is not None else None,
            [_decode_state(s) for s in pb.get_repeated_bytes(fields, 2)],
        )
    except (pb.DecodeError, ValueError, ProtocolError) as exc:
        raise InvalidMessage("malformed session record") from exc


def _req_bytes(f: pb.Fields, n: int) -> bytes:
    v = pb.get_bytes(f, n)
    if v is None:
        raise pb.DecodeError(f"missing field {n}")
    return v


def _req_int(f: pb.Fields, n: int) -> int:
    v = pb.get_int(f, n)
    if v is None:
        raise pb.DecodeError(f"missing field {n}")
    return v


def _decode_chain_key(data: bytes) -> tuple[int, bytes]:
    f = pb.decode(data)
    return pb.get_int(f, 1) or 0, _req_bytes(f, 2)


def _decode_state(data: bytes) -> SessionState:
    f = pb.decode(data)
    if (pb.get_int(f, 1) or 2) != CURRENT_VERSION:
        raise ValueError("unsupported session version")
    sender = None
    sender_bytes = pb.get_bytes(f, 6)
    if sender_bytes is not None:
        sf = pb.decode(sender_bytes)
        index, key = _decode_chain_key(_req_bytes(sf, 3))
        pair = KeyPair(PublicKey.deserialize(_req_bytes(sf, 1)), PrivateKey(_req_bytes(sf, 2)))
        sender = SenderChain(pair, key, index)
    receivers = []
    for chain_bytes in pb.get_repeated_bytes(f, 7):
        cf = pb.decode(chain_bytes)
        index, key = _decode_chain_key(_req_bytes(cf, 3))
        skipped = {}
        for mk in pb.get_repeated_bytes(cf, 4):
            mf = pb.decode(mk)
            skipped[pb.get_int(mf, 1) or 0] = _req_bytes(mf, 5)
        receivers.append(ReceiverChain(PublicKey.deserialize(_req_bytes(cf, 1)), key, index,
                                       skipped))
    pending = None
    pending_bytes = pb.get_bytes(f, 9)
    kyber_bytes = pb.get_bytes(f, 14)
    if pending_bytes is not None and kyber_bytes is not None:
        pf = pb.decode(pending_bytes)
        kf = pb.decode(kyber_bytes)
        pending = PendingPreKey(
            pb.get_int(pf, 1), pb.get_int(pf, 3) or 0, PublicKey.deserialize(_req_bytes(pf, 2)),
            pb.get_int(kf, 1) or 0, _req_bytes(kf, 2), pb.get_int(pf, 4) or 0,
        )
    return SessionState(
        version=CURRENT_VERSION,
        local_identity=PublicKey.deserialize(_req_bytes(f, 2)),
        remote_identity=PublicKey.deserialize(_req_bytes(f, 3)),
        root_key=_req_bytes(f, 4),
        sender_chain=sender,
        receiver_chains=receivers,
        alice_base_key=pb.get_bytes(f, 13) or b"",
        local_registration_id=pb.get_int(f, 11) or 0,
        remote_registration_id=pb.get_int(f, 10) or 0,
        previous_counter=pb.get_int(f, 5) or 0,
        pending_pre_key=pending,
    )
