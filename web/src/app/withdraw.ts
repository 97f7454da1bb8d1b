/**
 * A device the relay took that this browser could not finish setting up. Linking,
 * recovery and a key file import register the new device first (Client.link), then
 * store the account record with everything that makes the device usable (contacts,
 * trust, groups, history keys, the file's messages, the recovery secrets) in one unit.
 * When that unit fails, the store holds no account and is discarded, so the device on
 * the relay would be an orphan: keys published, messages queued for it, listed on every
 * Devices page, and nothing that could ever read them. This removes it with its own
 * credentials (DELETE /v1/devices/{own id}: a device may remove itself, as long as it is
 * not the account's last) and says what happened, so that the user can try again.
 *
 * What fails after that unit committed (the server-stored history, the archive, the
 * username) does not withdraw: the account is usable and resumes the rest on unlock.
 *
 * Sign-up is the same with a whole account: the relay made it, the store could not
 * record it, and the account would keep its username with nobody able to use it; it is
 * deleted again (DELETE /v1/accounts/me, which a new account may do without a code).
 */

import { RelayApi, type Credentials } from "./api.js";

/** Joining (or signing up) failed after the relay took this browser; `removed` says whether it is gone again. */
export class JoinUndone extends Error {
  override readonly name = "JoinUndone";

  constructor(message: string, readonly deviceId: number, readonly removed: boolean, cause: unknown) {
    super(message, { cause });
  }
}

function reason(error: unknown): string {
  if (!(error instanceof Error)) return "an unknown error";
  return error.message === "" ? error.name : error.message.replace(/\.$/, "");
}

/**
 * Delete the account `credentials` name (just made, this browser its only device) with
 * its own token, then throw JoinUndone carrying `cause`.
 */
export async function withdrawAccount(server: string, credentials: Credentials, username: string,
  cause: unknown): Promise<never> {
  const api = new RelayApi(server, credentials.token);
  try {
    await api.request("DELETE", "/v1/accounts/me");
  } catch (error) {
    console.warn("cipherpost: the half-made account could not be deleted:", (error as Error).name);
    throw new JoinUndone(`this browser could not be set up (${reason(cause)}), and the server still holds the new `
      + `account ${username}: nothing was kept here; sign up again under another username`, credentials.deviceId, false,
    cause);
  }
  throw new JoinUndone(`this browser could not be set up (${reason(cause)}); the server deleted the new account again `
    + "and nothing was kept: try again", credentials.deviceId, true, cause);
}

/**
 * Remove the device `credentials` name from the relay with its own token, then throw
 * JoinUndone carrying `cause`. A removal that fails (the relay unreachable, or the
 * account's last device) is said in the message: the device must then be removed on a
 * Devices page.
 */
export async function withdraw(server: string, credentials: Credentials, cause: unknown): Promise<never> {
  const api = new RelayApi(server, credentials.token);
  const id = credentials.deviceId;
  try {
    await api.removeDevice(id);
  } catch (error) {
    console.warn("cipherpost: the half-joined device could not be removed:", (error as Error).name);
    throw new JoinUndone(`this browser could not be set up (${reason(cause)}), and the server still lists it as `
      + `device ${id}: nothing was kept here; try again, then remove device ${id} on the Devices page`, id, false, cause);
  }
  throw new JoinUndone(`this browser could not be set up (${reason(cause)}); the server forgot it again and `
    + "nothing was kept: try again", id, true, cause);
}
