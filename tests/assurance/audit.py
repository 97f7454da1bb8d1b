"""Known-vulnerability audit of the locked dependencies: pip-audit over
``requirements/dev.lock`` and ``npm audit`` over each package-lock.json (the browser
client and the two interop peers).

    python -m tests.assurance.audit          # what `make audit` runs

Both tools need a vulnerability database on the network (pip-audit: OSV by default here,
``PIP_AUDIT_SERVICE=pypi`` for PyPI's; npm: the registry's advisory endpoint). Where it
cannot be reached this says so plainly, per tool, and exits 2: an audit that did not run
is not a pass. Exit 1 when a vulnerability is reported, 0 when every audit ran clean.
Figures go to ``build/assurance/audit/<tool>.json``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Any

from tests.conftest import ROOT

from . import results

LOCK = ROOT / "requirements" / "dev.lock"
NPM_PROJECTS = ("web", "interop/libsignal-peer", "interop/libsignal-peer-0.103")
#: Words in a tool's output that mean it never reached its database.
_UNREACHABLE = re.compile(
    r"ConnectionError|Connection refused|Failed to establish a new connection|Name or "
    r"service not known|Temporary failure in name resolution|Network is unreachable|"
    r"ENOTFOUND|ECONNREFUSED|ENETUNREACH|EAI_AGAIN|ETIMEDOUT|network request.*failed|"
    r"Max retries exceeded|timed out|audit endpoint returned an error", re.IGNORECASE)


def _tool(name: str) -> str:
    """A tool from the supply-chain tools' virtualenv (``make audit`` installs it), or PATH."""
    here = ROOT / ".venv-tools" / "bin" / name
    return str(here) if here.exists() else name


def pip_audit() -> dict[str, Any]:
    service = os.environ.get("PIP_AUDIT_SERVICE", "osv")
    proc = subprocess.run(
        [_tool("pip-audit"), "--requirement", str(LOCK), "--require-hashes", "--disable-pip",
         "--no-deps", "--vulnerability-service", service, "--format", "json",
         "--progress-spinner", "off"],
        capture_output=True, text=True, timeout=600, check=False)
    record: dict[str, Any] = {"tool": "pip-audit", "service": service, "lock": str(LOCK.name),
                              "returncode": proc.returncode}
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        report = None
    if report is None:
        record["status"] = "unreachable" if _UNREACHABLE.search(proc.stderr) else "error"
        record["detail"] = (proc.stderr.strip().splitlines() or [""])[-1]
        return record
    found = [(d["name"], d["version"], v["id"]) for d in report.get("dependencies", [])
             for v in d.get("vulns", [])]
    record.update(status="vulnerable" if found else "clean",
                  packages=len(report.get("dependencies", [])),
                  vulnerabilities=[" ".join(f) for f in found])
    return record


def npm_audit(project: str) -> dict[str, Any]:
    proc = subprocess.run(["npm", "audit", "--package-lock-only", "--json"],
                          cwd=ROOT / project, capture_output=True, text=True, timeout=300,
                          check=False)
    record: dict[str, Any] = {"tool": "npm audit", "project": project,
                              "returncode": proc.returncode}
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        report = {}
    if not isinstance(report, dict) or report.get("error") or not report:
        text = " ".join([str(report.get("message", "")) if isinstance(report, dict) else "",
                         proc.stderr])
        record["status"] = "unreachable" if _UNREACHABLE.search(text) else "error"
        record["detail"] = (text.strip().splitlines() or [""])[0]
        return record
    counts = report.get("metadata", {}).get("vulnerabilities", {})
    total = sum(v for k, v in counts.items() if k != "total" and isinstance(v, int))
    record.update(status="vulnerable" if total else "clean", vulnerabilities=counts,
                  dependencies=report.get("metadata", {}).get("dependencies", {}))
    return record


def main() -> None:
    records = [pip_audit(), *(npm_audit(p) for p in NPM_PROJECTS)]
    for record in records:
        name = record["tool"].replace(" ", "-") + (
            "-" + record["project"].replace("/", "-") if "project" in record else "")
        results.write("audit", name, record)
        what = record.get("project") or record.get("lock")
        status = record["status"]
        if status == "unreachable":
            print(f"{record['tool']} ({what}): NOT AUDITED - the vulnerability database is "
                  f"unreachable from this machine ({record.get('detail')})")
        elif status == "error":
            print(f"{record['tool']} ({what}): NOT AUDITED - the tool failed "
                  f"({record.get('detail')})")
        else:
            print(f"{record['tool']} ({what}): {status} {record.get('vulnerabilities')}")
    statuses = {r["status"] for r in records}
    if "vulnerable" in statuses:
        raise SystemExit(1)
    if statuses != {"clean"}:
        raise SystemExit(2)


if __name__ == "__main__":
    main()
