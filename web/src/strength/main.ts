/**
 * The entry of strength.js, the file ../app/strength.ts adds to the page (with its
 * Subresource Integrity hash, which app.js carries) when a recovery passphrase is
 * chosen: it leaves ratePassphrase under RATER_GLOBAL, read-only, for app.js to take.
 */

import { RATER_GLOBAL } from "../app/passphrase_rating.js";
import { ratePassphrase } from "./rate.js";

Object.defineProperty(globalThis, RATER_GLOBAL, { value: ratePassphrase, writable: false, configurable: false });
