/**
 * The Signal protocol, byte-compatible with libsignal v4 (PQXDH + Double Ratchet), in
 * TypeScript; mirrors the Python package cipherpost.protocol module for module.
 *
 * Sans-I/O: bytes and explicit state in, bytes and state out. Randomness (`rng`) and time
 * (`now`) are parameters; stores are interfaces (./stores.ts) whose methods may be async.
 */

export { ProtocolAddress } from "./address.js";
export { generatePreKeyBundle } from "./bundles.js";
export { systemRandom, type Random } from "./bytes.js";
export { SenderCertificate, ServerCertificate } from "./certificates.js";
export {
  DuplicatedMessage,
  ExpiredCertificate,
  InvalidCertificate,
  InvalidKey,
  InvalidKyberPreKeyId,
  InvalidMessage,
  InvalidPreKeyId,
  InvalidSignature,
  NoSenderKey,
  NoSession,
  ProtocolError,
  RevokedCertificate,
  SealedSenderSelfSend,
  UnknownServerCertificate,
  UnknownVersion,
  UntrustedCertificate,
  UntrustedIdentity,
  type ErrorKind,
} from "./errors.js";
export { Fingerprint } from "./fingerprint.js";
export { KYBER1024, MLKEM1024, KemKeyPair, KemPublicKey } from "./kem.js";
export { IdentityKeyPair, KeyPair, PrivateKey, PublicKey, type IdentityKey } from "./keys.js";
export { PREKEY_TYPE, SENDERKEY_TYPE, WHISPER_TYPE } from "./messages.js";
export { KyberPreKeyRecord, PreKeyBundle, PreKeyRecord, SignedPreKeyRecord } from "./prekeys.js";
export * as sealedSender from "./sealed_sender.js";
export {
  archiveSession,
  DEFAULT_SPQR,
  decrypt,
  encrypt,
  hasSession,
  processPreKeyBundle,
  type CiphertextMessage,
} from "./session.js";
export {
  createDistributionMessage,
  groupDecrypt,
  groupEncrypt,
  processDistributionMessage,
  SenderKeyRecord,
} from "./sender_keys.js";
export { SpqrSettings } from "./spqr/ratchet.js";
export { SessionRecord } from "./state.js";
export {
  Direction,
  InMemoryProtocolStore,
  InMemorySenderKeyStore,
  SerializingSessionStore,
  type ProtocolStore,
  type SenderKeyStore,
} from "./stores.js";
