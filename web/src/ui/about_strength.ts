/**
 * The About page's lines on strength.js (../app/strength.ts): the SHA-256 this app.js
 * accepts it under, which web/README.md lists next to app.js's. The browser runs
 * strength.js only with exactly those bytes (Subresource Integrity), so this value and
 * app.js's hash together name all the code that can run here.
 */

import { STRENGTH_FILE, strengthDigest } from "../app/strength.js";
import { h } from "./dom.js";

export function strengthSection(): HTMLElement[] {
  return [
    h("p", {}, `SHA-256 of ${STRENGTH_FILE}, the passphrase strength check (zxcvbn and its dictionaries, loaded only `
      + "when you choose a recovery passphrase), as app.js accepts it:"),
    h("code", { class: "digest", "data-testid": "strength-sha256" }, strengthDigest() ?? "not in this build"),
    h("p", { class: "hint" }, "`npm run --silent hashes` prints both values; web/README.md lists both."),
  ];
}
