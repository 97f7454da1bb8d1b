/** Protocol addresses (libsignal's ProtocolAddress, digest §9). */

export const MAX_DEVICE_ID = 127;

/** One device of one account: an opaque account name and a device id 1..127. Immutable. */
export class ProtocolAddress {
  readonly name: string;
  readonly deviceId: number;

  constructor(name: string, deviceId: number) {
    if (typeof name !== "string" || name.length === 0) {
      throw new RangeError("address name must be a non-empty string");
    }
    if (!Number.isInteger(deviceId) || deviceId < 1 || deviceId > MAX_DEVICE_ID) {
      throw new RangeError("device id must be an integer 1..127");
    }
    this.name = name;
    this.deviceId = deviceId;
    Object.freeze(this);
  }

  equals(other: ProtocolAddress): boolean {
    return other.name === this.name && other.deviceId === this.deviceId;
  }

  /** A key for maps: unambiguous because the device id is a number and comes last. */
  key(): string {
    return `${this.name}\u0000${this.deviceId}`;
  }

  toString(): string {
    return `${this.name}.${this.deviceId}`;
  }
}

const PNI_PREFIX = "PNI:";
const HEX_UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/**
 * The 17-byte fixed-width binary of a service-id name (libsignal's `ServiceId`), or
 * `undefined` if the name is not one: a kind byte (0 ACI, a hyphenated UUID in any case;
 * 1 PNI, `PNI:` and a hyphenated UUID) and the UUID's 16 bytes. Mirrors Python's
 * `cipherpost.protocol.address.service_id_fixed_width`.
 */
export function serviceIdFixedWidth(name: string): Uint8Array | undefined {
  let kind = 0;
  if (name.startsWith(PNI_PREFIX)) {
    kind = 1;
    name = name.slice(PNI_PREFIX.length);
  }
  if (!HEX_UUID.test(name)) return undefined;
  const digits = name.replaceAll("-", "");
  const out = new Uint8Array(17);
  out[0] = kind;
  for (let i = 0; i < 16; i++) out[1 + i] = parseInt(digits.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * SignalMessage field 6 (libsignal 0.91+, spqr-digest §7): `sender id || sender device ||
 * recipient id || recipient device` (36 bytes), or `undefined` unless both names are
 * service ids. Sent in the SignalMessage of a PreKey message, under its MAC.
 */
export function addressesField(sender: ProtocolAddress, recipient: ProtocolAddress): Uint8Array | undefined {
  const senderId = serviceIdFixedWidth(sender.name);
  const recipientId = serviceIdFixedWidth(recipient.name);
  if (senderId === undefined || recipientId === undefined) return undefined;
  const out = new Uint8Array(36);
  out.set(senderId, 0);
  out[17] = sender.deviceId;
  out.set(recipientId, 18);
  out[35] = recipient.deviceId;
  return out;
}
