"""The compiled relay modules (cipherpost.server.native): loaded only from a current build.

Each case imports the relay in a fresh interpreter, as ``cipherpost-server`` does, and
reports which build it chose and where the queue log's code came from."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "compiled"
SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")
PROBE = ("import cipherpost.server, cipherpost.server.native as n, "
         "cipherpost.server.storage.queue_log as q, cipherpost.server.api.websocket as w; "
         "print(n.status); print(q.__file__); print(w.__file__)")


def _probe(**env: str) -> tuple[str, str, str]:
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith("CIPHERPOST_COMPILED")}
    environment.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE], env=environment, capture_output=True,
                         text=True, timeout=60, check=True)
    status, queue_log, websocket = out.stdout.splitlines()
    return status, queue_log, websocket


def _manifest(directory: Path, modules: dict[str, str], suffix: str = SUFFIX) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifest.json").write_text(json.dumps(
        {"ext_suffix": suffix, "shared": "cipherpost_relay__mypyc", "modules": modules}))


def _current_digest(module: str) -> str:
    path = ROOT / "src" / Path(*module.split(".")).with_suffix(".py")
    return hashlib.sha256(path.read_bytes()).hexdigest()


QUEUE_LOG = "cipherpost.server.storage.queue_log"


@pytest.mark.skipif(not (BUILD / "manifest.json").is_file(),
                    reason="no compiled build (make compile; make test builds it)")
def test_a_current_build_is_loaded_for_every_module_it_holds() -> None:
    status, queue_log, websocket = _probe()
    assert status.startswith("compiled ("), status
    for file in (queue_log, websocket):
        assert Path(file).is_relative_to(BUILD) and file.endswith(SUFFIX), file


def test_the_switch_turns_the_build_off() -> None:
    status, queue_log, _ = _probe(CIPHERPOST_COMPILED="0")
    assert status == "plain Python (CIPHERPOST_COMPILED=0)"
    assert queue_log.endswith("queue_log.py")


def test_a_build_whose_source_changed_since_is_not_loaded_at_all(tmp_path: Path) -> None:
    # One module current, one edited since: neither loads (they call each other directly).
    _manifest(tmp_path, {QUEUE_LOG: _current_digest(QUEUE_LOG),
                         "cipherpost.server.api.websocket": "0" * 64})
    status, queue_log, websocket = _probe(CIPHERPOST_COMPILED_DIR=str(tmp_path))
    assert status == "plain Python (compiled build is stale)"
    assert queue_log.endswith("queue_log.py") and websocket.endswith("websocket.py")


def test_an_incomplete_or_foreign_build_is_not_loaded(tmp_path: Path) -> None:
    _manifest(tmp_path / "incomplete", {QUEUE_LOG: _current_digest(QUEUE_LOG)})
    status, queue_log, _ = _probe(CIPHERPOST_COMPILED_DIR=str(tmp_path / "incomplete"))
    assert status == "plain Python (incomplete build)"
    assert queue_log.endswith("queue_log.py")

    _manifest(tmp_path / "foreign", {QUEUE_LOG: _current_digest(QUEUE_LOG)},
              suffix=".cpython-39-x86_64-linux-gnu.so")
    status, _, _ = _probe(CIPHERPOST_COMPILED_DIR=str(tmp_path / "foreign"))
    assert status == "plain Python (built for another Python)"

    for name, text in (("garbled", "{not json"), ("list", "[]"),
                       ("types", json.dumps({"ext_suffix": SUFFIX, "shared": "x",
                                             "modules": [QUEUE_LOG]}))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(text)
        status, _, _ = _probe(CIPHERPOST_COMPILED_DIR=str(tmp_path / name))
        assert status == "plain Python (unreadable build manifest)", name

    status, _, _ = _probe(CIPHERPOST_COMPILED_DIR=str(tmp_path / "none"))
    assert status == "plain Python (not compiled: run make compile)"
