"""The gateway application with stubbed OpenSearch and workers: fallbacks, merges, pass-through.

The real services are exercised in tests/integration/test_gateway.py.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import httpx
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.proxy import BUFFER_LIMIT
from lexrerank.config import get_settings
from tests.unit.gateway.stubs import (
    StubRerankClient,
    closed_port_url,
    opensearch_stub,
    stub_app,
    worker_result,
)


def test_app_fallback_is_a_200_in_first_stage_order() -> None:
    seen: list[httpx.Request] = []
    workers = StubRerankClient(error="no answer from a rerank worker within 5 ms")
    with stub_app(workers, opensearch_stub(seen)) as http:
        # The stub fails at once; a deadline of a few ms would let a loaded machine miss it
        # in the first stage already (a 504), so the deadline is generous.
        resp = http.post("/i/_search?search_pipeline=lexrerank", json={
            "size": 3, "query": {"match": {"c": "minor"}}, "ext": {"rerank": {
                "window_size": 10, "timeout_ms": 2000}}})
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
