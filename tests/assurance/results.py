"""Where fuzzing and scanning runs leave their figures: one JSON file per target and engine
under ``build/assurance/`` (or ``$ASSURANCE_RESULTS``), merged by ``report.py``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from tests.conftest import ROOT


def results_dir() -> Path:
    return Path(os.environ.get("ASSURANCE_RESULTS", ROOT / "build" / "assurance"))


def write(kind: str, name: str, data: dict[str, Any]) -> Path:
    """Write ``data`` (plus a time stamp) to ``<results>/<kind>/<name>.json``."""
    path = results_dir() / kind / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"name": name, **data,
                               "written_at": time.strftime("%Y-%m-%dT%H:%M:%S")},
                              indent=1, sort_keys=True))
    tmp.replace(path)
    return path


def read_all(kind: str) -> list[dict[str, Any]]:
    folder = results_dir() / kind
    if not folder.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
