"""`lexrerank bench pipeline`: latency of the whole serving path, sequential and concurrent.

Starts its own worker (prefork, ``--worker-processes``, default that of ``lexrerank worker``) and
gateway on a free loopback port, on private queue names of the configured Redis, then for 1
and for 8 concurrent clients (``c1``, ``c8``) times the same COLIEE queries (``size=10``)
three ways:

- ``bm25_direct``: straight to OpenSearch;
- ``bm25_gateway``: through the gateway, no pipeline (the proxy's overhead). The two are
  paired: each query goes both ways back to back (alternating which first), so a noisy
  machine slows both alike; ``gateway_overhead_ratio`` is their p50 ratio;
- ``reranked``: ``search_pipeline=lexrerank`` at ``window_size`` (first stage of ``window``
  hits, rerank on the worker, merge), under the configured deadline
  (``LEXRERANK_RERANK_TIMEOUT_MS``): answers that fell back are counted in ``fallbacks``
  (their latency is the deadline, which is what a user sees);
- ``reranked_native``: the same reranked query sent straight to OpenSearch with a search
  pipeline of the ``lexrerank-search-pipeline`` plugin (defined for the run, deleted after)
  that calls this gateway's ``POST /_lexrerank/rerank``: the first stage, then the rerank
  (not overlapped, as the gateway overlaps the query encode with the first stage). Its
  fallbacks are ``native_fallbacks``. Without the plugin loaded, ``native`` says so and the
  row is absent.

``gateway_cpu_ms``: the gateway process's CPU time (``/proc``, 10 ms ticks) per request it
served in the BM25 pair (``bm25``) and in the reranked phase (``reranked``).

``worker_ms`` is the worker's own time per rerank (encode + gather + score + fuse), from the
task result; the rest of ``reranked`` is queueing, Redis, the first stage and the merge.
``encode_ms`` is the query encoder alone, timed in this process with the same number of
concurrent callers (on a small CPU, 8 concurrent encodes contend for the cores). The BM25
pair, the reranked phase and the encode phase run one after another, never overlapping.
Prints one JSON object.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.rerank import query_encoders
from bench.services import (
    Services,
    process_cpu_seconds,
    query_texts,
    run_clients,
    run_paired_clients,
)
from lexrerank.bm25 import bm25_body
from lexrerank.config import get_settings
from lexrerank.evaluation import percentile
from lexrerank.stack import PIPELINE_PLUGIN, search_pipeline_definition

CONCURRENCY = (1, 8)
PAGE_SIZE = 10


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
        index: str | None = None, worker_processes: int | None = None) -> dict[str, Any]:
    settings = get_settings()
    index = index or settings.index
    texts = query_texts(queries)
    from reranker.checkpoint import load_reranker
    from reranker.registry import checkpoint_path
    from worker.device import apply_torch_threads, default_processes

    worker_processes = worker_processes or default_processes()

    apply_torch_threads()  # the encode timings use the workers' thread setting
    reranker = load_reranker(checkpoint_path(model, model_dir=settings.model_dir),
                             cache_dir=settings.cache_dir, backend=settings.encoder_backend)
    # An ensemble encodes the query once per distinct encoder of its members.
    encoders = query_encoders(getattr(reranker, "members", {model: reranker}))
    result: dict[str, Any] = {"suite": "pipeline", "model": model, "index": index,
                              "window": window, "requests_per_phase": len(texts),
                              "timeout_ms": settings.rerank_timeout_ms,
                              "device": str(getattr(reranker, "device", "cpu")),
                              "cpus": os.cpu_count(),
                              "torch_threads": torch_threads(),
                              "worker_processes": worker_processes}
    with tempfile.TemporaryDirectory(prefix="lexrerank-bench-") as tmp:
        services = Services(model, index, Path(tmp), worker_processes=worker_processes)
        services.start()
        pipeline: str | None = None
        try:
            direct = _search(settings.opensearch_url, index, {})
            gateway = _search(services.url, index, {})
            def ext(text: str) -> dict[str, Any]:
                return {"rerank": {"query_context": {"query_text": text}, "window_size": window,
                                   "timeout_ms": settings.rerank_timeout_ms}}

            reranked = _search(services.url, index, {"search_pipeline": "lexrerank"}, ext)
            pipeline, result["native"] = _define_native_pipeline(settings.opensearch_url,
                                                                 services.url, model, window)
            native = (None if pipeline is None else
                      _search(settings.opensearch_url, index, {"search_pipeline": pipeline}, ext))
            for call in (direct, gateway, reranked, native):  # warm-up: connections, lazy init
                if call is not None:
                    run_clients(1, texts[:5], call)
            for c in CONCURRENCY:
                result[f"c{c}"] = _phase(c, texts, direct, gateway, reranked, encoders,
                                         services.gateway.pid, native)
        finally:
            if pipeline is not None:
                _delete_native_pipeline(settings.opensearch_url, pipeline)
            services.stop()
    return result


def _define_native_pipeline(opensearch_url: str, service_url: str, model: str, window: int
                            ) -> tuple[str | None, str]:
    """A private search pipeline of the plugin calling ``service_url``: (its name, what was
    done), or (None, why not)."""
    base = opensearch_url.rstrip("/")
    plugins = httpx.get(f"{base}/_cat/plugins", params={"h": "component"}, timeout=10)
    if PIPELINE_PLUGIN not in plugins.text.split():
        return None, f"skipped: OpenSearch has not loaded {PIPELINE_PLUGIN} (lexrerank up)"
    name = f"lexrerank-bench-{os.getpid()}"
    definition = search_pipeline_definition(service_url)
    definition["response_processors"] = [{"lexrerank": {
        "service_url": service_url, "model": model, "window_size": window}}]
    resp = httpx.put(f"{base}/_search/pipeline/{name}", json=definition, timeout=10)
    if resp.status_code != 200:
        return None, f"skipped: defining the pipeline failed: {resp.status_code} {resp.text[:200]}"
    return name, f"pipeline {name} of {PIPELINE_PLUGIN}"


def _delete_native_pipeline(opensearch_url: str, name: str) -> None:
    httpx.delete(f"{opensearch_url.rstrip('/')}/_search/pipeline/{name}", timeout=10)


def _phase(c: int, texts: list[str], direct: Callable, gateway: Callable, reranked: Callable,
           encoders: list[Any], gateway_pid: int, native: Callable | None = None
           ) -> dict[str, Any]:
    cpu = [process_cpu_seconds(gateway_pid)]
    # Paired: each query goes straight to OpenSearch and through the gateway back to back.
    direct_ms, gateway_ms, bm25_err = run_paired_clients(c, texts, direct, gateway)
    cpu.append(process_cpu_seconds(gateway_pid))
    reranked_ms, infos, reranked_err = run_clients(c, texts, reranked)
    cpu.append(process_cpu_seconds(gateway_pid))
    # Right after the gateway path, in the same run: the two rows are side by side.
    native_ms, native_infos, native_err = (run_clients(c, texts, native) if native is not None
                                           else ([], [], 0))
    fallbacks = sum(1 for info in infos if info.get("status") != "ok")
    # Reasons grouped by kind (the milliseconds in them made every one unique).
    reasons = Counter(re.sub(r"\d+", "N", info.get("reason") or "") for info in infos
                      if info.get("status") != "ok")
    codes = Counter(info.get("reason_code") or "none" for info in infos
                    if info.get("status") != "ok")
    with ThreadPoolExecutor(c) as pool:
        encode_ms = list(pool.map(lambda t: _timed_encode(encoders, t), texts))
    stats = {}
    for name, values in (("bm25_direct", direct_ms), ("bm25_gateway", gateway_ms),
                         ("reranked", reranked_ms), ("encode", encode_ms)):
        stats[f"{name}_ms_p50"], stats[f"{name}_ms_p95"] = _stats(values)
    if native is not None:
        stats["reranked_native_ms_p50"], stats["reranked_native_ms_p95"] = _stats(native_ms)
        stats["native_errors"] = native_err
        stats["native_fallbacks"] = sum(1 for i in native_infos if i.get("status") != "ok")
        stats["native_fallback_reason_codes"] = dict(Counter(
            i.get("reason_code") or "none" for i in native_infos if i.get("status") != "ok"))
    worker = [info["worker_ms"] for info in infos if info.get("worker_ms") is not None]
    stats["worker_ms_p50"], stats["worker_ms_p95"] = _stats(worker)
    stats["gateway_overhead_ratio"] = round(percentile(gateway_ms, 50)
                                            / percentile(direct_ms, 50), 3)
    if None not in cpu:
        stats["gateway_cpu_ms"] = {"bm25": round((cpu[1] - cpu[0]) * 1000 / len(texts), 3),
                                   "reranked": round((cpu[2] - cpu[1]) * 1000 / len(texts), 3)}
    stats.update(errors=bm25_err + reranked_err, fallbacks=fallbacks,
                 fallback_reasons=dict(reasons), fallback_reason_codes=dict(codes))
    return stats


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _timed_encode(encoders: list[Any], text: str) -> float:
    start = time.perf_counter()
    for model in encoders:
        model.encode_query(text)
    return (time.perf_counter() - start) * 1000
