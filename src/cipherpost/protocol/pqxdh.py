"""PQXDH key agreement (digest §3.2, §3.3).

Key agreement only: it returns the wire values and the derived secret, and knows nothing
of ratchets. Both sides feed the same shared values in the same order::

    0xFF*32 || DH(IK_A, SPK_B) || DH(EK_A, IK_B) || DH(EK_A, SPK_B) [|| DH(EK_A, OPK_B)] || SS

and derive 96 bytes with HKDF: root key, chain key, and the SPQR seed.
"""

from __future__ import annotations

from dataclasses import dataclass

from .constants import DISCONTINUITY, PQXDH_INFO
from .kem import DEFAULT_KEMS, KemKeyPair, KemRegistry
from .keys import IdentityKey, IdentityKeyPair, KeyPair, PublicKey, Random
from .prekeys import PreKeyBundle
from .ratchet import hkdf


@dataclass(frozen=True, slots=True, repr=False)
class DerivedKeys:
    """What PQXDH yields: root key, first chain key, SPQR seed."""

    root_key: bytes
    chain_key: bytes
    pq_ratchet_seed: bytes

    @classmethod
    def from_secret(cls, secret: bytes) -> DerivedKeys:
        okm = hkdf(secret, None, PQXDH_INFO, 96)
        return cls(okm[:32], okm[32:64], okm[64:96])

    def __repr__(self) -> str:
        return "DerivedKeys(<redacted>)"


@dataclass(frozen=True, slots=True, repr=False)
class InitiatorResult:
    """Alice's side: her base key pair, the KEM ciphertext to send, and the keys."""

    base_key: KeyPair
    kyber_ciphertext: bytes
    keys: DerivedKeys


def initiate(identity: IdentityKeyPair, bundle: PreKeyBundle, rng: Random,
             kems: KemRegistry = DEFAULT_KEMS) -> InitiatorResult:
    """Run PQXDH as the initiator against a (signature-checked) bundle.

    Raises:
        InvalidKey: an agreement with a small-order key, or an unusable KEM key.
    """
    base = KeyPair.generate(rng)
    parts = [
        DISCONTINUITY,
        identity.private.agree(bundle.signed_pre_key),
        base.private.agree(bundle.identity_key),
        base.private.agree(bundle.signed_pre_key),
    ]
    if bundle.pre_key is not None:
        parts.append(base.private.agree(bundle.pre_key))
    shared, ciphertext = bundle.kyber_pre_key.encapsulate(kems)
    parts.append(shared)
    return InitiatorResult(base, ciphertext, DerivedKeys.from_secret(b"".join(parts)))


def respond(identity: IdentityKeyPair, signed_pre_key: KeyPair, kyber_pre_key: KemKeyPair,
            one_time_pre_key: KeyPair | None, their_identity: IdentityKey,
            their_base_key: PublicKey, kyber_ciphertext: bytes,
            kems: KemRegistry = DEFAULT_KEMS) -> DerivedKeys:
    """Run PQXDH as the responder.

    Raises:
        InvalidKey: an agreement with a small-order key, or a mismatched KEM ciphertext.
    """
    parts = [
        DISCONTINUITY,
        signed_pre_key.private.agree(their_identity),
        identity.private.agree(their_base_key),
        signed_pre_key.private.agree(their_base_key),
    ]
    if one_time_pre_key is not None:
        parts.append(one_time_pre_key.private.agree(their_base_key))
    parts.append(kyber_pre_key.decapsulate(kyber_ciphertext, kems))
    return DerivedKeys.from_secret(b"".join(parts))
