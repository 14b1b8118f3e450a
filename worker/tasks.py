"""The Celery tasks ``lexrerank.rerank`` and ``lexrerank.embed`` (JSON in, JSON out).

Models and vector caches live in the worker CHILD process (:mod:`worker.service_cache`):
loaded on first use, or at start-up when ``LEXRERANK_WORKER_PRELOAD=1`` (set by
``lexrerank worker``), and kept in memory. Expected errors (no vectors for this model
version, unknown model, bad input) are :class:`LexrerankError`: the task fails with that
message, the worker carries on, and the gateway falls back with the message as its reason.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import Task
from celery.signals import after_setup_logger, worker_process_init, worker_ready

from lexrerank.errors import LexrerankError
from worker.celery_app import EMBED_TASK, PING_TASK, RERANK_TASK, VISIBILITY_TIMEOUT_S, app
from worker.delivery_guard import check_redelivery, is_redelivered
from worker.device import apply_torch_threads
from worker.service_cache import process_cache

log = logging.getLogger(__name__)
PRELOAD_ENV = "LEXRERANK_WORKER_PRELOAD"
MAX_CANDIDATES = 1000
MAX_EMBED_IDS = 10_000


def _guard(task: Task) -> None:
    if is_redelivered(task.request):
        check_redelivery(task.app.backend.client, task.request.id, 2 * VISIBILITY_TIMEOUT_S)


def _candidates(raw: Any) -> list[tuple[str, float]]:
    """Validate ``[[doc_id, first_stage_score], ...]`` (JSON gives lists, not tuples)."""
    if not isinstance(raw, list) or len(raw) > MAX_CANDIDATES:
        raise LexrerankError(f"candidates must be a list of at most {MAX_CANDIDATES} "
                             "[doc_id, score] pairs")
    out = []
    for item in raw:
        if (not isinstance(item, (list, tuple)) or len(item) != 2
                or not isinstance(item[0], str)
                or not isinstance(item[1], (int, float)) or isinstance(item[1], bool)):
            raise LexrerankError(f"bad candidate {item!r}: expected [doc_id, score]")
        out.append((item[0], float(item[1])))
    return out


@app.task(name=RERANK_TASK, bind=True, throws=(LexrerankError,), resultrepr_maxsize=200)
def rerank(self: Task, index: str, query: str, candidates: list, model: str,
           explain: bool = True) -> dict[str, Any]:
    """Rerank first-stage ``candidates`` of ``index`` for ``query`` with ``model``.

    Returns :meth:`worker.rerank_service.RerankResult.to_dict` plus ``timing_ms``; without
    ``explain`` the evidence lists are left empty (less to ship through Redis).
    """
    _guard(self)
    if not isinstance(query, str) or not query.strip():
        raise LexrerankError("the query text is empty")
    pairs = _candidates(candidates)
    start = time.perf_counter()
    service = process_cache().service_covering(index, model, [d for d, _ in pairs])
    loaded = time.perf_counter()
    result = service.rerank(query, pairs).to_dict()
    if not explain:
        for hit in result["hits"]:
            hit["evidence"] = []
    result["timing_ms"] = {"load": round((loaded - start) * 1000, 3),
                           "rerank": round((time.perf_counter() - loaded) * 1000, 3)}
    return result


@app.task(name=EMBED_TASK, bind=True, throws=(LexrerankError,), resultrepr_maxsize=200)
def embed(self: Task, index: str, ids: list, model: str) -> dict[str, Any]:
    """Compute and store ``model``'s article vectors for the documents ``ids`` of ``index``.

    Resumable: documents already holding this model version are skipped. The index metadata
    is not touched (the job that fanned the chunks out records the version when all are
    done). This process's vector cache of ``index`` is dropped afterwards.
    """
    _guard(self)
    if (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)
            or len(ids) > MAX_EMBED_IDS):
        raise LexrerankError(f"ids must be a list of at most {MAX_EMBED_IDS} document ids")
    from dataclasses import asdict

    from indexer.article_vectors import embed_index

    cache = process_cache()
    report = embed_index(cache.client, index, cache.model(model), ids=ids, record=False,
                         show_progress=False)
    cache.invalidate(index)
    return asdict(report)


@app.task(name=PING_TASK)
def ping() -> dict[str, Any]:
    """This process's pid and loaded (index, model) pairs: readiness of the process itself."""
    return {"pid": os.getpid(), "loaded": process_cache().loaded()}


def preload() -> None:
    """Load the default model and the default index's vectors now, if asked to."""
    if os.environ.get(PRELOAD_ENV) != "1":
        return
    cache = process_cache()
    index, model = cache.settings.index, cache.settings.default_model
    try:
        cache.service(index, model)
    except LexrerankError as exc:
        # Not fatal: the worker still serves other indexes/models; requests for this one fail
        # with the same message and the gateway falls back.
        log.warning("preload of %s for index %s failed: %s", model, index, exc)


@after_setup_logger.connect
def _quiet_libraries(**_: Any) -> None:
    # opensearch-py logs every HTTP call at INFO: one line per scroll page while loading.
    logging.getLogger("opensearch").setLevel(logging.WARNING)


def init_process() -> None:
    """Per-process set-up of the process that runs tasks: torch threads, then preload."""
    apply_torch_threads()
    preload()


@worker_process_init.connect
def _preload_in_child(**_: Any) -> None:
    # Sent in each prefork child (each loads its own model: CUDA does not survive a fork)
    # and by the solo pool in the worker process itself.
    init_process()


@worker_ready.connect
def _preload_in_threads_pool(sender: Any = None, **_: Any) -> None:
    # The threads pool sends no worker_process_init: load here, before consuming.
    from celery.concurrency.thread import TaskPool as ThreadsPool

    if isinstance(getattr(sender, "pool", None), ThreadsPool):
        init_process()
