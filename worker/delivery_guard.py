"""Bounded redelivery: a message that keeps killing its worker is given up, not re-run forever.

With ``task_acks_late`` + ``task_reject_on_worker_lost`` a task whose process died (OOM, a
segfault in a native library, a kill) is put back on the queue. That is right once or twice;
a message that kills every worker it reaches must stop. Redis marks restored messages
``redelivered``; for those only (one extra Redis round trip, never on the normal path) we count
deliveries per task id and fail the task after :data:`MAX_REDELIVERIES`.
"""

from __future__ import annotations

from typing import Any

from lexrerank.errors import LexrerankError

MAX_REDELIVERIES = 2
KEY_PREFIX = "lexrerank:redeliveries:"


def is_redelivered(request: Any) -> bool:
    """True when the broker says this message was delivered before."""
    info = getattr(request, "delivery_info", None) or {}
    return bool(info.get("redelivered"))


def check_redelivery(redis_client: Any, task_id: str, ttl_s: int,
                     limit: int = MAX_REDELIVERIES) -> int:
    """Count one more redelivery of ``task_id``; raise once it exceeds ``limit``."""
    key = KEY_PREFIX + task_id
    pipe = redis_client.pipeline()
    pipe.incr(key)
    pipe.expire(key, ttl_s)
    count = int(pipe.execute()[0])
    if count > limit:
        raise LexrerankError(
            f"task {task_id} was redelivered {count} times (its worker died each time): "
            "giving up on it; see the worker logs for the crash")
    return count
