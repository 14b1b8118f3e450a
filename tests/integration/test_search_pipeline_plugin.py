"""The OpenSearch plugin ``lexrerank-search-pipeline`` against the real stack.

The same reranked query goes (a) to the gateway with ``search_pipeline=lexrerank`` and (b)
straight to OpenSearch with the plugin's pipeline defined there, calling the same gateway's
``POST /_lexrerank/rerank``: same ids, order, scores and ``_rerank`` blocks. With the worker
stopped, (b) still answers 200 with ``status: fallback`` inside its deadline. The plugin is
installed by ``lexrerank up`` (lexrerank/stack.py); its Java tests run here too.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opensearchpy import OpenSearch

from lexrerank.config import get_settings
from lexrerank.stack import PIPELINE_PLUGIN, PIPELINE_PLUGIN_DIR, opensearch_home
from tests.integration.conftest import GATEWAY_INDEX, Stack

QUERY = "A minor may rescind a juridical act performed without the consent of a representative"
WINDOW = 20
SCORE_TOLERANCE = 1e-4
# What the fallback may take beyond its deadline: OpenSearch's own search, HTTP on loopback.
FALLBACK_MARGIN_MS = 300


def body(from_: int = 0, size: int = 5, **rerank: Any) -> dict[str, Any]:
    return {"from": from_, "size": size, "_source": ["caption"],
            "query": {"match": {"content": QUERY}},
            "ext": {"rerank": {"query_context": {"query_text": QUERY}, "window_size": WINDOW,
                               "explain": True, "timeout_ms": 5000, **rerank}}}


@pytest.fixture(scope="module")
def native_pipeline(client: OpenSearch, stack: Stack, gateway_model: str) -> Iterator[str]:
    """A pipeline of the plugin, private to this run, calling this module's gateway."""
    plugins = client.cat.plugins(format="json")
    if not any(p["component"] == PIPELINE_PLUGIN for p in plugins):
        pytest.fail(f"OpenSearch has not loaded {PIPELINE_PLUGIN}: `lexrerank up` installs it "
                    "(restart a node that was running: `lexrerank down && lexrerank up`)")
    name = f"lexrerank-test-{os.getpid()}"
    client.transport.perform_request("PUT", f"/_search/pipeline/{name}", body={
        "request_processors": [{"lexrerank": {}}],
        "response_processors": [{"lexrerank": {"service_url": stack.url, "model": gateway_model,
                                               "tag": "test", "ignore_failure": False}}]})
    yield name
    client.transport.perform_request("DELETE", f"/_search/pipeline/{name}")


def via_gateway(stack: Stack, payload: dict[str, Any]) -> dict[str, Any]:
    resp = httpx.post(f"{stack.url}/{GATEWAY_INDEX}/_search",
                      params={"search_pipeline": "lexrerank"}, json=payload, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def via_opensearch(pipeline: str, payload: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{get_settings().opensearch_url.rstrip('/')}/{GATEWAY_INDEX}/_search",
                      params={"search_pipeline": pipeline}, json=payload, timeout=30)


def assert_same_hits(native: dict[str, Any], gateway: dict[str, Any]) -> None:
    ours, theirs = native["hits"]["hits"], gateway["hits"]["hits"]
    assert [h["_id"] for h in ours] == [h["_id"] for h in theirs]
    for mine, other in zip(ours, theirs, strict=True):
        assert mine["_score"] == pytest.approx(other["_score"], abs=SCORE_TOLERANCE)
        assert mine["_source"] == other["_source"]
        assert mine["_rerank"]["first_stage_rank"] == other["_rerank"]["first_stage_rank"]
        for key in ("first_stage_score", "model_score"):
            assert mine["_rerank"][key] == pytest.approx(other["_rerank"][key], abs=SCORE_TOLERANCE)
        assert ([e["sentence"] for e in mine["_rerank"]["evidence"]]
                == [e["sentence"] for e in other["_rerank"]["evidence"]])
    assert native["hits"]["total"] == gateway["hits"]["total"]
    assert native["hits"]["max_score"] == pytest.approx(gateway["hits"]["max_score"],
                                                         abs=SCORE_TOLERANCE)


def test_native_pipeline_reranks_as_the_gateway_does(stack: Stack, native_pipeline: str) -> None:
    for page in ({"from_": 0, "size": 5}, {"from_": 5, "size": 5}):
        gateway = via_gateway(stack, body(**page))
        resp = via_opensearch(native_pipeline, body(**page))
        assert resp.status_code == 200, resp.text
        native = resp.json()
        assert gateway["ext"]["rerank"]["status"] == "ok", gateway["ext"]["rerank"]
        assert native["ext"]["rerank"]["status"] == "ok", native["ext"]["rerank"]
        assert_same_hits(native, gateway)
        assert native["hits"]["hits"][0]["_rerank"]["evidence"], "explain: evidence expected"
        report, expected = native["ext"]["rerank"], gateway["ext"]["rerank"]
        assert set(report) == set(expected)
        for key in ("model", "model_version", "window_size", "reranked", "query_truncated"):
            assert report[key] == expected[key], key
        assert set(report["took_ms"]) == {"first_stage", "rerank", "merge", "total"}


def test_native_pipeline_refuses_what_the_gateway_refuses(native_pipeline: str) -> None:
    for payload, reason in (
            ({**body(), "ext": {"rerank": {"size": 3}}}, "unknown key(s) ['size'] in ext.rerank"),
            ({**body(), "sort": [{"_id": "asc"}]}, "requests sorted by a field are not reranked"),
            ({"query": {"bool": {"must": [{"match": {"content": "minor"}}]}}},
             "the lexrerank pipeline needs the query text")):
        resp = via_opensearch(native_pipeline, payload)
        assert resp.status_code == 400, resp.text
        assert reason in resp.json()["error"]["reason"]


def test_native_pipeline_falls_back_inside_its_deadline_without_workers(
        stack: Stack, native_pipeline: str, client: OpenSearch) -> None:
    timeout_ms = 800
    plain = client.search(index=GATEWAY_INDEX, body={
        "size": 5, "_source": ["caption"], "query": {"match": {"content": QUERY}}})
    stack.worker.stop()
    try:
        started = time.perf_counter()
        resp = via_opensearch(native_pipeline, body(timeout_ms=timeout_ms))
        elapsed_ms = (time.perf_counter() - started) * 1000
    finally:
        stack.start_worker()
    assert resp.status_code == 200, resp.text
    report = resp.json()["ext"]["rerank"]
    assert report["status"] == "fallback", report
    assert report["reason_code"] in ("timeout", "no_worker"), report
    assert elapsed_ms < timeout_ms + FALLBACK_MARGIN_MS, (elapsed_ms, report)
    hits = resp.json()["hits"]["hits"]
    assert [h["_id"] for h in hits] == [h["_id"] for h in plain["hits"]["hits"]]
    assert all("_rerank" not in h for h in hits)
    assert resp.json()["hits"]["total"] == plain["hits"]["total"]


def test_native_pipeline_falls_back_when_the_service_is_down(client: OpenSearch) -> None:
    name = f"lexrerank-down-{os.getpid()}"
    client.transport.perform_request("PUT", f"/_search/pipeline/{name}", body={
        "request_processors": [{"lexrerank": {}}],
        "response_processors": [{"lexrerank": {"service_url": "http://127.0.0.1:9"}}]})
    try:
        resp = via_opensearch(name, body(timeout_ms=500))
    finally:
        client.transport.perform_request("DELETE", f"/_search/pipeline/{name}")
    assert resp.status_code == 200, resp.text
    report = resp.json()["ext"]["rerank"]
    assert (report["status"], report["reason_code"]) == ("fallback", "service_unavailable")
    assert "127.0.0.1:9" in report["reason"]


def test_plugin_java_tests() -> None:
    proc = subprocess.run(["bash", str(PIPELINE_PLUGIN_DIR / "build.sh"), "--test",
                           str(opensearch_home(get_settings()))],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tests passed" in proc.stdout
