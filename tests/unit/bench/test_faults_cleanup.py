"""`bench faults` stops what it started on any exit: SIGTERM, SIGINT (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from bench.services import spawn, stopped_on_signals

    with stopped_on_signals():
        child = spawn(["sleep", "300"], {}, Path(sys.argv[1]))
        try:
            print(child.pid, flush=True)
            time.sleep(300)
        finally:
            print("cleanup ran", flush=True)
""")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose (its parent, the bench, has exited).
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_bench_stops_its_children_and_exits_as_killed(
        tmp_path: Path, sig: signal.Signals) -> None:
    bench = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "child.log")],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    child = int(bench.stdout.readline())
    assert alive(child)
    bench.send_signal(sig)
    out, err = bench.communicate(timeout=30)
    assert bench.returncode == 128 + sig
    assert "cleanup ran" in out and "stopped what it started" in err
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)  # stopped by atexit: the finally above did not stop it
