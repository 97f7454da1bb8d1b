/**
 * The typed-code steps of linking this browser (src/app/code_link.ts), drawn into the
 * linking card's status area: the code to type on the other device, then the 6-digit
 * number to compare with it, with "same" and "different" buttons.
 */

import type { RelayApi } from "../app/api.js";
import { CodeLink } from "../app/code_link.js";
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
