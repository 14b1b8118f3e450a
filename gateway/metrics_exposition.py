"""The Prometheus text of ``GET /_lexrerank/metrics``: process metrics, then scrape-time ones.

Multi-process: ``uvicorn --workers N`` runs N processes. When ``PROMETHEUS_MULTIPROC_DIR`` is
set (``lexrerank serve --workers N`` sets a fresh one), prometheus-client keeps the values in
per-process files there and :func:`render_metrics` merges them with ``MultiProcessCollector``,
as prometheus-client documents. The directory must be set before
:mod:`gateway.prometheus_metrics` is imported.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
)
from redis import Redis

from gateway.scrape_collectors import QueueDepthCollector, ReindexCollector, scrape_redis
from lexrerank.config import Settings
from lexrerank.prometheus_dir import process_registry


def scrape_registry(settings: Settings, redis: Redis | None = None) -> CollectorRegistry:
    """A registry of the scrape-time collectors (queue depths, reindex jobs) for ``settings``."""
    redis = redis or scrape_redis(settings)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(QueueDepthCollector(redis, [settings.rerank_queue, settings.embed_queue]))
    registry.register(ReindexCollector(redis))
    return registry


def render_metrics(scrape: CollectorRegistry) -> bytes:
    """Prometheus text: the process (or multi-process) metrics, then the scrape-time ones."""
    return generate_latest(process_registry()) + generate_latest(scrape)


__all__ = ["CONTENT_TYPE_LATEST", "process_registry", "render_metrics", "scrape_registry"]
