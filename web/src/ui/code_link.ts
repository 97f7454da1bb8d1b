/**
 * The typed-code steps of linking (src/app/code_link.ts): as the new device, drawn into
 * the linking card's status area (the code to type on the other device, then the 6-digit
 * number to compare with "same" and "different" buttons); as the existing device, a form
 * on the Devices page for the code the new device shows, then the same comparison.
 */

import type { RelayApi } from "../app/api.js";
import type { Client } from "../app/client.js";
import { approveCodeLink, CodeLink } from "../app/code_link.js";
import { LinkError } from "../app/linking.js";
import type { ProvisionMessage } from "../app/proto/cipherpost/app/v1/app_pb.js";
import { h, replace } from "./dom.js";

/** Run the exchange; the ProvisionMessage once the user confirmed the numbers match. @throws LinkError */
export async function typedCodeLink(api: RelayApi, status: HTMLElement): Promise<ProvisionMessage> {
  const link = await CodeLink.open(api);
  try {
    replace(status, h("p", {}, "On your other device, open Devices → Link a new device and type this code "
      + "(or run `cipherpost devices add --code`):"),
    h("code", { class: "digest typed-code", "data-testid": "link-typed-code" }, link.code),
    h("p", { class: "hint", "data-testid": "link-waiting" }, "Waiting for your other device…"));
    const sas = await link.sas();
    const same = await new Promise<boolean>((resolve) => {
      replace(status, h("p", {}, "Does your other device show this same number?"),
        h("p", { class: "sas", "data-testid": "link-sas" }, sas),
        h("button", { type: "button", "data-testid": "link-sas-same", onclick: () => resolve(true) }, "Same number"),
        h("button", { type: "button", class: "secondary", "data-testid": "link-sas-differ", onclick: () => resolve(false) },
          "Different number"));
    });
    if (!same) throw new LinkError("the numbers differ: nothing was linked; start again");
    replace(status, h("p", { class: "hint", "data-testid": "link-waiting" }, "Confirm on your other device too…"));
    await link.confirm();
    return await link.complete();
  } catch (error) {
    await link.cancel();
    throw error;
  }
}

let drawn: { client: Client; element: HTMLElement } | undefined;

/**
 * The Devices page's form: type the code a new device shows, compare the numbers, link
 * it. The same element each time for a client, so that the page being drawn again (a
 * message arrived) neither loses a comparison in progress nor starts another.
 */
export function approveCodeForm(client: Client, describe: (error: unknown) => string): HTMLElement {
  if (drawn?.client === client) return drawn.element;
  const code = h("input", { placeholder: "XXXX-XXXX", "aria-label": "Code the new device shows", autocomplete: "off",
    spellcheck: "false", "data-testid": "approve-code" });
  const state = h("div", { "data-testid": "approve-state" });
  const submit = h("button", { type: "submit", "data-testid": "approve-submit" }, "Link");
  const form = h("form", {
    class: "link",
    onsubmit: async (event: Event) => {
      event.preventDefault();
      submit.disabled = true;
      replace(state, h("p", { class: "hint" }, "Waiting for the new device…"));
      try {
        await approveCodeLink(client, code.value, (sas) => new Promise<boolean>((resolve) => {
          replace(state, h("p", {}, "Does the new device show this same number?"),
            h("p", { class: "sas", "data-testid": "approve-sas" }, sas),
            h("button", { type: "button", "data-testid": "approve-sas-same", onclick: () => {
              replace(state, h("p", { class: "hint" }, "Waiting for the new device to confirm too…"));
              resolve(true);
            } }, "Same number"),
            h("button", { type: "button", class: "secondary", "data-testid": "approve-sas-differ",
              onclick: () => resolve(false) }, "Different number"));
        }));
        code.value = "";
        replace(state, h("p", { class: "hint", "data-testid": "approve-done" }, "Sent. The new device finishes joining by itself."));
      } catch (error) {
        replace(state, h("p", { class: "error", role: "alert", "data-testid": "approve-error" },
          error instanceof LinkError ? `${error.message.charAt(0).toUpperCase()}${error.message.slice(1)}.` : describe(error)));
      } finally {
        submit.disabled = false;
      }
    },
  }, code, submit);
  const element = h("div", { class: "approve-code" },
    h("p", { class: "hint" }, "Or, when the new device shows a short code to type (no camera), type it here:"), form, state);
  drawn = { client, element };
  return element;
}
