/**
 * SPQR, the Sparse Post-Quantum Ratchet of libsignal 0.92+ (spqr-digest.md); mirrors the
 * Python package cipherpost.protocol.spqr.
 *
 * A state machine beside the Double Ratchet: every message carries a few dozen SPQR bytes
 * (SignalMessage field 5) and gets a 32-byte key that becomes the HKDF salt of the Double
 * Ratchet's message keys. Underneath, an ML-KEM-768 "braid" trickles a public key and a
 * ciphertext across in erasure-coded 32-byte chunks, producing one epoch secret per
 * completed exchange, and a per-epoch, per-direction hash chain turns epoch secrets into
 * per-message keys.
 *
 * Modules, bottom up: wire (the field-5 bytes), gf16 and erasure (the chunk code), kdf,
 * authenticator, mlkem768 and incremental (ML-KEM-768 split for the braid), chain, braid
 * (the eleven V1 states), ratchet (version negotiation, send/recv) and storage (the
 * stored form, byte for byte Python's).
 *
 * Like the rest of the protocol core this package is pure: randomness comes in as `rng`,
 * states are immutable values, and `recv` returns a new state that the caller keeps only
 * once the whole message verified. ../session.ts wires it into 1:1 sessions.
 */

export { ChainParams, DEFAULT_PARAMS, Direction } from "./chain.js";
export * from "./errors.js";
export {
  Negotiation, SpqrSettings, V0_STATE, initialState, isNegotiating, recv, send, versionOf,
  type PqRatchetState, type Sent,
} from "./ratchet.js";
export { STORAGE_FORMAT, deserialize, serialize } from "./storage.js";
export { V0, V1, messageVersion, type Version } from "./wire.js";
