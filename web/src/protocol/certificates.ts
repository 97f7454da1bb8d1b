/**
 * Sealed-sender certificates (digest §8.4); mirrors cipherpost.protocol.certificates.
 *
 * A *server certificate* (key id, server key) is signed by a trust root; over it a
 * *sender certificate* (uuid, optional E.164, device id, identity key, expiry in
 * milliseconds) is signed by the server key. Certificates are parsed the way libsignal's
 * prost decoder reads them (unknown fields skipped, last value wins, the last member of a
 * `oneof` wins, a known field with the wrong wire type refused) and keep the exact bytes
 * received, so signatures are checked over those.
 */

import { concat, fromHex, systemRandom, type Random } from "./bytes.js";
import {
  ExpiredCertificate,
  InvalidMessage,
  RevokedCertificate,
  UnknownServerCertificate,
  UntrustedCertificate,
} from "./errors.js";
import { PrivateKey, PublicKey } from "./keys.js";
import * as pb from "./protobuf.js";
import { formatUuid } from "./uuid.js";
import * as xeddsa from "./xeddsa.js";

/** Server certificate key ids libsignal refuses (its test id, digest §8.4). */
export const REVOKED_SERVER_CERTIFICATE_IDS: ReadonlySet<number> = new Set([0xdeadc357]);

const TWO_32 = 2 ** 32;
const decoder = new TextDecoder("utf-8", { fatal: true });
const encoder = new TextEncoder();

// -- parsing helpers ------------------------------------------------------------------

/** Known fields of a message: their last value and the position it came at. */
export type KnownFields = Map<number, { position: number; value: pb.Value }>;

/**
 * The known fields (`wires`: field number to wire type) of `data`.
 * @throws pb.DecodeError malformed, or a known field with the wrong wire type.
 */
export function readFields(data: Uint8Array, wires: Record<number, number>): KnownFields {
  const out: KnownFields = new Map();
  pb.decodeOrdered(data).forEach(({ number, wire, value }, position) => {
    const expected = wires[number];
    if (expected === undefined) return;
    if (wire !== expected) throw new pb.DecodeError(`field ${number} has wire type ${wire}`);
    out.set(number, { position, value });
  });
  return out;
}

export function fieldBytes(fields: KnownFields, number: number): Uint8Array | undefined {
  const value = fields.get(number)?.value;
  return value instanceof Uint8Array ? value : undefined;
}

export function fieldInt(fields: KnownFields, number: number): number | undefined {
  const value = fields.get(number)?.value;
  return typeof value === "number" ? value : undefined;
}

/** Which member of a `oneof` is set: the one that came last on the wire. */
function oneof(fields: KnownFields, ...numbers: number[]): number | undefined {
  let best: number | undefined;
  let at = -1;
  for (const n of numbers) {
    const entry = fields.get(n);
    if (entry !== undefined && entry.position > at) [best, at] = [n, entry.position];
  }
  return best;
}

/**
 * prost reads a uint32 as the low 32 bits of the varint. Exact up to 2^53 (varints above
 * that reach us rounded; no honest encoder writes one for a uint32).
 */
export function uint32(value: number): number {
  return value % TWO_32;
}

// -- certificates ---------------------------------------------------------------------

/** A server key and its id, signed by a trust root (digest §8.4). */
export class ServerCertificate {
  private constructor(
    readonly keyId: number,
    readonly key: PublicKey,
    readonly certificate: Uint8Array,
    readonly signature: Uint8Array,
    readonly serialized: Uint8Array,
  ) {}

  /**
   * Issue a server certificate (as a deployment's offline tooling would; tests and the
   * interop peer).
   * @throws RangeError `keyId` is not a u32.
   */
  static create(keyId: number, key: PublicKey, trustRoot: PrivateKey, rng: Random = systemRandom): ServerCertificate {
    if (!Number.isInteger(keyId) || keyId < 0 || keyId >= TWO_32) throw new RangeError("keyId must be a u32");
    const certificate = concat(pb.fieldVarint(1, keyId), pb.fieldBytes(2, key.serialize()));
    const signature = xeddsa.sign(trustRoot, certificate, rng);
    return new ServerCertificate(keyId, key, certificate, signature,
      concat(pb.fieldBytes(1, certificate), pb.fieldBytes(2, signature)));
  }

  /**
   * Parse a serialized `ServerCertificate`.
   * @throws InvalidMessage malformed, or a required field is missing.
   * @throws InvalidKey the server key is not a Curve25519 key.
   */
  static deserialize(data: Uint8Array): ServerCertificate {
    let certificate: Uint8Array | undefined;
    let signature: Uint8Array | undefined;
    let inner: KnownFields;
    try {
      const outer = readFields(data, { 1: pb.LENGTH, 2: pb.LENGTH });
      certificate = fieldBytes(outer, 1);
      signature = fieldBytes(outer, 2);
      if (certificate === undefined || signature === undefined) {
        throw new InvalidMessage("server certificate lacks a required field");
      }
      inner = readFields(certificate, { 1: pb.VARINT, 2: pb.LENGTH });
    } catch (cause) {
      if (cause instanceof InvalidMessage) throw cause;
      throw new InvalidMessage("malformed server certificate", { cause });
    }
    const keyId = fieldInt(inner, 1);
    const key = fieldBytes(inner, 2);
    if (keyId === undefined || key === undefined) throw new InvalidMessage("server certificate lacks a required field");
    return new ServerCertificate(uint32(keyId), PublicKey.deserialize(key), Uint8Array.from(certificate),
      Uint8Array.from(signature), Uint8Array.from(data));
  }

  /** True when the id is not revoked and `trustRoot` signed this certificate. */
  isSignedBy(trustRoot: PublicKey): boolean {
    if (REVOKED_SERVER_CERTIFICATE_IDS.has(this.keyId)) return false;
    return xeddsa.verify(trustRoot, this.certificate, this.signature);
  }
}

/** The server certificates libsignal knows by id (digest §8.4), for `signer.id`. */
export const KNOWN_SERVER_CERTIFICATES: ReadonlyMap<number, ServerCertificate> = new Map([
  [2, "0a25080212210539450d63ebd0752c0fd4038b9d07a916f5e174b756d409b5ca79f4c97400631e12"
    + "4064c5a38b1e927497d3d4786b101a623ab34a7da3954fae126b04dba9d7a3604ed88cdc8550950f"
    + "0d4a9134ceb7e19b94139151d2c3d6e1c81e9d1128aafca806"],
  [3, "0a250803122105bc9d1d290be964810dfa7e94856480a3f7060d004c9762c24c575a1522353a5a12"
    + "40c11ec3c401eb0107ab38f8600e8720a63169e0e2eb8a3fae24f63099f85ea319c3c1c46d345470"
    + "6ae2a679d1fee690a488adda98a2290b66c906bb60295ed781"],
  [0x7357c357, "0a2908d786df9a07122105847c0d2c375234f365e660955187a3735a0f7613d1609d3a6a4d8c53ae"
    + "aa5a221240e0b9ebacdfc3aa2827f7924b697784d1c25e44ca05dd433e1a38dc6382eb2730d419ca"
    + "9a250b1be9d5a9463e61efd6781777a91b83c97b844d014206e2829785"],
].map(([id, hex]) => [id as number, ServerCertificate.deserialize(fromHex(hex as string))]));

/** What a sender certificate says, for {@link SenderCertificate.create}. */
export interface SenderCertificateFields {
  readonly senderUuid: string;
  readonly senderE164?: string | undefined;
  readonly senderDeviceId: number;
  readonly identityKey: PublicKey;
  /** Milliseconds since the epoch. */
  readonly expires: number;
}

/**
 * Who sent a sealed message, signed by a server certificate (digest §8.4). `signer` is
 * the embedded {@link ServerCertificate}, or the id of a built-in one; `expires` is in
 * milliseconds since the epoch.
 */
export class SenderCertificate {
  private constructor(
    readonly senderUuid: string,
    readonly senderE164: string | undefined,
    readonly senderDeviceId: number,
    readonly expires: number,
    readonly identityKey: PublicKey,
    readonly signer: ServerCertificate | number,
    readonly certificate: Uint8Array,
    readonly signature: Uint8Array,
    readonly serialized: Uint8Array,
  ) {}

  /**
   * Issue a sender certificate, written as libsignal writes it (uuid as a string, the
   * server certificate embedded): the relay's job, here for tests and the interop peer.
   * @throws RangeError a device id outside 1..127 or an expiry that is not a safe integer.
   */
  static create(fields: SenderCertificateFields, signer: ServerCertificate, signerKey: PrivateKey,
    rng: Random = systemRandom): SenderCertificate {
    const { senderUuid, senderE164, senderDeviceId, identityKey, expires } = fields;
    if (!Number.isInteger(senderDeviceId) || senderDeviceId < 1 || senderDeviceId > 127) {
      throw new RangeError("senderDeviceId must be 1..127");
    }
    const parts: Uint8Array[] = [];
    if (senderE164 !== undefined) parts.push(pb.fieldBytes(1, encoder.encode(senderE164)));
    parts.push(pb.fieldVarint(2, senderDeviceId), pb.fieldFixed64(3, expires), pb.fieldBytes(4, identityKey.serialize()),
      pb.fieldBytes(5, signer.serialized), pb.fieldBytes(6, encoder.encode(senderUuid)));
    const certificate = concat(...parts);
    const signature = xeddsa.sign(signerKey, certificate, rng);
    return new SenderCertificate(senderUuid, senderE164, senderDeviceId, expires, identityKey, signer, certificate,
      signature, concat(pb.fieldBytes(1, certificate), pb.fieldBytes(2, signature)));
  }

  /**
   * Parse a serialized `SenderCertificate` (nothing is validated yet).
   * @throws InvalidMessage malformed, a required field missing, or a device id outside 1..127.
   * @throws InvalidKey the identity or server key is not a Curve25519 key.
   */
  static deserialize(data: Uint8Array): SenderCertificate {
    let certificate: Uint8Array | undefined;
    let signature: Uint8Array | undefined;
    let inner: KnownFields;
    let e164: string | undefined;
    let senderUuid: string | undefined;
    try {
      const outer = readFields(data, { 1: pb.LENGTH, 2: pb.LENGTH });
      certificate = fieldBytes(outer, 1);
      signature = fieldBytes(outer, 2);
      if (certificate === undefined || signature === undefined) {
        throw new InvalidMessage("sender certificate lacks a required field");
      }
      inner = readFields(certificate, {
        1: pb.LENGTH, 2: pb.VARINT, 3: pb.FIXED64, 4: pb.LENGTH, 5: pb.LENGTH, 6: pb.LENGTH, 7: pb.LENGTH, 8: pb.VARINT,
      });
      const e164Raw = fieldBytes(inner, 1);
      e164 = e164Raw === undefined ? undefined : decoder.decode(e164Raw);
      const uuidField = oneof(inner, 6, 7);
      if (uuidField === 6) {
        senderUuid = decoder.decode(fieldBytes(inner, 6));
      } else if (uuidField === 7) {
        const raw = fieldBytes(inner, 7)!;
        if (raw.length !== 16) throw new InvalidMessage("sender uuid must be 16 bytes");
        senderUuid = formatUuid(raw);
      }
    } catch (cause) {
      if (cause instanceof InvalidMessage) throw cause;
      throw new InvalidMessage("malformed sender certificate", { cause });
    }
    const device = fieldInt(inner, 2);
    const expires = fieldInt(inner, 3);
    const identity = fieldBytes(inner, 4);
    const signerField = oneof(inner, 5, 8);
    if (device === undefined || expires === undefined || identity === undefined || senderUuid === undefined
      || signerField === undefined) {
      throw new InvalidMessage("sender certificate lacks a required field");
    }
    const deviceId = uint32(device);
    if (deviceId < 1 || deviceId > 127) throw new InvalidMessage("sender device id must be 1..127");
    const signer = signerField === 5
      ? ServerCertificate.deserialize(fieldBytes(inner, 5)!)
      : uint32(fieldInt(inner, 8)!);
    return new SenderCertificate(senderUuid, e164, deviceId, expires, PublicKey.deserialize(identity), signer,
      Uint8Array.from(certificate), Uint8Array.from(signature), Uint8Array.from(data));
  }

  /**
   * The signing server certificate: embedded, or built in by id.
   * @throws UnknownServerCertificate an id that names no built-in certificate.
   */
  serverCertificate(): ServerCertificate {
    if (this.signer instanceof ServerCertificate) return this.signer;
    const known = KNOWN_SERVER_CERTIFICATES.get(this.signer);
    if (known === undefined) throw new UnknownServerCertificate(`unknown server certificate id 0x${this.signer.toString(16)}`);
    return known;
  }

  /**
   * Check the chain up to one of `trustRoots` and the expiry (digest §8.4). Every root is
   * tried, whichever signed, so timing does not tell which one did. `nowMs == expires` is
   * valid; one millisecond later is not.
   *
   * @throws UnknownServerCertificate the signer id names no built-in certificate.
   * @throws RevokedCertificate the server certificate's id is revoked.
   * @throws UntrustedCertificate no root signed the server certificate, or the server key did not sign this one.
   * @throws ExpiredCertificate `nowMs` is after `expires`.
   */
  validate(trustRoots: readonly PublicKey[], nowMs: number): void {
    const server = this.serverCertificate();
    if (REVOKED_SERVER_CERTIFICATE_IDS.has(server.keyId)) {
      throw new RevokedCertificate(`server certificate id 0x${server.keyId.toString(16)} is revoked`);
    }
    let trusted = false;
    for (const root of trustRoots) trusted = server.isSignedBy(root) || trusted;
    if (!trusted) throw new UntrustedCertificate("server certificate not signed by a trust root");
    if (!xeddsa.verify(server.key, this.certificate, this.signature)) {
      throw new UntrustedCertificate("sender certificate not signed by the server");
    }
    if (nowMs > this.expires) throw new ExpiredCertificate("sender certificate expired");
  }
}
