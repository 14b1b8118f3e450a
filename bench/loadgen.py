"""Closed-loop HTTP load for benchmarks: N async clients, every answer timed and classified.

Each client sends a search, waits for the answer, optionally pauses (``think_s``: a bounded,
steady load rather than a saturating one), and sends the next. Every request becomes a
:class:`Sample` (when it was sent, how long it took, the HTTP status, ``ext.rerank.status``),
so a fault benchmark can cut the timeline into before / during / after.

- :func:`run_batch`: a fixed list of requests at a given concurrency (throughput figures);
- :class:`SteadyLoad`: requests cycling until ``stop()``, in a background thread.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from lexrerank.bm25 import bm25_body
from lexrerank.evaluation import percentile

CLIENT_TIMEOUT_S = 30.0
PAGE_SIZE = 10


@dataclass(frozen=True)
class Sample:
    """One request: sent at ``at`` (``time.monotonic()``), answered after ``ms``."""

    at: float
    ms: float
    status: int  # HTTP status; 0 = no answer (connection refused/reset, client timeout)
    rerank: str | None  # ext.rerank.status of a 200 on the reranked path
    reason: str | None = None
    reason_code: str | None = None  # ext.rerank.reason_code (worker/protocol.py ReasonCode)


@dataclass(frozen=True)
class SearchRequest:
    """A ``_search`` to send: the base URL, the path, query parameters and JSON body."""

    url: str
    path: str
    params: dict[str, str]
    body: dict[str, Any]


def search_requests(url: str, index: str, texts: list[str], rerank: bool, window: int = 100,
                    timeout_ms: int | None = None) -> list[SearchRequest]:
    """One BM25 (or reranked) search per text, ``size`` = :data:`PAGE_SIZE`."""
    out = []
    for text in texts:
        body = bm25_body(text, PAGE_SIZE)
        params: dict[str, str] = {}
        if rerank:
            params["search_pipeline"] = "lexrerank"
            options: dict[str, Any] = {"query_context": {"query_text": text},
                                       "window_size": window}
            if timeout_ms is not None:
                options["timeout_ms"] = timeout_ms
            body["ext"] = {"rerank": options}
        out.append(SearchRequest(url, f"/{index}/_search", params, body))
    return out


async def _send(http: httpx.AsyncClient, req: SearchRequest) -> Sample:
    at = time.monotonic()
    start = time.perf_counter()
    try:
        resp = await http.post(req.url + req.path, params=req.params, json=req.body)
        content = resp.content
    except httpx.HTTPError as exc:
        return Sample(at, (time.perf_counter() - start) * 1000, 0, None, type(exc).__name__)
    ms = (time.perf_counter() - start) * 1000
    rerank = reason = code = None
    if resp.status_code == 200 and req.params.get("search_pipeline"):
        try:
            info = resp.json().get("ext", {}).get("rerank", {})
            rerank, reason, code = info.get("status"), info.get("reason"), info.get("reason_code")
        except ValueError:
            rerank = "invalid-json"
    elif resp.status_code != 200:
        reason = content[:200].decode(errors="replace")
    return Sample(at, ms, resp.status_code, rerank, reason, code)


async def _drive(requests: Iterator[SearchRequest], concurrency: int, think_s: float,
                 stop: threading.Event | None, samples: list[Sample]) -> list[Sample]:
    """Run the clients; each answer is appended to ``samples`` as it arrives."""
    lock = asyncio.Lock()

    async def client(http: httpx.AsyncClient) -> None:
        while stop is None or not stop.is_set():
            async with lock:
                req = next(requests, None)
            if req is None:
                return
            samples.append(await _send(http, req))
            if think_s:
                await asyncio.sleep(think_s)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S, limits=limits,
                                 trust_env=False) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    return samples


def run_batch(requests: Iterable[SearchRequest], concurrency: int
              ) -> tuple[list[Sample], float]:
    """Send every request once with ``concurrency`` clients; the samples and elapsed s."""
    start = time.perf_counter()
    samples = asyncio.run(_drive(iter(list(requests)), concurrency, 0.0, None, []))
    return samples, time.perf_counter() - start


class SteadyLoad:
    """``concurrency`` clients cycling through ``requests`` until :meth:`stop`."""

    def __init__(self, requests: list[SearchRequest], concurrency: int, think_s: float) -> None:
        self._requests = itertools.cycle(requests)
        self._concurrency, self._think_s = concurrency, think_s
        self._stop = threading.Event()
        self._samples: list[Sample] = []
        self._thread = threading.Thread(target=self._run, name="steady-load", daemon=True)

    def _run(self) -> None:
        asyncio.run(_drive(self._requests, self._concurrency, self._think_s, self._stop,
                           self._samples))

    def samples_since(self, at: float) -> list[Sample]:
        """The answers so far to requests sent at or after ``at`` (monotonic seconds)."""
        return [s for s in list(self._samples) if s.at >= at]

    def start(self) -> SteadyLoad:
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        """Stop sending (in-flight requests finish) and return every sample, in send order."""
        self._stop.set()
        self._thread.join(CLIENT_TIMEOUT_S + 5)
        return sorted(self._samples, key=lambda s: s.at)


def latency_stats(samples: list[Sample]) -> dict[str, float | None]:
    """p50 / p95 / p99 / max milliseconds of ``samples`` (None when there are none)."""
    ms = [s.ms for s in samples]
    if not ms:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    return {"p50_ms": round(percentile(ms, 50), 2), "p95_ms": round(percentile(ms, 95), 2),
            "p99_ms": round(percentile(ms, 99), 2), "max_ms": round(max(ms), 2)}
