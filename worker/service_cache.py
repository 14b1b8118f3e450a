"""Per-process cache of loaded models and :class:`RerankService` per (index, model name).

A worker process loads a model once (on the GPU when there is one). Article vectors live in
one :class:`worker.vector_cache.VectorMemory` per process, of ``LEXRERANK_VECTOR_CACHE_MB``,
shared by every (index, model) service: a rerank reads only its missing (or changed)
candidates, in one ``mget``; nothing reloads an index. Models are cached by name, apart from
the vectors, so a request for an index without matching vectors costs one metadata read,
not a model load.

Which models a worker may load is bounded: the shipped names, the configured default
(``LEXRERANK_MODEL``) and ``LEXRERANK_MODELS``. A request cannot make a worker open an
arbitrary directory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from opensearchpy import OpenSearch

from lexrerank.config import Settings, get_settings
from reranker.model_names import DEFAULT_NAME, MODEL_NAMES
from reranker.registry import resolve_name
from worker import presence_beat
from worker import prometheus_metrics as worker_metrics
from worker.protocol import ReasonCode, RerankFailed
from worker.vector_cache import MIB, Gathered, VectorMemory

if TYPE_CHECKING:
    from worker.rerank_service import RerankService

log = logging.getLogger(__name__)


def allowed_models(settings: Settings) -> set[str]:
    """Model names/paths this worker may load."""
    return {*MODEL_NAMES, DEFAULT_NAME, settings.default_model, *settings.extra_models}


class ServiceCache:
    """Loaded models and services of this process; thread-safe (the threads pool shares it)."""

    def __init__(self, settings: Settings | None = None,
                 client: OpenSearch | None = None) -> None:
        self.settings = settings or get_settings()
        self._client = client
        self._models: dict[tuple[str, str], object] = {}  # (name, language) -> model
        self._services: dict[tuple[str, str], RerankService] = {}
        self._languages: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self.memory = VectorMemory(self.settings.vector_cache_mb * MIB)
        self._evictions_seen: dict[tuple[str, str], int] = {}  # published per service
        worker_metrics.vector_cache_budget(self.memory.budget_bytes)

    @property
    def client(self) -> OpenSearch:
        if self._client is None:
            from lexrerank.opensearch_client import opensearch_client

            self._client = opensearch_client(self.settings)
        return self._client

    def model(self, name: str, language: str | None = None):
        """The reranker ``name`` for corpus ``language`` (default: the configured one), loaded
        on first use, on CUDA + fp16 when available."""
        if name not in allowed_models(self.settings):
            raise RerankFailed(
                ReasonCode.UNKNOWN_MODEL,
                f"model {name!r} is not served by this worker: use one of "
                f"{', '.join(sorted(allowed_models(self.settings)))} "
                "(or add it to LEXRERANK_MODELS on the workers)")
        language = language or self.settings.language
        key = (name, language)
        with self._lock:
            if key not in self._models:
                from reranker.checkpoint import load_reranker
                from reranker.registry import checkpoint_path
                from worker.device import child_device

                start = time.perf_counter()
                self._models[key] = load_reranker(
                    checkpoint_path(name, language, self.settings.model_dir),
                    device=child_device(), cache_dir=self.settings.cache_dir,
                    backend=self.settings.encoder_backend)
                log.info("loaded model %s (%s) on %s in %.1fs", name, language,
                         getattr(self._models[key], "device", "cpu"),
                         time.perf_counter() - start)
                # Metrics and presence name the model "default" stands for (e.g. ensemble).
                served_as = resolve_name(name, language, self.settings.model_dir)
                worker_metrics.model_loaded(served_as, self._models[key])
                presence_beat.model_loaded(served_as, self._models[key])
            return self._models[key]

    def language_of(self, index: str) -> str | None:
        """The corpus language ``index`` records (read once per index and process)."""
        with self._lock:
            if index in self._languages:
                return self._languages[index]
        from indexer.article_vectors import index_language

        language = index_language(self.client, index)
        with self._lock:
            self._languages[index] = language
        return language

    def service(self, index: str, name: str) -> RerankService:
        """The :class:`worker.rerank_service.RerankService` of (index, model name)."""
        key = (index, name)
        with self._lock:
            cached = self._services.get(key)
        if cached is not None:
            return cached
        language = self.language_of(index)
        model = self.model(name, language)
        from worker.rerank_service import RerankService

        with self._lock:
            if key not in self._services:
                # Raises LexrerankError when the model does not fit the index's language or
                # the index holds no vectors of this model version (one metadata read; no
                # vectors are read until a rerank or a warm asks for them).
                self._services[key] = RerankService.for_model(
                    self.client, index, model, name, language=language, memory=self.memory,
                    compute_max=self.settings.vector_compute_max)
            return self._services[key]

    def gather(self, index: str, name: str, doc_ids: Sequence[str], compute: bool = True
               ) -> tuple[RerankService, Gathered]:
        """The service of (index, name) and its current vectors of ``doc_ids``, counted: a
        hit when every candidate was current in memory, else a miss, with the documents
        read (missing or stale) and the vectors computed. ``compute=False``: a document
        without vectors raises ``no_vectors`` instead (nothing counted)."""
        service = self.service(index, name)
        gathered = service.gather(doc_ids, compute=compute)
        stats = gathered.stats
        worker_metrics.vector_cache_gathered(service.index, name, stats.from_memory,
                                             read=stats.read, stale=stats.stale,
                                             computed=stats.computed)
        if not stats.from_memory:
            self._publish_usage()
        return service, gathered

    def warm(self, index: str, name: str, show_progress: bool = False) -> int:
        """Fill the memory with ``index``'s vectors for model ``name``, up to the budget (a
        scan that stops when the index's entries fill it). Returns the documents cached."""
        service = self.service(index, name)
        start = time.perf_counter()
        warmed = service.warm(show_progress=show_progress)
        worker_metrics.vector_cache_warmed(index, name, warmed)
        self._publish_usage()
        log.info("warmed %d articles of %s for %s in %.1fs (%.0f of %.0f MiB used)", warmed,
                 index, name, time.perf_counter() - start, self.memory.used_bytes / MIB,
                 self.memory.budget_bytes / MIB)
        return warmed

    def _publish_usage(self) -> None:
        """Set the size gauges of every service (a fill may have evicted another's)."""
        with self._lock:
            services = list(self._services.items())
        for key, service in services:
            evicted = sum(self.memory.evicted(c.key) for c in service.caches.values())
            new = evicted - self._evictions_seen.get(key, 0)
            self._evictions_seen[key] = evicted
            worker_metrics.vector_cache_size(*key, len(service.cache), service.cache.nbytes(),
                                             max(new, 0))

    def loaded(self) -> list[list[str]]:
        """The (index, model) pairs whose services are in memory."""
        with self._lock:
            return [list(key) for key in self._services]

    def evict_versions(self, prefix: str, keep: Sequence[str]) -> list[str]:
        """Forget the caches of indexes named ``prefix...`` other than ``keep``.

        A reindex job warms its new index and keeps the one it replaces (searches that
        started before the swap still need it); older versions of the alias are dropped,
        their vectors with them. Returns the evicted index names.
        """
        with self._lock:
            gone = [k for k in self._services if k[0].startswith(prefix) and k[0] not in keep]
            for key in gone:
                del self._services[key]
                worker_metrics.vector_cache_dropped(*key)
        for index in {index for index, _ in gone}:
            self.memory.drop_index(index)
        return sorted({index for index, _ in gone})

    def invalidate(self, index: str) -> None:
        """Forget ``index``: its services, recorded language and cached vectors."""
        with self._lock:
            self._languages.pop(index, None)
            for key in [k for k in self._services if k[0] == index]:
                del self._services[key]
                worker_metrics.vector_cache_dropped(*key)
        self.memory.drop_index(index)


_cache: ServiceCache | None = None


def process_cache() -> ServiceCache:
    """This process's cache (created on first use, so a forked child gets its own)."""
    global _cache
    if _cache is None:
        _cache = ServiceCache()
    return _cache
