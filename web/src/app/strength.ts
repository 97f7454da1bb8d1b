/**
 * Loading strength.js, the recovery passphrase check's zxcvbn and dictionaries
 * (../strength/), into the page only when a passphrase is being chosen: they are about
 * 850 KB gzipped, app.js carries none of it.
 *
 * The file is a module script next to app.js (same origin: the page's CSP allows it with
 * `script-src 'self'`, and a host serving dist/ elsewhere serves it beside app.js). Its
 * `<script>` carries the Subresource Integrity hash the build put into app.js
 * (STRENGTH_SRI), so the browser runs it only if its bytes are the ones built with this
 * app.js: app.js's own hash (web/README.md, the About page) thus covers it too. The page
 * requires Trusted Types for scripts, so the script's URL comes from a policy that makes
 * exactly this one URL and nothing else.
 *
 * A file that does not load (missing, altered, blocked) rejects with StrengthUnavailable;
 * the caller refuses to set a passphrase then, and never falls back to a weaker rule.
 */

import { RATER_GLOBAL, type Rate } from "./passphrase_rating.js";

/** The file's name in dist/ (web/build.mjs). */
export const STRENGTH_FILE = "strength.js";

// Set by web/build.mjs (esbuild's define): "sha256-<base64>" of dist/strength.js. Absent
// when the sources run unbundled (unit tests under tsx), where no file can be loaded.
declare const __STRENGTH_SRI__: string | undefined;

/** strength.js's Subresource Integrity value in app.js, or undefined outside a build. */
export function strengthIntegrity(): string | undefined {
  return typeof __STRENGTH_SRI__ === "string" ? __STRENGTH_SRI__ : undefined;
}

/** The SHA-256 (hex) this app.js accepts strength.js under, as web/README.md lists it. */
export function strengthDigest(): string | undefined {
  const sri = strengthIntegrity();
  if (sri === undefined || !sri.startsWith("sha256-")) return undefined;
  const raw = atob(sri.slice("sha256-".length));
  return Array.from(raw, (c) => c.charCodeAt(0).toString(16).padStart(2, "0")).join("");
}

/** strength.js could not be loaded: no passphrase can be checked. */
export class StrengthUnavailable extends Error {
  override readonly name = "StrengthUnavailable";
}

interface ScriptUrlPolicy { createScriptURL(url: string): unknown }
interface TrustedTypesFactory {
  createPolicy(name: string, rules: { createScriptURL(url: string): string }): ScriptUrlPolicy;
}

function registered(): Rate | undefined {
  const rate = (globalThis as Record<string, unknown>)[RATER_GLOBAL];
  return typeof rate === "function" ? rate as Rate : undefined;
}

let loading: Promise<Rate> | undefined;
let policy: ScriptUrlPolicy | undefined;

function scriptUrl(url: string): string {
  const factory = (globalThis as { trustedTypes?: TrustedTypesFactory }).trustedTypes;
  if (factory === undefined) return url;
  policy ??= factory.createPolicy("cipherpost-strength", {
    createScriptURL: (asked: string) => {
      if (asked !== url) throw new TypeError(`only ${STRENGTH_FILE} is loaded as a script`);
      return asked;
    },
  });
  // a TrustedScriptURL: assigning it to script.src is what Trusted Types allow
  return policy.createScriptURL(url) as string;
}

async function inject(): Promise<Rate> {
  const integrity = strengthIntegrity();
  if (integrity === undefined || typeof document === "undefined") {
    throw new StrengthUnavailable(`${STRENGTH_FILE} is only loaded by a built app.js in a page`);
  }
  const url = new URL(STRENGTH_FILE, import.meta.url).href;
  const script = document.createElement("script");
  script.type = "module";
  script.integrity = integrity;
  script.src = scriptUrl(url);
  await new Promise<void>((resolve, reject) => {
    script.addEventListener("load", () => resolve(), { once: true });
    script.addEventListener("error", () => {
      script.remove();
      reject(new StrengthUnavailable(`${STRENGTH_FILE} did not load, or its bytes are not the ones this app `
        + "was built with"));
    }, { once: true });
    document.head.append(script);
  });
  const rate = registered();
  if (rate === undefined) throw new StrengthUnavailable(`${STRENGTH_FILE} loaded but gave no passphrase check`);
  return rate;
}

/**
 * zxcvbn's rating function, loading strength.js on the first call (after a failed load
 * the next call tries again; the browser remembers a failed module, so it takes a
 * reload of the page). Where strength.js already ran (unit tests import
 * ../strength/main.ts) its function is used as it is.
 * @throws StrengthUnavailable
 */
export function loadRater(): Promise<Rate> {
  const ready = registered();
  if (ready !== undefined) return Promise.resolve(ready);
  loading ??= inject().catch((e: unknown) => {
    loading = undefined;
    throw e;
  });
  return loading;
}
