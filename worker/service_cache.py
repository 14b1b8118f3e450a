"""Per-process cache of loaded models and :class:`RerankService` per (index, model name).

A worker process loads a model once (on the GPU when there is one) and an index's article
vectors once, then serves every rerank from memory. Models are cached by name, apart from the
vectors, so a request for an index without matching vectors costs one metadata read, not a
model load.

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
        self._loads = 0  # vector cache loads so far (hit/miss accounting)

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
                start = time.perf_counter()
                # Raises LexrerankError when the model does not fit the index's language or
                # the index holds no vectors of this model version.
                self._services[key] = RerankService.for_model(self.client, index, model, name,
                                                              language=language)
                log.info("loaded %d article vectors of %s for %s in %.1fs",
                         len(self._services[key].cache), index, name,
                         time.perf_counter() - start)
                self._loads += 1
                worker_metrics.vector_cache_loaded(index, name, self._services[key])
            return self._services[key]

    def service_covering(self, index: str, name: str, doc_ids: Sequence[str]
                         ) -> RerankService:
        """The service, reloaded once if some ``doc_ids`` are newer than its vector cache."""
        loads = self._loads
        service = self.service(index, name)
        if all(d in service.cache for d in doc_ids):
            if loads == self._loads:  # served from memory (a load counted as a miss)
                worker_metrics.vector_cache_hit(index, name)
            return service
        self.invalidate(index)
        return self.service(index, name)

    def loaded(self) -> list[list[str]]:
        """The (index, model) pairs whose services are in memory."""
        with self._lock:
            return [list(key) for key in self._services]

    def evict_versions(self, prefix: str, keep: Sequence[str]) -> list[str]:
        """Forget the caches of indexes named ``prefix...`` other than ``keep``.

        A reindex job warms its new index and keeps the one it replaces (searches that
        started before the swap still need it); older versions of the alias are dropped.
        Returns the evicted index names.
        """
        with self._lock:
            gone = [k for k in self._services if k[0].startswith(prefix) and k[0] not in keep]
            for key in gone:
                del self._services[key]
                worker_metrics.vector_cache_dropped(*key)
        return sorted({index for index, _ in gone})

    def invalidate(self, index: str) -> None:
        """Forget the vector caches of ``index`` (after an embed, or when ids are missing)."""
        with self._lock:
            self._languages.pop(index, None)
            for key in [k for k in self._services if k[0] == index]:
                del self._services[key]
                worker_metrics.vector_cache_dropped(*key)


_cache: ServiceCache | None = None


def process_cache() -> ServiceCache:
    """This process's cache (created on first use, so a forked child gets its own)."""
    global _cache
    if _cache is None:
        _cache = ServiceCache()
    return _cache
