"""One article added to (or changed in) an embedded index costs reading that article only.

Issue 17's scenario on the real services: an embedded index served by a warmed worker; one
new article indexed with ``lexrerank index --format jsonl --no-vectors``; every search whose
window holds it is reranked (no fallback), the worker reads that one document, computes its
vectors, stores them with it, and never re-reads the index. The worker's own metrics count
what it read. Then the article's text changes: the cached entry is detected stale by its
version and re-read, never served.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opensearchpy import OpenSearch

from lexrerank.config import get_settings
from tests.integration.conftest import Stack, _gateway_articles, free_port, run_cli, unique_index
from tests.integration.test_ops import scrape, value

ARTICLES = 30
NEW_ID = "new-1"
QUERY = "Can a drone operator fly over a neighbour's orchard without permission"
NEW_TEXT = ("A drone operator may not fly over a neighbour's orchard without the permission "
            "of the owner of the orchard.")
CHANGED_TEXT = ("A drone operator who flies over an orchard without permission must "
                "compensate the owner of the orchard for the damage.")


@pytest.fixture(scope="module")
def embedded_index(client: OpenSearch, gateway_model: str) -> Iterator[str]:
    """A private index of ARTICLES civil-code articles with the model's vectors."""
    from indexer.article_vectors import embed_index
    from indexer.bulk_load import load_articles
    from reranker.checkpoint import load_reranker
    from reranker.registry import checkpoint_path

    name = unique_index("test-incremental")
    articles = _gateway_articles()[:ARTICLES]
    client.indices.delete(index=name, ignore_unavailable=True)
    load_articles(client, name, lambda: iter(articles), "en", show_progress=False)
    model = load_reranker(checkpoint_path(gateway_model), device="cpu",
                          cache_dir=get_settings().cache_dir,
                          backend=get_settings().encoder_backend)
    embed_index(client, name, model, show_progress=False)
    yield name
    client.indices.delete(index=name, ignore_unavailable=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, gateway_model: str,
           embedded_index: str) -> Iterator[Stack]:
    """A worker (prefork, one child: metrics cross the fork) warmed on the index."""
    metrics_port = free_port()
    stack = Stack(tmp_path_factory.mktemp("incremental"), gateway_model, embedded_index,
                  get_settings().redis_url,
                  {"LEXRERANK_WORKER_METRICS_PORT": str(metrics_port),
                   "LEXRERANK_WORKER_METRICS_HOST": "127.0.0.1"})
    stack.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    stack.worker.args[stack.worker.args.index("solo")] = "prefork"
    stack.worker.args += ["--concurrency", "1"]
    try:
        yield stack.start()
    finally:
        stack.stop()


def search(stack: Stack, index: str) -> dict[str, Any]:
    body = {"size": 10, "query": {"match": {"content": QUERY}},
            "ext": {"rerank": {"query_context": {"query_text": QUERY}, "window_size": 20,
                               "explain": True}}}
    resp = httpx.post(f"{stack.url}/{index}/_search", params={"search_pipeline": "lexrerank"},
                      json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()


def index_article(tmp: Path, index: str, text: str) -> None:
    corpus = tmp / "one.jsonl"
    corpus.write_text(json.dumps({"id": NEW_ID, "caption": "(Drones)", "text": text}) + "\n")
    proc = run_cli("index", "--corpus", str(corpus), "--format", "jsonl", "--index", index,
                   "--no-vectors")
    assert proc.returncode == 0, proc.stderr


def counters(stack: Stack, index: str) -> dict[str, float]:
    samples = scrape(stack.metrics_url)
    names = ("hits", "misses", "reads", "stale", "computed", "warmed")
    return {n: value(samples, f"lexrerank_worker_vector_cache_{n}_total", index=index)
            for n in names}


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after}


def test_an_added_then_changed_article_is_read_alone(served: Stack, embedded_index: str,
                                                     client: OpenSearch,
                                                     tmp_path: Path) -> None:
    version = client.indices.get_mapping(index=embedded_index)[embedded_index]["mappings"][
        "_meta"]["lexrerank"]["model_versions"]
    warm = search(served, embedded_index)  # served from the start-up warm
    assert warm["ext"]["rerank"]["status"] == "ok", warm["ext"]["rerank"]
    at_start = counters(served, embedded_index)
    assert at_start["warmed"] == ARTICLES  # the whole (small) index fits the budget

    index_article(tmp_path, embedded_index, NEW_TEXT)
    before = counters(served, embedded_index)
    answers = [search(served, embedded_index) for _ in range(3)]
    for answer in answers:
        assert answer["ext"]["rerank"]["status"] == "ok", answer["ext"]["rerank"]
        assert NEW_ID in [hit["_id"] for hit in answer["hits"]["hits"]]
    added = delta(counters(served, embedded_index), before)
    # The first search read the one new document and computed its vectors; the next two
    # were served from memory; nothing re-read the index.
    assert added == {"hits": 2, "misses": 1, "reads": 1, "stale": 0, "computed": 1,
                     "warmed": 0}
    stored = client.get(index=embedded_index, id=NEW_ID)["_source"].get("vectors", {})
    assert set(stored) == set(version)  # written back: the next worker reads, not encodes

    index_article(tmp_path, embedded_index, CHANGED_TEXT)  # new text, vectors dropped
    before = counters(served, embedded_index)
    changed = search(served, embedded_index)
    assert changed["ext"]["rerank"]["status"] == "ok", changed["ext"]["rerank"]
    after = delta(counters(served, embedded_index), before)
    assert after == {"hits": 0, "misses": 1, "reads": 1, "stale": 1, "computed": 1,
                     "warmed": 0}
    hit = next(h for h in changed["hits"]["hits"] if h["_id"] == NEW_ID)
    evidence = " ".join(e["sentence"] for e in hit["_rerank"].get("evidence", []))
    sentences = " ".join(hit["_source"]["sentences"])
    assert "compensate" in sentences and "may not fly" not in sentences
    if evidence:  # a model with sentence attention shows the new text, never the old
        assert "may not fly" not in evidence
