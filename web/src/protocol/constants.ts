/** Named constants of libsignal v4: KDF labels and limits (digest §3.2, §4.1, §4.4, §6.3). */

const ascii = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));

/** HKDF info of the PQXDH master secret (digest §3.2). */
export const PQXDH_INFO = ascii("WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024");
/** HKDF info of a root-key step (digest §4.1). */
export const ROOT_INFO = ascii("WhisperRatchet");
/** HKDF info of message keys (digest §4.1). */
export const MESSAGE_KEYS_INFO = ascii("WhisperMessageKeys");
/** HKDF info of sender-key message keys (digest §6.3). */
export const GROUP_INFO = ascii("WhisperGroup");

/** The 32 0xFF "discontinuity bytes" that open the PQXDH secret. */
export const DISCONTINUITY = new Uint8Array(32).fill(0xff);

export const CURRENT_VERSION = 4;
export const SENDER_KEY_VERSION = 3;

export const MAX_FORWARD_JUMPS = 25_000;
export const MAX_MESSAGE_KEYS = 2_000;
export const MAX_RECEIVER_CHAINS = 5;
export const ARCHIVED_STATES_MAX_LENGTH = 40;
export const MAX_SENDER_KEY_STATES = 5;
/** A session whose PreKey data stays unacknowledged longer than this (seconds) must be rebuilt. */
export const MAX_UNACKNOWLEDGED_SESSION_AGE = 30 * 24 * 3600;

export const MAC_LENGTH = 8;
