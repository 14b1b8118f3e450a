"""The ops page's view of this gateway process: counts and a ring buffer of recent searches.

Per process (with several uvicorn workers each has its own), in memory, no Prometheus: the
``gateway`` object of ``GET /_lexrerank/ops`` (docs/ops.md). Fallbacks are counted by reason
code (:class:`worker.protocol.ReasonCode`).
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any


class RecentRequests:
    """Per-process counts and a ring buffer of the last reranked searches (for the ops page).

    Counts run since this process started; rates and percentiles cover the last
    :attr:`window_s` seconds.
    """

    window_s = 60.0

    def __init__(self, capacity: int = 50_000) -> None:
        self.requests = 0
        self.reranked = 0
        self.fallbacks = 0
        self.fallbacks_by_reason: dict[str, int] = {}
        # (unix time, fell back?, total ms)
        self.ring: deque[tuple[float, bool, float]] = deque(maxlen=capacity)

    def add(self, fell_back: bool, reason_code: str | None, total_ms: float) -> None:
        self.reranked += 1
        if fell_back:
            self.fallbacks += 1
            code = reason_code or "gateway_error"
            self.fallbacks_by_reason[code] = self.fallbacks_by_reason.get(code, 0) + 1
        self.ring.append((time.time(), fell_back, total_ms))

    def summary(self, now: float | None = None) -> dict[str, Any]:
        """The ``gateway`` object of ``GET /_lexrerank/ops`` (see docs/ops.md)."""
        now = time.time() if now is None else now
        recent = [(fb, ms) for t, fb, ms in list(self.ring) if now - t <= self.window_s]
        latencies = sorted(ms for _, ms in recent)
        return {
            "pid": os.getpid(),
            "window_s": self.window_s,
            "requests": self.requests,
            "reranked": self.reranked,
            "fallbacks": self.fallbacks,
            "recent_reranked": len(recent),
            "fallback_rate": (sum(fb for fb, _ in recent) / len(recent)) if recent else 0.0,
            "latency_ms": {name: _percentile(latencies, q) for name, q in
                           (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))},
            "fallbacks_by_reason": dict(self.fallbacks_by_reason),
        }


def _percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile of already sorted values (None when empty)."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return round(sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low),
                 3)


RECENT = RecentRequests()
