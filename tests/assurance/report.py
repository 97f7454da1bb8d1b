"""Print (and save as ``build/assurance/summary.json``) the figures of the last runs.

    python -m tests.assurance.report

Reads what the fuzz targets, the API fuzzing, the canary and log scans, the chaos and soak
runs, the SBOM check and the audit wrote under ``build/assurance/`` (see ``results.py``);
prints nothing for a figure never run.
"""

from __future__ import annotations

import json
from typing import Any

from . import results

ENGINES = ("hypothesis-quick", "hypothesis-long", "atheris")


def summary() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for engine in ENGINES:
        rows = [r for r in results.read_all(engine) if "target" in r]
        if rows:
            out[engine] = {
                "targets": {r["target"]: {k: r.get(k) for k in
                                          ("inputs", "failures", "crashes", "seconds",
                                           "known_bug_hits", "long", "written_at")
                                          if k in r} for r in rows},
                "inputs": sum(r["inputs"] for r in rows),
                "crashes": sum(r.get("crashes", r.get("failures", 0)) for r in rows),
                "known_bug_hits": sum(sum(r.get("known_bug_hits", {}).values())
                                      for r in rows),
            }
    for kind in ("api-quick", "api-long"):
        rows = results.read_all(kind)
        if rows:
            out[kind] = {"operations": len(rows),
                         "requests": sum(r["requests"] for r in rows),
                         "server_errors": sum(r["server_errors"] for r in rows),
                         "known_server_errors": sum(r.get("known_server_errors", 0)
                                                    for r in rows),
                         "reproducers": [x for r in rows for x in r.get("reproducers", [])]}
    for kind in ("canaries", "logscan", "chaos", "soak", "sbom", "audit"):
        rows = results.read_all(kind)
        if rows:
            out[kind] = {r.get("name", str(i)): r for i, r in enumerate(rows)}
    return out


def main() -> None:
    data = summary()
    path = results.results_dir() / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True))
    for engine in ENGINES:
        if engine not in data:
            continue
        part = data[engine]
        print(f"\n{engine}: {part['inputs']:,} inputs, {part['crashes']} crashes, "
              f"{part['known_bug_hits']:,} inputs hit a known bug")
        for name, row in sorted(part["targets"].items()):
            crashes = row.get("crashes", row.get("failures", 0))
            known = {k: v for k, v in (row.get("known_bug_hits") or {}).items() if v}
            print(f"  {name:34s} {row['inputs']:>11,} inputs {crashes} crashes"
                  f"{'  known: ' + str(known) if known else ''}")
    for kind in ("api-quick", "api-long"):
        if kind in data:
            part = data[kind]
            print(f"\n{kind}: {part['requests']:,} requests over {part['operations']} "
                  f"operation runs, {part['server_errors']} server errors (5xx) and "
                  f"{part['known_server_errors']} of a known, open bug")
    for kind in ("canaries", "logscan", "chaos", "soak", "sbom", "audit"):
        for name, row in sorted(data.get(kind, {}).items()):
            shown = {k: v for k, v in row.items() if k not in ("name", "written_at")}
            print(f"\n{kind} {name}: {json.dumps(shown, sort_keys=True)}")
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
