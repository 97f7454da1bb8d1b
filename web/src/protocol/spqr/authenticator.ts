/**
 * The braid's authenticator: a root key and a MAC key, updated once per epoch
 * (spqr-digest §4.1); mirrors cipherpost.protocol.spqr.authenticator.
 *
 * Both parties start from a zero root key and update it with the PQXDH-derived SPQR auth
 * key for epoch 1; each epoch secret then updates it again, so the header MAC of epoch
 * e+1 and the ciphertext MAC of epoch e are keyed by a key that only holders of S_e know
 * (key confirmation).
 */

import { concat, constantTimeEqual } from "../bytes.js";
import { SpqrAuthenticationFailed } from "./errors.js";
import { AUTH_UPDATE, CT_MAC, HDR_MAC, ZERO_SALT, be64, hkdf, hmacSha256 } from "./kdf.js";

export const MAC_SIZE = 32;

/** `(rootKey, macKey)`; immutable, every update returns a new value. */
export class Authenticator {
  constructor(readonly rootKey: Uint8Array, readonly macKey: Uint8Array) {
    if (rootKey.length !== 32 || macKey.length !== 32) throw new RangeError("authenticator keys are 32 bytes");
  }

  /** The authenticator both sides start from: zero keys updated with `authKey`. */
  static initial(authKey: Uint8Array, epoch = 1): Authenticator {
    return new Authenticator(new Uint8Array(32), new Uint8Array(32)).update(epoch, authKey);
  }

  /** Mix `key` (an epoch secret) in for `epoch`. */
  update(epoch: number, key: Uint8Array): Authenticator {
    const out = hkdf(ZERO_SALT, concat(this.rootKey, key), concat(AUTH_UPDATE, be64(epoch)), 64);
    return new Authenticator(out.slice(0, 32), out.slice(32, 64));
  }

  /** The MAC over an ML-KEM header of `epoch`. */
  macHeader(epoch: number, header: Uint8Array): Uint8Array {
    return hmacSha256(this.macKey, concat(HDR_MAC, be64(epoch), header));
  }

  /** The MAC over `ct1 || ct2` of `epoch`. */
  macCiphertext(epoch: number, ciphertext: Uint8Array): Uint8Array {
    return hmacSha256(this.macKey, concat(CT_MAC, be64(epoch), ciphertext));
  }

  /** @throws SpqrAuthenticationFailed the header MAC does not match (constant-time compare). */
  verifyHeader(epoch: number, header: Uint8Array, mac: Uint8Array): void {
    if (!constantTimeEqual(mac, this.macHeader(epoch, header))) {
      throw new SpqrAuthenticationFailed("SPQR MAC verification failed");
    }
  }

  /** @throws SpqrAuthenticationFailed the ciphertext MAC does not match. */
  verifyCiphertext(epoch: number, ciphertext: Uint8Array, mac: Uint8Array): void {
    if (!constantTimeEqual(mac, this.macCiphertext(epoch, ciphertext))) {
      throw new SpqrAuthenticationFailed("SPQR MAC verification failed");
    }
  }

  toString(): string {
    return "Authenticator(<keys redacted>)";
  }

  toJSON(): string {
    return this.toString();
  }
}
