"""`lexrerank bench pipeline`: latency of the whole serving path, sequential and concurrent.

Starts its own worker (prefork, one process: the CPU default) and gateway on a free loopback
port, on private queue names of the configured Redis, then for 1 and for 8 concurrent clients
(``c1``, ``c8``) times the same COLIEE queries (``size=10``) three ways:

- ``bm25_direct``: straight to OpenSearch;
- ``bm25_gateway``: through the gateway, no pipeline (the proxy's overhead);
- ``reranked``: ``search_pipeline=lexrerank`` at ``window_size`` (first stage of ``window``
  hits, rerank on the worker, merge), under the configured deadline
  (``LEXRERANK_RERANK_TIMEOUT_MS``): answers that fell back are counted in ``fallbacks``
  (their latency is the deadline, which is what a user sees).

``worker_ms`` is the worker's own time per rerank (encode + gather + score + fuse), from the
task result; the rest of ``reranked`` is queueing, Redis, the first stage and the merge.
``encode_ms`` is the query encoder alone, timed in this process with the same number of
concurrent callers (on a small CPU, 8 concurrent encodes contend for the cores). Phases run
one after another, never overlapping. Prints one JSON object.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from gateway.first_stage import bm25_body
from lexrerank.config import get_settings
from lexrerank.errors import LexrerankError
from lexrerank.evaluation import percentile
from lexrerank.stack import gateway_ready
from reranker.datasets import read_queries

COLIEE_YEARS = tuple(f"H{n}" for n in range(18, 31)) + ("R01", "R02", "R03", "R04")
CONCURRENCY = (1, 8)
PAGE_SIZE = 10
READY_S = 180
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(check: Callable[[], bool], proc: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LexrerankError(f"{what} exited with {proc.returncode}; see {log}")
        if check():
            return
        time.sleep(0.5)
    raise LexrerankError(f"{what} not ready after {READY_S}s; see {log}")


class _Services:
    """A private worker + gateway, stopped by their own pids."""

    def __init__(self, model: str, index: str, logs: Path) -> None:
        tag = uuid.uuid4().hex[:8]
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "LEXRERANK_MODEL": model,
                    "LEXRERANK_INDEX": index, "LEXRERANK_RERANK_QUEUE": f"bench-rerank-{tag}",
                    "LEXRERANK_EMBED_QUEUE": f"bench-embed-{tag}"}
        self.node = f"bench-{tag}@{socket.gethostname()}"
        self.logs = logs
        self.procs: list[subprocess.Popen] = []

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "lexrerank", *args], env=self.env,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=REPO,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        port = self.url.rsplit(":", 1)[1]
        gateway = self._spawn("gateway", ["serve", "--port", port, "--log-level", "warning"])
        worker = self._spawn("worker", ["worker", "--hostname", self.node,
                                        "--queues", self.env["LEXRERANK_RERANK_QUEUE"]])
        _wait(lambda: gateway_ready(self.url), gateway, "gateway", self.logs / "gateway.log")
        _wait(self._worker_ready, worker, "worker", self.logs / "worker.log")

    def _worker_ready(self) -> bool:
        from worker.celery_app import make_app, serving

        queue = self.env["LEXRERANK_RERANK_QUEUE"]
        return serving(make_app(), queue, timeout_s=1.0) is not None

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        from worker.celery_app import delete_queues, make_app

        delete_queues(make_app(), [self.env["LEXRERANK_RERANK_QUEUE"],
                                   self.env["LEXRERANK_EMBED_QUEUE"]])


def _run(concurrency: int, texts: list[str], call: Callable[[httpx.Client, str], Any]
         ) -> tuple[list[float], list[Any], int]:
    """Send every text once with ``concurrency`` clients; latencies (ms), results, errors."""
    def one(client: httpx.Client, text: str) -> tuple[float, Any]:
        start = time.perf_counter()
        try:
            result = call(client, text)
        except (httpx.HTTPError, ValueError, KeyError):
            result = None
        return (time.perf_counter() - start) * 1000, result

    chunks = [texts[i::concurrency] for i in range(concurrency)]

    def client_loop(chunk: list[str]) -> list[tuple[float, Any]]:
        with httpx.Client(timeout=30) as client:
            return [one(client, text) for text in chunk]

    with ThreadPoolExecutor(concurrency) as pool:
        done = [item for part in pool.map(client_loop, chunks) for item in part]
    ms = [m for m, r in done if r is not None]
    return ms, [r for _, r in done if r is not None], sum(1 for _, r in done if r is None)


def _search(url: str, index: str, params: dict[str, str],
            ext: Callable[[str], dict[str, Any]] | None = None
            ) -> Callable[[httpx.Client, str], Any]:
    def call(client: httpx.Client, text: str) -> Any:
        body = bm25_body(text, PAGE_SIZE)
        if ext is not None:
            body["ext"] = ext(text)
        resp = client.post(f"{url}/{index}/_search", params=params, json=body)
        if resp.status_code != 200:
            raise ValueError(resp.status_code)
        return resp.json().get("ext", {}).get("rerank", {})
    return call


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return round(percentile(values, 50), 2), round(percentile(values, 95), 2)


def run(window: int = 100, queries: int = 200, model: str = "paraformer",
        index: str | None = None) -> dict[str, Any]:
    settings = get_settings()
    index = index or settings.index
    data = settings.data_dir / "coliee" / "train"
    files = [data / f"riteval_{y}_en.xml" for y in COLIEE_YEARS]
    texts = [q.text for q in read_queries([f for f in files if f.exists()])][:queries]
    if not texts:
        raise LexrerankError(f"no COLIEE queries under {data}")
    from reranker.checkpoint import load_reranker
    from reranker.registry import checkpoint_path
    from worker.device import apply_torch_threads

    apply_torch_threads()  # the encode timings use the workers' thread setting
    reranker = load_reranker(checkpoint_path(model))
    result: dict[str, Any] = {"suite": "pipeline", "model": model, "index": index,
                              "window": window, "requests_per_phase": len(texts),
                              "timeout_ms": settings.rerank_timeout_ms,
                              "device": str(getattr(reranker, "device", "cpu")),
                              "cpus": os.cpu_count(),
                              "torch_threads": torch_threads()}
    with tempfile.TemporaryDirectory(prefix="lexrerank-bench-") as tmp:
        services = _Services(model, index, Path(tmp))
        services.start()
        try:
            direct = _search(settings.opensearch_url, index, {})
            gateway = _search(services.url, index, {})
            reranked = _search(services.url, index, {"search_pipeline": "lexrerank"},
                               lambda t: {"rerank": {"query_context": {"query_text": t},
                                                     "window_size": window}})
            for call in (direct, gateway, reranked):  # warm-up: connections, lazy init
                _run(1, texts[:5], call)
            for c in CONCURRENCY:
                result[f"c{c}"] = _phase(c, texts, direct, gateway, reranked, reranker)
        finally:
            services.stop()
    return result


def _phase(c: int, texts: list[str], direct: Callable, gateway: Callable, reranked: Callable,
           reranker: Any) -> dict[str, Any]:
    direct_ms, _, direct_err = _run(c, texts, direct)
    gateway_ms, _, gateway_err = _run(c, texts, gateway)
    reranked_ms, infos, reranked_err = _run(c, texts, reranked)
    fallbacks = sum(1 for info in infos if info.get("status") != "ok")
    # Reasons grouped by kind (the milliseconds in them made every one unique).
    reasons = Counter(re.sub(r"\d+", "N", info.get("reason") or "") for info in infos
                      if info.get("status") != "ok")
    with ThreadPoolExecutor(c) as pool:
        encode_ms = list(pool.map(lambda t: _timed_encode(reranker, t), texts))
    stats = {}
    for name, values in (("bm25_direct", direct_ms), ("bm25_gateway", gateway_ms),
                         ("reranked", reranked_ms), ("encode", encode_ms)):
        stats[f"{name}_ms_p50"], stats[f"{name}_ms_p95"] = _stats(values)
    worker = [info["worker_ms"] for info in infos if info.get("worker_ms") is not None]
    stats["worker_ms_p50"], stats["worker_ms_p95"] = _stats(worker)
    stats.update(errors=direct_err + gateway_err + reranked_err, fallbacks=fallbacks,
                 fallback_reasons=dict(reasons))
    return stats


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _timed_encode(reranker: Any, text: str) -> float:
    start = time.perf_counter()
    reranker.encode_query(text)
    return (time.perf_counter() - start) * 1000
