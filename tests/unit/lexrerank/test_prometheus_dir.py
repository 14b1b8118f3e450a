"""lexrerank.prometheus_dir: importing it leaves prometheus-client unloaded.

prometheus-client picks in-memory or file-backed values when it is first imported; the CLI
imports this module and only then sets PROMETHEUS_MULTIPROC_DIR, so an import of the library
here would leave a prefork worker's children counting in memory and its /metrics empty.
"""

from __future__ import annotations

import os
import subprocess
import sys


def test_importing_it_does_not_load_prometheus_client() -> None:
    probe = ("import sys, lexrerank.prometheus_dir; "
             "print('prometheus_client' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_values_counted_after_prepare_reach_the_merged_registry() -> None:
    # As `lexrerank worker` does: import, prepare (a private directory), then count.
    probe = (
        "from lexrerank.prometheus_dir import prepare_multiproc_dir, process_registry\n"
        "path = prepare_multiproc_dir('worker')\n"
        "from prometheus_client import Counter, generate_latest\n"
        "Counter('probe_total', 'probe').inc(3)\n"
        "print(sorted(p.name for p in path.glob('*.db')))\n"
        "print(generate_latest(process_registry()).decode())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, env=env)
    assert "counter_" in out.stdout
    assert "probe_total 3.0" in out.stdout
