"""Warming the rerank workers on an index before the alias moves onto it.

Every process consuming the rerank queue loads the index's article vectors of the job's
models (``lexrerank.warm``), evicting the vectors of the alias's other versions except those
named to keep, so the first searches after the swap do not wait for a load.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery

from lexrerank.errors import LexrerankError

log = logging.getLogger(__name__)


def warm_workers(app: Celery, queue: str, index: str, models: list[str],
                 evict_prefix: str | None = None, keep: list[str] | None = None,
                 timeout_s: float = 300.0) -> list[dict[str, Any]]:
    """Have every process consuming ``queue`` load ``models``' vectors of ``index``.

    The processes are listed with ``inspect`` (each worker's pool pids); warm tasks are sent
    until each pid has answered once (a busy process may take two in a row, so the missing
    ones get more). Returns the answers (pid, documents, load_ms, memory). Without workers
    nothing is warmed and the list is empty: searches fall back until one starts. A process
    that fails to load raises :class:`LexrerankError` (the swap must wait); one that does not
    answer within ``timeout_s`` is logged and left out.
    """
    from worker.protocol import WARM_TASK

    expected = _rerank_processes(app, queue)
    answers: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while expected - answers.keys() and time.monotonic() < deadline:
        sent = [app.send_task(WARM_TASK, args=[index, models, evict_prefix, keep], queue=queue,
                              expires=max(deadline - time.monotonic(), 1.0))
                for _ in range(len(expected - answers.keys()))]
        for res in sent:
            try:
                answer = res.get(timeout=max(deadline - time.monotonic(), 0.1))
            except Exception as exc:  # noqa: BLE001 - a warm failure means the swap waits
                if "TimeoutError" in type(exc).__name__:
                    break
                raise LexrerankError(f"a rerank worker could not load {index}: {exc}; the "
                                     "alias was not moved") from exc
            finally:
                res.forget()
            answers[answer["pid"]] = answer
    if expected - answers.keys():
        log.warning("warmed %d of %d rerank processes of %s within %.0fs", len(answers),
                    len(expected), index, timeout_s)
    return list(answers.values())


def _rerank_processes(app: Celery, queue: str) -> set[int]:
    """The pids of the pool processes of every worker consuming ``queue``."""
    inspect = app.control.inspect(timeout=1.0)
    queues = inspect.active_queues() or {}
    nodes = [n for n, qs in queues.items() if any(q.get("name") == queue for q in qs)]
    stats = inspect.stats() or {}
    expected: set[int] = set()
    for node in nodes:
        info = stats.get(node, {})
        expected |= set(info.get("pool", {}).get("processes") or [info.get("pid")]) - {None}
    return expected
