/**
 * The encrypted key file in the page (src/app/key_file.ts): on the start screen, a file
 * picked and its passphrase typed make this browser a device of the account in it; on
 * the devices page, a key file of this account is written under a passphrase the user
 * chooses, with or without the messages, and downloaded. Neither passphrase leaves the
 * page; the file is read and written here.
 */

import type { Client } from "../app/client.js";
import {
  exportKeyFile, importKeyFile, KeyFileError, keyFileName, NEEDS_RECOVERY_KEY, recoverySecrets,
} from "../app/key_file.js";
import { checkPassphrase, WeakPassphrase } from "../app/passphrase_rating.js";
import { IdbKv } from "../app/store/kv.js";
import { loadRater, StrengthUnavailable } from "../app/strength.js";
import { h, replace } from "./dom.js";
import { joinFailed, newPasswordFields, type NewDeviceContext, newPasswordProblem, sentence, showProgress } from "./new_device.js";
import { askSecondFactor } from "./second_factor.js";

/** A key file larger than this is not one this client wrote (a chunk is at most 1 MiB). */
const MAX_FILE_BYTES = 512 * 1024 * 1024;

/** The import card, in place of `root`'s content. */
export function importScreen(root: HTMLElement, ctx: NewDeviceContext): void {
  const file = h("input", { id: "keyfile-file", type: "file", "data-testid": "keyfile-file" });
  const passphrase = h("input", { id: "keyfile-passphrase", type: "password", autocomplete: "off",
    "data-testid": "keyfile-passphrase" });
  const password = newPasswordFields(["keyfile-password", "keyfile-confirm"], "New password for this browser");
  const server = h("input", { id: "keyfile-server", type: "url", value: ctx.server, autocomplete: "off",
    "data-testid": "keyfile-server" });
  const status = h("div", { "data-testid": "keyfile-status" });
  const error = h("p", { class: "error", role: "alert", "data-testid": "error" });
  const submit = h("button", { type: "submit", "data-testid": "keyfile-submit" }, "Import");
  const form = h("form", {
    onsubmit: async (event: Event) => {
      event.preventDefault();
      error.textContent = "";
      const picked = file.files?.[0];
      if (picked === undefined) {
        error.textContent = "Choose the key file.";
        return;
      }
      if (picked.size > MAX_FILE_BYTES) {
        error.textContent = "That file is too large to be a Cipherpost key file.";
        return;
      }
      const problem = password.problem();
      if (problem !== undefined) {
        error.textContent = problem;
        return;
      }
      submit.disabled = true;
      const progress = showProgress(status, "Opening the key file…", "keyfile-progress");
      let kv: IdbKv | undefined;
      let joined = false;
      try {
        const data = new Uint8Array(await picked.arrayBuffer());
        kv = await IdbKv.open(ctx.dbName);
        const { client } = await importKeyFile(kv, server.value.trim(), data, passphrase.value, password.password.value, {
          historyProgress: progress.history, secondFactor: askSecondFactor,
        });
        joined = true;
        passphrase.value = "";
        password.clear();
        await ctx.enter(client);
      } catch (e) {
        replace(status);
        error.textContent = await joinFailed(e, (x) => (x instanceof KeyFileError ? sentence(x.message) : ctx.describe(x)),
          ctx.dbName, kv, joined);
        submit.disabled = joined;
      }
    },
  },
  h("label", { for: "keyfile-file" }, "Key file"), file,
  h("label", { for: "keyfile-passphrase" }, "The key file's passphrase"), passphrase,
  ...password.elements,
  h("details", { class: "advanced" }, h("summary", {}, "Server"), h("label", { for: "keyfile-server" }, "Cipherpost server"),
    server),
  submit, status, error);
  replace(root, h("div", { class: "card", "data-testid": "keyfile-import" },
    h("h1", {}, "Import a key file"),
    h("p", { class: "hint" }, "A key file written by Cipherpost (`cipherpost export`, or a browser's Devices page) "
      + "makes this browser a device of its account, with the conversations it holds. The file is opened here; "
      + "its passphrase is never sent anywhere."),
    form,
    h("p", { class: "hint" }, h("a", { href: "#", "data-testid": "keyfile-back", onclick: (e: Event) => {
      e.preventDefault();
      ctx.back();
    } }, "Back"))));
  file.focus();
}

/**
 * The section drawn for each client: the devices page is drawn again on every message or
 * receipt, and the same section keeps what is typed in it and the state of an export.
 */
const sections = new WeakMap<Client, { element: HTMLElement; show: (held: boolean) => void }>();

/** The devices page's part: write this account to a key file and download it. */
export async function keyFileSection(client: Client, describe: (error: unknown) => string): Promise<HTMLElement> {
  const held = (await recoverySecrets(client.store)) !== undefined;
  let section = sections.get(client);
  if (section === undefined) {
    section = newSection(client, describe);
    sections.set(client, section);
  }
  section.show(held);
  return section.element;
}

function newSection(client: Client, describe: (error: unknown) => string): { element: HTMLElement; show: (held: boolean) => void } {
  const passphrase = h("input", { type: "password", autocomplete: "new-password", "aria-label": "Passphrase for the key file",
    placeholder: "Passphrase for the key file", "data-testid": "keyfile-export-passphrase",
    onfocus: () => void loadRater().catch(() => undefined) }); // strength.js, for the check below
  const confirm = h("input", { type: "password", autocomplete: "new-password", "aria-label": "Passphrase again",
    placeholder: "Passphrase again", "data-testid": "keyfile-export-confirm" });
  const withHistory = h("input", { type: "checkbox", id: "keyfile-with-history", checked: true,
    "data-testid": "keyfile-with-history" });
  const state = h("p", { class: "hint", "data-testid": "keyfile-export-state" });
  const error = h("p", { class: "error", role: "alert", "data-testid": "keyfile-export-error" });
  const submit = h("button", { type: "submit", "data-testid": "keyfile-export" }, "Download key file");
  let busy = false;
  const form = h("form", {
    class: "link",
    onsubmit: async (event: Event) => {
      event.preventDefault();
      error.textContent = state.textContent = "";
      error.textContent = newPasswordProblem(passphrase.value, confirm.value, "passphrase") ?? "";
      if (error.textContent !== "") return;
      submit.disabled = busy = true;
      state.textContent = "Writing the key file…";
      try {
        // the file holds the identity key and can be guessed at offline: the CLI's zxcvbn check
        // for a new export passphrase ("export" and, as the file is named by it, the username)
        checkPassphrase(passphrase.value, [client.username, "export"], await loadRater(), "key file passphrase");
        const data = await exportKeyFile(client, passphrase.value, { withHistory: withHistory.checked });
        passphrase.value = confirm.value = "";
        const name = keyFileName(client.username);
        const url = URL.createObjectURL(new Blob([data as Uint8Array<ArrayBuffer>], { type: "application/octet-stream" }));
        const link = h("a", { href: url, download: name });
        document.body.append(link);
        link.click();
        link.remove();
        setTimeout(() => URL.revokeObjectURL(url), 60_000);
        state.textContent = `Saved as ${name}. Keep the file and its passphrase apart.`;
      } catch (e) {
        state.textContent = "";
        error.textContent = e instanceof WeakPassphrase ? sentence(e.message).replace(/\.\.$/, ".")
          : e instanceof StrengthUnavailable ? "The passphrase strength check could not be loaded, so no key file was "
            + "written: reload the page and try again."
          : e instanceof KeyFileError ? sentence(e.message) : describe(e);
      } finally {
        submit.disabled = busy = false;
      }
    },
  }, passphrase, confirm, submit);
  const needs = h("p", { class: "hint", "data-testid": "keyfile-needs-recovery" }, sentence(NEEDS_RECOVERY_KEY));
  const element = h("div", { "data-testid": "keyfile-section" },
    h("h3", {}, "Encrypted key file"),
    h("p", { class: "hint" }, "Write this account to a file encrypted under a passphrase you choose: a backup, or a way "
      + "onto another browser or machine (\"Import a key file\" there, or `cipherpost import`). Whoever has the file "
      + "and its passphrase can join your account."),
    needs,
    h("p", {}, withHistory, h("label", { for: "keyfile-with-history" }, " With the message history")),
    form, state, error);
  const show = (held: boolean): void => {
    needs.hidden = held;
    for (const field of [passphrase, confirm, withHistory]) field.disabled = !held;
    submit.disabled = !held || busy;
  };
  return { element, show };
}
