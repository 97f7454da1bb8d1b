"""Named constants of libsignal v4: KDF labels and limits (digest §3.2, §4.1, §4.4, §6.3)."""

from __future__ import annotations

#: HKDF info of the PQXDH master secret (digest §3.2).
PQXDH_INFO = b"WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024"
#: HKDF info of a root-key step (digest §4.1).
ROOT_INFO = b"WhisperRatchet"
#: HKDF info of message keys (digest §4.1).
MESSAGE_KEYS_INFO = b"WhisperMessageKeys"
#: HKDF info of sender-key message keys (digest §6.3).
GROUP_INFO = b"WhisperGroup"

#: The 32 0xFF "discontinuity bytes" that open the PQXDH secret.
DISCONTINUITY = b"\xff" * 32

CURRENT_VERSION = 4
SENDER_KEY_VERSION = 3

MAX_FORWARD_JUMPS = 25_000
MAX_MESSAGE_KEYS = 2_000
MAX_RECEIVER_CHAINS = 5
ARCHIVED_STATES_MAX_LENGTH = 40
MAX_SENDER_KEY_STATES = 5
#: A session whose PreKey data stays unacknowledged longer than this must be rebuilt.
MAX_UNACKNOWLEDGED_SESSION_AGE = 30 * 24 * 3600

MAC_LENGTH = 8
