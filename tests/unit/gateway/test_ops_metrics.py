"""Gateway and worker metrics, the ops summary and the worker's JSON logs, without services.

The integration counterpart (real gateway, worker, Redis, OpenSearch) is
tests/integration/test_ops.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway import prometheus_metrics, scrape_collectors
from gateway.http_metrics import route_kind
from gateway.recent_requests import RecentRequests
from gateway.rerank_client import RerankClient
from lexrerank.config import get_settings
from lexrerank.prometheus_dir import MULTIPROC_ENV, prepare_multiproc_dir
from worker import json_logs, task_signals
from worker import prometheus_metrics as worker_metrics
from worker.protocol import ReasonCode, RerankFailed, RerankRequest, handoff_key
from worker.vector_cache import vector_bytes

REPO = Path(__file__).resolve().parents[3]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ---------------------------------------------------------------------------- fallback reasons

def test_the_client_s_own_failures_carry_their_codes() -> None:
    asyncio.run(check_client_codes())


async def fallback(client: RerankClient, timeout_s: float) -> RerankFailed:
    """What a rerank through ``client`` falls back with (it must fall back)."""
    pending = client.begin_rerank("q", "paraformer", False, timeout_s)
    try:
        with pytest.raises(RerankFailed) as raised:
            await pending.finish("i", [["a", 1.0]])
    finally:
        await pending.close()
    return raised.value


async def check_client_codes() -> None:
    # A closed port: the client's real "Redis unavailable" failure, in milliseconds.
    settings = get_settings().__class__(**{**get_settings().__dict__,
                                           "redis_url": "redis://127.0.0.1:1/0"})
    client = RerankClient(settings)
    try:
        down = await fallback(client, 2.0)
        late = await fallback(client, 0.0)
        revoked = worker_failure(client, {"status": "REVOKED", "result": {
            "exc_type": "TaskRevokedError"}})
        failed = worker_failure(client, {"status": "FAILURE", "result": {
            "exc_type": "LexrerankError", "exc_message": ["index has no article vectors"]}})
        timeout = client.unavailable(TimeoutError(), 0.5)
    finally:
        await client.aclose()
    assert down.code is ReasonCode.REDIS_UNAVAILABLE and str(down).startswith(
        "Redis unavailable")
    assert late.code is ReasonCode.DEADLINE_PASSED
    assert revoked.code is ReasonCode.TIMEOUT
    assert failed.code is ReasonCode.WORKER_ERROR
    assert timeout.code is ReasonCode.TIMEOUT and "no answer from a rerank worker" in str(
        timeout)


def worker_failure(client: RerankClient, meta: dict) -> RerankFailed:
    with pytest.raises(RerankFailed) as info:
        client.task_result(meta)
    return info.value


def test_timeouts_count_as_no_worker_after_a_failed_readiness_check() -> None:
    client = RerankClient(get_settings())
    expired = {"status": "REVOKED", "result": {"exc_type": "TaskRevokedError"}}
    try:
        assert client.unavailable(TimeoutError(), 0.5).code is ReasonCode.TIMEOUT
        client.saw_workers(False)
        assert client.unavailable(TimeoutError(), 0.5).code is ReasonCode.NO_WORKER
        assert worker_failure(client, expired).code is ReasonCode.NO_WORKER
        # Only timeouts: a worker's own failure keeps its code.
        assert client.unavailable(OSError("down"), 0.5).code is ReasonCode.REDIS_UNAVAILABLE
        client.saw_workers(True)
        assert client.unavailable(TimeoutError(), 0.5).code is ReasonCode.TIMEOUT
    finally:
        asyncio.run(client.aclose())


# ---------------------------------------------------------------------------- recording

def test_record_rerank_moves_the_counters_and_histograms() -> None:
    took = {"first_stage": 3.0, "rerank": 40.0, "merge": 1.0, "total": 45.0}
    before_ok = sample("lexrerank_gateway_reranked_requests_total", status="ok",
                       model="unit-model")
    before_stage = sample("lexrerank_gateway_rerank_stage_duration_seconds_sum",
                          stage="rerank", status="ok")
    before_reason = sample("lexrerank_gateway_rerank_fallbacks_total", reason="no_vectors")
    before_window = sample("lexrerank_gateway_rerank_window_size_count")
    prometheus_metrics.record_rerank("ok", None, took, 50, "unit-model", "v-unit")
    prometheus_metrics.record_rerank("fallback", ReasonCode.NO_VECTORS, took, 50, "unit-model",
                                     None)
    assert sample("lexrerank_gateway_reranked_requests_total", status="ok",
                  model="unit-model") == before_ok + 1
    assert sample("lexrerank_gateway_rerank_stage_duration_seconds_sum", stage="rerank",
                  status="ok") == pytest.approx(before_stage + 0.040)
    assert sample("lexrerank_gateway_rerank_fallbacks_total",
                  reason="no_vectors") == before_reason + 1
    # Every code is exported from the start (a rate of 0, not "no data").
    for code in ReasonCode:
        assert REGISTRY.get_sample_value("lexrerank_gateway_rerank_fallbacks_total",
                                         {"reason": code.value}) is not None, code
    assert sample("lexrerank_gateway_rerank_window_size_count") == before_window + 2
    assert sample("lexrerank_gateway_model_info", model="unit-model", model_version="v-unit") == 1


def test_recent_summary_percentiles_and_window() -> None:
    recent = RecentRequests()
    rng = np.random.default_rng(7)
    latencies = rng.gamma(2.0, 20.0, size=500)
    now = 1_000_000.0
    for i, ms in enumerate(latencies):
        recent.ring.append((now - 30, i % 10 == 0, float(ms)))  # inside the last 60 s
    recent.ring.append((now - 120, True, 99_999.0))  # too old: ignored by rate and latency
    summary = recent.summary(now)
    for name, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        assert summary["latency_ms"][name] == pytest.approx(np.percentile(latencies, q),
                                                            abs=1e-3)
    assert summary["fallback_rate"] == pytest.approx(50 / 500)
    assert summary["recent_reranked"] == 500
    empty = RecentRequests().summary(now)
    assert empty["latency_ms"] == {"p50": None, "p95": None, "p99": None}
    assert empty["fallback_rate"] == 0.0


def test_route_kinds_are_a_small_fixed_set() -> None:
    cases = {"/statutes/_search": "search", "/_search": "search",
             "/_lexrerank/healthz": "health", "/_lexrerank/readyz": "health",
             "/_lexrerank/health": "health", "/_lexrerank/metrics": "metrics",
             "/healthz": "proxy", "/metrics": "proxy",  # OpenSearch's (an index's) paths
             "/_lexrerank/ops": "ops", "/_lexrerank/ui/": "pages", "/statutes/_doc/1": "proxy",
             "/": "proxy"}
    for path, kind in cases.items():
        assert route_kind(path) == kind, path


# ---------------------------------------------------------------------------- scrape collectors

class FakeRedis:
    """Just enough of redis.Redis for the collectors (unit tests may stub services)."""

    def __init__(self, values: dict[str, bytes], lists: dict[str, int], down: bool = False):
        self.values, self.lists, self.down = values, lists, down

    def _check(self) -> None:
        if self.down:
            raise RedisConnectionError("connection refused")

    def scan_iter(self, match: str, count: int = 100):
        self._check()
        prefix = match.rstrip("*")
        return iter([k.encode() for k in self.values if k.startswith(prefix)])

    def mget(self, keys):
        return [self.values.get(k.decode()) for k in keys]

    def pipeline(self, transaction: bool = False):
        outer = self

        class Pipe:
            def __init__(self) -> None:
                self.calls: list[str] = []

            def llen(self, key: str) -> None:
                self.calls.append(key)

            def execute(self) -> list[int]:
                outer._check()
                return [outer.lists.get(k, 0) for k in self.calls]

        return Pipe()


def families(collector) -> dict[str, list]:
    return {f.name: f.samples for f in collector.collect()}


def test_queue_depth_sums_priority_lists_and_reports_redis_down() -> None:
    lists = {"rerank": 3, "rerank\x06\x163": 2, "embed": 7}
    got = families(scrape_collectors.QueueDepthCollector(FakeRedis({}, lists), ["rerank", "embed"]))
    depths = {s.labels["queue"]: s.value for s in got["lexrerank_queue_depth"]}
    assert depths == {"rerank": 5, "embed": 7}
    assert got["lexrerank_queue_depth_scrape_ok"][0].value == 1
    down = families(scrape_collectors.QueueDepthCollector(FakeRedis({}, {}, down=True), ["rerank"]))
    assert down["lexrerank_queue_depth"] == []
    assert down["lexrerank_queue_depth_scrape_ok"][0].value == 0


def test_reindex_collector_reads_the_job_records() -> None:
    from lexrerank.reindex_progress import new_record, progress_key

    record = new_record("statutes", "statutes-v3", ["paraformer"])
    record.update(state="embedding", documents_total=768, documents_loaded=768,
                  chunks_total=4, chunks_done=1, eta_s=12.5)
    values = {progress_key("statutes"): json.dumps(record).encode(),
              progress_key("junk"): b"not json"}
    got = families(scrape_collectors.ReindexCollector(FakeRedis(values, {})))
    assert got["lexrerank_reindex_chunks_done"][0].value == 1
    assert got["lexrerank_reindex_eta_seconds"][0].value == 12.5
    info = got["lexrerank_reindex_info"][0]
    assert info.labels == {"alias": "statutes", "index": "statutes-v3", "state": "embedding"}
    assert got["lexrerank_reindex_progress_ratio"][0].value == pytest.approx(0.5 + 0.5 / 4)
    assert scrape_collectors.reindex_ratio({**record, "state": "swapped"}) == 1.0
    assert scrape_collectors.reindex_ratio({"documents_total": 0}) == 0.0


# ---------------------------------------------------------------------------- multi-process

def test_metrics_of_forked_processes_are_merged(tmp_path: Path) -> None:
    """Three forked 'uvicorn workers' record a rerank each; one scrape sees all three."""
    script = textwrap.dedent("""
        import os, sys
        from gateway import metrics_exposition, prometheus_metrics
        took = {"first_stage": 1.0, "rerank": 2.0, "merge": 0.5, "total": 4.0}
        children = []
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                prometheus_metrics.record_rerank("ok", None, took, 10, "m", "v1")
                os._exit(0)
            children.append(pid)
        for pid in children:
            os.waitpid(pid, 0)
        from prometheus_client import CollectorRegistry
        sys.stdout.write(metrics_exposition.render_metrics(CollectorRegistry()).decode())
    """)
    env = {**os.environ, MULTIPROC_ENV: str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    from prometheus_client.parser import text_string_to_metric_families

    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in text_string_to_metric_families(proc.stdout) for s in f.samples}
    assert values[("lexrerank_gateway_reranked_requests_total",
                   (("model", "m"), ("status", "ok")))] == 3
    assert values[("lexrerank_gateway_rerank_stage_duration_seconds_count",
                   (("stage", "total"), ("status", "ok")))] == 3


def test_prepare_multiproc_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    given = tmp_path / "metrics"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"stale")
    (given / "keep.txt").write_text("not ours")
    monkeypatch.setenv(MULTIPROC_ENV, str(given))
    assert prepare_multiproc_dir("gateway") == given
    assert sorted(p.name for p in given.iterdir()) == ["keep.txt"]
    monkeypatch.delenv(MULTIPROC_ENV)
    fresh = prepare_multiproc_dir("worker")
    try:
        assert fresh.is_dir() and os.environ[MULTIPROC_ENV] == str(fresh)
        assert "lexrerank-worker-metrics-" in fresh.name
    finally:
        fresh.rmdir()
        monkeypatch.delenv(MULTIPROC_ENV)


# ---------------------------------------------------------------------------- worker side

def test_task_arguments_give_model_and_batch_size() -> None:
    request = RerankRequest("q", "paraformer", True, handoff_key("t"), 100.0).to_json()
    # A rerank's batch comes by handoff: the task counts it itself (BATCH_SIZE_ATTR).
    assert task_signals.task_model_and_batch("rerank", [request], {}) == ("paraformer", None)
    assert task_signals.task_model_and_batch("rerank", ["not a request"], {}) == ("", None)
    assert task_signals.task_model_and_batch(
        "embed", ["idx"], {"ids": ["1", "2"], "model": "attentive-cnn"}) == ("attentive-cnn", 2)
    assert task_signals.task_model_and_batch(
        "embed", ["idx", ["1", "2", "3"], "paraformer"], {}) == ("paraformer", 3)
    assert task_signals.task_model_and_batch("ping", [], {}) == ("", None)
    assert task_signals.short_task_name("lexrerank.rerank") == "rerank"


def test_vector_bytes_counts_array_data() -> None:
    from reranker.attentive_cnn import ArticleVectors

    paraformer_side = np.zeros((7, 384), dtype=np.float16)
    cnn_side = ArticleVectors(vector=np.zeros(128, dtype=np.float16),
                              sentence_weights=np.zeros(5, dtype=np.float32))
    total = vector_bytes([(paraformer_side, ["s"] * 7), (cnn_side, ["s"] * 5)])
    assert total == 7 * 384 * 2 + 128 * 2 + 5 * 4


def test_vector_cache_hooks_move_the_worker_metrics() -> None:
    def delta(name: str, before: float) -> float:
        return sample(name, index="i", model="m") - before

    names = [f"lexrerank_worker_vector_cache_{n}_total"
             for n in ("hits", "misses", "reads", "stale", "computed", "evictions")]
    before = {n: sample(n, index="i", model="m") for n in names}
    worker_metrics.vector_cache_gathered("i", "m", True, read=0, stale=0, computed=0)
    worker_metrics.vector_cache_gathered("i", "m", False, read=3, stale=1, computed=2)
    worker_metrics.vector_cache_size("i", "m", 7, 4096, 5)
    hits, misses, reads, stale, computed, evictions = (delta(n, before[n]) for n in names)
    assert (hits, misses, reads, stale, computed, evictions) == (1, 1, 3, 1, 2, 5)
    assert sample("lexrerank_worker_vector_cache_articles", index="i", model="m") == 7
    assert sample("lexrerank_worker_vector_cache_bytes", index="i", model="m") == 4096
    worker_metrics.vector_cache_dropped("i", "m")
    assert sample("lexrerank_worker_vector_cache_bytes", index="i", model="m") == 0


def test_worker_json_lines_carry_the_task_and_request_id() -> None:
    class Request:
        lexrerank_request_id = "rid-123"

    assert json_logs.request_id_of(Request()) == "rid-123"
    assert json_logs.request_id_of(None) is None
    formatter = json_logs.WorkerJsonFormatter()
    record = logging.LogRecord("worker.x", logging.INFO, __file__, 1, "hello %s", ("you",),
                               None)
    record.fields = {"ms": 1.5}
    json_logs.set_task_context("task-1", "lexrerank.rerank", "rid-123")
    try:
        line = json.loads(formatter.format(record))
    finally:
        json_logs.clear_task_context()
    assert line["msg"] == "hello you" and line["ms"] == 1.5
    assert (line["task_id"], line["task"], line["request_id"]) == (
        "task-1", "lexrerank.rerank", "rid-123")
    assert "request_id" not in json.loads(formatter.format(record))
