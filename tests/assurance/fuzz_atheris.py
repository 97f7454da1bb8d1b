"""Coverage-guided fuzzing of every target in ``targets.py`` with atheris (libFuzzer).

    python -m tests.assurance.fuzz_atheris [--seconds 90 | --runs N] [--jobs 2] [TARGET ...]

Each target runs in its own process, with ``cipherpost`` instrumented for coverage,
starting from a corpus of its seeds in ``build/assurance/corpus/<target>/`` (libFuzzer
adds the inputs that reach new code there). The figures come
from libFuzzer itself ("Done N runs"): they are written to
``build/assurance/atheris/<target>.json``; a crash leaves its input in
``build/assurance/crashes/`` and the traceback in ``build/assurance/logs/<target>.log``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import ROOT

from . import results


def _child(name: str, libfuzzer_args: list[str]) -> None:
    """Runs inside the fuzzing process: instrument, then hand control to libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=["cipherpost"]):
        from tests.assurance import targets

    target = targets.TARGETS[name]
    # The seeds are written here, not by the parent: some (sessions started with a Kyber
    # encapsulation, which draws its own randomness) only decrypt in the process that made
    # them.
    corpus = Path(libfuzzer_args[-1])
    for seed in target.seeds:
        (corpus / ("seed-" + hashlib.sha1(seed).hexdigest())).write_bytes(seed)
    hits_file = results.results_dir() / "atheris" / f"{name}.hits.json"
    seen: dict[str, int] = {}

    def one(data: bytes) -> None:
        target.run(data)
        hits = {b.id: b.hits for b in targets.KNOWN_BUGS.values() if b.target == name}
        if hits != seen:  # record known-bug hits as they happen (libFuzzer exits hard)
            seen.update(hits)
            hits_file.write_text(json.dumps(hits))

    atheris.Setup([sys.argv[0], *libfuzzer_args], one)
    atheris.Fuzz()


def run_target(name: str, runs: int, seconds: int, timeout: int) -> dict[str, Any]:
    base = results.results_dir()
    corpus = base / "corpus" / name
    crashes = base / "crashes"
    logs = base / "logs"
    shutil.rmtree(corpus, ignore_errors=True)  # a fresh start: see _child
    for folder in (corpus, crashes, logs):
        folder.mkdir(parents=True, exist_ok=True)
    hits_file = base / "atheris" / f"{name}.hits.json"
    hits_file.parent.mkdir(parents=True, exist_ok=True)
    hits_file.unlink(missing_ok=True)
    log = logs / f"{name}.log"
    limit = [f"-runs={runs}"] if runs else []
    limit += [f"-max_total_time={seconds}"] if seconds else []
    args = [*limit, "-max_len=8192", f"-timeout={timeout}", "-rss_limit_mb=2048",
            "-print_final_stats=1", f"-artifact_prefix={crashes}/{name}-", str(corpus)]
    start = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "tests.assurance.fuzz_atheris", "--child", name, "--",
             *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=False,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
    elapsed = time.monotonic() - start
    text = log.read_text(errors="replace")
    done = re.search(r"Done (\d+) runs in", text)
    executed = re.findall(r"stat::number_of_executed_units: (\d+)", text)
    inputs = int(done.group(1)) if done else int(executed[-1]) if executed else 0
    crashed = proc.returncode != 0
    artifacts = re.findall(r"Test unit written to (\S+)", text)
    known = json.loads(hits_file.read_text()) if hits_file.exists() else {}
    record = {"target": name, "engine": "atheris", "runs_limit": runs,
              "seconds_limit": seconds, "inputs": inputs,
              "crashes": int(crashed), "returncode": proc.returncode,
              "crash_inputs": artifacts, "seconds": round(elapsed, 1),
              "known_bug_hits": known,
              "corpus_files": sum(1 for _ in corpus.iterdir())}
    results.write("atheris", name, record)
    return record


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        _child(sys.argv[2], [a for a in sys.argv[3:] if a != "--"])
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", help="targets to run (default: all)")
    parser.add_argument("--runs", type=int, default=int(os.environ.get("FUZZ_RUNS") or 0),
                        help="stop each target after this many inputs (FUZZ_RUNS)")
    parser.add_argument("--seconds", type=int,
                        default=int(os.environ.get("FUZZ_SECONDS") or 0),
                        help="stop each target after this long (FUZZ_SECONDS; the default, "
                             "with neither limit, is 90 s)")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("FUZZ_JOBS", 2)))
    parser.add_argument("--timeout", type=int, default=10,
                        help="seconds one input may take before it counts as a crash (hang)")
    args = parser.parse_args()
    if not args.runs and not args.seconds:
        args.seconds = 90
    from .targets import TARGETS

    names = args.targets or sorted(TARGETS)
    unknown = set(names) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    failed = False
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(run_target, n, args.runs, args.seconds, args.timeout): n
                   for n in names}
        for future in concurrent.futures.as_completed(futures):
            r = future.result()
            failed |= bool(r["crashes"])
            print(f"{r['target']:34s} {r['inputs']:>10,} inputs {r['crashes']} crashes "
                  f"{r['seconds']:>7.1f} s  known bugs hit: {r['known_bug_hits'] or '-'}",
                  flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
