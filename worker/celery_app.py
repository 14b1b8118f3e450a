"""The Celery application: Redis broker and result backend, JSON only, production settings.

Importing this module is cheap (no torch): the gateway imports it to publish tasks. The task
code lives in :mod:`worker.tasks`, imported by the worker process only; the task names and
messages are :mod:`worker.protocol`'s.

Settings follow Celery's own guidance for long, expensive tasks:

- ``worker_prefetch_multiplier=1``: a worker holds one message per process, so a slow task
  never hides others that another worker could run;
- ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged after the
  task ran, so a crashed worker's task is redelivered; :mod:`worker.delivery_guard` bounds
  how often (a poison message must not crash-loop the workers), and Redis's
  ``visibility_timeout`` is longer than the longest hard time limit, so a running task is
  never handed to a second worker;
- two queues, ``rerank`` (latency) and ``embed`` (batch), routed by task name: run them on
  separate workers (or at least list ``rerank`` first) so a reindex never starves searches;
- short socket timeouts towards Redis: a publish against a dead Redis fails in
  milliseconds, and the gateway falls back instead of waiting.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_ready
from kombu import Exchange, Queue

from lexrerank.config import Settings, get_settings
from lexrerank.redis_tls import celery_ssl_options
from worker.protocol import EMBED_TASK, PING_TASK, RERANK_TASK, WARM_TASK

# Per-task limits (seconds). The rerank limit also covers the lazy model load of a fresh
# process; the gateway's deadline is far shorter and it stops waiting long before.
RERANK_SOFT_LIMIT_S, RERANK_HARD_LIMIT_S = 60, 90
EMBED_SOFT_LIMIT_S, EMBED_HARD_LIMIT_S = 3600, 3660
# Longer than any hard limit: Redis redelivers an unacknowledged message after this long.
VISIBILITY_TIMEOUT_S = 2 * EMBED_HARD_LIMIT_S
REDIS_SOCKET_TIMEOUT_S = 5.0
REDIS_CONNECT_TIMEOUT_S = 0.5
RESULT_EXPIRES_S = 300
# A forked child loads the model before it reports up; on a slow CPU that takes > 4 s.
PROC_ALIVE_TIMEOUT_S = 300


def _queue(name: str) -> Queue:
    # Each queue on its own direct exchange: nothing published for one can reach the other.
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def celery_config(settings: Settings) -> dict:
    """The Celery configuration for ``settings`` (a plain dict, easy to inspect in tests)."""
    transport = {
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
        "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
        "health_check_interval": 30,
    }
    return {
        "broker_url": settings.redis_url,
        "result_backend": settings.redis_url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "event_serializer": "json",
        "worker_prefetch_multiplier": 1,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "broker_transport_options": transport,
        # TLS for rediss:// URLs (False: plain TCP), same options for broker and results.
        "broker_use_ssl": celery_ssl_options(settings) or False,
        "redis_backend_use_ssl": celery_ssl_options(settings) or False,
        "result_backend_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT_S},
        "redis_socket_timeout": REDIS_SOCKET_TIMEOUT_S,
        "redis_socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
        "redis_socket_keepalive": True,
        "redis_retry_on_timeout": True,
        "broker_connection_retry_on_startup": True,
        "result_expires": RESULT_EXPIRES_S,
        "result_extended": False,
        "task_track_started": False,
        "task_queues": tuple(_queue(q) for q in (settings.rerank_queue, settings.embed_queue)),
        "task_default_queue": settings.rerank_queue,
        "task_routes": {RERANK_TASK: {"queue": settings.rerank_queue},
                        WARM_TASK: {"queue": settings.rerank_queue},
                        EMBED_TASK: {"queue": settings.embed_queue}},
        "task_annotations": {
            RERANK_TASK: {"soft_time_limit": RERANK_SOFT_LIMIT_S,
                          "time_limit": RERANK_HARD_LIMIT_S},
            WARM_TASK: {"soft_time_limit": EMBED_SOFT_LIMIT_S,
                        "time_limit": EMBED_HARD_LIMIT_S},
            EMBED_TASK: {"soft_time_limit": EMBED_SOFT_LIMIT_S,
                         "time_limit": EMBED_HARD_LIMIT_S},
        },
        "worker_proc_alive_timeout": PROC_ALIVE_TIMEOUT_S,
        "worker_hijack_root_logger": True,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "enable_utc": True,
    }


def when_task_process_starts(callback: Callable[[], None]) -> None:
    """Run ``callback`` once in every process that will run tasks, before it runs any.

    That is each prefork child and the solo pool's own process (``worker_process_init``), or
    the threads pool's worker, which sends no ``worker_process_init`` (``worker_ready``).
    """
    def on_process_init(**_: Any) -> None:
        callback()

    def on_ready(sender: Any = None, **_: Any) -> None:
        from celery.concurrency.thread import TaskPool as ThreadsPool

        if isinstance(getattr(sender, "pool", None), ThreadsPool):
            callback()

    # weak=False: the receivers are closures that nothing else keeps alive.
    worker_process_init.connect(on_process_init, weak=False)
    worker_ready.connect(on_ready, weak=False)


def make_app(settings: Settings | None = None, *, publish_only: bool = False) -> Celery:
    """A Celery app configured from ``settings`` (default: the environment now).

    ``publish_only``: without a result backend, so ``send_task`` publishes and nothing more
    (no result subscription in the caller; the workers still store the results with their
    own app): the gateway's publisher (see :mod:`worker.protocol`).
    """
    settings = settings or get_settings()
    # worker.task_signals: Prometheus metrics, presence and JSON logs, wired by Celery signals.
    app = Celery("lexrerank", include=["worker.tasks", "worker.task_signals"])
    config = celery_config(settings)
    if publish_only:
        config["result_backend"] = "disabled"
    app.conf.update(config)
    return app


app = make_app()


def serving(app: Celery, queue: str, timeout_s: float = 2.0) -> dict | None:
    """What a worker process consuming ``queue`` has loaded, or None if none answers.

    Unlike ``control.ping`` (answered by a prefork worker's parent at once), this runs as a
    task in the process that reranks, so it answers only once that process has loaded its
    model (preload happens before it takes tasks).
    """
    result = None
    try:
        result = app.send_task(PING_TASK, queue=queue, expires=timeout_s)
        return result.get(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - timeout, Redis down, no worker: all mean "not serving"
        return None
    finally:
        if result is not None:
            # Drop the result subscription now, not in a destructor at interpreter exit.
            with contextlib.suppress(Exception):
                result.forget()


def delete_queues(app: Celery, queues: list[str]) -> None:
    """Delete ``queues`` (their messages and bindings) from the broker: for short-lived
    private queues (tests, benchmarks) so they do not pile up in a shared Redis."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for name in queues:
            queue = _queue(name)(channel)
            queue.declare()  # kombu deletes only the bindings this channel knows of
            queue.delete()
