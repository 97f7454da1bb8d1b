"""Generate the Python code for the application protocol schema (proto/).

    .venv/bin/python tools/gen_proto.py          # write src/cipherpost/client/proto/ and
                                                 # web/src/app/proto/ (npm run gen:proto)
    .venv/bin/python tools/gen_proto.py --check  # exit 1 if the committed code is stale

Uses grpcio-tools' bundled protoc and mypy-protobuf's stub generator (both dev
dependencies); the runtime needs only the ``protobuf`` package. ``make test`` runs the
check, so the schema and the committed code cannot drift apart.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ["cipherpost/app/v1/app.proto"]
OUT = ROOT / "src" / "cipherpost" / "client" / "proto"
HEADER = '"""Generated from proto/ by tools/gen_proto.py: do not edit."""\n'


def generate(into: Path) -> None:
    plugin = Path(sys.executable).parent / "protoc-gen-mypy"
    for schema in SCHEMAS:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(  # noqa: S603 - fixed arguments
                [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}",
                 f"--python_out={tmp}", f"--mypy_out={tmp}",
                 f"--plugin=protoc-gen-mypy={plugin}", schema],
                check=True)
            stem = Path(schema).with_suffix("")
            for suffix in ("_pb2.py", "_pb2.pyi"):
                made = Path(tmp) / f"{stem}{suffix}"
                (into / f"{stem.name}{suffix}").write_bytes(made.read_bytes())
    (into / "__init__.py").write_text(HEADER)


def generate_typescript() -> None:
    """The browser client's code from the same schema (web/, `npm run gen:proto`; its own
    staleness test runs in `npm test`). Skipped, with a note, before `npm ci` ran there."""
    web = ROOT / "web"
    if not (web / "node_modules" / ".bin" / "buf").exists():
        print("web/node_modules is not installed: run `make web`, then "
              "`cd web && npm run gen:proto` to regenerate the TypeScript code")
        return
    subprocess.run(["npm", "run", "--silent", "gen:proto"], cwd=web,  # noqa: S607
                   check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if not args.check:
        OUT.mkdir(parents=True, exist_ok=True)
        generate(OUT)
        generate_typescript()
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = [p.name for p in Path(tmp).iterdir()
                 if not (OUT / p.name).exists() or (OUT / p.name).read_bytes() != p.read_bytes()]
    if stale:
        print(f"stale generated code: {', '.join(sorted(stale))}; run tools/gen_proto.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
