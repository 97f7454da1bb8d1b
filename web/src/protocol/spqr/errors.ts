/**
 * Errors of the post-quantum ratchet (SPQR); mirrors cipherpost.protocol.spqr.errors.
 *
 * Everything a peer can cause is an {@link InvalidMessage} (libsignal reports SPQR
 * failures as "invalid message: post-quantum ratchet error"), so callers that already
 * handle invalid messages need no new branch. Messages never say which of the header or
 * ciphertext MACs failed.
 */

import { InvalidMessage } from "../errors.js";

/** A post-quantum ratchet message or state was not acceptable. */
export class SpqrError extends InvalidMessage {}

/** The SPQR bytes of a message do not parse (spqr-digest §6). */
export class MalformedSpqrMessage extends SpqrError {}

/** A header or ciphertext MAC of the ML-KEM braid did not verify (spqr-digest §4.1). */
export class SpqrAuthenticationFailed extends SpqrError {}

/** The peer's encapsulation key does not match the header it authenticated (§3). */
export class SpqrErroneousData extends SpqrError {}

/** A message names an epoch this state cannot be in, or one already dropped (§4.3, §5.3). */
export class SpqrEpochOutOfRange extends SpqrError {}

/** A message key index lies further ahead than the chain may step (§5.4). */
export class SpqrKeyJump extends SpqrError {}

/** A message key index lies too far behind: its key was discarded (§5.4). */
export class SpqrKeyTrimmed extends SpqrError {}

/** The key of this index was already handed out, or never stored (§5.4). */
export class SpqrKeyAlreadyRequested extends SpqrError {}

/** A message without SPQR arrived while this session's minimum version is V1 (§8.2). */
export class SpqrMinimumVersion extends SpqrError {}

/** A message without SPQR arrived after the session negotiated SPQR (§8.2). */
export class SpqrVersionMismatch extends SpqrError {}

/**
 * A stored SPQR state is malformed or cannot do what was asked of it (libsignal's
 * InvalidState; the peer protocol has no such kind, so it keeps `invalid_message`).
 */
export class InvalidSpqrState extends SpqrError {}

export const ALL_SPQR_ERRORS = [
  SpqrError, MalformedSpqrMessage, SpqrAuthenticationFailed, SpqrErroneousData,
  SpqrEpochOutOfRange, SpqrKeyJump, SpqrKeyTrimmed, SpqrKeyAlreadyRequested,
  SpqrMinimumVersion, SpqrVersionMismatch, InvalidSpqrState,
] as const;
