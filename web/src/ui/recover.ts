/**
 * Getting an account back in this browser with its recovery key, or its username and
 * recovery passphrase (src/app/recovery.ts): neither leaves the page; the relay gets only
 * values derived from them. An account with a second factor is asked for a code first
 * (./second_factor.ts). Then the server-stored history loads with a progress bar.
 */

import type { Client } from "../app/client.js";
import { RecoveryError, restoreWithKey, restoreWithPassphrase } from "../app/recovery.js";
import { IdbKv } from "../app/store/kv.js";
import { h, replace } from "./dom.js";
import { askSecondFactor } from "./second_factor.js";

export interface RecoverContext {
  dbName: string;
  server: string;
  describe: (error: unknown) => string;
  enter: (client: Client) => Promise<void>;
  back: () => void;
}

/** The recovery card, in place of `root`'s content. */
export function recoverScreen(root: HTMLElement, ctx: RecoverContext): void {
  const how = h("select", { id: "recover-how", "data-testid": "recover-how" },
    h("option", { value: "key" }, "Recovery key"), h("option", { value: "passphrase" }, "Username and recovery passphrase"));
  const key = h("input", { id: "recover-key", autocomplete: "off", spellcheck: "false", "data-testid": "recover-key",
    placeholder: "XXXX XXXX XXXX …" });
  const username = h("input", { id: "recover-username", autocomplete: "username", "data-testid": "recover-username" });
  const passphrase = h("input", { id: "recover-passphrase", type: "password", autocomplete: "off",
    "data-testid": "recover-passphrase" });
  const byKey = h("div", {}, h("label", { for: "recover-key" }, "Recovery key"), key);
  const byPassphrase = h("div", { hidden: true }, h("label", { for: "recover-username" }, "Username"), username,
    h("label", { for: "recover-passphrase" }, "Recovery passphrase"), passphrase);
  how.addEventListener("change", () => {
    byKey.hidden = how.value !== "key";
    byPassphrase.hidden = how.value === "key";
  });
  const password = h("input", { id: "recover-password", type: "password", autocomplete: "new-password", minlength: "8",
    "data-testid": "recover-password" });
  const confirm = h("input", { id: "recover-confirm", type: "password", autocomplete: "new-password",
    "data-testid": "recover-confirm" });
  const server = h("input", { id: "recover-server", type: "url", value: ctx.server, autocomplete: "off",
    "data-testid": "recover-server" });
  const status = h("div", { "data-testid": "recover-status" });
  const error = h("p", { class: "error", role: "alert", "data-testid": "error" });
  const submit = h("button", { type: "submit", "data-testid": "recover-submit" }, "Recover account");
  const form = h("form", {
    onsubmit: async (event: Event) => {
      event.preventDefault();
      error.textContent = "";
      if (password.value.length < 8) {
        error.textContent = "Choose a password of at least 8 characters.";
        return;
      }
      if (password.value !== confirm.value) {
        error.textContent = "The passwords differ.";
        return;
      }
      submit.disabled = true;
      const progress = h("progress", { max: "1", value: "0", "data-testid": "recover-progress" });
      const count = h("span", { "data-testid": "link-count" }, "");
      replace(status, h("p", {}, "Opening your account…"), progress, count);
      let kv: IdbKv | undefined;
      try {
        kv = await IdbKv.open(ctx.dbName);
        const historyProgress = (entries: number, fraction: number): void => {
          progress.value = fraction;
          count.textContent = ` ${entries} from the server`;
        };
        const client = how.value === "key"
          ? await restoreWithKey(kv, server.value.trim(), key.value, password.value,
            { historyProgress, secondFactor: askSecondFactor })
          : await restoreWithPassphrase(kv, server.value.trim(), username.value.trim().toLowerCase(), passphrase.value,
            password.value, { historyProgress, secondFactor: askSecondFactor });
        key.value = passphrase.value = password.value = confirm.value = "";
        await ctx.enter(client);
      } catch (e) {
        kv?.close();
        await IdbKv.destroy(ctx.dbName).catch(() => undefined);
        replace(status);
        error.textContent = e instanceof RecoveryError ? `${e.message.charAt(0).toUpperCase()}${e.message.slice(1)}.`
          : ctx.describe(e);
        submit.disabled = false;
      }
    },
  },
  h("label", { for: "recover-how" }, "Recover with"), how, byKey, byPassphrase,
  h("label", { for: "recover-password" }, "New password for this browser"), password,
  h("label", { for: "recover-confirm" }, "Password again"), confirm,
  h("details", { class: "advanced" }, h("summary", {}, "Server"), h("label", { for: "recover-server" }, "Cipherpost server"),
    server),
  submit, status, error);
  replace(root, h("div", { class: "card", "data-testid": "recover" },
    h("h1", {}, "Recover your account"),
    h("p", { class: "hint" }, "Your recovery key or passphrase opens your account's sealed backup here, in this "
      + "browser; the server only gets values derived from it. Your contacts see the same safety number."),
    form,
    h("p", { class: "hint" }, h("a", { href: "#", "data-testid": "recover-back", onclick: (e: Event) => {
      e.preventDefault();
      ctx.back();
    } }, "Back"))));
  key.focus();
}
