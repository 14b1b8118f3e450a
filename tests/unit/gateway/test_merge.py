"""Merging a worker's rerank into the first-stage response, paging, and fallback shaping."""

from __future__ import annotations

import pytest

from gateway.merge import (
    MergeError,
    merge_fallback,
    merge_reranked,
    rerank_info,
    window_candidates,
    with_ext,
)
from tests.unit.gateway.stubs import (
    first_stage,
    worker_result,
)
from worker.protocol import ReasonCode


def test_merge_reorders_the_window_breaks_ties_by_first_stage_rank_and_pages() -> None:
    resp = first_stage(6)
    ranks = {f"d{i}": i for i in range(1, 7)}
    # d3 and d1 tie: d1 (first-stage rank 1) goes first.
    result = worker_result(["d3", "d1", "d2", "d4"], [0.9, 0.9, 0.5, 0.1], ranks)
    merged = merge_reranked(resp, result, window=4, from_=0, size=6, explain=False)
    ids = [h["_id"] for h in merged["hits"]["hits"]]
    assert ids == ["d1", "d3", "d2", "d4", "d5", "d6"]  # beyond the window: first-stage order
    top = merged["hits"]["hits"][0]
    assert top["_score"] == 0.9 and merged["hits"]["max_score"] == 0.9
    assert top["_rerank"] == {"first_stage_rank": 1, "first_stage_score": 9.0,
                              "model_score": 1.8}
    assert "_rerank" not in merged["hits"]["hits"][4]
    assert merged["hits"]["total"]["value"] == 1234
    assert merged["aggregations"] == {"a": {"value": 7}}


def test_merge_pages_and_explain() -> None:
    ranks = {f"d{i}": i for i in range(1, 5)}
    result = worker_result(["d4", "d3", "d2", "d1"], [0.4, 0.3, 0.2, 0.1], ranks)
    page = merge_reranked(first_stage(4), result, window=4, from_=1, size=2, explain=True)
    assert [h["_id"] for h in page["hits"]["hits"]] == ["d3", "d2"]
    assert page["hits"]["hits"][0]["_rerank"]["evidence"] == [
        {"sentence_index": 0, "sentence": "s of d3", "weight": 1.0}]
    beyond = merge_reranked(first_stage(4), result, window=4, from_=10, size=5, explain=False)
    assert beyond["hits"]["hits"] == []


def test_merge_refuses_an_answer_for_other_candidates() -> None:
    ranks = {"d1": 1, "d2": 2, "x": 3}
    with pytest.raises(MergeError):
        merge_reranked(first_stage(3), worker_result(["d1", "d2", "x"], [1, 1, 1], ranks),
                       window=3, from_=0, size=3, explain=False)


def test_a_malformed_answer_leaves_the_response_untouched() -> None:
    resp = first_stage(2)
    result = worker_result(["d2", "d1"], [0.9, 0.1], {"d1": 1, "d2": 2})
    del result["hits"][1]["model_score"]
    with pytest.raises(KeyError):
        merge_reranked(resp, result, window=2, from_=0, size=2, explain=False)
    assert resp == first_stage(2)


def test_window_candidates() -> None:
    assert window_candidates(first_stage(3), 2) == [["d1", 3.0], ["d2", 2.0]]
    assert window_candidates(first_stage(0), 5) == []
    dup = first_stage(2)
    dup["hits"]["hits"][1]["_id"] = "d1"
    with pytest.raises(MergeError):
        window_candidates(dup, 2)
    unscored = first_stage(1)
    unscored["hits"]["hits"][0]["_score"] = None
    with pytest.raises(MergeError):
        window_candidates(unscored, 1)


def test_fallback_pages_in_first_stage_order_and_ext_is_added() -> None:
    paged = merge_fallback(first_stage(5), from_=2, size=2)
    assert [h["_id"] for h in paged["hits"]["hits"]] == ["d3", "d4"]
    info = rerank_info("fallback", ReasonCode.TIMEOUT, "why", "m", None, 100, 0,
                       {"first_stage": 1.23456, "rerank": 2, "merge": 0, "total": 3.3})
    out = with_ext({"ext": {"other": 1}}, info)
    assert out["ext"]["other"] == 1
    assert out["ext"]["rerank"]["took_ms"]["first_stage"] == 1.235
    assert out["ext"]["rerank"]["status"] == "fallback" and out["ext"]["rerank"]["reason"]
    assert out["ext"]["rerank"]["reason_code"] == "timeout"


