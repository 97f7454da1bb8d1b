"""Compile the relay's per-message modules with mypyc into build/compiled/.

Run by ``make`` (``make compile``, and before ``make run``, ``make test`` and the relay
benchmarks); by hand: ``.venv/bin/python tools/compile_relay.py``.

The modules every delivered message runs through (the socket's frames, the WebSocket
session, the send path, the queue log and its group commit) are compiled to C
extensions by mypyc, the compiler of the mypy project, from the same type-annotated
sources ``mypy --strict`` checks: no second implementation exists. The relay does
the same work with about a fifth fewer instructions per message
(benchmarks/results/, 2026-11-30).

The extensions are written to ``build/compiled/`` beside a manifest of the SHA-256 of
each source they were built from; :mod:`cipherpost.server.native` loads them only when
every listed source is unchanged since (a source edited after the build runs as plain
Python, with a warning, until the next build), so that a stale build never runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
OUT = ROOT / "build" / "compiled"
MANIFEST = "manifest.json"  # read by cipherpost.server.native
#: The shared library's name (``<GROUP>__mypyc``), fixed so that builds are comparable.
GROUP = "cipherpost_relay"
#: Compiled together (calls between them are direct C calls): all or none of them load.
MODULES = (
    "cipherpost.server.ws_protocol",
    "cipherpost.server.api.websocket",
    "cipherpost.server.storage.queue_log",
    "cipherpost.server.storage.group",
    "cipherpost.server.storage.envelope_ids",
    "cipherpost.server.ratelimit",
    "cipherpost.server.sending",
    "cipherpost.server.codec",
    "cipherpost.server.relay",
    "cipherpost.server.fanout.local",
    "cipherpost.server.tally",
)


def source(module: str) -> Path:
    return SRC.joinpath(*module.split(".")).with_suffix(".py")


def main() -> int:
    from mypyc.build import mypycify
    from setuptools import setup

    sources = {m: source(m) for m in MODULES}
    digests = {m: hashlib.sha256(p.read_bytes()).hexdigest() for m, p in sources.items()}
    with tempfile.TemporaryDirectory(prefix="cipherpost-mypyc-") as tmp:
        work = Path(tmp)
        os.chdir(ROOT)  # mypy reads its settings from pyproject.toml
        extensions = mypycify([str(p.relative_to(ROOT)) for p in sources.values()],
                              opt_level="3", group_name=GROUP,
                              target_dir=str(work / "c"))
        setup(name="cipherpost-relay-native", ext_modules=extensions,
              script_args=["-q", "build_ext", "--build-lib", str(work / "lib"),
                           "--build-temp", str(work / "obj")])
        if any(hashlib.sha256(p.read_bytes()).hexdigest() != digests[m]
               for m, p in sources.items()):
            print("a source changed while it was being compiled: run it again",
                  file=sys.stderr)
            return 1
        # Replaced whole, so that no extension of an earlier build outlives its source.
        if OUT.exists():
            shutil.rmtree(OUT)
        shutil.copytree(work / "lib", OUT)
    (OUT / MANIFEST).write_text(json.dumps({
        "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"),
        "shared": f"{GROUP}__mypyc",
        "modules": digests,
    }, indent=2) + "\n")
    print(f"compiled {len(MODULES)} relay modules into {OUT.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--sources"]:  # for the Makefile's dependencies
        print(" ".join(str(source(m).relative_to(ROOT)) for m in MODULES))
        sys.exit(0)
    sys.exit(main())
