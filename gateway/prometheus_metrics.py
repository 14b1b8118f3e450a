"""The gateway's Prometheus metrics: their declarations and the two calls that record them.

Prefix ``lexrerank_``, base units, low-cardinality labels:

- every HTTP request (:func:`record_request`, called by
  :class:`gateway.http_metrics.MetricsMiddleware`):
  ``lexrerank_gateway_requests_total{route,code}`` and
  ``lexrerank_gateway_request_duration_seconds{route}``, ``route`` being a small fixed set of
  kinds (:func:`gateway.http_metrics.route_kind`), never the path itself;
- every reranked search (:func:`record_rerank`, called once by the pipeline): the per-stage
  latency histogram ``lexrerank_gateway_rerank_stage_duration_seconds{stage,status}``,
  ``lexrerank_gateway_reranked_requests_total{status,model}``, the fallback counter
  ``lexrerank_gateway_rerank_fallbacks_total{reason}`` by reason CODE
  (:class:`worker.protocol.ReasonCode`; the free-text reason stays in the response and the
  log), the window size histogram and the model version seen (an ``_info`` style gauge).

The scrape-time metrics (queue depths, reindex jobs) are :mod:`gateway.scrape_collectors`';
the exposition, merged across uvicorn workers, is :mod:`gateway.metrics_exposition`.
Recording costs a few counter/histogram updates and one deque append.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from gateway.recent_requests import RECENT
from worker.protocol import ReasonCode

STAGES = ("first_stage", "rerank", "merge", "total")
# Seconds: a 2 ms BM25 search up to a 10 s deadline.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
                   0.75, 1.0, 2.5, 5.0, 10.0)
WINDOW_BUCKETS = (1, 5, 10, 20, 50, 100, 200, 500, 1000)

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
                    "Reranked searches answered in first-stage order, by reason code.",
                    ["reason"])
WINDOW = Histogram("lexrerank_gateway_rerank_window_size",
                   "Rerank window size (first-stage candidates sent to a worker).",
                   buckets=WINDOW_BUCKETS)
MODEL_INFO = Gauge("lexrerank_gateway_model_info",
                   "1 for each (model, model_version) a worker answered with.",
                   ["model", "model_version"], multiprocess_mode="max")

# Labelled children bound once: ``.labels()`` costs more than the update itself. Every
# reason code and stage is exported from the start (a rate of 0, not "no data").
_children: dict[tuple, Any] = {}
_models_seen: set[tuple[str, str]] = set()


def _child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, cached (label sets are few: routes, codes, models)."""
    key = (metric, labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


for _code in ReasonCode:
    _child(FALLBACKS, _code.value)
for _status in ("ok", "fallback"):
    for _stage in STAGES:
        _child(STAGE_SECONDS, _stage, _status)


def record_request(route: str, code: int, seconds: float) -> None:
    """One HTTP request of route kind ``route`` answered ``code`` after ``seconds``."""
    _child(REQUESTS, route, str(code)).inc()
    _child(REQUEST_SECONDS, route).observe(seconds)
    RECENT.requests += 1


def record_rerank(status: str, reason_code: ReasonCode | None, took_ms: dict[str, float],
                  window: int, model: str | None, model_version: str | None) -> None:
    """Record one reranked search (``reason_code``: None when ``ok``). A stage absent from
    ``took_ms`` is not observed (``POST /_lexrerank/rerank`` runs no first stage)."""
    for stage in STAGES:
        if stage in took_ms:
            _child(STAGE_SECONDS, stage, status).observe(took_ms[stage] / 1000)
    # The model label comes from the request: only names a worker answered for are kept.
    seen = any(m == model for m, _ in _models_seen) or (model_version and status == "ok")
    _child(RERANKED, status, (model or "unknown") if seen else "other").inc()
    WINDOW.observe(window)
    if status != "ok":
        reason_code = reason_code or ReasonCode.GATEWAY_ERROR
        _child(FALLBACKS, reason_code.value).inc()
    elif model_version and (model or "unknown", model_version) not in _models_seen:
        _models_seen.add((model or "unknown", model_version))
        MODEL_INFO.labels(model or "unknown", model_version).set(1)
    RECENT.add(status != "ok", reason_code.value if status != "ok" and reason_code else None,
               took_ms["total"])
