"""The gateway's operational routes, all under ``/_lexrerank/`` (never proxied to OpenSearch).

- ``GET /_lexrerank/metrics``: Prometheus text (:mod:`gateway.metrics_exposition`; queue
  depths and reindex progress are read from Redis at scrape time,
  :mod:`gateway.scrape_collectors`);
- ``GET /_lexrerank/healthz``: 200 ``{"status": "alive"}`` while the process serves;
- ``GET /_lexrerank/readyz``: 200 when ready, else 503; the body names each check (see
  :mod:`gateway.readiness`);
- ``GET /_lexrerank/ops``: one JSON snapshot for the ops page (shape in docs/ops.md).

``/metrics``, ``/healthz`` and ``/readyz`` are OpenSearch's (index names), passed through.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI
from redis import Redis
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.metrics_exposition import CONTENT_TYPE_LATEST, render_metrics, scrape_registry
from gateway.readiness import Readiness
from gateway.recent_requests import RECENT
from gateway.scrape_collectors import queue_depths, read_reindex_jobs, scrape_redis
from lexrerank.config import Settings
from worker.presence import KEY_PREFIX as PRESENCE_PREFIX
from worker.presence import TTL_S as PRESENCE_TTL_S
from worker.presence import decode_presence

OPS_PREFIX = "/_lexrerank/"
METRICS_PATH, HEALTHZ_PATH, READYZ_PATH = (f"{OPS_PREFIX}{name}"
                                           for name in ("metrics", "healthz", "readyz"))
WORKER_FIELDS = ("name", "pid", "queues", "model", "model_version", "device", "models",
                 "updated_at")


def read_workers(redis: Redis, now: float) -> list[dict[str, Any]]:
    """Presence records of the worker processes (see worker.presence), with ``ok``."""
    keys = sorted(redis.scan_iter(match=f"{PRESENCE_PREFIX}*", count=100))
    records = [decode_presence(raw) for raw in redis.mget(keys)] if keys else []
    workers = []
    for record in records:
        if record is None:
            continue
        fresh = now - float(record.get("updated_at") or 0) <= PRESENCE_TTL_S
        workers.append({**{k: record.get(k) for k in WORKER_FIELDS},
                        "ok": bool(fresh and record.get("model_version"))})
    return workers


def ops_snapshot(redis: Redis, settings: Settings) -> dict[str, Any]:
    """The body of ``GET /_lexrerank/ops`` (blocking Redis reads: run it in a thread)."""
    now = time.time()
    body: dict[str, Any] = {"time": now, "gateway": RECENT.summary(now), "queues": {},
                            "workers": [], "reindex_jobs": [], "errors": []}
    try:
        depths = queue_depths(redis, [settings.rerank_queue, settings.embed_queue])
        body["queues"] = {"rerank": depths[settings.rerank_queue],
                          "embed": depths[settings.embed_queue]}
        body["workers"] = read_workers(redis, now)
        body["reindex_jobs"] = read_reindex_jobs(redis)
    except (RedisError, OSError) as exc:
        body["errors"].append(f"redis: {type(exc).__name__}: {exc}")
    return body


def add_ops_routes(app: FastAPI, settings: Settings) -> None:
    """Register the operational routes on ``app`` (before the catch-all proxy route)."""
    redis = scrape_redis(settings)
    scrape = scrape_registry(settings, redis)
    readiness = Readiness(settings)

    @app.get(METRICS_PATH, include_in_schema=False)
    async def metrics() -> Response:
        # Scrape-time Redis reads are blocking (with short timeouts): off the event loop.
        return Response(await run_in_threadpool(render_metrics, scrape),
                        media_type=CONTENT_TYPE_LATEST)

    @app.get(HEALTHZ_PATH, include_in_schema=False)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "alive"})

    @app.get(READYZ_PATH, include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        body = await readiness.check(request.app.state.upstream, request.app.state.rerank_client)
        return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)

    @app.get(f"{OPS_PREFIX}ops", include_in_schema=False)
    async def ops() -> JSONResponse:
        return JSONResponse(await run_in_threadpool(ops_snapshot, redis, settings),
                            headers={"Cache-Control": "no-store"})
