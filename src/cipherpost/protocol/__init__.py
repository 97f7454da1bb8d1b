"""The Signal protocol, byte-compatible with libsignal v4 (PQXDH + Double Ratchet).

Sans-I/O: bytes and explicit state in, bytes and state out. Randomness (``rng``) and
time (``now``) are parameters; stores are typed Protocols (:mod:`.stores`).
"""

from .address import ProtocolAddress
from .bundles import generate_prekey_bundle
from .errors import (
    DuplicatedMessage,
    InvalidKey,
    InvalidKyberPreKeyId,
    InvalidMessage,
    InvalidPreKeyId,
    InvalidSignature,
    NoSenderKey,
    NoSession,
    ProtocolError,
    UnknownVersion,
    UntrustedIdentity,
)
from .fingerprint import Fingerprint
from .kem import KYBER1024, MLKEM1024, KemKeyPair, KemPublicKey
from .keys import IdentityKey, IdentityKeyPair, KeyPair, PrivateKey, PublicKey, Random
from .messages import PREKEY_TYPE, SENDERKEY_TYPE, WHISPER_TYPE
from .prekeys import KyberPreKeyRecord, PreKeyBundle, PreKeyRecord, SignedPreKeyRecord
from .session import (
    CiphertextMessage,
    decrypt,
    encrypt,
    has_session,
    process_prekey_bundle,
)
from .spqr.ratchet import DEFAULT_SPQR, SpqrSettings
from .state import SessionRecord
from .stores import Direction, InMemoryProtocolStore, InMemorySenderKeyStore, ProtocolStore

__all__ = [
    "DEFAULT_SPQR",
    "KYBER1024",
    "MLKEM1024",
    "PREKEY_TYPE",
    "SENDERKEY_TYPE",
    "WHISPER_TYPE",
    "CiphertextMessage",
    "Direction",
    "DuplicatedMessage",
    "Fingerprint",
    "IdentityKey",
    "IdentityKeyPair",
    "InMemoryProtocolStore",
    "InMemorySenderKeyStore",
    "InvalidKey",
    "InvalidKyberPreKeyId",
    "InvalidMessage",
    "InvalidPreKeyId",
    "InvalidSignature",
    "KemKeyPair",
    "KemPublicKey",
    "KeyPair",
    "KyberPreKeyRecord",
    "NoSenderKey",
    "NoSession",
    "PreKeyBundle",
    "PreKeyRecord",
    "PrivateKey",
    "ProtocolAddress",
    "ProtocolError",
    "ProtocolStore",
    "PublicKey",
    "Random",
    "SessionRecord",
    "SignedPreKeyRecord",
    "SpqrSettings",
    "UnknownVersion",
    "UntrustedIdentity",
    "decrypt",
    "encrypt",
    "generate_prekey_bundle",
    "has_session",
    "process_prekey_bundle",
]
