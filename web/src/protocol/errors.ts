/**
 * One closed tree of protocol errors (mirrors cipherpost.protocol.errors).
 *
 * Every error a peer, a message or a store can cause derives from {@link ProtocolError}
 * and carries a `kind` equal to an error kind of shared/interop/PEER.md, so callers map
 * errors without instanceof ladders. Caller misuse (impossible arguments) throws
 * TypeError/RangeError instead: that is a bug in the caller, not a hostile peer.
 *
 * Messages never say which MAC or padding check failed.
 */

export type ErrorKind =
  | "untrusted_identity"
  | "invalid_message"
  | "duplicated_message"
  | "invalid_key"
  | "invalid_signature"
  | "no_session"
  | "invalid_prekey_id"
  | "invalid_kyber_prekey_id"
  | "unknown_version"
  | "no_sender_key"
  | "invalid_certificate"
  | "sealed_sender_self_send";

/** Base class: something from outside (a peer, a message, a store) was not acceptable. */
export abstract class ProtocolError extends Error {
  abstract readonly kind: ErrorKind;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The remote identity key is not the one the identity store trusts. */
export class UntrustedIdentity extends ProtocolError {
  readonly kind: ErrorKind = "untrusted_identity";
}

/** A message is malformed, truncated, or fails authentication. */
export class InvalidMessage extends ProtocolError {
  readonly kind: ErrorKind = "invalid_message";
}

/** A message whose key was already used (or trimmed) arrived again. */
export class DuplicatedMessage extends InvalidMessage {
  override readonly kind: ErrorKind = "duplicated_message";
}

/** A message carries a version this implementation does not speak. */
export class UnknownVersion extends InvalidMessage {
  override readonly kind: ErrorKind = "unknown_version";
}

/** A serialized key has the wrong type byte, length or value. */
export class InvalidKey extends ProtocolError {
  readonly kind: ErrorKind = "invalid_key";
}

/** An XEdDSA signature does not verify. */
export class InvalidSignature extends ProtocolError {
  readonly kind: ErrorKind = "invalid_signature";
}

/** There is no session (usable for this operation) with the remote address. */
export class NoSession extends ProtocolError {
  readonly kind: ErrorKind = "no_session";
}

/** A PreKey message names a one-time or signed prekey this store does not hold. */
export class InvalidPreKeyId extends ProtocolError {
  readonly kind: ErrorKind = "invalid_prekey_id";
}

/** A PreKey message names a Kyber prekey this store does not hold. */
export class InvalidKyberPreKeyId extends ProtocolError {
  readonly kind: ErrorKind = "invalid_kyber_prekey_id";
}

/** No sender-key state exists for this sender, distribution id and chain. */
export class NoSenderKey extends ProtocolError {
  readonly kind: ErrorKind = "no_sender_key";
}

/**
 * A sealed-sender certificate chain is not acceptable (digest §8.4). libsignal reports
 * every validation failure alike, so peers share one kind; the subclasses say which
 * check failed, for local logs.
 */
export class InvalidCertificate extends ProtocolError {
  readonly kind: ErrorKind = "invalid_certificate";
}

/** The server certificate is signed by no trusted root, or the sender certificate not by the server key. */
export class UntrustedCertificate extends InvalidCertificate {}

/** The sender certificate expired before the validation time. */
export class ExpiredCertificate extends InvalidCertificate {}

/** The server certificate's key id is on the revoked list. */
export class RevokedCertificate extends InvalidCertificate {}

/** A sender certificate refers by id to a server certificate that is not built in. */
export class UnknownServerCertificate extends InvalidCertificate {}

/** A sealed-sender message claims to come from this very device. */
export class SealedSenderSelfSend extends ProtocolError {
  readonly kind: ErrorKind = "sealed_sender_self_send";
}

export const ALL_ERRORS = [
  UntrustedIdentity,
  InvalidMessage,
  DuplicatedMessage,
  InvalidKey,
  InvalidSignature,
  NoSession,
  InvalidPreKeyId,
  InvalidKyberPreKeyId,
  UnknownVersion,
  NoSenderKey,
  InvalidCertificate,
  SealedSenderSelfSend,
] as const;
