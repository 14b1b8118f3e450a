"""The workers' Prometheus metrics: their declarations and the hooks that move them.

Exported (prefix ``lexrerank_worker_``, base units):

- ``task_duration_seconds{task,model}`` (histogram), ``tasks_total{task,outcome}``
  (success, failure, retry, expired, revoked), ``batch_size{task}`` (candidates per rerank,
  articles per embed): recorded by :mod:`worker.task_signals`;
- ``model_info{model,model_version,device}`` = 1 per loaded model, ``processes`` (live
  task-running processes), ``vector_cache_articles{index,model}``,
  ``vector_cache_bytes{index,model}`` (array bytes held), ``vector_cache_hits_total`` /
  ``vector_cache_misses_total{index,model}`` (a miss loads an index's vectors from OpenSearch):
  moved by :mod:`worker.service_cache` through the hooks below.

Celery's prefork pool runs tasks in forked children, so the worker uses prometheus-client's
multi-process mode: ``lexrerank worker`` gives each worker its own fresh
``PROMETHEUS_MULTIPROC_DIR`` (:mod:`lexrerank.prometheus_dir`) before this module is
imported; :mod:`worker.metrics_server` serves them, all children merged.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

# A 2 ms attention up to an hour-long embed chunk.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0, 900.0, 3600.0)
BATCH_BUCKETS = (1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)

TASK_SECONDS = Histogram("lexrerank_worker_task_duration_seconds",
                         "Task run time in the worker process, by task and model.",
                         ["task", "model"], buckets=DURATION_BUCKETS)
TASKS = Counter("lexrerank_worker_tasks", "Tasks by outcome.", ["task", "outcome"])
BATCH = Histogram("lexrerank_worker_batch_size",
                  "Items per task: candidates per rerank, articles per embed.", ["task"],
                  buckets=BATCH_BUCKETS)
MODEL_INFO = Gauge("lexrerank_worker_model_info", "1 per model loaded by a live worker process.",
                   ["model", "model_version", "device"], multiprocess_mode="livemax")
PROCESSES = Gauge("lexrerank_worker_processes", "Live worker processes that run tasks.",
                  multiprocess_mode="livesum")
CACHE_ARTICLES = Gauge("lexrerank_worker_vector_cache_articles",
                       "Articles whose vectors a worker process holds in memory.",
                       ["index", "model"], multiprocess_mode="livesum")
CACHE_BYTES = Gauge("lexrerank_worker_vector_cache_bytes",
                    "Bytes of article vectors (array data) held in memory.",
                    ["index", "model"], multiprocess_mode="livesum")
CACHE_HITS = Counter("lexrerank_worker_vector_cache_hits",
                     "Requests served from vectors already in memory.", ["index", "model"])
CACHE_MISSES = Counter("lexrerank_worker_vector_cache_misses",
                       "Requests that loaded an index's vectors from OpenSearch first.",
                       ["index", "model"])


# ------------------------------------------------------------------- hooks for service_cache

def model_loaded(name: str, model: Any) -> None:
    """A model was loaded in this process (called by worker.service_cache)."""
    version = str(getattr(model, "model_version", "unknown"))
    device = str(getattr(model, "device", "cpu"))
    MODEL_INFO.labels(name, version, device).set(1)


def vector_cache_hit(index: str, model: str) -> None:
    CACHE_HITS.labels(index, model).inc()


def vector_cache_loaded(index: str, model: str, service: Any) -> None:
    """An index's vectors were loaded (a miss): count it and record the cache's size."""
    CACHE_MISSES.labels(index, model).inc()
    cache = getattr(service, "cache", None)
    CACHE_ARTICLES.labels(index, model).set(len(cache) if cache is not None else 0)
    CACHE_BYTES.labels(index, model).set(cache.nbytes() if cache is not None else 0)


def vector_cache_dropped(index: str, model: str) -> None:
    CACHE_ARTICLES.labels(index, model).set(0)
    CACHE_BYTES.labels(index, model).set(0)


# ------------------------------------------------------------------------- hooks for signals

def task_finished(task: str, model: str, outcome: str, seconds: float | None,
                  batch: int | None) -> None:
    """One task ran (``task`` and ``model`` are bounded label values)."""
    if seconds is not None:
        TASK_SECONDS.labels(task, model).observe(seconds)
    if batch is not None:
        BATCH.labels(task).observe(batch)
    TASKS.labels(task, outcome).inc()


def task_outcome(task: str, outcome: str) -> None:
    """A task was retried, expired or revoked."""
    TASKS.labels(task, outcome).inc()


def process_started() -> None:
    PROCESSES.set(1)
