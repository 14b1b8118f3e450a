"""Candidates handed to a running rerank task, so the query encode overlaps the first stage.

The gateway publishes ``lexrerank.rerank`` the moment a search arrives, with the query text
but without candidates, naming a handoff key. The worker encodes the query, then blocks on
that Redis list (``BLPOP``) for the message the gateway pushes when OpenSearch has answered:
the concrete index and the ``[doc_id, score]`` candidates, or an abort with the reason when
there is nothing to rerank (an OpenSearch error, no hits, a client that went away). The
encode, the task's trip through Redis and the first stage run at the same time instead of one
after another.

Messages are JSON. The key lives in Redis only until the deadline (plus a margin): an unread
message of a gateway whose worker never came expires on its own.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from lexrerank.errors import LexrerankError

KEY_PREFIX = "lexrerank:candidates:"
# Kept this long after the deadline: long enough for a worker that took the task just in time.
TTL_MARGIN_S = 5
# Each BLPOP waits at most this long: under the Redis client's socket timeout (5 s), which a
# blocking command must not reach.
MAX_BLOCK_S = 4.0


def handoff_key(task_id: str) -> str:
    """The Redis list that carries task ``task_id``'s candidates."""
    return f"{KEY_PREFIX}{task_id}"


def key_ttl_s(timeout_s: float) -> int:
    """Seconds the handoff key is kept for a request with ``timeout_s`` left."""
    return math.ceil(timeout_s) + TTL_MARGIN_S


def candidates_message(index: str, candidates: list[list[Any]]) -> bytes:
    """The message for a first stage that found ``candidates`` in the concrete ``index``."""
    return json.dumps({"index": index, "candidates": candidates},
                      separators=(",", ":")).encode()


def abort_message(reason: str) -> bytes:
    """The message that tells the task there is nothing to rerank, and why."""
    return json.dumps({"abort": reason}).encode()


def parse_message(raw: bytes | str) -> tuple[str, Any]:
    """``(index, candidates)`` of a handoff message; :class:`LexrerankError` for an abort."""
    try:
        message = json.loads(raw)
    except ValueError as exc:
        raise LexrerankError(f"unreadable candidates message: {exc}") from None
    if not isinstance(message, dict):
        raise LexrerankError("the candidates message is not a JSON object")
    if "abort" in message:
        raise LexrerankError(f"the gateway called the rerank off: {message['abort']}")
    index = message.get("index")
    if not isinstance(index, str) or not index:
        raise LexrerankError("the candidates message names no index")
    return index, message.get("candidates")


def receive(client: Any, key: str, timeout_s: float) -> tuple[str, Any]:
    """Wait up to ``timeout_s`` for the handoff on ``key`` (a redis-py client's BLPOP).

    Raises :class:`LexrerankError` when the key is not a handoff key, when the gateway called
    the rerank off, or when nothing came in time (the gateway gave up or died).
    """
    if not isinstance(key, str) or not key.startswith(KEY_PREFIX):
        raise LexrerankError(f"{key!r} is not a candidates handoff key")
    deadline = time.monotonic() + max(timeout_s, 0.0)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise LexrerankError(f"no candidates from the gateway within {timeout_s * 1000:.0f} "
                                 "ms (it gave up on this rerank)")
        # BLPOP counts its timeout in seconds (fractions since Redis 6); 0 would mean forever.
        item = client.blpop([key], timeout=max(min(left, MAX_BLOCK_S), 0.001))
        if item is not None:
            return parse_message(item[1])
