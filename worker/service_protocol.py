"""The rerank service's HTTP contract: ``POST /_lexrerank/rerank``, version 1.

The gateway serves it (:mod:`gateway.rerank_endpoint`); the OpenSearch search-pipeline
plugin ``lexrerank-search-pipeline`` (``deploy/opensearch-plugins/lexrerank-search-pipeline``)
calls it from inside a cluster. Both sides follow this module; docs/search-pipeline.md is
the same contract in prose. It sits beside :mod:`worker.protocol` (the gateway-worker
messages): the endpoint runs the very same worker call as a reranked ``_search``.

Request (JSON object, ``Content-Type: application/json``; ``X-API-Key`` when the gateway
has API keys)::

    {"version": 1,
     "index": "statutes",               # the searched index; the hits' own _index wins
     "query_text": "...",
     "hits": [{"_id": "...", "_score": 12.5, "_index": "statutes-000001"}, ...],
     "model": "paraformer",             # optional: the gateway's default model
     "explain": false,                  # optional: evidence sentences in _rerank
     "timeout_ms": 480,                 # optional: the gateway's default deadline
     "window_size": 100}                # optional: reported in ext.rerank.window_size

``hits`` is the first stage's window, best first (at most ``window_size`` when given).
Unknown keys, a missing or different ``version``, wrong types and values outside the bounds
are a 400 in OpenSearch's error shape (``illegal_argument_exception``), as are the gateway's
own limits (models, query length, window, deadline). A 401 is a missing or wrong API key.

Answer (200) whenever the request was well formed, the rerank failing included::

    {"version": 1,
     "status": "ok" | "fallback",
     "hits": [{"_id": "...", "_score": 0.93, "_rerank": {...}}, ...],
     "rerank": {... the ext.rerank block ...}}

``hits``: with ``ok``, the window in its reranked order (fused score desc, ties by
first-stage rank): ``_score`` is the fused score and ``_rerank`` the block the gateway adds
to each hit, both computed by the gateway's own merge (:func:`gateway.merge.merge_reranked`);
with ``fallback``, empty: the caller keeps its first-stage order. ``rerank`` is the
``ext.rerank`` block of :func:`gateway.merge.rerank_info`; its ``took_ms`` holds the
service's own ``rerank``, ``merge`` and ``total`` (the caller reports its own first stage
and total). The service answers within ``timeout_ms`` (plus a few milliseconds of
clean-up); a caller gives up on its own deadline and falls back.

Which side computes what: the service computes every score, the order and every
``_rerank`` block; the caller only reorders its window's hits by ``hits``, copies
``_score``/``_rerank``, pages (``from``/``size``) and adds the ``ext.rerank`` block.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from worker.protocol import MAX_CANDIDATES, MAX_DOC_ID_CHARS, MAX_NAME_CHARS, MAX_QUERY_CHARS

SERVICE_PATH = "/_lexrerank/rerank"
PROTOCOL_VERSION = 1
REQUIRED_KEYS = frozenset({"version", "index", "query_text", "hits"})
OPTIONAL_KEYS = frozenset({"model", "explain", "timeout_ms", "window_size"})
HIT_KEYS = frozenset({"_id", "_score", "_index"})


class ServiceRequestError(ValueError):
    """A request this protocol does not accept: a 400 naming the problem."""


@dataclass(frozen=True)
class ServiceHit:
    """One first-stage hit of the window."""

    doc_id: str
    score: float
    index: str | None  # the hit's concrete index, when the caller knows it


@dataclass(frozen=True)
class ServiceRequest:
    """A checked ``POST /_lexrerank/rerank`` body (None: the gateway's default)."""

    index: str
    query_text: str
    hits: tuple[ServiceHit, ...]
    model: str | None = None
    explain: bool = False
    timeout_ms: float | None = None
    window_size: int | None = None

    @classmethod
    def from_json(cls, obj: Any) -> ServiceRequest:
        """Validate a request body; :class:`ServiceRequestError` naming the first problem."""
        if not isinstance(obj, Mapping):
            raise ServiceRequestError("the rerank request must be a JSON object")
        version = obj.get("version")
        if version != PROTOCOL_VERSION or isinstance(version, bool):
            raise ServiceRequestError(
                f"unsupported rerank protocol version {str(version)[:20]}: this service "
                f"speaks version {PROTOCOL_VERSION} (upgrade the plugin or the gateway)")
        unknown = set(obj) - REQUIRED_KEYS - OPTIONAL_KEYS
        missing = REQUIRED_KEYS - set(obj)
        if unknown:
            raise ServiceRequestError(f"unknown key(s) {sorted(map(str, unknown))[:5]} in the "
                                      f"rerank request; known: "
                                      f"{sorted(REQUIRED_KEYS | OPTIONAL_KEYS)}")
        if missing:
            raise ServiceRequestError(f"the rerank request lacks {sorted(missing)}")
        return cls(index=_name(obj["index"], "index"),
                   query_text=_query_text(obj["query_text"]),
                   hits=_hits(obj["hits"]),
                   model=None if obj.get("model") is None else _name(obj["model"], "model"),
                   explain=_explain(obj.get("explain", False)),
                   timeout_ms=_timeout(obj.get("timeout_ms")),
                   window_size=_window(obj.get("window_size"), len(obj["hits"])))


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_CHARS:
        raise ServiceRequestError(f"{what} must be a non-empty string of at most "
                                  f"{MAX_NAME_CHARS} characters")
    return value


def _query_text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ServiceRequestError("query_text must be a non-empty string")
    if len(value) > MAX_QUERY_CHARS:
        raise ServiceRequestError(f"query_text is longer than {MAX_QUERY_CHARS} characters")
    return value


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _hits(value: Any) -> tuple[ServiceHit, ...]:
    if not isinstance(value, list) or len(value) > MAX_CANDIDATES:
        raise ServiceRequestError(f"hits must be a list of at most {MAX_CANDIDATES} "
                                  '{"_id", "_score"} objects')
    out = []
    for position, hit in enumerate(value):
        if not isinstance(hit, Mapping) or set(hit) - HIT_KEYS:
            raise ServiceRequestError(f"hits[{position}] must be an object with _id, _score "
                                      "and optionally _index")
        doc_id, score, index = hit.get("_id"), hit.get("_score"), hit.get("_index")
        if not isinstance(doc_id, str) or not doc_id or len(doc_id) > MAX_DOC_ID_CHARS:
            raise ServiceRequestError(f"hits[{position}]._id must be a non-empty string of at "
                                      f"most {MAX_DOC_ID_CHARS} characters")
        if not _is_number(score):
            raise ServiceRequestError(f"hits[{position}]._score must be a finite number")
        if index is not None:
            index = _name(index, f"hits[{position}]._index")
        out.append(ServiceHit(doc_id, float(cast(float, score)), index))
    return tuple(out)


def _explain(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ServiceRequestError("explain must be true or false")
    return value


def _timeout(value: Any) -> float | None:
    if value is None:
        return None
    if not _is_number(value) or value <= 0:
        raise ServiceRequestError("timeout_ms must be a positive number of milliseconds")
    return float(value)


def _window(value: Any, hits: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ServiceRequestError("window_size must be a positive integer")
    if hits > value:
        raise ServiceRequestError(f"{hits} hits were sent for a window_size of {value}: send "
                                  "the window's hits only")
    return value


def service_answer(status: str, hits: list[dict[str, Any]], rerank: dict[str, Any]
                   ) -> dict[str, Any]:
    """The 200 answer: ``hits`` reranked (empty on fallback), ``rerank`` the ext block."""
    return {"version": PROTOCOL_VERSION, "status": status, "hits": hits, "rerank": rerank}
