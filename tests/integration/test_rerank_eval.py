"""Reranked search and eval on the real index, with the shipped Paraformer weights."""

from __future__ import annotations

import json

import pytest
from opensearchpy import OpenSearch

from indexer.article_vectors import index_meta
from reranker.registry import available_models, checkpoint_path
from tests.integration.conftest import (
    REPO,
    data_dir,
    run_cli,
    served_version,
    unique_index,
)


@pytest.fixture(scope="module")
def embedded_index(coliee_index: str) -> str:
    proc = run_cli("embed", "--index", coliee_index, "--model", "paraformer")
    assert proc.returncode == 0, proc.stderr
    return coliee_index


def test_embed_records_the_model_version_and_is_resumable(client: OpenSearch,
                                                          embedded_index: str) -> None:
    version = served_version("paraformer")
    meta = index_meta(client, embedded_index)
    assert meta["model_versions"][version]["documents"] == 768
    doc = client.get(index=embedded_index, id="5", _source=[f"vectors.{version}"])["_source"]
    record = doc["vectors"][version]
    assert record["sentences"]["dtype"] == "float16"
    assert record["sentences"]["shape"] == [3, 384]  # article 5 has three paragraphs
    # The updates' replaced copies are merged away: BM25 statistics are the corpus's.
    docs = client.indices.stats(index=embedded_index, metric="docs")["_all"]["primaries"]
    assert docs["docs"]["count"] == 768 and docs["docs"]["deleted"] == 0
    again = run_cli("embed", "--index", embedded_index, "--model", "paraformer")
    assert again.returncode == 0, again.stderr
    assert "0 computed, 768 already there" in again.stdout


def test_reranked_search_explains_with_evidence(embedded_index: str) -> None:
    proc = run_cli("search", "Can a minor rescind a contract made without the consent of a "
                   "legal representative?", "--index", embedded_index, "--reranker",
                   "paraformer", "--k", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(proc.stdout)
    assert len(hits) == 5
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    for hit in hits:
        assert hit["first_stage_rank"] >= 1
        weights = [e["weight"] for e in hit["evidence"]]
        assert weights and abs(sum(weights) - 1.0) < 1e-3  # sparsemax sums to one
        assert all(0 < w <= 1 for w in weights)


def test_eval_with_reranker_reports_its_model_version(embedded_index: str) -> None:
    queries = data_dir() / "coliee" / "train" / "riteval_R04_en.xml"
    proc = run_cli("eval", "--queries", str(queries), "--index", embedded_index,
                   "--reranker", "paraformer", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["model_version"] == served_version("paraformer")
    assert report["reranker"] == "paraformer"
    assert report["queries"] == 101
    assert 0 <= report["f2"] <= 1 and report["recall@1"] <= report["recall@5"]


def test_a_model_without_vectors_in_the_index_is_refused(embedded_index: str) -> None:
    if "attentive-cnn" not in available_models("en"):
        pytest.skip("no shipped attentive-cnn weights")
    proc = run_cli("search", "consent", "--index", embedded_index, "--reranker",
                   "attentive-cnn")
    assert proc.returncode == 2
    assert "no article vectors" in proc.stderr and "lexrerank embed" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_empty_and_huge_queries(embedded_index: str) -> None:
    empty = run_cli("search", "   ", "--index", embedded_index, "--reranker", "paraformer")
    assert empty.returncode == 2 and "query is empty" in empty.stderr
    # ~3,000 words: far beyond MiniLM's 256 tokens. BM25 reads all of it, the model its start.
    huge = "Can a minor rescind a contract concluded without consent? " * 300
    proc = run_cli("search", huge, "--index", embedded_index, "--reranker", "paraformer",
                   "--k", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "first part" in proc.stderr
    assert len(json.loads(proc.stdout)) == 3


def test_unknown_reranker_is_a_clear_error(embedded_index: str) -> None:
    proc = run_cli("search", "consent", "--index", embedded_index, "--reranker", "bm42")
    assert proc.returncode == 2
    assert "unknown reranker 'bm42'" in proc.stderr and "paraformer" in proc.stderr


def test_an_index_is_ready_to_rerank_when_index_returns(client: OpenSearch,
                                                        request: pytest.FixtureRequest) -> None:
    if not available_models("en"):
        pytest.skip("no shipped English weights")
    name = unique_index("test-ready")
    request.addfinalizer(lambda: client.indices.delete(index=name, ignore_unavailable=True))
    corpus = REPO / "lexrerank" / "sample" / "sample_statutes.jsonl"
    proc = run_cli("index", "--corpus", str(corpus), "--index", name)
    assert proc.returncode == 0, proc.stderr
    assert "vectors of" in proc.stdout and "merged away" in proc.stdout
    docs = client.indices.stats(index=name, metric="docs")["_all"]["primaries"]["docs"]
    assert docs["deleted"] == 0  # a new index: reopened, its replaced copies merged away
    # No `lexrerank embed`: the default model of the index's language reranks at once.
    proc = run_cli("search", "Can a minor make a contract without consent?", "--index", name,
                   "--reranker", "default", "--k", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(proc.stdout)
    assert len(hits) == 3 and all("model_score" in h for h in hits)
    assert hits[0]["doc_id"] == "S-2"  # "Acts by Minors"


def test_a_model_is_refused_for_an_index_of_another_language(
        client: OpenSearch, tmp_path, request: pytest.FixtureRequest) -> None:
    if "paraformer" not in available_models("en"):
        pytest.skip("no shipped English weights")
    corpus = tmp_path / "vi.jsonl"
    corpus.write_text(json.dumps({"id": "vi-1", "language": "vi", "caption": "Phạm vi",
                                  "text": "Luật này quy định về phòng, chống ma túy."},
                                 ensure_ascii=False) + "\n", encoding="utf-8")
    name = unique_index("test-vi-refusal")
    request.addfinalizer(lambda: client.indices.delete(index=name, ignore_unavailable=True))
    proc = run_cli("index", "--corpus", str(corpus), "--index", name, "--no-vectors")
    assert proc.returncode == 0, proc.stderr
    # By name, a Vietnamese index gets the Vietnamese model; the English one by its directory
    # is refused.
    english = str(checkpoint_path("paraformer", "en"))
    proc = run_cli("search", "phòng chống ma túy", "--index", name, "--reranker", english)
    assert proc.returncode == 2
    assert "trained for en statutes" in proc.stderr and "is vi" in proc.stderr
    assert "Traceback" not in proc.stderr
