"""Load the relay's mypyc-compiled modules (``tools/compile_relay.py``), if they are current.

``make`` compiles the modules every delivered message runs through into
``build/compiled/`` and records there the SHA-256 of each source it compiled. Before the
relay imports any of them, :func:`install` checks every recorded source against the
file beside it in this package: only if **all** are unchanged (the compiled modules call
each other directly, so a mix of compiled and edited code would run old code) does it
put a finder in front of the usual ones that loads the compiled extensions instead of
the sources. Anything else (no build, a stale one, another Python, or
``CIPHERPOST_COMPILED=0``) leaves plain Python running: the same code, slower.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
import sysconfig
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

log = logging.getLogger("cipherpost.server")

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory holding cipherpost/
#: Where ``make`` puts the build (beside src/ in a checkout); CIPHERPOST_COMPILED_DIR moves it.
DEFAULT_DIR = _PACKAGE_ROOT.parent / "build" / "compiled"
MANIFEST = "manifest.json"

#: What :func:`install` found, for the start-up log and ``/healthz``-style checks.
status = "not checked"


class _CompiledFinder(importlib.abc.MetaPathFinder):
    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def install() -> str:
    """Load the compiled modules from now on if the build is current; what was done (also
    kept in :data:`status`)."""
    global status
    if any(isinstance(f, _CompiledFinder) for f in sys.meta_path):
        return status
    status = _install()
    return status


def _install() -> str:
    if os.environ.get("CIPHERPOST_COMPILED", "1") == "0":
        return "plain Python (CIPHERPOST_COMPILED=0)"
    directory = Path(os.environ.get("CIPHERPOST_COMPILED_DIR") or DEFAULT_DIR)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        suffix, shared, modules = manifest["ext_suffix"], manifest["shared"], manifest["modules"]
        if not (isinstance(suffix, str) and isinstance(shared, str)
                and isinstance(modules, dict) and all(isinstance(m, str) for m in modules)):
            raise ValueError("unexpected types")
    except FileNotFoundError:
        return "plain Python (not compiled: run make compile)"
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("ignoring the compiled relay modules: %s is unreadable",
                    directory / MANIFEST)
        return "plain Python (unreadable build manifest)"
    if suffix != sysconfig.get_config_var("EXT_SUFFIX"):
        log.warning("ignoring the compiled relay modules: built for another Python (%s)",
                    suffix)
        return "plain Python (built for another Python)"
    stale = [name for name, digest in modules.items() if not _unchanged(name, digest)]
    if stale:
        log.warning("ignoring the compiled relay modules: changed since the build: %s "
                    "(run make compile)", ", ".join(sorted(stale)))
        return "plain Python (compiled build is stale)"
    already = [name for name in modules if name in sys.modules]
    if already:  # imported before install(): loading some compiled would mix the two
        return "plain Python (imported before the compiled build was checked)"
    files = {name: directory.joinpath(*name.split(".")).with_name(
        name.rsplit(".", 1)[-1] + suffix) for name in modules}
    files[shared] = directory / (shared + suffix)
    if not all(f.is_file() for f in files.values()):
        log.warning("ignoring the compiled relay modules: the build in %s is incomplete",
                    directory)
        return "plain Python (incomplete build)"
    sys.meta_path.insert(0, _CompiledFinder(files))
    return f"compiled ({len(modules)} modules, mypyc)"


def _unchanged(module: str, digest: object) -> bool:
    """Whether the module's source beside this file is the one the build recorded
    (compared as the project compares every digest: hmac.compare_digest)."""
    path = _PACKAGE_ROOT.joinpath(*module.split(".")).with_suffix(".py")
    try:
        current = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return False
    return isinstance(digest, str) and digest.isascii() \
        and hmac.compare_digest(current, digest)
