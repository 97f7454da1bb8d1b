"""Errors of the post-quantum ratchet (SPQR), leaves of the protocol's error tree.

Everything a peer can cause is an :class:`~cipherpost.protocol.errors.InvalidMessage`
(libsignal reports SPQR failures as "invalid message: post-quantum ratchet error"), so
callers that already handle invalid messages need no new branch. Messages never say
which of the header or ciphertext MACs failed.
"""

from __future__ import annotations

from ..errors import InvalidMessage


class SpqrError(InvalidMessage):
    """A post-quantum ratchet message or state was not acceptable."""


class MalformedSpqrMessage(SpqrError):
    """The SPQR bytes of a message do not parse (spqr-digest §6)."""


class SpqrAuthenticationFailed(SpqrError):
    """A header or ciphertext MAC of the ML-KEM braid did not verify (spqr-digest §4.1)."""


class SpqrErroneousData(SpqrError):
    """The peer's encapsulation key does not match the header it authenticated (§3)."""


class SpqrEpochOutOfRange(SpqrError):
    """A message names an epoch this state cannot be in, or one already dropped (§4.3, §5.3)."""


class SpqrKeyJump(SpqrError):
    """A message key index lies further ahead than the chain may step (§5.4)."""


class SpqrKeyTrimmed(SpqrError):
    """A message key index lies too far behind: its key was discarded (§5.4)."""


class SpqrKeyAlreadyRequested(SpqrError):
    """The key of this index was already handed out, or never stored (§5.4)."""


class SpqrMinimumVersion(SpqrError):
    """A message without SPQR arrived while this session's minimum version is V1 (§8.2)."""


class SpqrVersionMismatch(SpqrError):
    """A message without SPQR arrived after the session negotiated SPQR (§8.2)."""


class InvalidSpqrState(SpqrError):
    """A stored SPQR state is malformed or cannot do what was asked of it.

    libsignal calls this InvalidState; the peer protocol has no such kind, so it keeps
    the ``invalid_message`` kind of its parent.
    """
