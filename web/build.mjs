// Builds the web app into dist/: one minified ES module (esbuild), the stylesheet, and
// index.html with Subresource Integrity hashes of both; and strength.js, the recovery
// passphrase check's zxcvbn and dictionaries, a module app.js adds to the page only when
// a passphrase is chosen, under the SRI hash this build puts into app.js
// (src/app/strength.ts). Reproducible: same sources and lock file, same bytes (no
// timestamps, no absolute paths). dist/build.json records the SHA-256 of each file, for
// checking what a server delivers.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = fileURLToPath(new URL(".", import.meta.url));
// --out=DIR builds elsewhere than dist/ (the reproducibility test builds twice)
const out = process.argv.find((a) => a.startsWith("--out="));
const dist = out === undefined ? `${here}dist` : out.slice("--out=".length);
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist);

const common = {
  bundle: true, format: "esm", target: "es2022", platform: "browser", minify: true,
  legalComments: "external", sourcemap: false, logLevel: "warning",
};
// first strength.js: app.js carries its hash (SHA-256, so the About page can show it as hex)
await build({ ...common, entryPoints: [`${here}src/strength/main.ts`], outfile: `${dist}/strength.js` });
const strength = readFileSync(`${dist}/strength.js`);
// zxcvbn-ts's packages carry their licences and data notices as files, not as comments
// esbuild could keep: strength.js.LEGAL.txt gathers them (as app.js.LEGAL.txt does app.js's)
const notices = [
  "@zxcvbn-ts/core/LICENSE.txt", "@zxcvbn-ts/dictionary-compression/LICENSE", "@zxcvbn-ts/language-common/LICENSE.txt",
  "@zxcvbn-ts/language-en/LICENSE.txt", "@zxcvbn-ts/language-en/NOTICE.md", "@zxcvbn-ts/language-en/THIRD_PARTY_LICENSES.md",
  "fastest-levenshtein/LICENSE.md",
].map((path) => `${path}:\n\n${readFileSync(`${here}node_modules/${path}`, "utf8").trim()}\n`);
writeFileSync(`${dist}/strength.js.LEGAL.txt`, `Bundled licence information:\n\n${notices.join("\n")}`);
const strengthSri = `sha256-${createHash("sha256").update(strength).digest("base64")}`;
await build({
  ...common, entryPoints: [`${here}src/ui/main.ts`], outfile: `${dist}/app.js`,
  define: { __STRENGTH_SRI__: JSON.stringify(strengthSri) },
  // node:crypto is never reached in a browser (noble falls back to WebCrypto's CSPRNG)
  external: [],
});

const files = { "app.js": readFileSync(`${dist}/app.js`), "app.css": readFileSync(`${here}static/app.css`),
  "strength.js": strength };
writeFileSync(`${dist}/app.css`, files["app.css"]);
const sri = (data) => `sha384-${createHash("sha384").update(data).digest("base64")}`;
const html = readFileSync(`${here}static/index.html`, "utf8")
  .replace("%JS_SRI%", sri(files["app.js"])).replace("%CSS_SRI%", sri(files["app.css"]));
writeFileSync(`${dist}/index.html`, html);
const digests = Object.fromEntries(Object.entries({ ...files, "index.html": Buffer.from(html) })
  .map(([name, data]) => [name, createHash("sha256").update(data).digest("hex")]));
writeFileSync(`${dist}/build.json`, `${JSON.stringify({ sha256: digests }, null, 2)}\n`);
// `node build.mjs --hash` (npm run --silent hash) prints only app.js's SHA-256: the value
// web/README.md lists and the app's About page computes from what the browser received.
// `--hashes` prints "app.js <sha256>" and "strength.js <sha256>", one a line (make web-hash).
if (process.argv.includes("--hash")) console.log(digests["app.js"]);
else if (process.argv.includes("--hashes")) {
  for (const name of ["app.js", "strength.js"]) console.log(`${name} ${digests[name]}`);
} else {
  for (const name of ["app.js", "strength.js"]) {
    console.log(`built web/dist/${name}: ${files[name].length} bytes, sha256 ${digests[name]}`);
  }
}
