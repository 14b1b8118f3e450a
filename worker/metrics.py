"""Prometheus metrics of the Celery workers, wired through Celery signals (tasks untouched).

Exported (prefix ``lexrerank_worker_``, base units):

- ``task_duration_seconds{task,model}`` (histogram), ``tasks_total{task,outcome}``
  (success, failure, retry, expired, revoked), ``batch_size{task}`` (candidates per rerank,
  articles per embed);
- ``model_info{model,model_version,device}`` = 1 per loaded model, ``processes`` (live
  task-running processes), ``vector_cache_articles{index,model}``,
  ``vector_cache_bytes{index,model}`` (array bytes held), ``vector_cache_hits_total`` /
  ``vector_cache_misses_total{index,model}`` (a miss loads an index's vectors from OpenSearch).

Celery's prefork pool runs tasks in forked children, so the worker uses prometheus-client's
multi-process mode: ``lexrerank worker`` gives each worker its own fresh
``PROMETHEUS_MULTIPROC_DIR`` (:mod:`lexrerank.prometheus_dir`) before this module is
imported, and the worker's main process serves ``/metrics`` (all children merged) on
``LEXRERANK_WORKER_METRICS_PORT`` (default 9108; 0 disables). The same module also starts
each serving process's presence beat (:mod:`worker.presence`) and its JSON logs
(:mod:`worker.json_logs`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from celery.signals import (
    celeryd_after_setup,
    task_postrun,
    task_prerun,
    task_retry,
    task_revoked,
    worker_init,
    worker_process_shutdown,
)
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

from lexrerank.errors import LexrerankError
from reranker.registry import resolve_name
from worker import json_logs, presence
from worker.celery_app import when_task_process_starts

log = logging.getLogger(__name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PORT_ENV, HOST_ENV = "LEXRERANK_WORKER_METRICS_PORT", "LEXRERANK_WORKER_METRICS_HOST"
# All interfaces: Prometheus scrapes from another host/pod (LEXRERANK_WORKER_METRICS_HOST
# narrows it; docs/security.md).
DEFAULT_PORT, DEFAULT_HOST = 9108, "0.0.0.0"  # nosec B104
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

# What this process has loaded: model name -> (model_version, device); read by the presence beat.
LOADED_MODELS: dict[str, tuple[str, str]] = {}
# Set in the main process before children fork (celeryd_after_setup): who we are.
WORKER_IDENTITY: dict[str, Any] = {"name": None, "queues": []}
_started: dict[str, float] = {}
_server_started = False


# ------------------------------------------------------------------- hooks for service_cache

def model_loaded(name: str, model: Any) -> None:
    """A model was loaded in this process (called by worker.service_cache)."""
    version = str(getattr(model, "model_version", "unknown"))
    device = str(getattr(model, "device", "cpu"))
    LOADED_MODELS[name] = (version, device)
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


def vector_bytes(entries: Any) -> int:
    """Array bytes of cache entries ``(article side, sentences)``: ndarrays or their fields."""
    total = 0
    for side, _sentences in entries:
        if hasattr(side, "nbytes"):
            total += int(side.nbytes)
        else:
            total += sum(int(getattr(v, "nbytes", 0)) for v in vars(side).values())
    return total


# ------------------------------------------------------------------------------ task signals

def short_task_name(name: str | None) -> str:
    """``lexrerank.rerank`` -> ``rerank`` (a low-cardinality label)."""
    return (name or "unknown").rsplit(".", 1)[-1]


def task_model_and_batch(task: str, args: Any, kwargs: Any) -> tuple[str, int | None]:
    """The model label and batch size of a rerank/embed call, from its arguments."""
    args, kwargs = list(args or []), dict(kwargs or {})
    if task == "rerank":
        names = ["index", "query", "candidates", "model", "explain"]
        items_name = "candidates"
    elif task == "embed":
        names = ["index", "ids", "model"]
        items_name = "ids"
    else:
        return "", None
    given = {**dict(zip(names, args, strict=False)), **kwargs}
    items = given.get(items_name)
    model = given.get("model")
    return (model if isinstance(model, str) else "",
            len(items) if isinstance(items, list) else None)


# Attribute of the task's request where a task puts the batch size it counted itself (a
# rerank's candidates may come by handoff, not in its arguments).
BATCH_SIZE_ATTR = "lexrerank_batch_size"
_served: set[str] = set()


def served_models() -> set[str]:
    """Model names this worker may load (label values; others are counted as "other")."""
    if not _served:
        from lexrerank.config import get_settings
        from worker.service_cache import allowed_models

        _served.update(allowed_models(get_settings()), {""})
    return _served


@task_prerun.connect
def _task_started(task_id: str | None = None, task: Any = None, args: Any = None,
                  kwargs: Any = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()
    request = getattr(task, "request", None)
    json_logs.set_task_context(task_id, getattr(task, "name", None),
                               json_logs.request_id_of(request))


@task_postrun.connect
def _task_finished(task_id: str | None = None, task: Any = None, args: Any = None,
                   kwargs: Any = None, state: str | None = None, **_: Any) -> None:
    name = short_task_name(getattr(task, "name", None))
    start = _started.pop(task_id or "", None)
    seconds = time.perf_counter() - start if start is not None else None
    model, batch = task_model_and_batch(name, args, kwargs)
    batch = getattr(getattr(task, "request", None), BATCH_SIZE_ATTR, batch)
    model = model if model in served_models() else "other"  # request-given: bounded
    outcome = (state or "unknown").lower()
    if seconds is not None:
        TASK_SECONDS.labels(name, model).observe(seconds)
    if batch is not None:
        BATCH.labels(name).observe(batch)
    TASKS.labels(name, outcome).inc()
    if name != "ping":
        log.info("task done", extra={"fields": {
            "model": model, "outcome": outcome, "batch": batch,
            "ms": round(seconds * 1000, 2) if seconds is not None else None}})
    json_logs.clear_task_context()


@task_retry.connect
def _task_retried(request: Any = None, **_: Any) -> None:
    TASKS.labels(short_task_name(getattr(request, "task", None)), "retry").inc()


@task_revoked.connect
def _task_revoked(request: Any = None, expired: bool = False, **_: Any) -> None:
    # Sent where the revocation is noticed (the main process for an expired message).
    name = short_task_name(getattr(request, "task_name", None) or getattr(request, "name", None))
    TASKS.labels(name, "expired" if expired else "revoked").inc()


# -------------------------------------------------------------------------- process signals

@celeryd_after_setup.connect
def _remember_identity(sender: Any = None, instance: Any = None, **_: Any) -> None:
    # Main process, queues selected, before the pool forks: children inherit this.
    WORKER_IDENTITY["name"] = str(sender)
    try:
        WORKER_IDENTITY["queues"] = sorted(instance.app.amqp.queues.consume_from)
    except AttributeError:  # pragma: no cover - Celery internals moved
        WORKER_IDENTITY["queues"] = []


def metrics_registry() -> CollectorRegistry:
    """What the worker's /metrics serves: all processes merged in multi-process mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def metrics_port() -> int:
    """``LEXRERANK_WORKER_METRICS_PORT`` (0 disables the endpoint)."""
    from lexrerank.config import get_settings

    return get_settings().worker_metrics_port


@worker_init.connect
def _serve_metrics(**_: Any) -> None:
    global _server_started
    port = metrics_port()
    if port == 0 or _server_started:
        return
    if not os.environ.get(MULTIPROC_ENV):
        log.warning("%s is not set: /metrics shows the main process only (start workers "
                    "with `lexrerank worker`)", MULTIPROC_ENV)
    host = os.environ.get(HOST_ENV) or DEFAULT_HOST
    try:
        start_http_server(port, addr=host, registry=metrics_registry())
    except OSError as exc:
        # A second worker on the same machine: it runs, without its own endpoint.
        log.warning("worker metrics not served on %s:%d: %s (set %s to a free port, 0 to "
                    "disable)", host, port, exc, PORT_ENV)
        return
    _server_started = True
    log.info("worker metrics on http://%s:%d/metrics", host, port)


def _process_started() -> None:
    PROCESSES.set(1)
    _start_presence_beat()


when_task_process_starts(_process_started)


@worker_process_shutdown.connect
def _child_stopping(**_: Any) -> None:
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())


# --------------------------------------------------------------------------------- presence

def presence_record() -> dict[str, Any]:
    """This process's presence record (see worker.presence)."""
    from worker.service_cache import process_cache

    loaded = process_cache().loaded()
    models = [{"model": name, "model_version": version, "device": device,
               "indexes": sorted(i for i, m in loaded if m == name)}
              for name, (version, device) in LOADED_MODELS.items()]
    settings = process_cache().settings
    try:
        default = resolve_name(settings.default_model, settings.language, settings.model_dir)
    except LexrerankError:  # no model for the language: the record says what is loaded
        default = settings.default_model
    main = next((m for m in models if m["model"] == default), models[0] if models else {})
    return {"name": WORKER_IDENTITY["name"] or f"worker@{os.uname().nodename}",
            "pid": os.getpid(), "queues": WORKER_IDENTITY["queues"],
            "model": main.get("model"), "model_version": main.get("model_version"),
            "device": main.get("device"), "models": models}


def _beat_forever() -> None:
    from redis.exceptions import RedisError

    from lexrerank.config import get_settings
    from lexrerank.redis_tls import redis_client

    redis = redis_client(get_settings(), socket_timeout=2, socket_connect_timeout=2)
    while True:
        try:
            record = presence_record()
            redis.set(presence.presence_key(record["name"], record["pid"]),
                      presence.encode_presence(record), ex=presence.TTL_S)
        except (RedisError, OSError) as exc:
            log.debug("presence beat failed: %s", exc)
        except Exception:  # noqa: BLE001 - the beat must never die of a bug
            log.exception("presence beat failed")
        time.sleep(presence.BEAT_S)


def _start_presence_beat() -> None:
    threading.Thread(target=_beat_forever, name="lexrerank-presence", daemon=True).start()

