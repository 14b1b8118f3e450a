"""A test hook that makes rerank tasks slow, for fault benchmarks and tests. Off by default.

``LEXRERANK_FAULT_DELAY_FILE=/path`` (read once, at import) names a file that may hold a
number of milliseconds; while it exists, every rerank task sleeps that long before it starts.
Writing or deleting the file turns the slowness on and off without restarting the worker
(``bench/faults.py``'s ``worker_slow``). Without the variable, nothing is ever read.
Never set it in production.
"""

from __future__ import annotations

import time
from pathlib import Path

from lexrerank.config import get_settings

_DELAY_FILE: Path | None = get_settings().fault_delay_file


def injected_delay_s() -> float:
    """Seconds to wait now: the file's milliseconds, or 0 (no hook, no file, bad number)."""
    if _DELAY_FILE is None:
        return 0.0
    try:
        return max(float(_DELAY_FILE.read_text().strip() or 0), 0.0) / 1000
    except (OSError, ValueError):
        return 0.0


def maybe_delay() -> None:
    """Sleep for the injected delay, if any (the worker's process is busy meanwhile)."""
    delay = injected_delay_s()
    if delay:
        time.sleep(delay)
