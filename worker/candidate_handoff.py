"""The worker's side of the candidates handoff: wait for the first stage's candidates.

The gateway publishes ``lexrerank.rerank`` the moment a search arrives, with the query text
but without candidates, naming a handoff key. The worker encodes the query, then blocks on
that Redis list (``BLPOP``) for the message the gateway pushes when OpenSearch has answered:
the concrete index and the ``[doc_id, score]`` candidates, or an abort with the reason when
there is nothing to rerank (an OpenSearch error, no hits, a client that went away). The
encode, the task's trip through Redis and the first stage run at the same time instead of one
after another.

The key naming and the messages are :mod:`worker.protocol`'s. The key lives in Redis only
until the deadline (plus a margin): an unread message of a gateway whose worker never came
expires on its own.
"""

from __future__ import annotations

import time
from typing import Any

from worker.protocol import Handoff, ReasonCode, RerankFailed, check_handoff_key, parse_handoff

# Each BLPOP waits at most this long: under the Redis client's socket timeout (5 s), which a
# blocking command must not reach.
MAX_BLOCK_S = 4.0


def receive(client: Any, key: str, timeout_s: float) -> Handoff:
    """Wait up to ``timeout_s`` for the handoff on ``key`` (a redis-py client's BLPOP).

    Raises :class:`worker.protocol.RerankFailed`: ``bad_request`` when the key is not a
    handoff key or the message is malformed, ``called_off`` when the gateway called the
    rerank off, ``deadline_passed`` when nothing came in time (the gateway gave up or died).
    """
    check_handoff_key(key)
    deadline = time.monotonic() + max(timeout_s, 0.0)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RerankFailed(ReasonCode.DEADLINE_PASSED,
                               f"no candidates from the gateway within {timeout_s * 1000:.0f} "
                               "ms (it gave up on this rerank)")
        # BLPOP counts its timeout in seconds (fractions since Redis 6); 0 would mean forever.
        item = client.blpop([key], timeout=max(min(left, MAX_BLOCK_S), 0.001))
        if item is not None:
            return parse_handoff(item[1])
