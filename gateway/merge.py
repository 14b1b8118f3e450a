"""Merging a worker's rerank into the first-stage response, paging, and fallback (pure).

The first-stage response holds the top ``max(window, from+size)`` hits, best first. Hits
inside the window are reordered by the fused score (ties: first-stage rank, so the order is
deterministic and pages are stable across requests); hits beyond the window keep their
first-stage order and score. Then the user's ``from``/``size`` cut the page. Totals,
aggregations and every other key of the response are left as OpenSearch returned them.

The functions modify the response they are given (the gateway's own freshly parsed copy):
copying a window of hits with their ``_source`` would cost more than the merge itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.protocol import ReasonCode, RerankAnswer


class MergeError(ValueError):
    """The first stage or the worker's answer cannot be merged: the request falls back with
    ``code`` (a :class:`worker.protocol.ReasonCode`) and ``str(exc)`` as its reason."""

    def __init__(self, code: ReasonCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def window_candidates(response: Mapping[str, Any], window: int) -> list[list[Any]]:
    """``[[doc_id, first_stage_score], ...]`` of the hits inside the window, best first."""
    hits = response.get("hits", {}).get("hits", [])[:window]
    ids = [h.get("_id") for h in hits]
    if any(not isinstance(i, str) for i in ids):
        raise MergeError(ReasonCode.HITS_WITHOUT_ID,
                         "first-stage hits carry no _id (does the request drop it, e.g. with "
                         'stored_fields "_none_"?): reranking needs each hit\'s _id')
    if len(set(ids)) != len(ids):
        raise MergeError(ReasonCode.MIXED_INDEXES,
                         "the first stage returned the same _id twice (several indexes?); "
                         "rerank one index at a time")
    out = []
    for hit in hits:
        if not isinstance(hit.get("_score"), (int, float)):
            raise MergeError(ReasonCode.HITS_WITHOUT_SCORE, "first-stage hits carry no _score")
        out.append([hit["_id"], float(hit["_score"])])
    return out


def _page(hits: list[dict[str, Any]], from_: int, size: int) -> list[dict[str, Any]]:
    return hits[from_:from_ + size]


def rerank_info(status: str, reason_code: ReasonCode | None, reason: str | None, model: str,
                model_version: str | None, window: int, reranked: int,
                took_ms: Mapping[str, float], worker_ms: float | None = None,
                query_truncated: bool = False) -> dict[str, Any]:
    """The ``ext.rerank`` block of a response (``reason_code``, ``reason``: None when ok).

    Beyond the contract's keys: ``reranked`` (hits actually reordered), ``worker_ms`` (the
    worker's own compute time; the rest of ``took_ms.rerank`` is queueing and transport) and
    ``query_truncated`` (the model read only the first tokens of a query longer than its
    encoder's limit; BM25 still saw all of it).
    """
    return {"status": status,
            "reason_code": None if reason_code is None else ReasonCode(reason_code).value,
            "reason": reason, "model": model, "model_version": model_version,
            "window_size": window, "reranked": reranked,
            "took_ms": {k: round(v, 3) for k, v in took_ms.items()},
            "worker_ms": None if worker_ms is None else round(worker_ms, 3),
            "query_truncated": query_truncated}


def with_ext(response: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """``response`` with ``ext.rerank = info`` (other ``ext`` keys kept)."""
    ext = response.get("ext")
    response["ext"] = {**(ext if isinstance(ext, dict) else {}), "rerank": info}
    return response


def merge_reranked(response: dict[str, Any], result: RerankAnswer, window: int,
                   from_: int, size: int, explain: bool) -> dict[str, Any]:
    """The first-stage ``response`` reordered by the worker's ``result``, then paged.

    ``result`` is the ``lexrerank.rerank`` task's answer, checked by
    :func:`worker.protocol.parse_answer`: ``hits`` with ``doc_id``, ``score`` (fused),
    ``first_stage_rank``, ``first_stage_score``, ``model_score``, ``evidence``. Each reranked
    hit gets ``_score`` = fused score and ``_rerank``; ``evidence`` only when ``explain``.
    Raises :class:`MergeError` (``bad_answer``) when the result is not for these candidates.
    """
    merged = response
    hits = merged.get("hits", {}).get("hits", [])
    head, tail = hits[:window], hits[window:]
    by_id = {h["_id"]: h for h in head}
    scored = result.get("hits", [])
    if sorted(r["doc_id"] for r in scored) != sorted(by_id):
        raise MergeError(ReasonCode.BAD_ANSWER,
                         "the worker answered for other candidates than the first stage's")
    ordered = sorted(scored, key=lambda r: (-float(r["score"]), int(r["first_stage_rank"])))
    # Read the whole answer before touching a hit: a malformed one must leave the response
    # intact for the fallback.
    updates = []
    for r in ordered:
        info: dict[str, Any] = {"first_stage_rank": int(r["first_stage_rank"]),
                                "first_stage_score": float(r["first_stage_score"]),
                                "model_score": float(r["model_score"])}
        if explain:
            info["evidence"] = [{"sentence_index": e.get("sentence_index"),
                                 "sentence": e["sentence"], "weight": float(e["weight"])}
                                for e in r.get("evidence", [])]
        updates.append((by_id[r["doc_id"]], float(r["score"]), info))
    reranked = []
    for hit, score, info in updates:
        hit["_score"] = score
        hit["_rerank"] = info
        reranked.append(hit)
    if reranked:
        merged["hits"]["max_score"] = reranked[0]["_score"]
    if "hits" in merged:
        merged["hits"]["hits"] = _page(reranked + tail, from_, size)
    return merged


def merge_fallback(response: dict[str, Any], from_: int, size: int) -> dict[str, Any]:
    """The first-stage ``response`` paged in first-stage order (nothing reranked)."""
    merged = response
    if "hits" in merged:
        merged["hits"]["hits"] = _page(merged["hits"].get("hits", []), from_, size)
    return merged
