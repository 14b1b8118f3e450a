"""Where a running reindex job publishes its progress: one JSON record per alias in Redis.

Key ``lexrerank:reindex:<alias>``, a JSON object with the fields of :data:`FIELDS` (``state``
one of :data:`STATES`; times in unix seconds), expiring a day after its last update. The job
writes it (:func:`write_progress`); ops metrics and pages read every job's record
(:func:`read_all_progress`). The field names are a contract with those readers.
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis import Redis

KEY_PREFIX = "lexrerank:reindex:"
TTL_S = 24 * 3600
STATES = ("loading", "embedding", "verifying", "swapped", "failed")
FIELDS = ("alias", "index", "models", "state", "documents_total", "documents_loaded",
          "chunks_total", "chunks_done", "chunks_failed", "started_at", "updated_at", "eta_s",
          "error")


def progress_key(alias: str) -> str:
    """The Redis key of ``alias``'s job record."""
    return f"{KEY_PREFIX}{alias}"


def new_record(alias: str, index: str, models: list[str]) -> dict[str, Any]:
    """A fresh record (state ``loading``, zero counts) for a job building ``index``."""
    now = time.time()
    return {"alias": alias, "index": index, "models": list(models), "state": "loading",
            "documents_total": 0, "documents_loaded": 0, "chunks_total": 0, "chunks_done": 0,
            "chunks_failed": 0, "started_at": now, "updated_at": now, "eta_s": None,
            "error": None}


def write_progress(redis: Redis, record: dict[str, Any]) -> None:
    """Store ``record`` (stamping ``updated_at``) under its alias's key with a one-day TTL."""
    if record.get("state") not in STATES:
        raise ValueError(f"state must be one of {STATES}, not {record.get('state')!r}")
    record["updated_at"] = time.time()
    redis.set(progress_key(record["alias"]), json.dumps(record), ex=TTL_S)


def read_progress(redis: Redis, alias: str) -> dict[str, Any] | None:
    """``alias``'s job record, or None when there is none (or it is not valid JSON)."""
    raw = redis.get(progress_key(alias))
    return _decode(raw)


def read_all_progress(redis: Redis) -> list[dict[str, Any]]:
    """Every job record in Redis (running, finished or failed within the last day)."""
    keys = sorted(redis.scan_iter(match=f"{KEY_PREFIX}*", count=100))
    if not keys:
        return []
    records = (_decode(raw) for raw in redis.mget(keys))
    return [r for r in records if r is not None]


def _decode(raw: bytes | str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except (ValueError, TypeError):
        return None  # someone else's key under our prefix: not ours to report
    return record if isinstance(record, dict) else None
