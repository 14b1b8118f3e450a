"""Reading a ``_search`` that names the lexrerank pipeline: planning, options, query text.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.rerank_request import (
    RequestError,
    incompatible_reason,
    infer_query_text,
    names_pipeline,
    plan_search,
    resolve_path,
)


def test_plan_fetches_the_window_or_the_page_whichever_is_larger() -> None:
    body = {"query": {"match": {"content": "q"}}, "from": 30, "size": 10,
            "search_pipeline": "lexrerank",
            "ext": {"rerank": {"query_context": {"query_text": "q"}, "window_size": 20},
                    "other": {"keep": True}}}
    plan = plan_search([("search_pipeline", "lexrerank"), ("routing", "r")], body, "m", 500)
    assert plan.rerank.first_stage_size == 40
    assert plan.body["from"] == 0 and plan.body["size"] == 40
    assert "search_pipeline" not in plan.body
    assert plan.body["ext"] == {"other": {"keep": True}}
    assert plan.params == [("routing", "r")]
    assert body["ext"]["rerank"]  # the caller's body is not modified
    small = plan_search([], {"query": {"match": {"c": "q"}}}, "m", 500)
    assert (small.rerank.window, small.rerank.size, small.body["size"]) == (100, 10, 100)
    assert "ext" not in small.body


def test_url_from_and_size_win_and_are_not_forwarded() -> None:
    plan = plan_search([("from", "5"), ("size", "5")],
                       {"from": 0, "size": 50, "query": {"match": {"c": "q"}}}, "m", 500)
    assert (plan.rerank.from_, plan.rerank.size) == (5, 5)
    assert plan.params == []


def test_defaults_and_options() -> None:
    plan = plan_search([], {"query": {"match": {"c": "q"}}, "ext": {"rerank": {
        "model": "attentive-cnn", "timeout_ms": 250, "explain": True}}}, "paraformer", 1000)
    assert (plan.rerank.model, plan.rerank.timeout_ms, plan.rerank.explain) == (
        "attentive-cnn", 250, True)
    plan = plan_search([], {"query": {"match": {"c": "q"}}}, "paraformer", 1000)
    assert (plan.rerank.model, plan.rerank.timeout_ms, plan.rerank.explain) == (
        "paraformer", 1000, False)


@pytest.mark.parametrize("options", [
    {"window_size": 0}, {"window_size": 5000}, {"window_size": "ten"}, {"window_size": True},
    {"timeout_ms": 0}, {"explain": "yes"}, {"model": ""}, {"unknown": 1},
    {"query_context": "text"}, {"query_context": {}},
    {"query_context": {"query_text": "  "}},
    {"query_context": {"query_text_path": "query.match.missing"}},
])
def test_bad_options_are_request_errors(options: dict[str, Any]) -> None:
    with pytest.raises(RequestError):
        plan_search([], {"query": {"match": {"c": "q"}}, "ext": {"rerank": options}}, "m", 1)


@pytest.mark.parametrize("ext", [1, "rerank", [{"rerank": {}}], None])
def test_an_ext_that_is_not_an_object_is_a_request_error(ext: Any) -> None:
    # Found by the fuzz test: {"ext": 1} went upstream as it was.
    with pytest.raises(RequestError, match="ext must be an object"):
        plan_search([], {"query": {"match": {"c": "q"}}, "ext": ext}, "m", 1)


def test_query_text_sources() -> None:
    body = {"query": {"bool": {"must": [{"match": {"c": {"query": "deep"}}}]}}}
    assert resolve_path(body, "query.bool.must.0.match.c.query") == "deep"
    assert resolve_path(body, "query.bool.must.3") is None
    plan = plan_search([], {**body, "ext": {"rerank": {"query_context": {
        "query_text_path": "query.bool.must.0.match.c.query"}}}}, "m", 1)
    assert plan.rerank.query_text == "deep"
    assert infer_query_text({"query": {"match": {"c": "plain"}}}, []) == "plain"
    assert infer_query_text({"query": {"match_phrase": {"c": {"query": "p"}}}}, []) == "p"
    assert infer_query_text({"query": {"multi_match": {"query": "mm", "fields": ["a"]}}},
                            []) == "mm"
    assert infer_query_text({}, [("q", "uri search")]) == "uri search"
    assert infer_query_text(body, []) is None  # bool queries need query_context


def test_pipeline_selection_and_incompatible_requests() -> None:
    assert names_pipeline([("search_pipeline", "lexrerank")], {})
    assert names_pipeline([], {"search_pipeline": "lexrerank"})
    assert not names_pipeline([("search_pipeline", "other")], {})
    assert incompatible_reason([("scroll", "1m")], {})
    assert incompatible_reason([], {"sort": [{"date": "desc"}]})
    assert incompatible_reason([], {"search_after": [1]})
    assert incompatible_reason([], {"sort": ["_score"]}) is None
    assert incompatible_reason([], {"sort": [{"_score": {"order": "desc"}}]}) is None


# ---------------------------------------------------------------------------- merge


