"""`lexrerank bench scale`: worker memory, warm-up and incremental updates as an index grows.

For each size N (``--articles``, a comma list; 768 first, the civil code's size, is the
baseline the others are compared with):

1. Generates N articles as `bench reindex` does (:func:`bench.reindex.generate_corpus`:
   civil-code sentences recombined, seeded) and bulk-loads them into a private index
   together with **synthetic article vectors**: seeded random fp16 arrays of the shapes the
   model's members store (one real record per member gives the dimensions; Paraformer
   ``[L, d]``, dense ``[d]``, Attentive CNN ``[H]`` + ``[L]``), written straight through
   opensearch-py's ``streaming_bulk``, with the index metadata (``model_versions``) that
   :func:`indexer.article_vectors.index_meta` readers expect. The real encoder over 200k
   articles would take hours on 2 CPU cores; rerank costs do not depend on the values.
2. Starts a private gateway + worker (prefork, one process, private queues) with
   ``LEXRERANK_VECTOR_CACHE_MB=--cache-mb`` and no pre-warm; measures the child's RSS when
   it is ready, the time to its first reranked answer, then ``--queries`` COLIEE queries
   twice (window ``--window``): ``rerank_ms_p50_cold`` is the first pass (its windows read
   from OpenSearch), ``rerank_ms_p50_warm`` the second (from memory, budget permitting).
   Both are ``ext.rerank.took_ms.rerank``: the gateway's wait for the worker after the first
   stage (gather + score + the round trip). From the second size on, the warm pass
   alternates each query between this index and the first size's (kept for the whole run)
   on the same worker: ``warm_p50_vs_baseline`` is their ratio, side by side, so the shared
   machine's noise lands on both.
3. Adds one article (a query's text, so that query's window holds it) with
   ``lexrerank index --format jsonl --no-vectors`` and sends that query three times:
   ``add_one_article`` counts the fallbacks, whether anything re-read the index
   (``full_reload``: documents cached by a warm meanwhile), the documents the worker read
   (``docs_read``) and the vectors it computed, from the worker's own metrics.
4. Sends ``lexrerank.warm`` (the reindex job's pre-warm): fills the cache up to the budget;
   then ``worker_rss_mb`` is the child's peak RSS (``VmHWM``) over the whole run.
5. Restarts the worker with the default pre-warm on: ``first_answer_s_prewarmed`` (warm up
   to the budget before the first task).

Each index is deleted after its run (the baseline at the end). Prints one JSON object
``{"runs": [...], ...}``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.reindex import _children, generate_corpus
from bench.services import REPO, Services, free_port, query_texts, wait_until
from lexrerank.bm25 import bm25_body
from lexrerank.config import get_settings
from lexrerank.errors import LexrerankError
from lexrerank.evaluation import percentile

DEFAULT_SIZES = (768, 10_000, 100_000, 200_000)
SEARCHES_AFTER_ADD = 3
CACHE_COUNTERS = ("hits", "misses", "reads", "stale", "computed", "warmed", "evictions")


# ---------------------------------------------------------------------------- the index

def _templates(members: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One real record per member (version -> record): the array names, dtypes and widths."""
    from reranker.article_side import precompute_articles

    sentences = ["A minor must obtain the consent of a legal representative.",
                 "An act performed without that consent may be rescinded."]
    return {m.model_version: precompute_articles(m, [sentences], captions=["(Minors)"])[0]
            for m in members.values()}


def _synthetic_array(rng: np.random.Generator, field_name: str, like: dict[str, Any],
                     sentences: int) -> dict[str, Any]:
    """A random array record shaped as the real ``like``, for an article of ``sentences``:
    ``sentences`` (Paraformer) is [L, d], ``sentence_weights`` (Attentive CNN) [L], a
    ``vector`` keeps its width."""
    shape = list(like["shape"])
    if field_name in ("sentences", "sentence_weights"):
        shape[0] = sentences
    if field_name == "sentence_weights":  # attention weights: non-negative, summing to 1
        values = rng.random(shape).astype(np.float32)
        values /= values.sum()
    else:  # embeddings: unit length, as the encoders give them
        values = rng.standard_normal(shape).astype(np.float32)
        values /= np.linalg.norm(values, axis=-1, keepdims=True)
    data = values.astype(np.dtype(like["dtype"]).newbyteorder("<"))
    return {"dtype": like["dtype"], "shape": shape,
            "b64": base64.b64encode(data.tobytes()).decode("ascii")}


def _synthetic_records(rng: np.random.Generator, templates: dict[str, dict[str, Any]],
                       sentences: int) -> dict[str, Any]:
    """``vectors`` of one article: per model version, the template with random arrays."""
    return {version: {key: (_synthetic_array(rng, key, like, sentences)
                            if isinstance(like, dict) else like)
                      for key, like in template.items()}
            for version, template in templates.items()}


def build_index(client: Any, name: str, articles: int, members: dict[str, Any],
                corpus: Path) -> dict[str, Any]:
    """Create ``name`` with ``articles`` generated articles and synthetic vectors."""
    from opensearchpy.helpers import streaming_bulk

    from indexer.article_vectors import record_model_version
    from indexer.bulk_load import ensure_index
    from indexer.parsers import parse_corpus

    start = time.monotonic()
    generate_corpus(corpus, articles)
    templates = _templates(members)
    rng = np.random.default_rng(17)
    ensure_index(client, name, "en")
    client.indices.put_settings(index=name, body={"index": {"refresh_interval": "-1"}})

    def actions() -> Iterator[dict[str, Any]]:
        for article in parse_corpus(corpus, "jsonl", "en"):
            source = article.to_source()
            source["vectors"] = _synthetic_records(rng, templates, len(article.sentences))
            yield {"_op_type": "index", "_index": name, "_id": article.doc_id,
                   "_source": source}

    failed = 0
    for ok, _item in streaming_bulk(client, actions(), chunk_size=500, max_retries=5,
                                    initial_backoff=1, raise_on_error=False):
        failed += not ok
    if failed:
        raise LexrerankError(f"{failed} synthetic documents failed to index into {name}")
    client.indices.put_settings(index=name, body={"index": {"refresh_interval": "1s"}})
    client.indices.refresh(index=name)
    count = client.count(index=name)["count"]
    for member in members.values():
        record_model_version(client, name, member, count)
    stats = client.indices.stats(index=name, metric="store")
    return {"documents": count, "build_s": round(time.monotonic() - start, 1),
            "store_mb": round(stats["_all"]["primaries"]["store"]["size_in_bytes"] / 2**20, 1)}


# ---------------------------------------------------------------------------- measuring

def _scrape(url: str) -> dict[str, float]:
    """The worker's vector cache counters (summed over labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url, timeout=10).text
    out = dict.fromkeys(CACHE_COUNTERS, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for name in CACHE_COUNTERS:
                if sample.name == f"lexrerank_worker_vector_cache_{name}_total":
                    out[name] += sample.value
    return out


def _search(http: httpx.Client, url: str, index: str, text: str, window: int
            ) -> dict[str, Any]:
    body = bm25_body(text, 10)
    body["ext"] = {"rerank": {"query_context": {"query_text": text}, "window_size": window,
                              "explain": False}}
    resp = http.post(f"{url}/{index}/_search", params={"search_pipeline": "lexrerank"},
                     json=body)
    resp.raise_for_status()
    return resp.json()


def _ok(answer: dict[str, Any]) -> bool:
    return answer.get("ext", {}).get("rerank", {}).get("status") == "ok"


def _rerank_ms(answers: list[dict[str, Any]]) -> float | None:
    values = [a["ext"]["rerank"]["took_ms"]["rerank"] for a in answers if _ok(a)]
    return round(percentile(values, 50), 2) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _worker_ms(answers: list[dict[str, Any]]) -> float | None:
    """p50 of the worker's own compute (``ext.rerank.worker_ms``: encode + score + fuse)."""
    values = [a["ext"]["rerank"]["worker_ms"] for a in answers
              if _ok(a) and a["ext"]["rerank"].get("worker_ms") is not None]
    return round(percentile(values, 50), 2) if values else None


def _child_memory(services: Services) -> tuple[float | None, float | None]:
    """(RSS, peak RSS) in MiB of the worker's pool process."""
    from worker.process_memory import peak_rss_mb, rss_mb

    if services.worker is None:
        return None, None
    kids = _children(services.worker.pid)
    if not kids:
        return None, None
    rss, peak = rss_mb(kids[0]), peak_rss_mb(kids[0])
    return (round(rss, 1) if rss else None), (round(peak, 1) if peak else None)


def _first_answer(services: Services, index: str, text: str, window: int,
                  started: float) -> float:
    """Seconds from ``started`` to the first ``ok`` reranked answer."""
    with httpx.Client(timeout=60) as http:
        while time.monotonic() - started < 900:
            with contextlib.suppress(httpx.HTTPError):
                if _ok(_search(http, services.url, index, text, window)):
                    return round(time.monotonic() - started, 2)
            time.sleep(0.2)
    raise LexrerankError("no reranked answer within 900 s")


def _add_article(index: str, text: str, logs: Path) -> str:
    """Index one new article (``text``) with the CLI, without vectors; its id."""
    doc_id = f"added-{uuid.uuid4().hex[:8]}"
    corpus = logs / f"{doc_id}.jsonl"
    corpus.write_text(json.dumps({"id": doc_id, "caption": "(Added)", "text": text}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "lexrerank", "index", "--corpus", str(corpus),
                           "--format", "jsonl", "--index", index, "--no-vectors"],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise LexrerankError(f"lexrerank index failed: {proc.stderr[-1000:]}")
    return doc_id


def _warm(services: Services, index: str, model: str) -> dict[str, Any]:
    from worker.celery_app import make_app
    from worker.protocol import WARM_TASK

    app = make_app(services.settings())
    result = app.send_task(WARM_TASK, args=[index, [model], None, None], queue=services.queue)
    try:
        return result.get(timeout=900)
    finally:
        result.forget()


def measure(index: str, articles: int, model: str, cache_mb: int, texts: list[str],
            window: int, logs: Path, baseline: str | None = None) -> dict[str, Any]:
    """Steps 2-5 of the module docstring for one built index.

    With ``baseline`` (the first size's index, kept), the warm pass alternates each query
    between ``baseline`` and ``index`` on the same worker, so both see the same machine.
    """
    metrics_port = free_port()
    env = {"LEXRERANK_VECTOR_CACHE_MB": str(cache_mb), "LEXRERANK_VECTOR_CACHE_PREWARM": "0",
           "LEXRERANK_WORKER_METRICS_PORT": str(metrics_port),
           "LEXRERANK_WORKER_METRICS_HOST": "127.0.0.1"}
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    run: dict[str, Any] = {"articles": articles, "cache_budget_mb": cache_mb}
    services = Services(model, index, logs, env=env, prefix="bench-scale")
    services.start_gateway()
    started = time.monotonic()
    services.start_worker(wait=False)
    try:
        wait_until(services.worker_ready, services.worker, "worker", logs / "worker.log")
        run["worker_ready_rss_mb"] = _child_memory(services)[0]
        run["first_answer_s"] = _first_answer(services, index, texts[0], window, started)
        with httpx.Client(timeout=60) as http:
            cold = [_search(http, services.url, index, t, window) for t in texts]
            if baseline is not None:  # its windows in memory too, before the timed pass
                [_search(http, services.url, baseline, t, window) for t in texts]
            warm, base_warm = [], []
            for i, text in enumerate(texts):
                pair = [index, baseline] if i % 2 or baseline is None else [baseline, index]
                for name in pair:
                    if name is not None:
                        answer = _search(http, services.url, name, text, window)
                        (warm if name == index else base_warm).append(answer)
            run["rerank_ms_p50_cold"] = _rerank_ms(cold)
            run["rerank_ms_p50_warm"] = _rerank_ms(warm)
            if baseline is not None:
                run["baseline_rerank_ms_p50_warm"] = _rerank_ms(base_warm)
                run["warm_p50_vs_baseline"] = _ratio(run["rerank_ms_p50_warm"],
                                                     run["baseline_rerank_ms_p50_warm"])
            run["worker_ms_p50_warm"] = _worker_ms(warm)
            run["fallbacks_cold_warm"] = sum(not _ok(a) for a in cold + warm)
            run["e2e_ms_p50_warm"] = _e2e_ms(http, services.url, index, texts, window)
            added_text = texts[1]
            before = _scrape(metrics_url)
            doc_id = _add_article(index, added_text, logs)
            after_add = [_search(http, services.url, index, added_text, window)
                         for _ in range(SEARCHES_AFTER_ADD)]
            counts = {k: v - before[k] for k, v in _scrape(metrics_url).items()}
        in_window = all(doc_id in [h["_id"] for h in a["hits"]["hits"]] for a in after_add)
        run["add_one_article"] = {
            "fallbacks": sum(not _ok(a) for a in after_add),
            "full_reload": counts["warmed"] > 0,
            "docs_read": int(counts["reads"]), "computed": int(counts["computed"]),
            "searches": SEARCHES_AFTER_ADD, "in_top_10": in_window,
            "first_rerank_ms": after_add[0]["ext"]["rerank"]["took_ms"]["rerank"]
            if _ok(after_add[0]) else None}
        warmed = _warm(services, index, model)
        run["prewarm_s"] = round(warmed["load_ms"] / 1000, 2)
        run["prewarm_documents"] = sum(warmed["documents"].values())
        run["cache_used_mb"] = warmed["cache_used_mb"]
        rss, peak = _child_memory(services)
        run["worker_rss_after_prewarm_mb"] = rss
        run["worker_rss_mb"] = peak
        run["evictions"] = int(_scrape(metrics_url)["evictions"])
    finally:
        services.stop()
    run["first_answer_s_prewarmed"] = _prewarmed_first_answer(index, model, cache_mb, texts,
                                                              window, logs)
    return run


def _e2e_ms(http: httpx.Client, url: str, index: str, texts: list[str], window: int
            ) -> float:
    """Client-side p50 of the reranked search, warm (context: the first stage grows with N)."""
    times = []
    for text in texts:
        start = time.perf_counter()
        _search(http, url, index, text, window)
        times.append((time.perf_counter() - start) * 1000)
    return round(percentile(times, 50), 2)


def _prewarmed_first_answer(index: str, model: str, cache_mb: int, texts: list[str],
                            window: int, logs: Path) -> float:
    services = Services(model, index, logs, env={"LEXRERANK_VECTOR_CACHE_MB": str(cache_mb),
                                                 "LEXRERANK_WORKER_METRICS_PORT": "0"},
                        prefix="bench-scale")
    services.start_gateway()
    started = time.monotonic()
    services.start_worker(wait=False)
    try:
        return _first_answer(services, index, texts[0], window, started)
    finally:
        services.stop()


def run(articles: tuple[int, ...] = DEFAULT_SIZES, model: str = "default",
        cache_mb: int = 256, queries: int = 50, window: int = 100,
        keep_index: bool = False) -> dict[str, Any]:
    """Run the benchmark for each size; see the module docstring."""
    from lexrerank.opensearch_client import opensearch_client
    from reranker.checkpoint import load_reranker
    from reranker.registry import checkpoint_path, resolve_name
    from worker.rerank_service import model_members

    settings = get_settings()
    client = opensearch_client(settings)
    loaded = load_reranker(checkpoint_path(model, "en", settings.model_dir),
                           cache_dir=settings.cache_dir)
    members = model_members(loaded, resolve_name(model, "en", settings.model_dir))
    texts = query_texts(queries)
    random.Random(3).shuffle(texts)
    runs: list[dict[str, Any]] = []
    names = [f"bench-scale-{uuid.uuid4().hex[:8]}-{n}" for n in articles]
    try:
        with tempfile.TemporaryDirectory(prefix="lexrerank-bench-scale-") as tmp:
            for i, (n, name) in enumerate(zip(articles, names, strict=True)):
                built = build_index(client, name, n, members, Path(tmp) / "corpus.jsonl")
                # The first (smallest) index is kept as every later run's side-by-side baseline.
                result = measure(name, n, model, cache_mb, texts, window, Path(tmp),
                                 baseline=names[0] if i else None)
                runs.append({**result, "index_store_mb": built["store_mb"],
                             "index_build_s": built["build_s"]})
                if i and not keep_index:
                    client.indices.delete(index=name, ignore_unavailable=True)
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    finally:
        if not keep_index:
            for name in names:
                client.indices.delete(index=name, ignore_unavailable=True)
    base = runs[0]
    for r in runs:
        r["rss_vs_first_run"] = _ratio(r["worker_rss_mb"], base["worker_rss_mb"])
    return {"suite": "scale", "model": model, "window": window, "queries": len(texts),
            "cpus": os.cpu_count(), "load_average_1m_after": round(os.getloadavg()[0], 2),
            "synthetic_vectors": True, "baseline_articles": articles[0], "runs": runs}
