/**
 * The security page's recovery part (../app/recovery_secrets.ts, ../app/identity_reset.ts):
 * a new recovery key, shown once and stored on the relay only after the user says they
 * wrote it down (until then the old key keeps working); a recovery passphrase, typed
 * twice and checked with zxcvbn as the SDK checks it (strength.js, loaded when the field
 * is first used; a weak one shows zxcvbn's warning and suggestions); and resetting the
 * identity key after a compromise, asked twice. Each goes through the relay's
 * second-factor prompt when the account has one (the api's prompt).
 */

import type { Client } from "../app/client.js";
import { resetIdentity } from "../app/identity_reset.js";
import { WeakPassphrase } from "../app/passphrase_rating.js";
import {
  heldSecrets, newRecoveryKey, RecoverySecretError, saveRecoveryKey, setRecoveryPassphrase,
} from "../app/recovery_secrets.js";
import { loadRater } from "../app/strength.js";
import { h } from "./dom.js";

function sentence(message: string): string {
  return `${message.charAt(0).toUpperCase()}${message.slice(1)}${/[.!?]$/.test(message) ? "" : "."}`;
}

/** The recovery key, passphrase and identity reset controls. */
export function recoverySecretsSection(client: Client, describe: (e: unknown) => string): HTMLElement {
  const error = h("p", { class: "error", role: "alert", "data-testid": "recovery-error" });
  const state = h("p", { class: "hint", "data-testid": "recovery-state" });
  // zxcvbn's warning and suggestions for a refused passphrase, one per line
  const advice = h("ul", { class: "hint", "data-testid": "recovery-passphrase-advice" });
  const fail = (e: unknown) => {
    if (e instanceof WeakPassphrase) {
      error.textContent = "That recovery passphrase is too easy to guess.";
      advice.replaceChildren(...[e.rating.warning, ...e.rating.suggestions].filter((text) => text !== "")
        .map((text) => h("li", {}, text)));
      return;
    }
    error.textContent = e instanceof RecoverySecretError ? sentence(e.message) : describe(e);
  };
  const held = h("p", { "data-testid": "recovery-held" });
  const showHeld = async () => {
    const { key, passphrase } = await heldSecrets(client);
    held.dataset.key = String(key);
    held.dataset.passphrase = String(passphrase);
    held.textContent = `This browser ${key ? "made (or recovered with) the current recovery key" : "holds no recovery key"}`
      + ` and ${passphrase ? "set the current recovery passphrase" : "set no recovery passphrase"}. `
      + "A new one replaces the account's earlier one on every device.";
  };
  void showHeld().catch(fail);

  // -- the recovery key: made here, shown once, stored once the user wrote it down --
  const keyArea = h("div", { "data-testid": "recovery-key-area" });
  const startKey = h("button", { class: "secondary", "data-testid": "recovery-key-new", onclick: () => {
    error.textContent = state.textContent = "";
    const fresh = newRecoveryKey();
    let made: Uint8Array | undefined = fresh.key;
    const saved = h("input", { type: "checkbox", id: "recovery-key-saved", "data-testid": "recovery-key-saved" });
    const save = h("button", { "data-testid": "recovery-key-save", onclick: async () => {
      error.textContent = "";
      if (!saved.checked) {
        error.textContent = "Write the key down first, then tick the box.";
        return;
      }
      if (made === undefined) return;
      save.disabled = true;
      try {
        await saveRecoveryKey(client, made.slice());
        made.fill(0);
        made = undefined;
        keyArea.replaceChildren();
        startKey.hidden = false;
        state.textContent = "Your new recovery key is stored; the old one no longer works.";
        await showHeld();
      } catch (e) {
        fail(e); // the key is still shown: saving again is safe (the relay changed nothing)
      } finally {
        save.disabled = false;
      }
    } }, "Use this key");
    const cancel = h("button", { class: "secondary", "data-testid": "recovery-key-cancel", onclick: () => {
      made?.fill(0);
      made = undefined;
      keyArea.replaceChildren();
      startKey.hidden = false;
    } }, "Cancel");
    startKey.hidden = true;
    keyArea.replaceChildren(
      h("p", {}, "Your new recovery key. Write it down and keep it somewhere safe: with it, anyone can take over "
        + "your account, and it is not shown again. Until you press \u201cUse this key\u201d, your old key keeps working."),
      h("code", { class: "digest", "data-testid": "recovery-key-text" }, fresh.text),
      h("p", {}, saved, " ", h("label", { for: "recovery-key-saved" }, "I have written it down")),
      h("div", { class: "buttons" }, save, cancel));
  } }, "New recovery key…");

  // -- the recovery passphrase --
  const passphrase = h("input", { type: "password", autocomplete: "new-password", "aria-label": "New recovery passphrase",
    "data-testid": "recovery-passphrase-new",
    // fetch strength.js while the passphrase is typed; a failure shows when it is set
    onfocus: () => void loadRater().catch(() => undefined) });
  const again = h("input", { type: "password", autocomplete: "new-password", "aria-label": "The passphrase again",
    "data-testid": "recovery-passphrase-again" });
  const passphraseSave = h("button", { type: "submit", "data-testid": "recovery-passphrase-save" }, "Set passphrase");
  const passphraseForm = h("form", { class: "link", onsubmit: async (event: Event) => {
    event.preventDefault();
    error.textContent = state.textContent = "";
    advice.replaceChildren();
    if (passphrase.value !== again.value) {
      error.textContent = "The passphrases differ.";
      return;
    }
    passphraseSave.disabled = true;
    state.textContent = "Checking the passphrase, then deriving its key (a few seconds)…";
    try {
      await setRecoveryPassphrase(client, passphrase.value);
      passphrase.value = again.value = "";
      state.textContent = "Your recovery passphrase is set; an earlier one no longer works.";
      await showHeld();
    } catch (e) {
      state.textContent = "";
      fail(e);
    } finally {
      passphraseSave.disabled = false;
    }
  } }, passphrase, again, passphraseSave);

  // -- the identity reset --
  const reset: HTMLButtonElement = h("button", { class: "secondary", "data-testid": "identity-reset", onclick: async () => {
    error.textContent = state.textContent = "";
    if (reset.dataset.confirm !== "yes") {
      reset.dataset.confirm = "yes";
      reset.textContent = "Really replace it? Every contact sees a new safety number";
      return;
    }
    reset.disabled = true;
    try {
      const { unreachable, resealed } = await resetIdentity(client);
      state.dataset.reset = "done";
      state.textContent = "Your identity key is replaced. Contacts see a new safety number with your next message."
        + (unreachable.length > 0 ? ` These devices of yours could not be given it: ${unreachable.join(", ")}; remove `
          + "them and link them again." : "")
        + (resealed > 0 ? " Your recovery backup carries the new key." : " Make a new recovery key so that a recovery "
          + "brings back the new key.");
    } catch (e) {
      fail(e);
    } finally {
      reset.disabled = false;
      reset.dataset.confirm = "no";
      reset.textContent = "Reset identity key…";
    }
  } }, "Reset identity key…");

  return h("div", { "data-testid": "recovery-secrets" },
    h("h3", {}, "Recovery"),
    h("p", { class: "hint" }, "A recovery key or passphrase gets your account back on a new device: same identity, "
      + "contacts and groups. The server gets only values derived from them."),
    held,
    h("h4", {}, "Recovery key"), h("div", { class: "buttons" }, startKey), keyArea,
    h("h4", {}, "Recovery passphrase"),
    h("p", { class: "hint" }, "Four or more unrelated words; it is found by your username, so it must be hard to "
      + "guess: zxcvbn, as in the Python client, must rate it at least \u201csafely unguessable\u201d."),
    passphraseForm, advice,
    h("h4", {}, "Identity key"),
    h("p", { class: "hint" }, "If a device or key of yours may be compromised, replace the identity key on all your "
      + "devices. Every contact sees your safety number change and must accept it."),
    h("div", { class: "buttons" }, reset),
    state, error);
}
