// Builds the web app into dist/: one minified ES module (esbuild), the stylesheet, and
// index.html with Subresource Integrity hashes of both. Reproducible: same sources and
// lock file, same bytes (no timestamps, no absolute paths). dist/build.json records the
// SHA-256 of each file, for checking what a server delivers.
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

await build({
  entryPoints: [`${here}src/ui/main.ts`],
  bundle: true, format: "esm", target: "es2022", platform: "browser", minify: true,
  legalComments: "external", sourcemap: false, outfile: `${dist}/app.js`, logLevel: "warning",
  // node:crypto is never reached in a browser (noble falls back to WebCrypto's CSPRNG)
  external: [],
});

const files = { "app.js": readFileSync(`${dist}/app.js`), "app.css": readFileSync(`${here}static/app.css`) };
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
if (process.argv.includes("--hash")) console.log(digests["app.js"]);
else console.log(`built web/dist: app.js ${files["app.js"].length} bytes, sha256 ${digests["app.js"]}`);
