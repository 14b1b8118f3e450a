"""The presence beat: a thread in each task-running process that keeps its record in Redis.

The record's format and key are :mod:`worker.presence`'s; this module knows what the
process has loaded (:data:`LOADED_MODELS`, told by :mod:`worker.service_cache`) and who the
worker is (:data:`WORKER_IDENTITY`, set by :mod:`worker.task_signals` in the main process
before the pool forks), and writes the record every ``presence.BEAT_S`` seconds. Redis
errors are logged at debug level and retried on the next beat; the beat never dies.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from lexrerank.errors import LexrerankError
from reranker.registry import resolve_name
from worker import presence

log = logging.getLogger(__name__)
# What this process has loaded: model name -> (model_version, device).
LOADED_MODELS: dict[str, tuple[str, str]] = {}
# Set in the main process before children fork (celeryd_after_setup): who we are.
WORKER_IDENTITY: dict[str, Any] = {"name": None, "queues": []}


def model_loaded(name: str, model: Any) -> None:
    """A model was loaded in this process (called by worker.service_cache)."""
    LOADED_MODELS[name] = (str(getattr(model, "model_version", "unknown")),
                           str(getattr(model, "device", "cpu")))


def presence_record() -> dict[str, Any]:
    """This process's presence record (see worker.presence)."""
    from worker.service_cache import process_cache

    loaded = process_cache().loaded()
    models = [{"model": name, "model_version": version, "device": device,
               "indexes": sorted(i for i, m in loaded if m == name)}
              for name, (version, device) in LOADED_MODELS.items()]
    settings = process_cache().settings
    try:
        default = resolve_name(settings.default_model, settings.language, settings.model_dir)
    except LexrerankError:  # no model for the language: the record says what is loaded
        default = settings.default_model
    main = next((m for m in models if m["model"] == default), models[0] if models else {})
    return {"name": WORKER_IDENTITY["name"] or f"worker@{os.uname().nodename}",
            "pid": os.getpid(), "queues": WORKER_IDENTITY["queues"],
            "model": main.get("model"), "model_version": main.get("model_version"),
            "device": main.get("device"), "models": models}


def _beat_forever() -> None:
    from redis.exceptions import RedisError

    from lexrerank.config import get_settings
    from lexrerank.redis_tls import redis_client

    redis = redis_client(get_settings(), socket_timeout=2, socket_connect_timeout=2)
    while True:
        try:
            record = presence_record()
            redis.set(presence.presence_key(record["name"], record["pid"]),
                      presence.encode_presence(record), ex=presence.TTL_S)
        except (RedisError, OSError) as exc:
            log.debug("presence beat failed: %s", exc)
        except Exception:  # noqa: BLE001 - the beat must never die of a bug
            log.exception("presence beat failed")
        time.sleep(presence.BEAT_S)


def start_presence_beat() -> None:
    """Start this process's beat (a daemon thread)."""
    threading.Thread(target=_beat_forever, name="lexrerank-presence", daemon=True).start()
