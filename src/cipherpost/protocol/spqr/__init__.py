"""SPQR, the Sparse Post-Quantum Ratchet of libsignal 0.92+ (spqr-digest.md).

A state machine beside the Double Ratchet: every message carries a few dozen SPQR bytes
(SignalMessage field 5) and gets a 32-byte key that becomes the HKDF salt of the
Double Ratchet's message keys. Underneath, an ML-KEM-768 "braid" trickles a public key
and a ciphertext across in erasure-coded 32-byte chunks, producing one epoch secret per
completed exchange, and a per-epoch, per-direction hash chain turns epoch secrets into
per-message keys.

Modules, bottom up: :mod:`.wire` (the field-5 bytes), :mod:`.gf16` and :mod:`.erasure`
(the chunk code), :mod:`.kdf`, :mod:`.authenticator`, :mod:`.mlkem768` and
:mod:`.incremental` (ML-KEM-768 split for the braid), :mod:`.chain`, :mod:`.braid` (the
eleven V1 states) and :mod:`.ratchet` (version negotiation, ``send``/``recv``).

Like the rest of the protocol core this package is pure: randomness comes in as ``rng``,
states are immutable values, and ``recv`` returns a new state that the caller keeps only
once the whole message verified.
"""
