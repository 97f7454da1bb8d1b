/**
 * Taking the new identity key another device of ours sent after resetting it
 * (SyncMessage.identity_reset, ./identity_reset.ts; the SDK's inbox
 * _apply_identity_reset): the relay already holds the new public key and dropped this
 * device's prekeys, so this device takes the key pair and its new registration id,
 * forgets every session (new ones carry the new key) and group chain, and publishes a
 * new complete key set (the caller's "republish" follow-up).
 */

import { IdentityKeyPair } from "../protocol/keys.js";
import type { SyncMessage_IdentityReset } from "./proto/cipherpost/app/v1/app_pb.js";
import type { DeviceStore } from "./store/device.js";

/**
 * Every session goes (new ones carry the new identity key, to contacts and our own
 * devices alike), every group's sender-key chain is retired, and our own device list is
 * read again at the next sync send (the SDK's forget_sessions). Inside a store unit.
 */
export async function forgetSessions(store: DeviceStore): Promise<void> {
  for (const [key] of await store.scan("session:")) await store.put(key, null);
  for (const [key] of await store.scan("gdist:")) await store.put(key, null);
  await store.put("own_devices_checked", null);
}

/**
 * Adopt the reset inside the store unit that decrypted it; false (nothing changed) when
 * it is malformed.
 */
export async function adoptIdentityReset(store: DeviceStore, reset: SyncMessage_IdentityReset): Promise<boolean> {
  let identity: IdentityKeyPair;
  try {
    identity = IdentityKeyPair.deserialize(reset.identityKeyPair);
  } catch {
    return false;
  }
  if (!Number.isInteger(reset.registrationId) || reset.registrationId < 1 || reset.registrationId > 16380) return false;
  await store.setIdentity(identity, reset.registrationId);
  await forgetSessions(store);
  return true;
}
