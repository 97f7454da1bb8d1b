"""Check and count the CycloneDX SBOMs `make sbom` wrote (the last step of that target).

    python -m tests.assurance.sbom build/sbom

Each file must be a CycloneDX JSON document; the Python one must list every package the
lock file pins for this platform (at its locked version), and each npm one every package
of its package-lock.json. Figures (components per SBOM, spec version) go to
``build/assurance/sbom/<file>.json``; exit 1 if a check fails.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from packaging.markers import Marker

from tests.conftest import ROOT

from . import results

_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(lock: Path) -> dict[str, str]:
    """Name -> version of every pin in ``lock`` whose marker holds here."""
    pins = {}
    for line in lock.read_text().splitlines():
        match = _PIN.match(line)
        if match and (match.group(3) is None or Marker(match.group(3)).evaluate()):
            pins[_norm(match.group(1))] = match.group(2)
    return pins


def components(sbom: dict[str, Any]) -> dict[str, str]:
    return {_norm(c["name"]) if "group" not in c or not c["group"]
            else f"{c['group']}/{c['name']}": c.get("version", "")
            for c in sbom.get("components", [])}


def check(folder: Path) -> list[str]:
    problems = []
    for path in sorted(folder.glob("*.cdx.json")):
        sbom = json.loads(path.read_text())
        if sbom.get("bomFormat") != "CycloneDX":
            problems.append(f"{path.name}: not a CycloneDX document")
            continue
        found = components(sbom)
        record: dict[str, Any] = {"file": path.name, "spec_version": sbom.get("specVersion"),
                                  "components": len(found)}
        if path.name.startswith("python"):
            pins = locked(ROOT / "requirements" / "dev.lock")
            missing = sorted(f"{n}=={v}" for n, v in pins.items()
                             if n not in ("pip", "setuptools", "wheel") and found.get(n) != v)
            record.update(locked=len(pins), missing_or_other_version=missing)
            problems += [f"{path.name}: {m} not in the SBOM" for m in missing]
        else:
            project = path.name.removeprefix("npm-").removesuffix(".cdx.json")
            lock_file = next(p for p in (ROOT / "web", *(ROOT / "interop").iterdir())
                             if p.name == project) / "package-lock.json"
            packages = [k for k in json.loads(lock_file.read_text()).get("packages", {}) if k]
            record.update(package_lock_entries=len(packages))
            if len(found) < len({k.rsplit("node_modules/", 1)[-1] for k in packages}) * 0.9:
                problems.append(f"{path.name}: {len(found)} components for "
                                f"{len(packages)} package-lock entries")
        results.write("sbom", path.name.removesuffix(".cdx.json"), record)
        print(f"{path.name}: {record['components']} components (CycloneDX "
              f"{record['spec_version']})")
    if not any(folder.glob("*.cdx.json")):
        problems.append(f"no SBOM in {folder}")
    return problems


def main() -> None:
    problems = check(Path(sys.argv[1] if len(sys.argv) > 1 else "build/sbom"))
    for problem in problems:
        print(problem)
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
