/** Safety numbers: libsignal's displayable and scannable fingerprints (digest §7); mirrors
 * cipherpost.protocol.fingerprint. */

import { sha512 } from "@noble/hashes/sha2.js";

import { concat, constantTimeEqual } from "./bytes.js";
import type { IdentityKey } from "./keys.js";
import * as pb from "./protobuf.js";

export const DEFAULT_ITERATIONS = 5200;
export const SCANNABLE_VERSION = 2;
const MAX_ITERATIONS = 1_000_000;

/** A scanned fingerprint has another version than ours. */
export class FingerprintVersionMismatch extends Error {
  override name = "FingerprintVersionMismatch";
}

/** A scanned fingerprint is not a well-formed CombinedFingerprints. */
export class FingerprintParsingError extends Error {
  override name = "FingerprintParsingError";
}

function hash(stableId: Uint8Array, key: IdentityKey, iterations: number): Uint8Array {
  const serialized = key.serialize();
  let digest = sha512(concat(Uint8Array.of(0, 0), serialized, stableId, serialized));
  for (let i = 1; i < iterations; i++) digest = sha512(concat(digest, serialized));
  return digest;
}

function displayHalf(digest: Uint8Array): string {
  let out = "";
  for (let i = 0; i < 30; i += 5) {
    let chunk = 0;
    for (let j = 0; j < 5; j++) chunk = chunk * 256 + digest[i + j]!;
    out += String(chunk % 100000).padStart(5, "0");
  }
  return out;
}

/** Both parties' fingerprint of a conversation, as seen by the local party. */
export class Fingerprint {
  private constructor(
    readonly displayable: string,
    readonly scannable: Uint8Array,
    readonly version: number,
    readonly localContent: Uint8Array,
    readonly remoteContent: Uint8Array,
  ) {}

  /**
   * Compute the 60-digit number and the scannable (QR) bytes.
   * @throws RangeError `iterations` outside 2..1,000,000.
   */
  static create(localId: Uint8Array, localKey: IdentityKey, remoteId: Uint8Array, remoteKey: IdentityKey,
    options: { iterations?: number; version?: number } = {}): Fingerprint {
    const iterations = options.iterations ?? DEFAULT_ITERATIONS;
    const version = options.version ?? SCANNABLE_VERSION;
    if (!Number.isInteger(iterations) || iterations <= 1 || iterations > MAX_ITERATIONS) {
      throw new RangeError("iterations must be in 2..1000000");
    }
    const local = hash(localId, localKey, iterations);
    const remote = hash(remoteId, remoteKey, iterations);
    const halves = [displayHalf(local), displayHalf(remote)].sort();
    const scannable = concat(
      pb.fieldVarint(1, version),
      pb.fieldBytes(2, pb.fieldBytes(1, local.subarray(0, 32))),
      pb.fieldBytes(3, pb.fieldBytes(1, remote.subarray(0, 32))),
    );
    return new Fingerprint(halves.join(""), scannable, version, local.slice(0, 32), remote.slice(0, 32));
  }

  /**
   * True when `scanned` (the other side's scannable form) matches ours.
   * @throws FingerprintParsingError `scanned` is malformed.
   * @throws FingerprintVersionMismatch `scanned` has another version.
   */
  compare(scanned: Uint8Array): boolean {
    let version: number | undefined;
    let theirsLocal: Uint8Array | undefined;
    let theirsRemote: Uint8Array | undefined;
    try {
      const fields = pb.decode(scanned);
      version = pb.getInt(fields, 1);
      theirsLocal = pb.getBytes(pb.decode(pb.getBytes(fields, 2) ?? new Uint8Array(0)), 1);
      theirsRemote = pb.getBytes(pb.decode(pb.getBytes(fields, 3) ?? new Uint8Array(0)), 1);
    } catch {
      throw new FingerprintParsingError("malformed scannable fingerprint");
    }
    if (version === undefined || theirsLocal === undefined || theirsRemote === undefined) {
      throw new FingerprintParsingError("incomplete scannable fingerprint");
    }
    if (version !== this.version) throw new FingerprintVersionMismatch(`version ${version}, expected ${this.version}`);
    const sameLocal = theirsLocal.length === this.remoteContent.length && constantTimeEqual(theirsLocal, this.remoteContent);
    const sameRemote = theirsRemote.length === this.localContent.length && constantTimeEqual(theirsRemote, this.localContent);
    return sameLocal && sameRemote;
  }
}
