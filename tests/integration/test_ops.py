"""Metrics, health, readiness, the ops snapshot and request ids, against the real services.

A private stack: a prefork worker (1 child, so its metrics cross a fork) serving its own
/metrics port, and a gateway with two uvicorn workers (multi-process metrics), on private
queues and a private index. A second gateway on queues no worker consumes shows "not ready".
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opensearchpy import OpenSearch
from prometheus_client.parser import text_string_to_metric_families

from lexrerank.config import get_settings
from tests.integration.conftest import (
    Stack,
    _gateway_articles,
    _wait_for,
    free_port,
    unique_index,
)

QUERY = "A minor may rescind a juridical act performed without the consent of a representative"
ARTICLES = 40


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of a Prometheus text endpoint."""
    resp = httpx.get(url, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels`` (0 when none)."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def rerank(stack: Stack, index: str, headers: dict[str, str] | None = None,
           **options: Any) -> dict[str, Any]:
    body = {"size": 5, "query": {"match": {"content": QUERY}},
            "ext": {"rerank": {"query_context": {"query_text": QUERY}, "window_size": 20,
                               **options}}}
    resp = httpx.post(f"{stack.url}/{index}/_search", params={"search_pipeline": "lexrerank"},
                      json=body, headers=headers or {}, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.fixture(scope="module")
def ops_index(client: OpenSearch, gateway_model: str) -> Iterator[str]:
    """A private index of ARTICLES articles with the model's vectors."""
    from indexer.article_vectors import embed_index
    from indexer.bulk_load import load_articles
    from reranker.checkpoint import load_reranker
    from reranker.registry import checkpoint_path

    name = unique_index("test-ops")
    articles = _gateway_articles()[:ARTICLES]
    client.indices.delete(index=name, ignore_unavailable=True)
    load_articles(client, name, lambda: iter(articles), "en", show_progress=False)
    client.indices.refresh(index=name)
    from lexrerank.config import get_settings

    model = load_reranker(checkpoint_path(gateway_model), device="cpu",
                          cache_dir=get_settings().cache_dir,
                          backend=get_settings().encoder_backend)
    embed_index(client, name, model, show_progress=False)
    yield name
    client.indices.delete(index=name, ignore_unavailable=True)


@pytest.fixture(scope="module")
def ops_stack(tmp_path_factory: pytest.TempPathFactory, gateway_model: str,
              ops_index: str) -> Iterator[Stack]:
    metrics_port = free_port()
    stack = Stack(tmp_path_factory.mktemp("ops"), gateway_model, ops_index,
                  get_settings().redis_url,
                  {"LEXRERANK_WORKER_METRICS_PORT": str(metrics_port),
                   "LEXRERANK_WORKER_METRICS_HOST": "127.0.0.1"})
    stack.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    # A real prefork child (metrics cross the fork) and two uvicorn processes.
    stack.worker.args[stack.worker.args.index("solo")] = "prefork"
    stack.worker.args += ["--concurrency", "1"]
    stack.gateway.args += ["--workers", "2"]
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def idle_gateway(tmp_path_factory: pytest.TempPathFactory, gateway_model: str,
                 ops_index: str) -> Iterator[Stack]:
    """A gateway whose private queues no worker consumes."""
    stack = Stack(tmp_path_factory.mktemp("idle"), gateway_model, ops_index,
                  get_settings().redis_url, {"LEXRERANK_RERANK_TIMEOUT_MS": "300"})
    try:
        stack.start_gateway()
        yield stack
    finally:
        stack.stop()


def wait_ready(stack: Stack, timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        resp = httpx.get(f"{stack.url}/_lexrerank/readyz", timeout=10)
        if resp.status_code == 200 or time.monotonic() > deadline:
            return resp
        time.sleep(1)


# ------------------------------------------------------------------------------ health, ready

def test_healthz_and_readyz_with_the_real_stack(ops_stack: Stack, ops_index: str) -> None:
    alive = httpx.get(f"{ops_stack.url}/_lexrerank/healthz", timeout=5)
    assert alive.status_code == 200 and alive.json() == {"status": "alive"}
    resp = wait_ready(ops_stack)
    body = resp.json()
    assert resp.status_code == 200, body
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"opensearch", "redis", "workers"}
    assert all(check["ok"] for check in body["checks"].values()), body
    served = body["checks"]["workers"]["workers"][0]
    answer = rerank(ops_stack, ops_index)
    assert served["model_version"] == answer["ext"]["rerank"]["model_version"]
    assert served["index"] == ops_index
    # The old route still answers.
    assert httpx.get(f"{ops_stack.url}/_lexrerank/health", timeout=5).status_code == 200


def test_readyz_names_the_failing_check_without_a_worker(idle_gateway: Stack) -> None:
    resp = httpx.get(f"{idle_gateway.url}/_lexrerank/readyz", timeout=10)
    body = resp.json()
    assert resp.status_code == 503, body
    assert body["status"] == "not_ready"
    assert body["checks"]["opensearch"]["ok"] and body["checks"]["redis"]["ok"]
    workers = body["checks"]["workers"]
    assert workers["ok"] is False
    assert idle_gateway.queue in workers["detail"]


def test_queue_depth_and_no_worker_fallback_on_an_idle_queue(idle_gateway: Stack,
                                                             ops_index: str) -> None:
    httpx.get(f"{idle_gateway.url}/_lexrerank/readyz", timeout=10)  # learns: no worker answers
    before = scrape(f"{idle_gateway.url}/_lexrerank/metrics")
    answer = rerank(idle_gateway, ops_index)
    assert answer["ext"]["rerank"]["status"] == "fallback"
    assert answer["ext"]["rerank"]["reason_code"] == "no_worker"
    after = scrape(f"{idle_gateway.url}/_lexrerank/metrics")
    # Nobody consumes the queue: the published task waits there.
    depth = "lexrerank_queue_depth"
    assert (value(after, depth, queue=idle_gateway.queue)
            >= value(before, depth, queue=idle_gateway.queue) + 1)
    assert value(after, "lexrerank_queue_depth_scrape_ok") == 1
    name = "lexrerank_gateway_rerank_fallbacks_total"
    assert value(after, name, reason="no_worker") == value(before, name, reason="no_worker") + 1
    ready = value(after, "lexrerank_gateway_ready_check", check="workers")
    assert ready == 0


# ------------------------------------------------------------------------------ gateway metrics

def test_reranked_searches_move_the_gateway_metrics(ops_stack: Stack, ops_index: str) -> None:
    url = f"{ops_stack.url}/_lexrerank/metrics"
    before = scrape(url)
    searches = 4  # spread over both uvicorn processes: /_lexrerank/metrics merges them
    answers = [rerank(ops_stack, ops_index) for _ in range(searches)]
    assert all(a["ext"]["rerank"]["status"] == "ok" for a in answers), answers[0]["ext"]
    model = answers[0]["ext"]["rerank"]["model"]
    after = scrape(url)
    ok = "lexrerank_gateway_reranked_requests_total"
    assert value(after, ok, status="ok") - value(before, ok, status="ok") == searches
    for stage in ("first_stage", "rerank", "merge", "total"):
        name = "lexrerank_gateway_rerank_stage_duration_seconds_count"
        grew = value(after, name, stage=stage, status="ok") - value(before, name, stage=stage,
                                                                     status="ok")
        assert grew == searches, stage
    took = sum(a["ext"]["rerank"]["took_ms"]["total"] for a in answers) / 1000
    total_sum = "lexrerank_gateway_rerank_stage_duration_seconds_sum"
    grew_s = (value(after, total_sum, stage="total", status="ok")
              - value(before, total_sum, stage="total", status="ok"))
    assert grew_s == pytest.approx(took, rel=0.01, abs=0.002)
    window = "lexrerank_gateway_rerank_window_size_sum"
    assert value(after, window) - value(before, window) == 20 * searches
    version = answers[0]["ext"]["rerank"]["model_version"]
    assert value(after, "lexrerank_gateway_model_info", model=model,
                 model_version=version) == 1
    search = "lexrerank_gateway_requests_total"
    assert (value(after, search, route="search", code="200")
            - value(before, search, route="search", code="200")) == searches


def test_fallbacks_are_counted_by_reason(ops_stack: Stack, ops_index: str) -> None:
    url = f"{ops_stack.url}/_lexrerank/metrics"
    before = scrape(url)
    # A paused worker answers nothing before the deadline (1 ms no longer leaves the first
    # stage time to answer: that is a 504 now). The task expires, so it never runs later.
    os.kill(ops_stack.worker.proc.pid, signal.SIGSTOP)
    try:
        timed_out = rerank(ops_stack, ops_index, timeout_ms=500)
    finally:
        os.kill(ops_stack.worker.proc.pid, signal.SIGCONT)
    # The index holds no Attentive CNN vectors: the worker refuses, the gateway falls back.
    refused = rerank(ops_stack, ops_index, model="attentive-cnn")
    assert timed_out["ext"]["rerank"]["status"] == "fallback"
    assert refused["ext"]["rerank"]["status"] == "fallback"
    assert "worker error" in refused["ext"]["rerank"]["reason"]
    assert refused["ext"]["rerank"]["reason_code"] == "no_vectors"
    assert timed_out["ext"]["rerank"]["reason_code"] in ("timeout", "no_worker")
    after = scrape(url)
    name = "lexrerank_gateway_rerank_fallbacks_total"
    # "timeout", or "no_worker" in a uvicorn process whose last readiness check ran while the
    # worker's child was still loading its model.
    timeouts = sum(value(after, name, reason=r) - value(before, name, reason=r)
                   for r in ("timeout", "no_worker"))
    assert timeouts == 1
    assert (value(after, name, reason="no_vectors")
            - value(before, name, reason="no_vectors")) == 1
    fallback = "lexrerank_gateway_reranked_requests_total"
    assert (value(after, fallback, status="fallback")
            - value(before, fallback, status="fallback")) == 2


# ------------------------------------------------------------------------------ worker metrics

def test_worker_serves_its_metrics_from_the_prefork_child(ops_stack: Stack,
                                                          ops_index: str) -> None:
    before = scrape(ops_stack.metrics_url)
    answer = rerank(ops_stack, ops_index)
    info = answer["ext"]["rerank"]
    after = scrape(ops_stack.metrics_url)
    tasks = "lexrerank_worker_tasks_total"
    assert (value(after, tasks, task="rerank", outcome="success")
            - value(before, tasks, task="rerank", outcome="success")) == 1
    count = "lexrerank_worker_task_duration_seconds_count"
    assert (value(after, count, task="rerank", model=info["model"])
            - value(before, count, task="rerank", model=info["model"])) == 1
    batch = "lexrerank_worker_batch_size_sum"
    assert value(after, batch, task="rerank") - value(before, batch, task="rerank") == 20
    assert value(after, "lexrerank_worker_model_info", model=info["model"],
                 model_version=info["model_version"]) == 1
    assert value(after, "lexrerank_worker_processes") == 1
    articles = value(after, "lexrerank_worker_vector_cache_articles", index=ops_index,
                     model=info["model"])
    assert articles == ARTICLES
    assert value(after, "lexrerank_worker_vector_cache_bytes", index=ops_index) > 0
    hits = "lexrerank_worker_vector_cache_hits_total"
    assert (value(after, hits, index=ops_index) - value(before, hits, index=ops_index)) == 1


def test_request_id_reaches_the_worker_log(ops_stack: Stack, ops_index: str) -> None:
    rid = f"ops-test-{uuid.uuid4().hex[:12]}"
    answer = rerank(ops_stack, ops_index, headers={"X-Request-Id": rid})
    assert answer["ext"]["rerank"]["status"] == "ok"
    deadline = time.monotonic() + 10
    lines: list[dict[str, Any]] = []
    done: list[dict[str, Any]] = []
    # Until the task's last line: lines logged earlier in the task may be there first.
    while time.monotonic() < deadline and not done:
        text = ops_stack.worker.log.read_text(errors="replace")
        lines = [json.loads(line) for line in text.splitlines() if rid in line]
        done = [entry for entry in lines if entry["msg"] == "task done"]
        time.sleep(0.2)
    assert lines, "no worker log line carries the request id"
    assert done and done[0]["request_id"] == rid
    assert done[0]["task"] == "lexrerank.rerank" and done[0]["outcome"] == "success"


# ------------------------------------------------------------------------------ ops snapshot

def test_ops_snapshot_lists_workers_queues_and_reindex_jobs(ops_stack: Stack,
                                                            ops_index: str) -> None:
    import redis

    from lexrerank.reindex_progress import new_record, progress_key, write_progress

    alias = f"test-ops-alias-{uuid.uuid4().hex[:8]}"
    record = new_record(alias, f"{alias}-v2", ["paraformer"])
    record.update(state="embedding", documents_total=40, documents_loaded=40, chunks_total=8,
                  chunks_done=3)
    r = redis.Redis.from_url(get_settings().redis_url)
    write_progress(r, record)
    try:
        rerank(ops_stack, ops_index)

        def worker_listed() -> bool:
            snap = httpx.get(f"{ops_stack.url}/_lexrerank/ops", timeout=10).json()
            return any(w["ok"] and ops_stack.queue in (w["queues"] or [])
                       for w in snap["workers"])

        _wait_for(worker_listed, "worker presence", ops_stack.worker.proc, ops_stack.worker.log,
                  30)
        snap = httpx.get(f"{ops_stack.url}/_lexrerank/ops", timeout=10).json()
        assert set(snap) >= {"time", "gateway", "queues", "workers", "reindex_jobs"}
        assert abs(snap["time"] - time.time()) < 60
        gateway = snap["gateway"]
        assert gateway["reranked"] >= 1 and gateway["requests"] >= gateway["reranked"]
        assert set(gateway["latency_ms"]) == {"p50", "p95", "p99"}
        assert 0.0 <= gateway["fallback_rate"] <= 1.0
        assert set(snap["queues"]) == {"rerank", "embed"}
        mine = [w for w in snap["workers"] if ops_stack.queue in (w["queues"] or [])]
        assert mine[0]["model_version"] and mine[0]["name"] == ops_stack.node
        jobs = {job["alias"]: job for job in snap["reindex_jobs"]}
        assert jobs[alias]["chunks_done"] == 3
        samples = scrape(f"{ops_stack.url}/_lexrerank/metrics")
        assert value(samples, "lexrerank_reindex_chunks_done", alias=alias) == 3
        assert value(samples, "lexrerank_reindex_info", alias=alias, state="embedding") == 1
        # 40/40 documents (half) + 3/8 chunks (of the other half).
        assert value(samples, "lexrerank_reindex_progress_ratio", alias=alias) == \
            pytest.approx(0.5 + 0.5 * 3 / 8)
    finally:
        r.delete(progress_key(alias))
