"""Scrape-time metrics read from Redis: queue depths and reindex job progress.

Collected when Prometheus scrapes (``GET /_lexrerank/metrics``), with short Redis timeouts
so a dead Redis cannot stall a scrape (it reports ``lexrerank_queue_depth_scrape_ok`` 0):

- ``lexrerank_queue_depth{queue}`` (Redis ``LLEN`` of each Celery queue, priority lists
  included) and ``lexrerank_queue_depth_scrape_ok``;
- the ``lexrerank_reindex_*`` gauges per alias, from the ``lexrerank:reindex:<alias>``
  records (:mod:`lexrerank.reindex_progress`).
"""

from __future__ import annotations

from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError

from lexrerank.config import Settings
from lexrerank.redis_tls import redis_client

# Redis calls made at scrape time: a dead Redis must not stall a scrape.
SCRAPE_REDIS_TIMEOUT_S = 0.25
# kombu's Redis transport keeps priority messages in extra lists "<queue>\x06\x16<pri>".
KOMBU_PRIORITY_SEP, KOMBU_PRIORITY_STEPS = "\x06\x16", (3, 6, 9)


def scrape_redis(settings: Settings) -> Redis:
    """A synchronous Redis client with short timeouts, for scrape-time reads."""
    return redis_client(settings, socket_timeout=SCRAPE_REDIS_TIMEOUT_S,
                        socket_connect_timeout=SCRAPE_REDIS_TIMEOUT_S)


def queue_keys(queue: str) -> list[str]:
    """The Redis lists holding ``queue``'s messages (plain and per priority)."""
    return [queue, *(f"{queue}{KOMBU_PRIORITY_SEP}{p}" for p in KOMBU_PRIORITY_STEPS)]


def queue_depths(redis: Redis, queues: list[str]) -> dict[str, int]:
    """Messages waiting per queue (one pipelined round trip)."""
    pipe = redis.pipeline(transaction=False)
    for queue in queues:
        for key in queue_keys(queue):
            pipe.llen(key)
    counts = pipe.execute()
    per = len(KOMBU_PRIORITY_STEPS) + 1
    return {q: int(sum(counts[i * per:(i + 1) * per])) for i, q in enumerate(queues)}


class QueueDepthCollector(Collector):
    """``lexrerank_queue_depth{queue}`` and ``lexrerank_queue_depth_scrape_ok``, read at scrape."""

    def __init__(self, redis: Redis, queues: list[str]) -> None:
        self.redis = redis
        self.queues = queues

    def describe(self):
        yield GaugeMetricFamily("lexrerank_queue_depth", "Messages waiting in a Celery queue.",
                                labels=["queue"])
        yield GaugeMetricFamily("lexrerank_queue_depth_scrape_ok",
                                "1 when Redis answered the queue depth read of this scrape.")

    def collect(self):
        depth = GaugeMetricFamily("lexrerank_queue_depth", "Messages waiting in a Celery queue.",
                                  labels=["queue"])
        ok = 1
        try:
            for queue, count in queue_depths(self.redis, self.queues).items():
                depth.add_metric([queue], count)
        except (RedisError, OSError):
            ok = 0
        yield depth
        yield GaugeMetricFamily("lexrerank_queue_depth_scrape_ok",
                                "1 when Redis answered the queue depth read of this scrape.",
                                value=ok)


def read_reindex_jobs(redis: Redis) -> list[dict[str, Any]]:
    """Every reindex job record (see lexrerank.reindex_progress)."""
    from lexrerank.reindex_progress import read_all_progress

    return read_all_progress(redis)


REINDEX_GAUGES = (
    # (metric name, record field, help)
    ("lexrerank_reindex_documents", "documents_total", "Documents the reindex job will load."),
    ("lexrerank_reindex_documents_loaded", "documents_loaded", "Documents loaded so far."),
    ("lexrerank_reindex_chunks", "chunks_total", "Embed chunks the job fanned out."),
    ("lexrerank_reindex_chunks_done", "chunks_done", "Embed chunks done."),
    ("lexrerank_reindex_chunks_failed", "chunks_failed", "Embed chunks failed."),
    ("lexrerank_reindex_eta_seconds", "eta_s", "Estimated seconds left."),
    ("lexrerank_reindex_started_timestamp_seconds", "started_at", "Job start (unix time)."),
    ("lexrerank_reindex_updated_timestamp_seconds", "updated_at",
     "Last progress update (unix time); a reindex is stuck when it stops moving."),
)


class ReindexCollector(Collector):
    """Reindex job progress per alias, read from Redis at scrape."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def _families(self) -> tuple[dict[str, GaugeMetricFamily], GaugeMetricFamily,
                                 GaugeMetricFamily]:
        gauges = {name: GaugeMetricFamily(name, text, labels=["alias"])
                  for name, _, text in REINDEX_GAUGES}
        info = GaugeMetricFamily("lexrerank_reindex_info",
                                 "1 per reindex job: its alias, target index and state.",
                                 labels=["alias", "index", "state"])
        ratio = GaugeMetricFamily("lexrerank_reindex_progress_ratio",
                                  "Fraction done: loaded documents, then embedded chunks.",
                                  labels=["alias"])
        return gauges, info, ratio

    def describe(self):
        gauges, info, ratio = self._families()
        yield from gauges.values()
        yield info
        yield ratio

    def collect(self):
        gauges, info, ratio = self._families()
        try:
            jobs = read_reindex_jobs(self.redis)
        except (RedisError, OSError):
            jobs = []
        for job in jobs:
            alias = str(job.get("alias", "?"))
            for name, field, _ in REINDEX_GAUGES:
                value = job.get(field)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    gauges[name].add_metric([alias], float(value))
            info.add_metric([alias, str(job.get("index", "")), str(job.get("state", ""))], 1)
            ratio.add_metric([alias], reindex_ratio(job))
        yield from gauges.values()
        yield info
        yield ratio


def reindex_ratio(job: dict[str, Any]) -> float:
    """0..1: half for loading the documents, half for embedding the chunks."""
    if job.get("state") == "swapped":
        return 1.0

    def part(done: Any, total: Any) -> float:
        if not isinstance(total, (int, float)) or total <= 0:
            return 0.0
        return min(float(done or 0) / total, 1.0)

    return round(0.5 * part(job.get("documents_loaded"), job.get("documents_total"))
                 + 0.5 * part(job.get("chunks_done"), job.get("chunks_total")), 4)
