/**
 * Getting an account back in this browser with its recovery key, or its username and
 * recovery passphrase (src/app/recovery.ts): neither leaves the page; the relay gets only
 * values derived from them. An account with a second factor is asked for a code first
 * (./second_factor.ts). Then the server-stored history loads with a progress bar.
 */

import { RecoveryError, restoreWithKey, restoreWithPassphrase } from "../app/recovery.js";
import { IdbKv } from "../app/store/kv.js";
import { h, replace } from "./dom.js";
import { joinFailed, newPasswordFields, type NewDeviceContext, sentence, showProgress } from "./new_device.js";
import { askSecondFactor } from "./second_factor.js";

/** The recovery card, in place of `root`'s content. */
export function recoverScreen(root: HTMLElement, ctx: NewDeviceContext): void {
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
  const password = newPasswordFields(["recover-password", "recover-confirm"], "New password for this browser");
  const server = h("input", { id: "recover-server", type: "url", value: ctx.server, autocomplete: "off",
    "data-testid": "recover-server" });
  const status = h("div", { "data-testid": "recover-status" });
  const error = h("p", { class: "error", role: "alert", "data-testid": "error" });
  const submit = h("button", { type: "submit", "data-testid": "recover-submit" }, "Recover account");
  const form = h("form", {
    onsubmit: async (event: Event) => {
      event.preventDefault();
      error.textContent = "";
      const problem = password.problem();
      if (problem !== undefined) {
        error.textContent = problem;
        return;
      }
      submit.disabled = true;
      const progress = showProgress(status, "Opening your account…", "recover-progress");
      let kv: IdbKv | undefined;
      let joined = false;
      try {
        kv = await IdbKv.open(ctx.dbName);
        const options = { historyProgress: progress.history, secondFactor: askSecondFactor };
        const client = how.value === "key"
          ? await restoreWithKey(kv, server.value.trim(), key.value, password.password.value, options)
          : await restoreWithPassphrase(kv, server.value.trim(), username.value.trim().toLowerCase(), passphrase.value,
            password.password.value, options);
        joined = true;
        key.value = passphrase.value = "";
        password.clear();
        await ctx.enter(client);
      } catch (e) {
        replace(status);
        error.textContent = await joinFailed(e, (x) => (x instanceof RecoveryError ? sentence(x.message) : ctx.describe(x)),
          ctx.dbName, kv, joined);
        submit.disabled = joined;
      }
    },
  },
  h("label", { for: "recover-how" }, "Recover with"), how, byKey, byPassphrase,
  ...password.elements,
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
