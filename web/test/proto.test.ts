/** The committed TypeScript of proto/ is what the generator makes from the schema now
 * (like tools/gen_proto.py --check for Python): a schema change needs `npm run gen:proto`. */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const WEB = fileURLToPath(new URL("..", import.meta.url));
const GENERATED = "src/app/proto/cipherpost/app/v1";

test("generated protobuf code is up to date with proto/", () => {
  const out = mkdtempSync(join(tmpdir(), "cipherpost-proto-"));
  try {
    const config = readFileSync(join(WEB, "buf.gen.yaml"), "utf8")
      .replace("directory: ../proto", `directory: ${join(WEB, "..", "proto")}`)
      .replace("out: src/app/proto", `out: ${out}`);
    writeFileSync(join(out, "buf.gen.yaml"), config);
    const bin = join(WEB, "node_modules", ".bin");
    execFileSync(join(bin, "buf"), ["generate", "--template", join(out, "buf.gen.yaml")], {
      cwd: WEB, env: { ...process.env, PATH: `${bin}:${process.env.PATH}` }, stdio: "pipe",
    });
    const files = readdirSync(join(WEB, GENERATED)).sort();
    assert.deepEqual(readdirSync(join(out, "cipherpost/app/v1")).sort(), files);
    for (const name of files) {
      const fresh = readFileSync(join(out, "cipherpost/app/v1", name), "utf8");
      assert.ok(fresh === readFileSync(join(WEB, GENERATED, name), "utf8"),
        `${GENERATED}/${name} is stale: run \`npm run gen:proto\` in web/ after changing proto/`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
