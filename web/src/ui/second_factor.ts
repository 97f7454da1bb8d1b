/**
 * The second-factor prompt (../app/second_factor.ts): a modal dialog over the app, outside
 * its root so that a redraw underneath does not close it. It says which action wants the
 * code and, when the last code was refused, why.
 */

import type { SecondFactorRequest } from "../app/second_factor.js";
import { h } from "./dom.js";

let open: Promise<string | undefined> = Promise.resolve(undefined);

/** Ask for a code (one prompt at a time); undefined when cancelled. */
export function askSecondFactor(request: SecondFactorRequest): Promise<string | undefined> {
  const asked = open.then(() => show(request), () => show(request));
  open = asked;
  return asked;
}

function show({ action, refused }: SecondFactorRequest): Promise<string | undefined> {
  return new Promise((resolve) => {
    const code = h("input", { autocomplete: "one-time-code", maxlength: "24", spellcheck: "false",
      "aria-label": "Code from your authenticator or a recovery code", "data-testid": "2fa-prompt-code" });
    const finish = (value: string | undefined) => {
      dialog.close();
      dialog.remove();
      resolve(value);
    };
    const dialog = h("dialog", { class: "prompt", "data-testid": "2fa-prompt", "data-refused": String(refused !== undefined),
      oncancel: (event: Event) => { event.preventDefault(); finish(undefined); } },
    h("form", { onsubmit: (event: Event) => { event.preventDefault(); finish(code.value); } },
      h("h3", {}, "Second factor"),
      h("p", {}, `${action} needs a code: the 6 digits your authenticator shows now, or one of your recovery codes.`),
      code,
      h("p", { class: "error", role: "alert", "data-testid": "2fa-prompt-error" }, refused ?? ""),
      h("div", { class: "buttons" },
        h("button", { type: "submit", "data-testid": "2fa-prompt-submit" }, "Continue"),
        h("button", { type: "button", class: "secondary", "data-testid": "2fa-prompt-cancel",
          onclick: () => finish(undefined) }, "Cancel"))));
    document.body.append(dialog);
    dialog.showModal();
    code.focus();
  });
}
