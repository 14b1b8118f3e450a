"""Celery signal wiring of the workers: task metrics, task log context, process start/stop.

Connected when Celery imports this module (``include`` of :func:`worker.celery_app.make_app`);
the tasks themselves stay untouched:

- ``task_prerun`` / ``task_postrun``: the task's duration, outcome and batch size
  (:mod:`worker.prometheus_metrics`), one ``task done`` log line, and the task's log
  context (:mod:`worker.json_logs`: task id, name, the gateway's request id);
- ``task_retry`` / ``task_revoked``: the outcome counter;
- ``celeryd_after_setup``: the worker's name and queues, for the presence records
  (:mod:`worker.presence_beat`);
- ``worker_init``: the ``/metrics`` endpoint (:mod:`worker.metrics_server`);
- each task-running process's start: ``processes`` = 1 and its presence beat; its
  shutdown: its live gauges dropped.
"""

from __future__ import annotations

import logging
import os
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

from worker import json_logs, metrics_server, presence_beat
from worker import prometheus_metrics as metrics
from worker.celery_app import when_task_process_starts
from worker.protocol import EMBED_ARGS, request_model

log = logging.getLogger(__name__)
# Attribute of the task's request where a task puts the batch size it counted itself (a
# rerank's candidates come by handoff, not in its arguments).
BATCH_SIZE_ATTR = "lexrerank_batch_size"
_started: dict[str, float] = {}
_served: set[str] = set()


def short_task_name(name: str | None) -> str:
    """``lexrerank.rerank`` -> ``rerank`` (a low-cardinality label)."""
    return (name or "unknown").rsplit(".", 1)[-1]


def task_model_and_batch(task: str, args: Any, kwargs: Any) -> tuple[str, int | None]:
    """The model label and batch size of a rerank/embed call, from its arguments (a rerank's
    batch size is only known once its candidates came: :data:`BATCH_SIZE_ATTR`)."""
    args, kwargs = list(args or []), dict(kwargs or {})
    if task == "rerank":
        model = request_model(args, kwargs)
        return (model if isinstance(model, str) else ""), None
    if task != "embed":
        return "", None
    given = {**dict(zip(EMBED_ARGS, args, strict=False)), **kwargs}
    items, model = given.get("ids"), given.get("model")
    return (model if isinstance(model, str) else "",
            len(items) if isinstance(items, list) else None)


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
    metrics.task_finished(name, model, outcome, seconds, batch)
    if name != "ping":
        log.info("task done", extra={"fields": {
            "model": model, "outcome": outcome, "batch": batch,
            "ms": round(seconds * 1000, 2) if seconds is not None else None}})
    json_logs.clear_task_context()


@task_retry.connect
def _task_retried(request: Any = None, **_: Any) -> None:
    metrics.task_outcome(short_task_name(getattr(request, "task", None)), "retry")


@task_revoked.connect
def _task_revoked(request: Any = None, expired: bool = False, **_: Any) -> None:
    # Sent where the revocation is noticed (the main process for an expired message).
    name = short_task_name(getattr(request, "task_name", None) or getattr(request, "name", None))
    metrics.task_outcome(name, "expired" if expired else "revoked")


@celeryd_after_setup.connect
def _remember_identity(sender: Any = None, instance: Any = None, **_: Any) -> None:
    # Main process, queues selected, before the pool forks: children inherit this.
    presence_beat.WORKER_IDENTITY["name"] = str(sender)
    try:
        presence_beat.WORKER_IDENTITY["queues"] = sorted(instance.app.amqp.queues.consume_from)
    except AttributeError:  # pragma: no cover - Celery internals moved
        presence_beat.WORKER_IDENTITY["queues"] = []


@worker_init.connect
def _serve_metrics(**_: Any) -> None:
    metrics_server.serve_metrics()


def _process_started() -> None:
    metrics.process_started()
    presence_beat.start_presence_beat()


when_task_process_starts(_process_started)


@worker_process_shutdown.connect
def _child_stopping(**_: Any) -> None:
    metrics_server.mark_process_dead(os.getpid())
