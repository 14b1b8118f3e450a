"""The Celery tasks ``lexrerank.rerank``, ``embed``, ``warm`` and ``ping`` (JSON in, JSON out).

Models and vector caches live in the worker CHILD process (:mod:`worker.service_cache`):
models loaded on first use, or at start-up when ``LEXRERANK_WORKER_PRELOAD=1`` (set by
``lexrerank worker``), and kept in memory; article vectors within the process's budget
(``LEXRERANK_VECTOR_CACHE_MB``), pre-warmed at start-up and filled on demand. Expected
errors (no vectors for this model version, unknown model, bad input) are
:class:`LexrerankError`: the task fails with that message, the worker carries on. The
rerank task raises them as :class:`worker.protocol.RerankFailed` with a reason code, and the
gateway falls back with that code and the message as its reason. The messages are
:mod:`worker.protocol`'s.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery import Task
from celery.signals import after_setup_logger
from opensearchpy.exceptions import NotFoundError

from lexrerank.errors import LexrerankError
from worker import candidate_handoff
from worker.celery_app import VISIBILITY_TIMEOUT_S, app, when_task_process_starts
from worker.delivery_guard import check_redelivery, is_redelivered
from worker.device import apply_torch_threads
from worker.fault_injection import maybe_delay
from worker.fetch_threads import fetch_threads
from worker.protocol import (
    EMBED_TASK,
    PING_TASK,
    RERANK_TASK,
    WARM_TASK,
    Handoff,
    ReasonCode,
    RerankAnswer,
    RerankFailed,
    RerankRequest,
    as_rerank_failed,
)
from worker.service_cache import ServiceCache, process_cache
from worker.task_signals import BATCH_SIZE_ATTR

if TYPE_CHECKING:
    from worker.rerank_service import RerankService
    from worker.vector_cache import Gathered

log = logging.getLogger(__name__)
MAX_EMBED_IDS = 10_000

# Models never come from a hub: a worker started without the CLI stays offline too.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _guard(task: Task) -> None:
    if is_redelivered(task.request):
        check_redelivery(task.app.backend.client, task.request.id, 2 * VISIBILITY_TIMEOUT_S)


@app.task(name=RERANK_TASK, bind=True, throws=(LexrerankError,), resultrepr_maxsize=200)
def rerank(self: Task, request: dict[str, Any]) -> RerankAnswer:
    """Rerank the first-stage candidates of a search (:class:`worker.protocol.RerankRequest`).

    The query is encoded first, then the index and candidates are awaited on the request's
    handoff key for up to ``wait_ms`` (the gateway runs its first stage meanwhile). Returns a
    :class:`worker.protocol.RerankAnswer`. Every expected failure is raised as
    :class:`worker.protocol.RerankFailed`, whose reason code the gateway reads from the
    failure meta.
    """
    try:
        _guard(self)
        maybe_delay()  # a test hook (worker/fault_injection.py); no-op unless configured
        return _rerank(self, RerankRequest.from_json(request))
    except LexrerankError as exc:
        raise as_rerank_failed(exc) from None


@dataclass
class _Fetched:
    """What the fetch thread brought: the handoff, and the window's vectors unless some
    had to be computed (``gathered`` None: the main thread gathers after the encode)."""

    handoff: Handoff
    received_at: float  # perf_counter() when the handoff came
    gather_s: float
    service: RerankService | None = None
    gathered: Gathered | None = None


def _fetch(client: Any, cache: ServiceCache, request: RerankRequest) -> _Fetched:
    """Wait for the handoff, then one mget: the held candidates' versions and the missing
    ones' vectors (never a reload)."""
    handoff = candidate_handoff.receive(client, request.handoff, request.wait_ms / 1000)
    received = time.perf_counter()
    try:
        # Computing an article's missing vectors needs the encoder the main thread is
        # encoding the query with (a tokenizer is not safe to share between threads): a
        # window that needs it is gathered again after the encode, where that is allowed.
        service, gathered = cache.gather(handoff.index, request.model,
                                         [d for d, _ in handoff.candidates], compute=False)
    except RerankFailed as exc:
        if exc.code != ReasonCode.NO_VECTORS:
            raise
        return _Fetched(handoff, received, time.perf_counter() - received)
    return _Fetched(handoff, received, time.perf_counter() - received, service, gathered)


def _rerank(task: Task, request: RerankRequest) -> RerankAnswer:
    """The rerank of a validated request: encode while the handoff and vectors come, score."""
    cache = process_cache()
    t0 = time.perf_counter()
    # Encoded before the index is known, by the default language's model.
    prepared_by = cache.model(request.model)
    fetching = fetch_threads().submit(_fetch, task.app.backend.client, cache, request)
    prepared = prepared_by.prepare_query(request.query)
    t1 = time.perf_counter()
    fetched = fetching.result()  # raises what the fetch raised (deadline, called off, ...)
    handoff = fetched.handoff
    setattr(task.request, BATCH_SIZE_ATTR, len(handoff.candidates))  # for the task metrics
    t2 = time.perf_counter()
    service, gathered = fetched.service, fetched.gathered
    if service is None or gathered is None:
        service, gathered = cache.gather(handoff.index, request.model,
                                         [d for d, _ in handoff.candidates])
    t3 = time.perf_counter()
    if prepared_by is not service.model:
        # An index of another language is scored by its own model: encode again with it.
        prepared = service.model.prepare_query(request.query)
    t4 = time.perf_counter()
    result = service.rerank_prepared(prepared, handoff.candidates, explain=request.explain,
                                     gathered=gathered).to_dict()
    t5 = time.perf_counter()
    # Idle: the encode was done and the first stage had not answered yet.
    idle = max(0.0, fetched.received_at - t1)
    timing = {"load": fetched.gather_s + (t3 - t2), "encode": (t1 - t0) + (t4 - t3),
              "wait": fetched.received_at - t0, "rerank": (t5 - t0) - idle}
    result["timing_ms"] = {name: round(s * 1000, 3) for name, s in timing.items()}
    return result


@app.task(name=EMBED_TASK, bind=True, throws=(LexrerankError,), resultrepr_maxsize=200)
def embed(self: Task, index: str, ids: list, model: str) -> dict[str, Any]:
    """Compute and store ``model``'s article vectors for the documents ``ids`` of ``index``.

    Resumable: documents already holding this model version are skipped. The index metadata
    is not touched (the job that fanned the chunks out records the version when all are
    done). A rerank cache needs no telling: it sees each written document's new version.
    """
    _guard(self)
    if (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)
            or len(ids) > MAX_EMBED_IDS):
        raise LexrerankError(f"ids must be a list of at most {MAX_EMBED_IDS} document ids")
    from dataclasses import asdict

    from indexer.article_vectors import embed_index

    cache = process_cache()
    # One encode call for the whole chunk: the encoder sorts its sentences by length, and
    # the reindex job sends chunks of similar lengths, so little is spent on padding.
    model_for_index = cache.model(model, cache.language_of(index))
    report = embed_index(cache.client, index, model_for_index, ids=ids, record=False,
                         show_progress=False, batch_size=max(len(ids), 1))
    return asdict(report)


@app.task(name=WARM_TASK, bind=True, throws=(LexrerankError,), resultrepr_maxsize=200)
def warm(self: Task, index: str, models: list, evict_prefix: str | None = None,
         keep: list | None = None) -> dict[str, Any]:
    """Load ``models``' vectors of the concrete ``index`` into this (rerank) process.

    Sent by a reindex job before it swaps its alias, so the first searches on the new index
    find the vectors in memory: as many as the budget holds (``LEXRERANK_VECTOR_CACHE_MB``;
    the rest are read on demand). With ``evict_prefix``, caches of other indexes of that
    alias (``<alias>-v``) not in ``keep`` are dropped first. Returns this process's pid,
    the documents cached per model, the budget and its use, and the resident memory before
    and after (MiB).
    """
    from worker.process_memory import peak_rss_mb, rss_mb

    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise LexrerankError("models must be a list of model names")
    cache = process_cache()
    evicted = cache.evict_versions(evict_prefix, list(keep or [index])) if evict_prefix else []
    before = rss_mb()
    start = time.perf_counter()
    documents = {name: cache.warm(index, name) for name in models}
    return {"pid": os.getpid(), "index": index, "documents": documents, "evicted": evicted,
            "load_ms": round((time.perf_counter() - start) * 1000, 1),
            "cache_budget_mb": round(cache.memory.budget_bytes / 2**20, 1),
            "cache_used_mb": round(cache.memory.used_bytes / 2**20, 1),
            "rss_before_mb": before, "rss_mb": rss_mb(), "peak_rss_mb": peak_rss_mb()}


@app.task(name=PING_TASK, bind=True)
def ping(self: Task, index: str | None = None, model: str | None = None) -> dict[str, Any]:
    """This process's pid and loaded (index, model) pairs: readiness of the process itself.

    With ``index`` and ``model`` (the gateway's /readyz), also whether this process serves
    them: ``serving: {index, model, model_version, device}``, or ``error`` saying why not.
    """
    out: dict[str, Any] = {"pid": os.getpid(), "hostname": self.request.hostname,
                           "loaded": process_cache().loaded()}
    if isinstance(index, str) and isinstance(model, str):
        try:
            from indexer.aliases import resolve_concrete

            cache = process_cache()
            concrete = resolve_concrete(cache.client, index)
            service = cache.service(concrete, model)
            out["serving"] = {"index": concrete, "model": model,
                              "model_version": service.model_version,
                              "device": str(getattr(service.model, "device", "cpu"))}
        except Exception as exc:  # noqa: BLE001 - reported to the probe, not raised
            out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def preload() -> None:
    """Load the default model now, if asked to, and (``LEXRERANK_VECTOR_CACHE_PREWARM``)
    the default index's vectors up to the cache budget."""
    cache = process_cache()
    if not cache.settings.worker_preload:
        return
    index, model = cache.settings.index, cache.settings.default_model
    try:
        from indexer.aliases import resolve_concrete

        # The gateway names the concrete index of its hits (an alias moves on a reindex).
        index = resolve_concrete(cache.client, index)
        cache.service(index, model)
        if cache.settings.vector_cache_prewarm:
            cache.warm(index, model)
    except (LexrerankError, NotFoundError) as exc:
        # Not fatal (the index may not exist yet: a reindex job creates it): the worker still
        # serves other indexes/models; requests for this one fail and the gateway falls back.
        log.warning("preload of %s for index %s failed: %s", model, index, exc)


@after_setup_logger.connect
def _quiet_libraries(**_: Any) -> None:
    # opensearch-py logs every HTTP call at INFO: one line per scroll page while loading.
    logging.getLogger("opensearch").setLevel(logging.WARNING)


def init_process() -> None:
    """Per-process set-up of the process that runs tasks: torch threads, then preload."""
    apply_torch_threads()
    preload()


# In each prefork child: each loads its own model (CUDA does not survive a fork).
when_task_process_starts(init_process)
