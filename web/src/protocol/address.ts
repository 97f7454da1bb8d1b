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
