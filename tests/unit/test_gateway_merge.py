"""The gateway's pure logic (request planning, merge, paging, fallback shaping), with stubs.

The real services are exercised in tests/integration/test_gateway.py; here OpenSearch is a
stub server (tests/unit/opensearch_stub.py) and the workers a stub object.
"""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.merge import (
    MergeError,
    merge_fallback,
    merge_reranked,
    rerank_info,
    window_candidates,
    with_ext,
)
from gateway.proxy import BUFFER_LIMIT
from gateway.rerank_request import (
    RequestError,
    incompatible_reason,
    infer_query_text,
    names_pipeline,
    plan_search,
    resolve_path,
)
from lexrerank.cli import expand_via_gateway
from lexrerank.config import get_settings
from tests.unit.opensearch_stub import stub_upstream
from worker.protocol import ReasonCode, RerankFailed, answer_of


def first_stage(n: int, total: int = 1234) -> dict[str, Any]:
    """An OpenSearch-shaped response with ``n`` hits d1..dn, BM25 scores n..1."""
    return {"took": 3, "timed_out": False,
            "hits": {"total": {"value": total, "relation": "eq"}, "max_score": float(n),
                     "hits": [{"_index": "i", "_id": f"d{i}", "_score": float(n - i + 1),
                               "_source": {"t": i}} for i in range(1, n + 1)]},
            "aggregations": {"a": {"value": 7}}}


def worker_result(order: list[str], scores: list[float], ranks: dict[str, int]
                  ) -> dict[str, Any]:
    return {"model": "m", "model_version": "v1", "query_truncated": False,
            "hits": [{"doc_id": d, "score": s, "first_stage_rank": ranks[d],
                      "first_stage_score": 10.0 - ranks[d], "model_score": s * 2,
                      "evidence": [{"sentence_index": 0, "sentence": f"s of {d}",
                                    "weight": 1.0}]}
                     for d, s in zip(order, scores, strict=True)]}


# ---------------------------------------------------------------------------- planning


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


def test_worker_failures_become_readable_reasons() -> None:
    answer = {"hits": [], "model": "m", "model_version": "v", "query_truncated": False,
              "timing_ms": {}}
    assert answer_of({"status": "SUCCESS", "result": answer}) == answer
    with pytest.raises(RerankFailed, match="LexrerankError: index 'x' has no") as failed:
        answer_of({"status": "FAILURE", "result": {
            "exc_type": "LexrerankError", "exc_message": ["index 'x' has no vectors"]}})
    assert failed.value.code is ReasonCode.WORKER_ERROR
    with pytest.raises(RerankFailed, match="expired in the rerank queue") as expired:
        answer_of({"status": "REVOKED", "result": {
            "exc_type": "TaskRevokedError", "exc_message": ["expired"]}})
    assert expired.value.code is ReasonCode.TIMEOUT
    with pytest.raises(RerankFailed, match="REVOKED"):
        answer_of({"status": "REVOKED", "result": None})


def test_via_gateway_takes_an_optional_url() -> None:
    url = "http://127.0.0.1:8000"
    assert expand_via_gateway(["search", "q", "--via-gateway"], url) == [
        "search", "q", "--via-gateway", url]
    assert expand_via_gateway(["search", "--via-gateway", "the query"], url) == [
        "search", "--via-gateway", url, "the query"]
    assert expand_via_gateway(["eval", "--via-gateway", "http://gw:9"], url) == [
        "eval", "--via-gateway", "http://gw:9"]


# ---------------------------------------------------------------------------- app, stubbed


class StubRerankClient:
    """Stands in for :class:`gateway.rerank_client.RerankClient`: answers with ``result`` or
    raises ``error`` (a fallback reason) with ``code``."""

    def __init__(self, result: dict[str, Any] | None = None, error: str | None = None,
                 code: ReasonCode = ReasonCode.TIMEOUT) -> None:
        self.result, self.error, self.code, self.calls = result, error, code, []
        self.begun = self.closed = 0

    def begin_rerank(self, query: str, model: str, explain: bool,
                     timeout_s: float) -> StubPending:
        self.begun += 1
        return StubPending(self, query, model, explain)

    async def answer(self, index: str, query: str, candidates: list, model: str,
                     explain: bool) -> dict[str, Any]:
        self.calls.append((index, query, candidates, model, explain))
        if self.error:
            raise RerankFailed(self.code, self.error)
        return self.result or {}

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


class StubPending:
    """Stands in for :class:`gateway.rerank_client.PendingRerank`."""

    def __init__(self, workers: StubRerankClient, query: str, model: str, explain: bool) -> None:
        self.workers, self.query, self.model, self.explain = workers, query, model, explain

    async def finish(self, index: str, candidates: list) -> dict[str, Any]:
        return await self.workers.answer(index, self.query, candidates, self.model,
                                         self.explain)

    async def close(self, reason: str = "") -> None:
        self.workers.closed += 1


def stub_app(workers: StubRerankClient, handler) -> TestClient:
    settings = replace(get_settings(), opensearch_url="http://opensearch.test")
    upstream = stub_upstream(settings, handler)
    return TestClient(create_app(settings, upstream=upstream, rerank_client=workers))


def closed_port_url() -> str:
    """A loopback URL nothing listens on (an OpenSearch that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def opensearch_stub(seen: list[httpx.Request]):
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        # Streams, as a real transport gives (the proxy relays raw chunks).
        if request.url.path.endswith("/_search"):
            body = json.loads(request.content)
            payload = json.dumps(first_stage(body["size"])).encode()
            return httpx.Response(200, stream=httpx.ByteStream(payload),
                                  headers={"content-type": "application/json"})
        return httpx.Response(201, stream=httpx.ByteStream(b'{"echo":true}'),
                              headers={"content-type": "application/json", "x-os": "1"})
    return handler


def test_app_fallback_is_a_200_in_first_stage_order() -> None:
    seen: list[httpx.Request] = []
    workers = StubRerankClient(error="no answer from a rerank worker within 5 ms")
    with stub_app(workers, opensearch_stub(seen)) as http:
        resp = http.post("/i/_search?search_pipeline=lexrerank", json={
            "size": 3, "query": {"match": {"c": "minor"}}, "ext": {"rerank": {
                "window_size": 10, "timeout_ms": 5}}})
    assert resp.status_code == 200
    data = resp.json()
    assert [h["_id"] for h in data["hits"]["hits"]] == ["d1", "d2", "d3"]
    assert data["ext"]["rerank"]["status"] == "fallback"
    assert "no answer" in data["ext"]["rerank"]["reason"]
    assert data["ext"]["rerank"]["reason_code"] == "timeout"
    sent = json.loads(seen[0].content)
    assert (sent["size"], sent["from"], "ext" in sent) == (10, 0, False)
    assert "search_pipeline" not in str(seen[0].url)
    assert workers.calls[0][1] == "minor" and len(workers.calls[0][2]) == 10
    assert workers.begun == workers.closed == 1  # published on arrival, always closed


def test_app_turns_a_rerank_side_bug_into_a_fallback() -> None:
    class Broken(StubRerankClient):
        async def answer(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            raise RuntimeError("boom")

    with stub_app(Broken(), opensearch_stub([])) as http:
        resp = http.post("/i/_search?search_pipeline=lexrerank",
                         json={"size": 2, "query": {"match": {"c": "q"}}})
    assert resp.status_code == 200
    assert resp.json()["ext"]["rerank"]["status"] == "fallback"
    assert "RuntimeError: boom" in resp.json()["ext"]["rerank"]["reason"]
    assert resp.json()["ext"]["rerank"]["reason_code"] == "gateway_error"


def test_app_merges_a_worker_answer() -> None:
    ranks = {f"d{i}": i for i in range(1, 4)}
    workers = StubRerankClient(result=worker_result(["d2", "d3", "d1"], [0.9, 0.5, 0.1], ranks))
    with stub_app(workers, opensearch_stub([])) as http:
        resp = http.post("/i/_search?search_pipeline=lexrerank", json={
            "size": 2, "query": {"match": {"c": "minor"}},
            "ext": {"rerank": {"window_size": 3}}})
    data = resp.json()
    assert data["ext"]["rerank"]["status"] == "ok"
    assert data["ext"]["rerank"]["model_version"] == "v1"
    assert data["ext"]["rerank"]["reason_code"] is None
    assert [h["_id"] for h in data["hits"]["hits"]] == ["d2", "d3"]
    assert resp.headers["x-request-id"]


def test_app_passes_other_requests_through_and_maps_outages() -> None:
    seen: list[httpx.Request] = []
    with stub_app(StubRerankClient(), opensearch_stub(seen)) as http:
        resp = http.put("/i/_doc/1?refresh=true", content=b'{"a":1}',
                        headers={"content-type": "application/json",
                                 "authorization": "Basic dXM6cHc=", "x-request-id": "r1"})
        assert resp.status_code == 201 and resp.content == b'{"echo":true}'
        assert resp.headers["x-os"] == "1" and resp.headers["x-request-id"] == "r1"
        assert seen[-1].headers["authorization"] == "Basic dXM6cHc="
        assert seen[-1].url.query == b"refresh=true" and seen[-1].content == b'{"a":1}'
        # The client's own headers go upstream, not httpx's defaults.
        assert seen[-1].headers["user-agent"] == "testclient"
        http.get("/_cat/health", headers={"accept-encoding": "identity"})
        assert seen[-1].headers["accept-encoding"] == "identity"
        http.get("/i/_doc/a%2Fb?routing=x%20y")  # an id with a slash stays one segment
        assert seen[-1].url.raw_path == b"/i/_doc/a%2Fb?routing=x%20y"
        plain = http.post("/i/_search", json={"size": 2, "query": {"match_all": {}}})
        assert "ext" not in plain.json()  # no pipeline named: plain search

    with TestClient(create_app(replace(get_settings(), opensearch_url=closed_port_url()),
                               rerank_client=StubRerankClient())) as http:
        for resp in (http.get("/_cat/indices"),
                     http.post("/i/_search?search_pipeline=lexrerank",
                               json={"query": {"match": {"c": "q"}}})):
            assert resp.status_code == 503
            assert resp.json()["error"]["type"] == "opensearch_unavailable_exception"
            assert resp.json()["status"] == 503


def test_large_answers_and_head_requests_pass_through_whole() -> None:
    big = bytes(range(256)) * (3 * BUFFER_LIMIT // 256)  # streamed, not buffered

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "application/octet-stream", "x-os": "1"}
        if request.method == "HEAD":  # (the stub server sets the length itself)
            return httpx.Response(200, headers=headers)
        return httpx.Response(200, content=big, headers=headers)

    with stub_app(StubRerankClient(), handler) as http:
        for _ in range(2):  # the second on a connection the first gave back
            resp = http.get("/big/_doc/1")
            assert resp.status_code == 200 and resp.content == big
            assert resp.headers["x-os"] == "1"
        head = http.head("/big")
        assert head.status_code == 200 and head.content == b"" and head.headers["x-os"] == "1"
        assert http.get("/big/_doc/1").content == big  # HEAD left nothing behind


def test_unknown_gateway_paths_are_404s_and_never_reach_opensearch() -> None:
    seen: list[httpx.Request] = []
    with stub_app(StubRerankClient(), opensearch_stub(seen)) as http:
        resp = http.get("/_lexrerank/no-such-page")
        assert resp.status_code == 404
        assert resp.json()["error"]["type"] == "resource_not_found_exception"
        assert http.get("/_cat/indices").status_code == 201  # other paths still proxied
    assert [r.url.path for r in seen] == ["/_cat/indices"]
