"""``POST /_lexrerank/rerank`` with stubbed workers: the same merge as a reranked search.

The real plugin-to-gateway path is exercised in tests/integration/test_search_pipeline_plugin.py.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from starlette.testclient import TestClient

from gateway.app import create_app
from lexrerank.config import get_settings
from tests.unit.gateway.stubs import StubRerankClient, first_stage, opensearch_stub, stub_app
from tests.unit.gateway.stubs import worker_result as stub_answer
from tests.unit.opensearch_stub import stub_upstream
from worker.protocol import ReasonCode
from worker.service_protocol import PROTOCOL_VERSION, SERVICE_PATH

ORDER = ["d3", "d1", "d2", "d4"]
SCORES = [0.9, 0.8, 0.8, 0.1]
RANKS = {"d1": 1, "d2": 2, "d3": 3, "d4": 4}


def service_body(n: int = 4, **extra: Any) -> dict[str, Any]:
    """The window the plugin sends: the first stage's top ``n`` hits."""
    hits = [{"_id": h["_id"], "_score": h["_score"], "_index": h["_index"]}
            for h in first_stage(n)["hits"]["hits"]]
    return {"version": PROTOCOL_VERSION, "index": "i", "query_text": "minor consent",
            "hits": hits, "model": "paraformer", "window_size": n, **extra}


def test_endpoint_answers_the_gateway_merge_of_the_window() -> None:
    workers = StubRerankClient(result=stub_answer(ORDER, SCORES, RANKS))
    with stub_app(workers, opensearch_stub([])) as http:
        resp = http.post(SERVICE_PATH, json=service_body(explain=True))
        searched = http.post("/i/_search?search_pipeline=lexrerank", json={
            "size": 4, "query": {"match": {"c": "minor consent"}},
            "ext": {"rerank": {"window_size": 4, "explain": True}}}).json()
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert (data["version"], data["status"]) == (PROTOCOL_VERSION, "ok")
    # Fused score desc, ties by first-stage rank: d1 before d2 at 0.8.
    assert [h["_id"] for h in data["hits"]] == ["d3", "d1", "d2", "d4"]
    searched_hits = searched["hits"]["hits"]
    assert [h["_id"] for h in data["hits"]] == [h["_id"] for h in searched_hits]
    assert [h["_score"] for h in data["hits"]] == [h["_score"] for h in searched_hits]
    assert [h["_rerank"] for h in data["hits"]] == [h["_rerank"] for h in searched_hits]
    assert data["hits"][0]["_rerank"]["evidence"][0]["sentence"] == "s of d3"
    # The ext.rerank block has the gateway's keys; the stages timed here are the service's.
    assert set(data["rerank"]) == set(searched["ext"]["rerank"])
    assert set(data["rerank"]["took_ms"]) == {"rerank", "merge", "total"}
    assert (data["rerank"]["model_version"], data["rerank"]["window_size"]) == ("v1", 4)
    index, query, candidates, model, explain = workers.calls[0]
    assert (index, query, model, explain) == ("i", "minor consent", "paraformer", True)
    assert candidates == [["d1", 4.0], ["d2", 3.0], ["d3", 2.0], ["d4", 1.0]]
    assert workers.begun == workers.closed == 2


def test_endpoint_falls_back_with_the_worker_s_reason() -> None:
    workers = StubRerankClient(error="no worker serves queue rerank", code=ReasonCode.NO_WORKER)
    with stub_app(workers, opensearch_stub([])) as http:
        resp = http.post(SERVICE_PATH, json=service_body())
    assert resp.status_code == 200
    data = resp.json()
    assert (data["status"], data["hits"]) == ("fallback", [])
    assert data["rerank"]["reason_code"] == "no_worker"
    assert data["rerank"]["reason"] == "no worker serves queue rerank"


def test_endpoint_falls_back_on_an_answer_for_other_candidates() -> None:
    workers = StubRerankClient(result=stub_answer(["d1", "x"], [1.0, 0.5], {"d1": 1, "x": 2}))
    with stub_app(workers, opensearch_stub([])) as http:
        resp = http.post(SERVICE_PATH, json=service_body(2))
    assert resp.json()["status"] == "fallback"
    assert resp.json()["rerank"]["reason_code"] == "bad_answer"


def test_endpoint_falls_back_on_hits_of_several_indexes() -> None:
    body = service_body(2)
    body["hits"][1]["_index"] = "other"
    workers = StubRerankClient(result=stub_answer(["d1", "d2"], [1.0, 0.5], RANKS))
    with stub_app(workers, opensearch_stub([])) as http:
        resp = http.post(SERVICE_PATH, json=body)
    assert resp.json()["rerank"]["reason_code"] == "mixed_indexes"
    assert workers.calls == []


def test_endpoint_refuses_malformed_requests_in_opensearch_s_error_shape() -> None:
    cases = [
        ({**service_body(), "version": 2}, "unsupported rerank protocol version 2"),
        ({k: v for k, v in service_body().items() if k != "hits"}, "lacks ['hits']"),
        ({**service_body(), "size": 3}, "unknown key(s) ['size']"),
        ({**service_body(), "model": "gpt"}, "unknown model 'gpt'"),
        ({**service_body(), "hits": [{"_id": "a", "_score": "x"}]}, "_score must be a finite"),
        ({**service_body(), "timeout_ms": 10 ** 9}, "LEXRERANK_MAX_TIMEOUT_MS"),
        ({**service_body(), "window_size": 2}, "4 hits were sent for a window_size of 2"),
        ({**service_body(), "query_text": " "}, "query_text must be a non-empty string"),
    ]
    with stub_app(StubRerankClient(), opensearch_stub([])) as http:
        for body, reason in cases:
            resp = http.post(SERVICE_PATH, json=body)
            assert resp.status_code == 400, (body, resp.text)
            error = resp.json()["error"]
            assert error["type"] == "illegal_argument_exception"
            assert reason in error["reason"], (reason, error["reason"])
        assert http.post(SERVICE_PATH, content=b"{not json").status_code == 400
        assert http.get(SERVICE_PATH).status_code == 404  # POST only: the namespace's 404


def test_endpoint_honours_the_api_key() -> None:
    settings = replace(get_settings(), opensearch_url="http://opensearch.test",
                       api_keys=("s3cret",))
    app = create_app(settings, upstream=stub_upstream(settings, opensearch_stub([])),
                     rerank_client=StubRerankClient(result=stub_answer(["d1"], [1.0],
                                                                       {"d1": 1})))
    with TestClient(app) as http:
        refused = http.post(SERVICE_PATH, json=service_body(1))
        served = http.post(SERVICE_PATH, json=service_body(1), headers={"X-API-Key": "s3cret"})
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "security_exception"
    assert served.status_code == 200 and served.json()["status"] == "ok"
