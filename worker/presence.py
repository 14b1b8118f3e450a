"""Worker presence: each rerank-serving process says in Redis who it is and what it serves.

Key ``lexrerank:worker:<hostname>:<pid>``, a JSON object refreshed every
:data:`BEAT_S` seconds and expiring after :data:`TTL_S` (a dead process disappears):
``{name, pid, queues, model, model_version, device, models: [{model, model_version, device,
indexes}], updated_at}``. The gateway's ops endpoint lists these records; readiness itself
asks a worker directly (the ``lexrerank.ping`` task). No prometheus-client here.
"""

from __future__ import annotations

import json
import time
from typing import Any

KEY_PREFIX = "lexrerank:worker:"
BEAT_S = 10.0
TTL_S = 30


def presence_key(name: str, pid: int) -> str:
    """The Redis key of one worker process."""
    return f"{KEY_PREFIX}{name}:{pid}"


def encode_presence(record: dict[str, Any]) -> str:
    """The stored JSON of ``record`` (``updated_at`` stamped now)."""
    return json.dumps({**record, "updated_at": time.time()})


def decode_presence(raw: bytes | str | None) -> dict[str, Any] | None:
    """A presence record, or None for a missing or foreign value."""
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except (ValueError, TypeError):
        return None
    return record if isinstance(record, dict) else None
