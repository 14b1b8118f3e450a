"""The gateway and the workers as a user meets them: real OpenSearch, Redis, worker, uvicorn.

opensearch-py is pointed at the gateway as if it were OpenSearch; reranked searches must agree
with the library run in-process; worker and Redis outages must turn into fallbacks.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import httpx
import pytest
import redis
from opensearchpy import OpenSearch
from opensearchpy.exceptions import NotFoundError, RequestError

from tests.integration.conftest import (
    GATEWAY_INDEX,
    JAPANESE_QUERY,
    Stack,
    _wait_for,
    free_port,
)
from worker.protocol import EMBED_TASK

QUERY = "A minor may rescind a juridical act performed without the consent of a representative"
QUERIES = [QUERY, "guardianship of an adult ward and the duties of the guardian",
           "the domicile of a person and the place of residence"]


def rerank_body(query: str = QUERY, size: int = 5, window: int = 20, **extra: Any
                ) -> dict[str, Any]:
    options = {"query_context": {"query_text": query}, "window_size": window, **extra}
    return {"size": size, "query": {"match": {"content": query}}, "ext": {"rerank": options}}


def search(stack: Stack, body: dict[str, Any], index: str = GATEWAY_INDEX,
           pipeline: bool = True) -> dict[str, Any]:
    params = {"search_pipeline": "lexrerank"} if pipeline else {}
    resp = httpx.post(f"{stack.url}/{index}/_search", params=params, json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def first_stage_ids(client: OpenSearch, query: str, size: int) -> list[str]:
    resp = client.search(index=GATEWAY_INDEX, body={"size": size,
                                                    "query": {"match": {"content": query}}})
    return [h["_id"] for h in resp["hits"]["hits"]]


def wait_status(stack: Stack, want: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        resp = search(stack, rerank_body())
        if resp["ext"]["rerank"]["status"] == want or time.monotonic() > deadline:
            return resp
        time.sleep(0.5)


# ---------------------------------------------------------------------------- reranked search


def test_opensearch_py_reranked_search(stack: Stack, client: OpenSearch,
                                       gateway_service) -> None:
    gw = OpenSearch(hosts=[stack.url])
    resp = gw.search(index=GATEWAY_INDEX, body=rerank_body(explain=True),
                     params={"search_pipeline": "lexrerank"})
    direct = client.search(index=GATEWAY_INDEX, body={"size": 5, "query": {
        "match": {"content": QUERY}}})
    info = resp["ext"]["rerank"]
    assert info["status"] == "ok", info
    assert info["reason_code"] is None and info["reason"] is None, info
    assert info["model_version"] == gateway_service.model_version
    assert info["window_size"] == 20 and info["reranked"] == 20
    assert set(info["took_ms"]) == {"first_stage", "rerank", "merge", "total"}
    assert info["worker_ms"] > 0
    assert resp["hits"]["total"] == direct["hits"]["total"]  # totals untouched
    hits = resp["hits"]["hits"]
    assert len(hits) == 5
    keys = [(-h["_score"], h["_rerank"]["first_stage_rank"]) for h in hits]
    assert keys == sorted(keys)
    assert resp["hits"]["max_score"] == hits[0]["_score"]
    for hit in hits:
        assert set(hit["_rerank"]) == {"first_stage_rank", "first_stage_score", "model_score",
                                       "evidence"}
        assert hit["_source"]["doc_id"] == hit["_id"]
        for evidence in hit["_rerank"]["evidence"]:
            assert evidence["sentence"] in hit["_source"]["sentences"]
            assert 0 < evidence["weight"] <= 1


def test_pipeline_named_in_body_with_query_text_path(stack: Stack) -> None:
    body = {"search_pipeline": "lexrerank", "size": 3,
            "query": {"match": {"content": {"query": QUERY}}},
            "aggs": {"n": {"value_count": {"field": "_id"}}},
            "ext": {"rerank": {"query_context": {
                "query_text_path": "query.match.content.query"}, "window_size": 10}}}
    resp = search(stack, body, pipeline=False)
    assert resp["ext"]["rerank"]["status"] == "ok"
    assert "evidence" not in resp["hits"]["hits"][0]["_rerank"]  # explain defaults to false
    assert resp["aggregations"]["n"]["value"] == resp["hits"]["total"]["value"]


def test_index_default_pipeline_infers_the_query_text(stack: Stack) -> None:
    alias = f"{GATEWAY_INDEX}-default"
    resp = search(stack, {"size": 3, "query": {"match": {"content": QUERY}}}, index=alias,
                  pipeline=False)
    assert resp["ext"]["rerank"]["status"] == "ok"
    plain = search(stack, {"size": 3, "query": {"match": {"content": QUERY}}},
                   index=GATEWAY_INDEX, pipeline=False)
    assert "ext" not in plain and "_rerank" not in plain["hits"]["hits"][0]


def test_scores_equal_the_in_process_library(stack: Stack, client: OpenSearch,
                                             gateway_service) -> None:
    for query in QUERIES:
        resp = search(stack, rerank_body(query, size=20, window=20))
        assert resp["ext"]["rerank"]["status"] == "ok"
        direct = client.search(index=GATEWAY_INDEX, body={"size": 20, "query": {
            "match": {"content": query}}})["hits"]["hits"]
        local = gateway_service.rerank(query, [(h["_id"], h["_score"]) for h in direct])
        got = resp["hits"]["hits"]
        assert [h["_id"] for h in got] == [h.doc_id for h in local.hits]
        for hit, ref in zip(got, local.hits, strict=True):
            assert hit["_score"] == pytest.approx(ref.score, abs=1e-4)
            assert hit["_rerank"]["model_score"] == pytest.approx(ref.model_score, abs=1e-4)
            assert hit["_rerank"]["first_stage_rank"] == ref.first_stage_rank


def test_pages_inside_the_window_are_stable(stack: Stack) -> None:
    whole = search(stack, rerank_body(size=10, window=20))["hits"]["hits"]
    page1 = search(stack, {**rerank_body(size=5, window=20), "from": 0})["hits"]["hits"]
    page2 = search(stack, {**rerank_body(size=5, window=20), "from": 5})["hits"]["hits"]
    assert [h["_id"] for h in page1 + page2] == [h["_id"] for h in whole]
    again = search(stack, rerank_body(size=10, window=20))["hits"]["hits"]
    assert again == whole
    # from/size in the query string win, as in OpenSearch.
    resp = httpx.post(f"{stack.url}/{GATEWAY_INDEX}/_search",
                      params={"search_pipeline": "lexrerank", "from": "5", "size": "5"},
                      json=rerank_body(size=99, window=20), timeout=30).json()
    assert [h["_id"] for h in resp["hits"]["hits"]] == [h["_id"] for h in page2]


def test_size_beyond_the_window_keeps_first_stage_order_after_it(stack: Stack,
                                                                 client: OpenSearch) -> None:
    resp = search(stack, rerank_body(size=12, window=5))
    hits = resp["hits"]["hits"]
    assert resp["ext"]["rerank"]["reranked"] == 5
    assert len(hits) == 12
    assert all("_rerank" in h for h in hits[:5])
    assert not any("_rerank" in h for h in hits[5:])
    direct = first_stage_ids(client, QUERY, 12)
    assert sorted(h["_id"] for h in hits[:5]) == sorted(direct[:5])
    assert [h["_id"] for h in hits[5:]] == direct[5:]


def test_bad_requests_are_400_in_opensearch_shape(stack: Stack) -> None:
    for options in ({"window_size": 0}, {"windowsize": 10},
                    {"query_context": {"query_text_path": "query.nope"}}):
        body = {"query": {"match": {"content": QUERY}}, "ext": {"rerank": options}}
        resp = httpx.post(f"{stack.url}/{GATEWAY_INDEX}/_search?search_pipeline=lexrerank",
                          json=body, timeout=30)
        assert resp.status_code == 400, options
        error = resp.json()
        assert error["status"] == 400 and error["error"]["type"] and error["error"]["reason"]
    # OpenSearch's own errors come back unchanged (here: a missing index).
    resp = httpx.post(f"{stack.url}/no-such-index/_search?search_pipeline=lexrerank",
                      json=rerank_body(), timeout=30)
    assert resp.status_code == 404
    assert resp.json()["error"]["type"] == "index_not_found_exception"


def test_a_search_with_nothing_to_rerank_releases_its_worker(stack: Stack) -> None:
    """The rerank is published on arrival: when the first stage fails or finds nothing, the
    gateway calls it off, so the (one, solo) worker is free at once, not at the deadline."""
    slow = {"timeout_ms": 20_000}
    for index, body in (("no-such-index", rerank_body(**slow)),
                        (GATEWAY_INDEX, rerank_body("zzzqqq xxyyzz", **slow))):
        params = {"search_pipeline": "lexrerank"}
        resp = httpx.post(f"{stack.url}/{index}/_search", params=params, json=body, timeout=30)
        assert resp.status_code in (200, 404), resp.text
    start = time.monotonic()
    answer = search(stack, rerank_body(**slow))
    assert answer["ext"]["rerank"]["status"] == "ok", answer["ext"]
    assert time.monotonic() - start < 10, "the worker was still waiting for candidates"


def test_index_without_vectors_falls_back_with_the_reason(stack: Stack,
                                                         client: OpenSearch) -> None:
    name = "test-gateway-novectors"
    client.indices.delete(index=name, ignore_unavailable=True)
    client.index(index=name, id="1", body={"content": QUERY, "sentences": [QUERY]},
                 refresh=True)
    try:
        resp = search(stack, rerank_body(), index=name)
    finally:
        client.indices.delete(index=name, ignore_unavailable=True)
    info = resp["ext"]["rerank"]
    assert info["status"] == "fallback"
    assert "no article vectors" in info["reason"], info
    assert info["reason_code"] == "no_vectors", info
    assert [h["_id"] for h in resp["hits"]["hits"]] == ["1"]


def test_an_index_of_a_language_without_models_falls_back_with_the_reason(
        stack: Stack, client: OpenSearch, gateway_model: str) -> None:
    if gateway_model != "paraformer":
        pytest.skip("needs the shipped weights (they are per language)")
    from opensearchpy.helpers import bulk

    from indexer.articles import Article
    from indexer.bulk_load import bulk_actions
    from indexer.templates import index_body

    # An index of a language no model is trained for (Korean; made by hand, as another tool
    # might): the worker refuses rather than score it with a model of another language.
    name = "test-gateway-ko"
    client.indices.delete(index=name, ignore_unavailable=True)
    body = index_body("en", set())
    body["mappings"]["_meta"]["lexrerank"]["language"] = "ko"
    client.indices.create(index=name, body=body)
    bulk(client, bulk_actions(name, [Article("1", QUERY, (QUERY,), language="ko")]),
         refresh=True)
    try:
        resp = search(stack, rerank_body(model="paraformer"), index=name)
    finally:
        client.indices.delete(index=name, ignore_unavailable=True)
    info = resp["ext"]["rerank"]
    assert info["status"] == "fallback"
    assert "LanguageMismatch" in info["reason"] and "for ko statutes" in info["reason"], info
    assert info["reason_code"] == "language_mismatch", info
    assert [h["_id"] for h in resp["hits"]["hits"]] == ["1"]


def test_a_japanese_index_is_reranked_by_the_japanese_default_with_evidence(
        stack: Stack, japanese_gateway_index: str) -> None:
    body = rerank_body(JAPANESE_QUERY, size=3, window=20, model="default", explain=True)
    body["query"] = {"multi_match": {"query": JAPANESE_QUERY, "type": "most_fields",
                                     "fields": ["content", "content.bigram"]}}
    for _ in range(20):  # the worker loads the Japanese models on first use
        resp = search(stack, body, index=japanese_gateway_index)
        if resp["ext"]["rerank"]["status"] == "ok":
            break
        time.sleep(3)
    info = resp["ext"]["rerank"]
    assert info["status"] == "ok", info
    assert info["model"] in ("default", "ensemble"), info
    hits = resp["hits"]["hits"]
    assert hits[0]["_id"] == "5", [h["_id"] for h in hits]
    evidence = [e["sentence"] for h in hits for e in h["_rerank"]["evidence"]]
    assert evidence and all(any("\u3040" <= c <= "\u9fff" for c in s) for s in evidence)
    for hit in hits:
        assert {e["sentence"] for e in hit["_rerank"]["evidence"]} <= set(
            hit["_source"]["sentences"])


# ---------------------------------------------------------------------------- pass-through


def test_document_apis_pass_through(stack: Stack, client: OpenSearch) -> None:
    gw = OpenSearch(hosts=[stack.url])
    name = "test-gateway-passthrough"
    gw.indices.delete(index=name, ignore_unavailable=True)
    try:
        gw.indices.create(index=name, body={"settings": {"number_of_replicas": 0}})
        assert gw.indices.exists(index=name)  # HEAD
        gw.index(index=name, id="a", body={"title": "lease of land"}, refresh=True)
        assert gw.get(index=name, id="a")["_source"] == {"title": "lease of land"}
        assert client.get(index=name, id="a")["_source"] == {"title": "lease of land"}
        gw.index(index=name, id="x/y é", body={"title": "odd id"})  # percent-encoded path
        assert client.get(index=name, id="x/y é")["_source"] == {"title": "odd id"}
        gw.delete(index=name, id="x/y é")
        bulk = gw.bulk(body=[{"index": {"_index": name, "_id": "b"}}, {"title": "gift"},
                             {"index": {"_index": name, "_id": "c"}}, {"title": "loan"}],
                       refresh=True)
        assert not bulk["errors"]
        assert gw.count(index=name)["count"] == 3
        assert name in gw.cat.indices(index=name, format="json")[0]["index"]
        msearch = gw.msearch(body=[{"index": name}, {"query": {"match": {"title": "gift"}}},
                                   {"index": name}, {"query": {"match_all": {}}}])
        assert [len(r["hits"]["hits"]) for r in msearch["responses"]] == [1, 3]
        gw.delete(index=name, id="a", refresh=True)
        with pytest.raises(NotFoundError):
            gw.get(index=name, id="a")
        with pytest.raises(RequestError):  # OpenSearch's 400 comes back as a 400
            gw.search(index=name, body={"query": {"no_such_query": {}}})
    finally:
        gw.indices.delete(index=name, ignore_unavailable=True)
    assert not client.indices.exists(index=name)


def test_request_ids_are_echoed_or_generated(stack: Stack) -> None:
    resp = httpx.get(f"{stack.url}/_cluster/health", headers={"X-Request-Id": "abc-123"})
    assert resp.status_code == 200 and resp.headers["x-request-id"] == "abc-123"
    assert len(httpx.get(f"{stack.url}/").headers["x-request-id"]) == 32


# ---------------------------------------------------------------------------- embed task


def test_embed_task_writes_vectors_for_the_given_ids(stack: Stack, client: OpenSearch,
                                                     gateway_service) -> None:
    name = "test-gateway-embed"
    client.indices.delete(index=name, ignore_unavailable=True)
    for doc_id in ("x", "y", "z"):
        client.index(index=name, id=doc_id, body={"sentences": [f"Article {doc_id} text."]})
    client.indices.refresh(index=name)
    version = gateway_service.model_version
    app = stack.celery()
    try:
        report = app.send_task(EMBED_TASK, args=[name, ["x", "y", "nope"],
                                                 stack.env["LEXRERANK_MODEL"]],
                               queue=stack.embed_queue).get(timeout=120)
        assert (report["computed"], report["missing"]) == (2, ["nope"])
        docs = {d["_id"]: d["_source"] for d in client.search(index=name)["hits"]["hits"]}
        assert version in docs["x"]["vectors"] and version in docs["y"]["vectors"]
        assert "vectors" not in docs["z"]
        again = app.send_task(EMBED_TASK, args=[name, ["x", "y"], stack.env["LEXRERANK_MODEL"]],
                              queue=stack.embed_queue).get(timeout=120)
        assert (again["computed"], again["skipped"]) == (0, 2)  # resumable
    finally:
        client.indices.delete(index=name, ignore_unavailable=True)


# ---------------------------------------------------------------------------- outages


def test_worker_down_falls_back_then_recovers(stack: Stack, client: OpenSearch) -> None:
    assert search(stack, rerank_body())["ext"]["rerank"]["status"] == "ok"
    stack.worker.kill()
    start = time.monotonic()
    resp = search(stack, rerank_body(size=8, timeout_ms=800))
    elapsed = time.monotonic() - start
    info = resp["ext"]["rerank"]
    assert info["status"] == "fallback" and "no answer" in info["reason"], info
    assert info["reason_code"] in ("timeout", "no_worker"), info
    assert elapsed < 5
    assert [h["_id"] for h in resp["hits"]["hits"]] == first_stage_ids(client, QUERY, 8)
    assert not any("_rerank" in h for h in resp["hits"]["hits"])
    stack.start_worker()
    assert wait_status(stack, "ok")["ext"]["rerank"]["status"] == "ok"


@pytest.fixture()
def private_redis(tmp_path):
    """A redis-server of our own (the shared one stays up), restartable on the same port."""
    port = free_port()
    log = tmp_path / "redis.log"
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "no"]

    class PrivateRedis:
        url = f"redis://127.0.0.1:{port}/0"
        proc: subprocess.Popen | None = None

        def start(self) -> None:
            with open(log, "ab") as out:
                self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
            _wait_for(self.ping, "redis-server", self.proc, log, 20)

        def ping(self) -> bool:
            try:
                return bool(redis.Redis(port=port, socket_connect_timeout=0.2).ping())
            except redis.RedisError:
                return False

        def kill(self) -> None:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)

    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_redis_down_falls_back_fast_then_recovers(tmp_path, private_redis, gateway_model,
                                                  gateway_service, client: OpenSearch
                                                  ) -> None:
    own = Stack(tmp_path, gateway_model, GATEWAY_INDEX, private_redis.url).start()
    try:
        assert wait_status(own, "ok")["ext"]["rerank"]["status"] == "ok"
        private_redis.kill()
        resp = search(own, rerank_body(size=8, timeout_ms=3000))
        info = resp["ext"]["rerank"]
        assert info["status"] == "fallback" and "Redis unavailable" in info["reason"], info
        assert info["reason_code"] == "redis_unavailable", info
        assert info["took_ms"]["rerank"] < 500  # detected, not waited out
        assert [h["_id"] for h in resp["hits"]["hits"]] == first_stage_ids(client, QUERY, 8)
        private_redis.start()
        assert wait_status(own, "ok")["ext"]["rerank"]["status"] == "ok"
    finally:
        own.stop()


def test_opensearch_down_is_a_503_in_opensearch_shape(tmp_path, gateway_model) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    own = Stack(tmp_path, gateway_model, GATEWAY_INDEX, "redis://127.0.0.1:6379/0",
                {"OPENSEARCH_URL": dead})
    own.gateway.start()
    try:
        _wait_for(lambda: _answers(own.url), "gateway", own.gateway.proc, own.gateway.log, 60)
        for method, path, params in (("GET", "/_cat/indices", {}),
                                     ("POST", f"/{GATEWAY_INDEX}/_search",
                                      {"search_pipeline": "lexrerank"})):
            resp = httpx.request(method, f"{own.url}{path}", params=params,
                                 json=rerank_body() if method == "POST" else None, timeout=30)
            assert resp.status_code == 503
            body = resp.json()
            assert body["status"] == 503
            assert body["error"]["type"] == "opensearch_unavailable_exception"
            assert dead in body["error"]["reason"]
        assert httpx.get(f"{own.url}/_lexrerank/health").status_code == 503
    finally:
        own.gateway.stop()


def _answers(url: str) -> bool:
    try:
        httpx.get(f"{url}/_lexrerank/health", timeout=2)
    except httpx.HTTPError:
        return False
    return True


# ---------------------------------------------------------------------------- command line


def _query_file(path) -> list:
    from reranker.datasets import read_queries

    pairs = "".join(
        f'<pair id="T-{i}" label="Y"><t1>Article {gold}\n(1) text</t1><t2>{text}</t2></pair>\n'
        for i, (gold, text) in enumerate([("5", QUERY), ("7", QUERIES[1]), ("22", QUERIES[2]),
                                          ("3", "the enjoyment of private rights")]))
    path.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<dataset>\n{pairs}</dataset>\n')
    return read_queries([path])


def test_cli_eval_via_gateway_equals_in_process(stack: Stack, client: OpenSearch,
                                                gateway_service, tmp_path) -> None:
    import json

    from lexrerank.evaluation import run_queries, score_results
    from reranker.cutoff import CutoffPolicy
    from tests.integration.conftest import run_cli

    queries = _query_file(tmp_path / "queries.xml")
    proc = run_cli("eval", "--queries", str(tmp_path / "queries.xml"), "--index", GATEWAY_INDEX,
                   "--reranker", stack.env["LEXRERANK_MODEL"], "--window", "20",
                   "--cutoff", "top_k:3", "--json", "--via-gateway", stack.url)
    assert proc.returncode == 0, proc.stderr
    via = json.loads(proc.stdout)

    def rerank(text: str, hits: list) -> list[tuple[str, float]]:
        result = gateway_service.rerank(text, [(h.doc_id, h.score) for h in hits])
        return [(h.doc_id, h.score) for h in result.hits]

    local = score_results(run_queries(client, GATEWAY_INDEX, queries, rerank=rerank,
                                      window=20, show_progress=False),
                          queries, CutoffPolicy.parse("top_k:3"))
    for key in ("f2", "precision", "recall", "mrr", "recall@1", "recall@5", "recall@10",
                "recall@100"):
        assert via[key] == pytest.approx(local[key], abs=1e-9), key
    assert via["model_version"] == gateway_service.model_version
    assert via["queries"] == len(queries)


def test_cli_search_via_gateway_default_url(stack: Stack, client: OpenSearch,
                                            gateway_service) -> None:
    import json

    from tests.integration.conftest import run_cli

    proc = run_cli("search", QUERY, "--index", GATEWAY_INDEX, "--reranker",
                   stack.env["LEXRERANK_MODEL"], "--window", "20", "--k", "3", "--json",
                   "--via-gateway", env={"LEXRERANK_GATEWAY_URL": stack.url})
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    direct = client.search(index=GATEWAY_INDEX, body={"size": 20, "query": {
        "match": {"content": QUERY}}})["hits"]["hits"]
    local = gateway_service.rerank(QUERY, [(h["_id"], h["_score"]) for h in direct])
    assert [r["doc_id"] for r in rows] == [h.doc_id for h in local.hits[:3]]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert all("first_stage_rank" in r and "evidence" in r for r in rows)
