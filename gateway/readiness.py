"""Readiness of the gateway (``GET /readyz``): OpenSearch, Redis, and a worker that serves.

Three checks run concurrently, each with a short timeout:

- ``opensearch``: ``GET /`` answers 200;
- ``redis``: ``PING`` answers;
- ``workers``: a worker process consuming the rerank queue answers the ``lexrerank.ping``
  task for the default index and model (``LEXRERANK_INDEX``, ``LEXRERANK_MODEL``): it has that
  model and the index's vectors for its version loaded (or loads them within the timeout).

The result is cached for :data:`CACHE_S` seconds (concurrent probes share one check), so
probes every second cost one worker ping every few seconds. With Redis up and no worker
answering, the rerank client is told (:meth:`RerankClient.saw_workers`): its timeouts count
as ``no_worker`` for a while.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from celery import states
from prometheus_client import Gauge

from gateway.opensearch_upstream import UPSTREAM_ERRORS, OpenSearchUpstream
from gateway.rerank_client import RerankClient
from lexrerank.config import Settings, safe_url
from worker.protocol import PING_TASK

CACHE_S = 5.0
OPENSEARCH_TIMEOUT_S, REDIS_TIMEOUT_S, WORKER_TIMEOUT_S = 1.0, 1.0, 2.0

READY_CHECK = Gauge("lexrerank_gateway_ready_check",
                    "1 when the last readiness check passed, per check (opensearch, redis, "
                    "workers).", ["check"], multiprocess_mode="max")


async def check_opensearch(upstream: OpenSearchUpstream, settings: Settings
                           ) -> dict[str, Any]:
    """``{"ok", "detail"}`` for OpenSearch's root endpoint."""
    try:
        resp = await upstream.root(OPENSEARCH_TIMEOUT_S)
    except UPSTREAM_ERRORS as exc:
        return {"ok": False, "detail": f"{safe_url(settings.opensearch_url)} unreachable: "
                                       f"{type(exc).__name__}: {exc}"}
    if resp.status != 200:
        return {"ok": False, "detail": f"{safe_url(settings.opensearch_url)} answered HTTP "
                                       f"{resp.status}"}
    try:
        info = json.loads(resp.body)
        detail = f"{info.get('cluster_name')} {info.get('version', {}).get('number')}"
    except (ValueError, AttributeError):
        detail = "answered"
    return {"ok": True, "detail": detail}


async def check_redis(rerank_client: RerankClient) -> dict[str, Any]:
    """``{"ok", "detail"}`` for the broker's Redis."""
    ok = await rerank_client.ping()
    where = rerank_client.redis_where()
    return {"ok": ok, "detail": f"{where} answered PING" if ok else f"{where} does not answer"}


async def ping_worker(rerank_client: RerankClient, index: str, model: str,
                      timeout_s: float = WORKER_TIMEOUT_S) -> dict[str, Any]:
    """The ping task's result meta from a worker on the rerank queue (raises on timeout).

    Same path as a rerank (:meth:`RerankClient.call`), so it proves what a search needs: a
    worker consuming this queue that answers through Redis.
    """
    return await rerank_client.call(PING_TASK, [], {"index": index, "model": model},
                                    timeout_s)


async def check_workers(rerank_client: RerankClient, settings: Settings) -> dict[str, Any]:
    """``{"ok", "detail", "queue", "index", "model", "workers": [...]}``."""
    queue = rerank_client.queue
    out: dict[str, Any] = {"queue": queue, "index": settings.index,
                           "model": settings.default_model, "workers": []}
    try:
        meta = await ping_worker(rerank_client, settings.index, settings.default_model)
    except TimeoutError:
        return {**out, "ok": False, "detail": (
            f"no worker answered on queue {queue!r} within "
            f"{WORKER_TIMEOUT_S:.1f}s (start one: `lexrerank worker`)")}
    except Exception as exc:  # noqa: BLE001 - Redis down or a broken answer: not ready
        return {**out, "ok": False, "detail": f"worker ping failed: {type(exc).__name__}: "
                                              f"{exc}"}
    if meta.get("status") != states.SUCCESS:
        result = meta.get("result")
        why = (f"{result.get('exc_type')}: {result.get('exc_message')}"
               if isinstance(result, dict) else meta.get("status"))
        return {**out, "ok": False, "detail": f"the worker's ping task failed: {why}"}
    answer = meta.get("result") or {}
    out["workers"] = [{k: answer.get(k) for k in ("hostname", "pid", "loaded")}]
    serving = answer.get("serving")
    if not serving:
        error = answer.get("error") or "the worker did not report what it serves"
        return {**out, "ok": False, "detail": f"a worker answered but cannot serve "
                                              f"{settings.default_model} on {settings.index}: "
                                              f"{error}"}
    out["workers"][0].update(serving)
    return {**out, "ok": True, "detail": (
        f"{answer.get('hostname')} pid {answer.get('pid')} serves {serving.get('model')} "
        f"{serving.get('model_version')} on {settings.index}")}


class Readiness:
    """The cached readiness state of one gateway process."""

    def __init__(self, settings: Settings, cache_s: float = CACHE_S) -> None:
        self.settings = settings
        self.cache_s = cache_s
        self._body: dict[str, Any] | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def check(self, upstream: OpenSearchUpstream,
                    rerank_client: RerankClient) -> dict[str, Any]:
        """``{"status": "ready"|"not_ready", "checks": {...}, "checked_at": unix_s}``."""
        async with self._lock:
            if self._body is not None and time.monotonic() - self._at < self.cache_s:
                return self._body
            opensearch, redis, worker = await asyncio.gather(
                check_opensearch(upstream, self.settings), check_redis(rerank_client),
                check_workers(rerank_client, self.settings))
            checks = {"opensearch": opensearch, "redis": redis, "workers": worker}
            for name, result in checks.items():
                READY_CHECK.labels(name).set(1 if result["ok"] else 0)
            # With Redis up and no worker answering, a timeout fallback means "no worker".
            rerank_client.saw_workers(not (redis["ok"] and not worker["ok"]))
            ready = all(c["ok"] for c in checks.values())
            self._body = {"status": "ready" if ready else "not_ready", "checks": checks,
                          "checked_at": time.time()}
            self._at = time.monotonic()
            return self._body
