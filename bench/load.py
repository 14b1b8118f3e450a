"""`lexrerank bench load`: throughput and latency under concurrent load, errors and fallbacks.

Starts its own gateway and one rerank worker (prefork, one process: the CPU default) on
private queues of the configured Redis, against the configured index, then for each
concurrency level (default 1, 4, 16, 32 closed-loop clients, no think time) sends the same
COLIEE queries three ways, one phase after another:

- ``bm25_direct``: straight to OpenSearch (the floor);
- ``bm25_gateway``: through the gateway without the pipeline: ``gateway_overhead_ms_p50`` is
  its p50 minus the direct one (the proxy's own cost);
- ``reranked``: ``search_pipeline=lexrerank`` with ``window_size`` under the deadline
  (``timeout_ms``, default ``LEXRERANK_RERANK_TIMEOUT_MS``).

Per phase: ``rps`` (answers per second of wall time), p50/p95/p99/max ms, ``errors`` (any
answer other than HTTP 200, or none), and for ``reranked`` the ``fallbacks`` with their
reasons. The target is zero errors at every level: when one worker cannot keep up, the
reranked path degrades by falling back to the first-stage order inside the deadline.
Client, gateway, worker and OpenSearch share this machine's cores.

``encoder_backends``: more encoder runtimes to compare with the configured one
(``LEXRERANK_ENCODER_BACKEND``), side by side in one run: each gets its own gateway and
worker (``LEXRERANK_ENCODER_BACKEND`` set for it), and at every level its ``reranked_<backend>``
phase runs right after the configured backend's ``reranked``, so both see the same machine.
``reranked_rps_over_<configured>`` is the throughput ratio. The index must hold each
backend's article vectors (``LEXRERANK_ENCODER_BACKEND=<backend> lexrerank embed``); a worker
that has to compute them shows it as fallbacks and a lower rate.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.loadgen import latency_stats, run_batch, search_requests
from bench.services import Services, query_texts
from indexer.article_vectors import index_language
from lexrerank.config import get_settings
from lexrerank.opensearch_client import opensearch_client
from reranker.model_names import backend_for

CONCURRENCY = (1, 4, 16, 32)


def _phase(requests: list, concurrency: int) -> dict[str, Any]:
    samples, elapsed = run_batch(requests, concurrency)
    ok = [s for s in samples if s.status == 200]
    stats: dict[str, Any] = {"requests": len(samples), "rps": round(len(ok) / elapsed, 1),
                             **latency_stats(ok), "errors": len(samples) - len(ok)}
    if requests and requests[0].params.get("search_pipeline"):
        fallbacks = [s for s in ok if s.rerank != "ok"]
        stats["fallbacks"] = len(fallbacks)
        # Grouped by kind: the milliseconds in a reason make every one unique.
        stats["fallback_reasons"] = dict(Counter(re.sub(r"\d+", "N", s.reason or "")
                                                 for s in fallbacks))
        stats["fallback_reason_codes"] = dict(Counter(s.reason_code or "none"
                                                      for s in fallbacks))
    return stats


def run(concurrency: tuple[int, ...] = CONCURRENCY, queries: int = 200, window: int = 100,
        model: str = "paraformer", index: str | None = None, timeout_ms: int | None = None,
        encoder_backends: Sequence[str] = ()) -> dict[str, Any]:
    """Figures for each level in ``concurrency`` (``c1``, ``c4``, ...): see the module doc."""
    settings = get_settings()
    index = index or settings.index
    texts = query_texts(queries)
    deadline = timeout_ms or settings.rerank_timeout_ms
    # ``auto`` named by what it serves on this index's language, so a compared backend that
    # is the same variant is not run twice.
    served = backend_for(settings.encoder_backend,
                         [index_language(opensearch_client(settings), index)])
    others = [b for b in dict.fromkeys(encoder_backends) if b != served]
    result: dict[str, Any] = {"suite": "load", "model": model, "index": index,
                              "window": window, "requests_per_phase": len(texts),
                              "deadline_ms": deadline, "cpus": os.cpu_count(),
                              "encoder_backend": served}
    with tempfile.TemporaryDirectory(prefix="lexrerank-load-") as tmp, ExitStack() as stack:
        services = _started(stack, Services(model, index, Path(tmp)))
        compared = {b: _started(stack, Services(
            model, index, Path(tmp) / b, env={"LEXRERANK_ENCODER_BACKEND": b},
            prefix=f"bench-{b}")) for b in others}
        paths = {
            "bm25_direct": search_requests(settings.opensearch_url, index, texts, False),
            "bm25_gateway": search_requests(services.url, index, texts, False),
            "reranked": search_requests(services.url, index, texts, True, window, deadline),
            **{f"reranked_{b}": search_requests(s.url, index, texts, True, window, deadline)
               for b, s in compared.items()},
        }
        for requests in paths.values():  # warm-up: connections, lazy initialisation
            run_batch(requests[:5], 1)
        total_errors = 0
        for c in concurrency:
            level = {name: _phase(requests, c) for name, requests in paths.items()}
            direct, gateway = level["bm25_direct"], level["bm25_gateway"]
            if direct["p50_ms"] is not None and gateway["p50_ms"] is not None:
                level["gateway_overhead_ms_p50"] = round(
                    gateway["p50_ms"] - direct["p50_ms"], 2)
            if compared:
                base = level["reranked"]["rps"]
                level[f"reranked_rps_over_{served}"] = {
                    b: round(level[f"reranked_{b}"]["rps"] / base, 3) if base else None
                    for b in compared}
            total_errors += sum(p["errors"] for p in level.values()
                                if isinstance(p, dict) and "errors" in p)
            result[f"c{c}"] = level
        result["errors"] = total_errors
    return result


def _started(stack: ExitStack, services: Services) -> Services:
    """Start ``services`` and stop them when ``stack`` closes (also when a later start fails)."""
    services.logs.mkdir(parents=True, exist_ok=True)
    stack.callback(services.stop)
    return services.start()
