"""The workers' Prometheus metrics: their declarations and the hooks that move them.

Exported (prefix ``lexrerank_worker_``, base units):

- ``task_duration_seconds{task,model}`` (histogram), ``tasks_total{task,outcome}``
  (success, failure, retry, expired, revoked), ``batch_size{task}`` (candidates per rerank,
  articles per embed): recorded by :mod:`worker.task_signals`;
- ``model_info{model,model_version,device}`` = 1 per loaded model, ``processes`` (live
  task-running processes), ``vector_cache_articles{index,model}``,
  ``vector_cache_bytes{index,model}`` (bytes held, as the budget counts them),
  ``vector_cache_budget_bytes`` (``LEXRERANK_VECTOR_CACHE_MB`` of each process),
  ``vector_cache_hits_total`` / ``vector_cache_misses_total{index,model}`` (a hit: a rerank
  whose candidates were all current in memory; a miss: one that read or computed some),
  ``vector_cache_reads_total{index,model}`` (documents read by a rerank: missing or stale),
  ``vector_cache_stale_total`` (of those, held but changed since), ``vector_cache_computed_total``
  (articles whose vectors a rerank computed: added since the last embed),
  ``vector_cache_warmed_total`` (documents cached by a warm: start-up or reindex) and
  ``vector_cache_evictions_total`` (entries evicted for the budget): moved by
  :mod:`worker.service_cache` through the hooks below.

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
CACHE_BUDGET = Gauge("lexrerank_worker_vector_cache_budget_bytes",
                     "Vector cache budget of the live worker processes, summed.",
                     multiprocess_mode="livesum")
CACHE_HITS = Counter("lexrerank_worker_vector_cache_hits",
                     "Reranks whose candidates were all current in memory.", ["index", "model"])
CACHE_MISSES = Counter("lexrerank_worker_vector_cache_misses",
                       "Reranks that read or computed some candidates' vectors first.",
                       ["index", "model"])
CACHE_READS = Counter("lexrerank_worker_vector_cache_reads",
                      "Documents whose vectors a rerank read from OpenSearch (missing or stale).",
                      ["index", "model"])
CACHE_STALE = Counter("lexrerank_worker_vector_cache_stale",
                      "Cached documents found changed since they were read (re-read).",
                      ["index", "model"])
CACHE_COMPUTED = Counter("lexrerank_worker_vector_cache_computed",
                         "Articles whose vectors a rerank computed (none stored yet).",
                         ["index", "model"])
CACHE_WARMED = Counter("lexrerank_worker_vector_cache_warmed",
                       "Documents cached by a warm (start-up or reindex), budget permitting.",
                       ["index", "model"])
CACHE_EVICTIONS = Counter("lexrerank_worker_vector_cache_evictions",
                          "Cached entries evicted for the budget (least recently used).",
                          ["index", "model"])


# ------------------------------------------------------------------- hooks for service_cache

def model_loaded(name: str, model: Any) -> None:
    """A model was loaded in this process (called by worker.service_cache)."""
    version = str(getattr(model, "model_version", "unknown"))
    device = str(getattr(model, "device", "cpu"))
    MODEL_INFO.labels(name, version, device).set(1)


def vector_cache_budget(budget_bytes: int) -> None:
    CACHE_BUDGET.set(budget_bytes)


def vector_cache_gathered(index: str, model: str, from_memory: bool, read: int, stale: int,
                          computed: int) -> None:
    """One rerank gathered its candidates' vectors: a hit, or a miss and what it cost."""
    (CACHE_HITS if from_memory else CACHE_MISSES).labels(index, model).inc()
    if read:
        CACHE_READS.labels(index, model).inc(read)
    if stale:
        CACHE_STALE.labels(index, model).inc(stale)
    if computed:
        CACHE_COMPUTED.labels(index, model).inc(computed)


def vector_cache_warmed(index: str, model: str, documents: int) -> None:
    CACHE_WARMED.labels(index, model).inc(documents)


def vector_cache_size(index: str, model: str, articles: int, nbytes: int,
                      new_evictions: int) -> None:
    """What the process holds of (index, model) now, and the entries evicted since the
    last call."""
    CACHE_ARTICLES.labels(index, model).set(articles)
    CACHE_BYTES.labels(index, model).set(nbytes)
    if new_evictions:
        CACHE_EVICTIONS.labels(index, model).inc(new_evictions)


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
