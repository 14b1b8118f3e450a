"""Prometheus metrics of the gateway (prefix ``lexrerank_``, base units, low-cardinality labels).

What is recorded, and where:

- every HTTP request (:class:`MetricsMiddleware`): ``lexrerank_gateway_requests_total{route,
  code}`` and ``lexrerank_gateway_request_duration_seconds{route}``, ``route`` being a small
  fixed set of kinds (search, proxy, health, metrics, ops, pages), never the path itself;
- every reranked search (:func:`record_rerank`, called once by the pipeline): the per-stage
  latency histogram ``lexrerank_gateway_rerank_stage_duration_seconds{stage,status}``,
  ``lexrerank_gateway_reranked_requests_total{status,model}``, the fallback counter by reason
  CATEGORY (:data:`FALLBACK_CATEGORIES`; the free-text reason stays in the response and the
  log), the window size histogram and the model version seen (an ``_info`` style gauge);
- at scrape time (:class:`QueueDepthCollector`, :class:`ReindexCollector`): queue depths
  (Redis ``LLEN``) and reindex job progress (the ``lexrerank:reindex:<alias>`` records).

Multi-process: ``uvicorn --workers N`` runs N processes. When ``PROMETHEUS_MULTIPROC_DIR`` is
set (``lexrerank serve --workers N`` sets a fresh one), prometheus-client keeps the values in
per-process files there and :func:`render_metrics` merges them with ``MultiProcessCollector``,
as prometheus-client documents. The directory must be set before this module is imported.

Recording costs microseconds: a few counter/histogram updates and one deque append.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lexrerank.config import Settings
from lexrerank.redis_tls import redis_client

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STAGES = ("first_stage", "rerank", "merge", "total")
FALLBACK_CATEGORIES = ("timeout", "no_worker", "worker_error", "language_mismatch",
                       "redis_unavailable", "bad_answer", "gateway_error", "other")
# Seconds: a 2 ms BM25 search up to a 10 s deadline.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
                   0.75, 1.0, 2.5, 5.0, 10.0)
WINDOW_BUCKETS = (1, 5, 10, 20, 50, 100, 200, 500, 1000)
# Redis calls made at scrape time: a dead Redis must not stall a scrape.
SCRAPE_REDIS_TIMEOUT_S = 0.25
# kombu's Redis transport keeps priority messages in extra lists "<queue>\x06\x16<pri>".
KOMBU_PRIORITY_SEP, KOMBU_PRIORITY_STEPS = "\x06\x16", (3, 6, 9)

REQUESTS = Counter("lexrerank_gateway_requests", "HTTP requests by route kind and status code.",
                   ["route", "code"])
REQUEST_SECONDS = Histogram("lexrerank_gateway_request_duration_seconds",
                            "HTTP request latency by route kind.", ["route"],
                            buckets=LATENCY_BUCKETS)
STAGE_SECONDS = Histogram("lexrerank_gateway_rerank_stage_duration_seconds",
                          "Reranked search latency by stage (first_stage, rerank, merge, total) "
                          "and outcome (ok, fallback).", ["stage", "status"],
                          buckets=LATENCY_BUCKETS)
RERANKED = Counter("lexrerank_gateway_reranked_requests",
                   "Searches through the lexrerank pipeline by outcome (ok, fallback).",
                   ["status", "model"])
FALLBACKS = Counter("lexrerank_gateway_rerank_fallbacks",
                    "Reranked searches answered in first-stage order, by reason category.",
                    ["reason"])
WINDOW = Histogram("lexrerank_gateway_rerank_window_size",
                   "Rerank window size (first-stage candidates sent to a worker).",
                   buckets=WINDOW_BUCKETS)
MODEL_INFO = Gauge("lexrerank_gateway_model_info",
                   "1 for each (model, model_version) a worker answered with.",
                   ["model", "model_version"], multiprocess_mode="max")

# Labelled children bound once: ``.labels()`` costs more than the update itself. Every
# fallback category and stage is exported from the start (a rate of 0, not "no data").
_children: dict[tuple, Any] = {}
_models_seen: set[tuple[str, str]] = set()


def _child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, cached (label sets are few: routes, codes, models)."""
    key = (metric, labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


for _category in FALLBACK_CATEGORIES:
    _child(FALLBACKS, _category)
for _status in ("ok", "fallback"):
    for _stage in STAGES:
        _child(STAGE_SECONDS, _stage, _status)


# ------------------------------------------------------------------------- request recording

def route_kind(path: str) -> str:
    """The route kind of a request path (a label value from a small fixed set)."""
    if path.endswith("/_search"):
        return "search"
    if path in ("/_lexrerank/healthz", "/_lexrerank/readyz", "/_lexrerank/health"):
        return "health"
    if path == "/_lexrerank/metrics":
        return "metrics"
    if path == "/_lexrerank/ops":
        return "ops"
    if path.startswith("/_lexrerank/"):
        return "pages"
    return "proxy"


class MetricsMiddleware:
    """ASGI middleware: counts each HTTP request by route kind and status, times it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_capturing_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_capturing_status)
        finally:
            route = route_kind(scope["path"])
            _child(REQUESTS, route, str(status)).inc()
            _child(REQUEST_SECONDS, route).observe(time.perf_counter() - start)
            RECENT.requests += 1


def fallback_category(reason: str | None) -> str:
    """Map a free-text fallback reason (see gateway.rerank_client) to a fixed category."""
    text = (reason or "").lower()
    if text.startswith(("no answer from a rerank worker", "the request expired",
                        "the deadline passed")):
        # No answer in time: say "no_worker" when the last readiness check found none.
        return "no_worker" if RECENT.workers_absent() else "timeout"
    if text.startswith("redis unavailable"):
        return "redis_unavailable"
    if text.startswith("worker error: languagemismatch"):
        return "language_mismatch"  # lexrerank.errors.LanguageMismatch
    if text.startswith("worker error"):
        return "worker_error"
    if text.startswith("bad worker answer"):
        return "bad_answer"
    if text.startswith("gateway error"):
        return "gateway_error"
    return "other"


class RecentRequests:
    """Per-process counts and a ring buffer of the last reranked searches (for the ops page).

    Counts run since this process started; rates and percentiles cover the last
    :attr:`window_s` seconds. With several uvicorn workers each process has its own.
    """

    window_s = 60.0

    def __init__(self, capacity: int = 50_000) -> None:
        self.requests = 0
        self.reranked = 0
        self.fallbacks = 0
        self.fallbacks_by_reason: dict[str, int] = {}
        # (unix time, fell back?, total ms)
        self.ring: deque[tuple[float, bool, float]] = deque(maxlen=capacity)
        # Unix time until which "no worker" holds (set by the readiness check).
        self.no_worker_until = 0.0

    def workers_absent(self) -> bool:
        return time.time() < self.no_worker_until

    def add(self, fell_back: bool, category: str | None, total_ms: float) -> None:
        self.reranked += 1
        if fell_back:
            self.fallbacks += 1
            self.fallbacks_by_reason[category or "other"] = (
                self.fallbacks_by_reason.get(category or "other", 0) + 1)
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


def record_rerank(status: str, reason: str | None, took_ms: dict[str, float], window: int,
                  model: str | None, model_version: str | None) -> str | None:
    """Record one reranked search; returns the fallback category (None when ``ok``)."""
    for stage in STAGES:
        _child(STAGE_SECONDS, stage, status).observe(took_ms[stage] / 1000)
    # The model label comes from the request: only names a worker answered for are kept.
    seen = any(m == model for m, _ in _models_seen) or (model_version and status == "ok")
    _child(RERANKED, status, (model or "unknown") if seen else "other").inc()
    WINDOW.observe(window)
    category = None
    if status != "ok":
        category = fallback_category(reason)
        _child(FALLBACKS, category).inc()
    elif model_version and (model or "unknown", model_version) not in _models_seen:
        _models_seen.add((model or "unknown", model_version))
        MODEL_INFO.labels(model or "unknown", model_version).set(1)
    RECENT.add(status != "ok", category, took_ms["total"])
    return category


# ---------------------------------------------------------------------- scrape-time collectors

def scrape_redis(settings: Settings) -> Redis:
    """A synchronous Redis client with short timeouts, for scrape-time reads."""
    return redis_client(settings, socket_timeout=SCRAPE_REDIS_TIMEOUT_S,
                        socket_connect_timeout=SCRAPE_REDIS_TIMEOUT_S)


def queue_keys(queue: str) -> list[str]:
    """The Redis lists holding ``queue``'s messages (plain and per priority)."""
    return [queue, *(f"{queue}{KOMBU_PRIORITY_SEP}{p}" for p in KOMBU_PRIORITY_STEPS)]


def queue_depths(redis: Redis, queues: list[str]) -> dict[str, int]:
    """Messages waiting per queue (one pipelined round trip)."""
    pipe = redis.pipeline(transaction=False)
    for queue in queues:
        for key in queue_keys(queue):
            pipe.llen(key)
    counts = pipe.execute()
    per = len(KOMBU_PRIORITY_STEPS) + 1
    return {q: int(sum(counts[i * per:(i + 1) * per])) for i, q in enumerate(queues)}


class QueueDepthCollector(Collector):
    """``lexrerank_queue_depth{queue}`` and ``lexrerank_queue_depth_scrape_ok``, read at scrape."""

    def __init__(self, redis: Redis, queues: list[str]) -> None:
        self.redis = redis
        self.queues = queues

    def describe(self):
        yield GaugeMetricFamily("lexrerank_queue_depth", "Messages waiting in a Celery queue.",
                                labels=["queue"])
        yield GaugeMetricFamily("lexrerank_queue_depth_scrape_ok",
                                "1 when Redis answered the queue depth read of this scrape.")

    def collect(self):
        depth = GaugeMetricFamily("lexrerank_queue_depth", "Messages waiting in a Celery queue.",
                                  labels=["queue"])
        ok = 1
        try:
            for queue, count in queue_depths(self.redis, self.queues).items():
                depth.add_metric([queue], count)
        except (RedisError, OSError):
            ok = 0
        yield depth
        yield GaugeMetricFamily("lexrerank_queue_depth_scrape_ok",
                                "1 when Redis answered the queue depth read of this scrape.",
                                value=ok)


def read_reindex_jobs(redis: Redis) -> list[dict[str, Any]]:
    """Every reindex job record (see lexrerank.reindex_progress)."""
    from lexrerank.reindex_progress import read_all_progress

    return read_all_progress(redis)


REINDEX_GAUGES = (
    # (metric name, record field, help)
    ("lexrerank_reindex_documents", "documents_total", "Documents the reindex job will load."),
    ("lexrerank_reindex_documents_loaded", "documents_loaded", "Documents loaded so far."),
    ("lexrerank_reindex_chunks", "chunks_total", "Embed chunks the job fanned out."),
    ("lexrerank_reindex_chunks_done", "chunks_done", "Embed chunks done."),
    ("lexrerank_reindex_chunks_failed", "chunks_failed", "Embed chunks failed."),
    ("lexrerank_reindex_eta_seconds", "eta_s", "Estimated seconds left."),
    ("lexrerank_reindex_started_timestamp_seconds", "started_at", "Job start (unix time)."),
    ("lexrerank_reindex_updated_timestamp_seconds", "updated_at",
     "Last progress update (unix time); a reindex is stuck when it stops moving."),
)


class ReindexCollector(Collector):
    """Reindex job progress per alias, read from Redis at scrape."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def _families(self) -> tuple[dict[str, GaugeMetricFamily], GaugeMetricFamily,
                                 GaugeMetricFamily]:
        gauges = {name: GaugeMetricFamily(name, text, labels=["alias"])
                  for name, _, text in REINDEX_GAUGES}
        info = GaugeMetricFamily("lexrerank_reindex_info",
                                 "1 per reindex job: its alias, target index and state.",
                                 labels=["alias", "index", "state"])
        ratio = GaugeMetricFamily("lexrerank_reindex_progress_ratio",
                                  "Fraction done: loaded documents, then embedded chunks.",
                                  labels=["alias"])
        return gauges, info, ratio

    def describe(self):
        gauges, info, ratio = self._families()
        yield from gauges.values()
        yield info
        yield ratio

    def collect(self):
        gauges, info, ratio = self._families()
        try:
            jobs = read_reindex_jobs(self.redis)
        except (RedisError, OSError):
            jobs = []
        for job in jobs:
            alias = str(job.get("alias", "?"))
            for name, field, _ in REINDEX_GAUGES:
                value = job.get(field)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    gauges[name].add_metric([alias], float(value))
            info.add_metric([alias, str(job.get("index", "")), str(job.get("state", ""))], 1)
            ratio.add_metric([alias], reindex_ratio(job))
        yield from gauges.values()
        yield info
        yield ratio


def reindex_ratio(job: dict[str, Any]) -> float:
    """0..1: half for loading the documents, half for embedding the chunks."""
    if job.get("state") == "swapped":
        return 1.0

    def part(done: Any, total: Any) -> float:
        if not isinstance(total, (int, float)) or total <= 0:
            return 0.0
        return min(float(done or 0) / total, 1.0)

    return round(0.5 * part(job.get("documents_loaded"), job.get("documents_total"))
                 + 0.5 * part(job.get("chunks_done"), job.get("chunks_total")), 4)


# --------------------------------------------------------------------------------- exposition

def process_registry() -> CollectorRegistry:
    """The registry holding this module's metrics, merged across processes when needed."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def scrape_registry(settings: Settings, redis: Redis | None = None) -> CollectorRegistry:
    """A registry of the scrape-time collectors (queue depths, reindex jobs) for ``settings``."""
    redis = redis or scrape_redis(settings)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(QueueDepthCollector(redis, [settings.rerank_queue, settings.embed_queue]))
    registry.register(ReindexCollector(redis))
    return registry


def render_metrics(scrape: CollectorRegistry) -> bytes:
    """Prometheus text: the process (or multi-process) metrics, then the scrape-time ones."""
    return generate_latest(process_registry()) + generate_latest(scrape)


def mark_process_dead() -> None:
    """Drop this process's live gauges from the multi-process files (at shutdown)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())


__all__ = ["CONTENT_TYPE_LATEST", "MetricsMiddleware", "RECENT", "record_rerank",
           "render_metrics", "scrape_registry"]
