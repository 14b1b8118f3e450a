"""Which concrete index answered a first stage: the worker scores with that index's vectors.

Searches name an alias (``statutes``) that a reindex job moves from one versioned index to
the next in one atomic call. Each OpenSearch hit carries the ``_index`` it came from, so the
worker is sent that concrete index, never the alias: a search whose candidates came from the
old index is scored with the old index's vectors, one from the new index with the new ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from gateway.merge import MergeError
from worker.protocol import ReasonCode


def hits_index(response: Mapping[str, Any], window: int, requested: str) -> str:
    """The one concrete index of the window's hits (``requested`` when hits name none).

    Raises :class:`MergeError` (the request falls back with that reason) when the hits come
    from several indexes: vectors of one index cannot score another's candidates.
    """
    hits = response.get("hits", {}).get("hits", [])[:window]
    # OpenSearch names a hit's index with a string.
    names = cast(set[str], {h.get("_index") for h in hits if isinstance(h, Mapping)} - {None})
    if not names:
        return requested
    if len(names) > 1:
        shown = ", ".join(sorted(names)[:3])
        raise MergeError(ReasonCode.MIXED_INDEXES,
                         f"the first-stage hits come from {len(names)} indexes ({shown}); "
                         "rerank one index, or an alias of one index, at a time")
    return names.pop()
