"""Dependency audit for CI: pip-audit on the virtual environment, reported honestly.

- Known vulnerabilities -> exit 1, unless the advisory id is listed in
  ``.ci/pip-audit-ignore`` (one ``ID  reason`` per line; each one justified there and in
  docs/security.md).
- The advisory database unreachable, or packages pip-audit could not look up (versions PyPI's
  JSON API does not know, e.g. from a private mirror or a wheel directory) -> a loud
  ``DEPENDENCY AUDIT INCOMPLETE`` line naming what was not audited, exit 0: CI must not fail
  forever on a network it does not have, but must never claim "no known vulnerabilities"
  for packages it never checked.

Usage: ``.venv/bin/python .ci/audit_dependencies.py [--strict]`` (``--strict``: incomplete
audits fail too).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORE_FILE = ROOT / ".ci" / "pip-audit-ignore"


def ignored_ids() -> dict[str, str]:
    """Advisory ids accepted on purpose, with their reasons."""
    if not IGNORE_FILE.exists():
        return {}
    out = {}
    for line in IGNORE_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            vid, _, reason = line.partition(" ")
            out[vid] = reason.strip()
    return out


def main(strict: bool) -> int:
    pip_audit = Path(sys.executable).with_name("pip-audit")
    cmd = [str(pip_audit), "--progress-spinner", "off", "--skip-editable", "-f", "json"]
    ignores = ignored_ids()
    for vid in ignores:
        cmd += ["--ignore-vuln", vid]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        print("DEPENDENCY AUDIT NOT DONE: pip-audit could not reach its advisory database "
              f"(exit {proc.returncode}): {' | '.join(tail)}")
        return 1 if strict else 0
    deps = report.get("dependencies", [])
    skipped = [d for d in deps if d.get("skip_reason")]
    audited = [d for d in deps if not d.get("skip_reason")]
    vulnerable = [d for d in audited if d.get("vulns")]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
            print(f"VULNERABLE: {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixes})")
    print(f"pip-audit: {len(audited)} of {len(deps)} packages audited, "
          f"{len(vulnerable)} with known vulnerabilities, {len(ignores)} advisories ignored "
          f"on purpose ({IGNORE_FILE.name})")
    if skipped:
        names = ", ".join(f"{d['name']}" for d in skipped[:15])
        more = f" and {len(skipped) - 15} more" if len(skipped) > 15 else ""
        print(f"DEPENDENCY AUDIT INCOMPLETE: {len(skipped)} packages NOT audited ({names}{more}); "
              f"first reason: {skipped[0]['skip_reason']}")
    if vulnerable:
        return 1
    return 1 if strict and skipped else 0


if __name__ == "__main__":
    sys.exit(main("--strict" in sys.argv[1:]))
