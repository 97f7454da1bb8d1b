/**
 * Passkey unlocking in the page: "Unlock with passkey" on the unlock screen (shown only
 * when a passkey is registered in this browser), and on the security page adding one
 * (the password asked again) or removing it, and changing the password (which removes
 * the passkey: it must be added again). The logic is ../app/store/passkey.ts;
 * everything stays in this browser.
 */

import { Client } from "../app/client.js";
import { WrongKey } from "../app/store/crypto.js";
import type { Kv } from "../app/store/kv.js";
import {
  addPasskey, changePassword, NoPasskey, PasskeyConflict, PasskeyMismatch, PasskeyNotUsed, PasskeyRecordInvalid, PasskeyStale,
  PrfUnavailable,
  readRecord, removePasskey, unlockWithPasskey,
} from "../app/store/passkey.js";
import { h } from "./dom.js";
import { newPasswordProblem, sentence } from "./new_device.js";

/** True when this browser has WebAuthn at all (PRF support shows only when it is used). */
function webAuthnOffered(): boolean {
  return typeof PublicKeyCredential !== "undefined" && typeof navigator.credentials?.create === "function";
}

/** What to tell the user about a passkey failure; `fallback` for anything else. */
export function describePasskeyError(error: unknown, fallback: (e: unknown) => string): string {
  if (error instanceof PrfUnavailable) {
    return `No passkey was added: ${error.message}. The password still unlocks this browser.`;
  }
  if (error instanceof PasskeyStale) {
    return "The password of this browser changed since the passkey was added: unlock with the password, then add "
      + "the passkey again on the security page.";
  }
  if (error instanceof PasskeyConflict) return sentence(error.message);
  if (error instanceof PasskeyMismatch) return "This passkey does not unlock this browser. Unlock with your password.";
  if (error instanceof PasskeyNotUsed) {
    return `${error.message.charAt(0).toUpperCase()}${error.message.slice(1)}. Unlock with your password.`;
  }
  if (error instanceof PasskeyRecordInvalid) {
    return "This browser's passkey record is damaged or from another version. Unlock with your password; "
      + "then remove the passkey and add it again.";
  }
  if (error instanceof NoPasskey) return "No passkey unlocks this browser. Unlock with your password.";
  if (error instanceof WrongKey) return "Wrong password.";
  return fallback(error);
}

/**
 * The unlock screen's "Unlock with passkey" button: hidden until a passkey record is
 * found in the store `openKv` opens. `enter` takes the unlocked client; failures go to
 * `error` and leave the password form as it was.
 */
export function passkeyUnlockButton(openKv: () => Promise<Kv>, enter: (client: Client) => Promise<void>,
  error: HTMLElement, describe: (e: unknown) => string): HTMLElement {
  // While the browser waits for the passkey the button cancels the wait: with the
  // authenticator gone, a browser may wait for one until the timeout.
  let waiting: AbortController | undefined;
  const button = h("button", { type: "button", class: "secondary", hidden: true, "data-testid": "unlock-passkey",
    onclick: async () => {
      if (waiting !== undefined) {
        waiting.abort();
        return;
      }
      error.textContent = "";
      waiting = new AbortController();
      button.textContent = "Waiting for the passkey… (cancel)";
      let kv: Kv | undefined;
      try {
        kv = await openKv();
        const key = await unlockWithPasskey(kv, location.hostname, navigator.credentials, waiting.signal);
        waiting = undefined;
        button.disabled = true;
        const client = await Client.open(kv, key);
        kv = undefined; // the client's now
        await enter(client);
      } catch (e) {
        kv?.close();
        error.textContent = describePasskeyError(e, describe);
        waiting = undefined;
        button.disabled = false;
        button.textContent = "Unlock with passkey";
      }
    } }, "Unlock with passkey");
  if (webAuthnOffered()) {
    void openKv().then(async (kv) => {
      const found = await readRecord(kv).catch(() => true); // a damaged record: the button says so when used
      kv.close();
      button.hidden = found === undefined;
      button.dataset.checked = "true";
    }).catch(() => undefined);
  }
  return button;
}

/** The security page's section: add a passkey for unlocking, or remove it. */
export function passkeySection(client: Client, describe: (e: unknown) => string): HTMLElement {
  const kv = client.store.kv;
  const state = h("p", { "data-testid": "passkey-state" }, "…");
  const error = h("p", { class: "error", role: "alert", "data-testid": "passkey-error" });
  const body = h("div", {});
  const show = async () => {
    let record;
    try {
      record = await readRecord(kv);
    } catch (e) {
      error.textContent = describePasskeyError(e, describe);
      record = undefined;
    }
    state.dataset.registered = String(record !== undefined);
    if (record !== undefined) {
      state.textContent = `A passkey unlocks this browser, added ${new Date(record.created).toLocaleString([],
        { dateStyle: "medium", timeStyle: "short" })}. The password unlocks it too.`;
      body.replaceChildren(removeButton());
    } else if (!webAuthnOffered()) {
      state.textContent = "This browser does not offer passkeys. Unlock with your password.";
      body.replaceChildren();
    } else {
      state.textContent = "No passkey: only the password unlocks this browser.";
      body.replaceChildren(addForm());
    }
  };
  const addForm = () => {
    const password = h("input", { type: "password", autocomplete: "current-password", required: true,
      "aria-label": "Your password for this browser", placeholder: "Password for this browser",
      "data-testid": "passkey-password" });
    const submit = h("button", { type: "submit", "data-testid": "passkey-add" }, "Add a passkey for unlocking");
    return h("form", { class: "link", onsubmit: async (event: Event) => {
      event.preventDefault();
      error.textContent = "";
      submit.disabled = true;
      try {
        await addPasskey(kv, password.value, { accountId: client.accountId, username: client.username },
          location.hostname, navigator.credentials);
        password.value = "";
        await show();
      } catch (e) {
        error.textContent = describePasskeyError(e, describe);
        submit.disabled = false;
      }
    } }, password, submit);
  };
  const removeButton = () => {
    const remove = h("button", { class: "secondary", "data-testid": "passkey-remove", onclick: async () => {
      if (remove.dataset.confirm !== "yes") {
        remove.dataset.confirm = "yes";
        remove.textContent = "Really remove the passkey?";
        return;
      }
      error.textContent = "";
      try {
        await removePasskey(kv, location.hostname);
      } catch (e) {
        error.textContent = describePasskeyError(e, describe);
      }
      await show();
    } }, "Remove the passkey");
    return remove;
  };
  void show();
  return h("div", { "data-testid": "passkey" },
    h("h3", {}, "Unlocking this browser"),
    h("p", { class: "hint" }, "A passkey (this device's fingerprint or face unlock, or a security key) can unlock "
      + "Cipherpost in this browser instead of the password, where the browser and the authenticator offer the "
      + "PRF extension. The password keeps working. Everything stays in this browser; the server never sees it."),
    state, body, error, passwordForm(client, describe, show));
}

/** Change the password: the store sealed again under it; a passkey must be added again. */
function passwordForm(client: Client, describe: (e: unknown) => string, changed: () => Promise<void>): HTMLElement {
  const field = (testid: string, label: string, autocomplete: string) => h("input", { type: "password", autocomplete,
    required: true, "aria-label": label, placeholder: label, "data-testid": testid });
  const old = field("password-old", "Current password", "current-password");
  const fresh = field("password-new", "New password", "new-password");
  const confirm = field("password-confirm", "New password again", "new-password");
  const submit = h("button", { type: "submit", "data-testid": "password-change" }, "Change the password");
  const state = h("p", { role: "status", "data-testid": "password-state" });
  return h("details", {}, h("summary", { "data-testid": "password-open" }, "Change the password"),
    h("form", { class: "link", onsubmit: async (event: Event) => {
      event.preventDefault();
      state.textContent = "";
      state.textContent = newPasswordProblem(fresh.value, confirm.value) ?? "";
      if (state.textContent !== "") return;
      submit.disabled = true;
      try {
        const hadPasskey = await changePassword(client.store, old.value, fresh.value);
        old.value = fresh.value = confirm.value = "";
        state.textContent = hadPasskey
          ? "Password changed. The passkey was removed with the old password: add it again to unlock with it."
          : "Password changed.";
        state.dataset.changed = "true";
        await changed();
      } catch (e) {
        state.textContent = describePasskeyError(e, describe);
      } finally {
        submit.disabled = false;
      }
    } }, old, fresh, confirm, submit), state);
}
