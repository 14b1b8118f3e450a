"""Index into the real OpenSearch and search it, through the command line a user runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opensearchpy import OpenSearch

from reranker.datasets import read_queries
from reranker.ir_metrics import precision_recall_f2
from tests.integration.conftest import data_dir, run_cli, unique_index


def test_coliee_index_holds_every_live_article(client: OpenSearch, coliee_index: str) -> None:
    assert client.count(index=coliee_index)["count"] == 768
    doc = client.get(index=coliee_index, id="3-2")["_source"]
    assert doc["text"].startswith("If the person making a juridical act")
    assert doc["headings"]["section"] == "Section 2 Mental Capacity"
    assert not client.exists(index=coliee_index, id="208")  # "Article 208  Deleted"


def test_reindexing_is_idempotent(client: OpenSearch, coliee_index: str,
                                  coliee_code: Path) -> None:
    proc = run_cli("index", "--corpus", str(coliee_code), "--index", coliee_index,
                   "--no-vectors")
    assert proc.returncode == 0, proc.stderr
    assert "updated index" in proc.stdout
    assert client.count(index=coliee_index)["count"] == 768


def test_english_analysis_stems_and_finds_the_article(coliee_index: str) -> None:
    proc = run_cli("search", "minors who obtained their representative's consents",
                   "--index", coliee_index, "--k", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(proc.stdout)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert "5" in [h["doc_id"] for h in hits]
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]


def test_malformed_corpus_names_file_and_line_and_leaves_index_untouched(
        client: OpenSearch, coliee_index: str, tmp_path: Path) -> None:
    bad = tmp_path / "amendments.jsonl"
    bad.write_text('{"id": "900", "text": "A new article."}\n{"id": "901", "text": \n')
    before = client.count(index=coliee_index)["count"]
    proc = run_cli("index", "--corpus", str(bad), "--index", coliee_index)
    assert proc.returncode == 2
    assert f"{bad}:2" in proc.stderr
    assert "Traceback" not in proc.stderr
    client.indices.refresh(index=coliee_index)
    assert client.count(index=coliee_index)["count"] == before
    assert not client.exists(index=coliee_index, id="900")


def test_eval_json_matches_its_own_run_file(coliee_index: str, tmp_path: Path) -> None:
    queries = data_dir() / "coliee" / "train" / "riteval_R04_en.xml"
    run_file = tmp_path / "bm25.run"
    proc = run_cli("eval", "--queries", str(queries), "--index", coliee_index,
                   "--reranker", "none", "--json", "--run-file", str(run_file))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    for key in ("queries", "f2", "precision", "recall", "mrr", "recall@1", "recall@5",
                "recall@10", "recall@100", "reranker", "model_version", "latency_ms"):
        assert key in report
    gold = {q.qid: q.gold for q in read_queries([queries])}
    assert report["queries"] == len(gold)
    # Recompute macro F2 independently from the run file the command wrote.
    returned: dict[str, list[str]] = {qid: [] for qid in gold}
    for line in run_file.read_text().splitlines():
        qid, q0, doc, rank, _score, tag = line.split()
        assert q0 == "Q0" and tag == "lexrerank-none"
        assert int(rank) == len(returned[qid]) + 1
        returned[qid].append(doc)
    f2 = sum(precision_recall_f2(returned[q], gold[q])[2] for q in gold) / len(gold)
    assert report["f2"] == pytest.approx(f2, abs=1e-9)
    assert 0 < report["recall@5"] <= report["recall@10"] <= report["recall@100"] <= 1
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p95"]


def test_stopped_opensearch_gives_one_line_error() -> None:
    proc = run_cli("search", "consent of a minor",
                   env={"OPENSEARCH_URL": "http://127.0.0.1:9", "LEXRERANK_CACHE": "/tmp"})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "not reachable" in lines[0] and "127.0.0.1:9" in lines[0]


def test_missing_index_says_how_to_create_it() -> None:
    proc = run_cli("search", "consent", "--index", "no-such-index-here")
    assert proc.returncode == 2
    assert "lexrerank index" in proc.stderr and "Traceback" not in proc.stderr


def test_vietnamese_alqac_index_and_eval(client: OpenSearch,
                                        request: pytest.FixtureRequest) -> None:
    laws = data_dir() / "alqac2023" / "law.json"
    if not laws.exists():
        pytest.skip(f"ALQAC data not found at {laws}")
    name = unique_index("test-alqac")
    request.addfinalizer(lambda: client.indices.delete(index=name, ignore_unavailable=True))
    proc = run_cli("index", "--corpus", str(laws), "--index", name)
    assert proc.returncode == 0, proc.stderr
    assert client.count(index=name)["count"] == 2131
    tokens = client.indices.analyze(index=name, body={"field": "text",
                                                      "text": "Người sử dụng đất"})
    assert [t["token"] for t in tokens["tokens"]] == ["người", "sử", "dụng", "đất"]
    proc = run_cli("eval", "--queries", str(data_dir() / "alqac2023" / "train.json"),
                   "--index", name, "--json", "--cutoff", "top_k:1")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["queries"] == 100
    # With one article returned per query, P, R and recall@1 coincide when each query has
    # exactly one gold article: a consistency check of the metric code on real output.
    golds = read_queries([data_dir() / "alqac2023" / "train.json"])
    if all(len(q.gold) == 1 for q in golds):
        assert report["precision"] == pytest.approx(report["recall@1"])
        assert report["recall"] == pytest.approx(report["recall@1"])


def test_japanese_analysis_with_kuromoji(client: OpenSearch, tmp_path: Path,
                                        request: pytest.FixtureRequest) -> None:
    corpus = tmp_path / "ja.jsonl"
    records = [
        {"id": "ja-1", "language": "ja", "caption": "契約の解除",
         "text": "当事者の一方がその債務を履行しないときは、相手方は契約を解除することができる。"},
        {"id": "ja-2", "language": "ja", "caption": "賃貸借",
         "text": "賃借人は、賃貸人の承諾を得なければ、その賃借権を譲り渡すことができない。"},
    ]
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                      encoding="utf-8")
    name = unique_index("test-ja")
    request.addfinalizer(lambda: client.indices.delete(index=name, ignore_unavailable=True))
    proc = run_cli("index", "--corpus", str(corpus), "--index", name, "--language", "ja")
    assert proc.returncode == 0, proc.stderr
    tokens = client.indices.analyze(index=name, body={"field": "text", "text": "契約を解除した"})
    assert [t["token"] for t in tokens["tokens"]] == ["契約", "解除"]
    proc = run_cli("search", "契約を解除できるか", "--index", name, "--k", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["doc_id"] == "ja-1"


# ---------------------------------------------------------------------------- Japanese civil code


def test_japanese_code_is_indexed_and_finds_the_minors_consent_article(
        client: OpenSearch, japanese_index: str) -> None:
    assert client.count(index=japanese_index)["count"] == 787
    doc = client.get(index=japanese_index, id="398-2")["_source"]
    assert doc["language"] == "ja" and doc["caption"] == "根抵当権"
    assert doc["text"].startswith("抵当権は、")  # the heading 第三百九十八条の二 is not text
    assert not client.exists(index=japanese_index, id="208")  # 削除
    assert not client.exists(index=japanese_index, id="38:84")  # a deleted range
    proc = run_cli("search", "未成年者が契約をするには親の同意が必要か",
                   "--index", japanese_index, "--k", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["doc_id"] == "5"


def test_japanese_first_stage_searches_words_and_bigrams(
        client: OpenSearch, japanese_index: str) -> None:
    words = client.indices.analyze(index=japanese_index,
                                   body={"field": "content", "text": "契約を解除した"})
    bigrams = client.indices.analyze(index=japanese_index,
                                     body={"field": "content.bigram", "text": "契約を解除"})
    assert [t["token"] for t in words["tokens"]] == ["契約", "解除"]
    assert [t["token"] for t in bigrams["tokens"]] == ["契約", "約を", "を解", "解除"]


def test_english_and_japanese_indexes_share_article_ids(
        client: OpenSearch, coliee_index: str, japanese_index: str) -> None:
    def articles(index: str) -> dict[str, str]:
        from opensearchpy.helpers import scan

        return {h["_id"]: h["_source"]["text"] for h in
                scan(client, index=index, query={"query": {"match_all": {}}}, _source=["text"])}

    en, ja = articles(coliee_index), articles(japanese_index)
    # The Japanese text is the newer revision: every English article is in it, plus the
    # 2021 property-law articles.
    assert set(en) <= set(ja) and {"213-2", "264-2", "264-14"} <= set(ja) - set(en)
    # The same id is the same article: the paragraph count agrees (paragraph 2 on is "(2)"
    # in English, "２　" in Japanese) except where the revision rewrote the article.
    import re

    def paragraphs_en(text: str) -> int:
        return max(1, len(re.findall(r"^\(\d+\)", text, re.MULTILINE)))

    def paragraphs_ja(text: str) -> int:
        return 1 + len(re.findall(r"^[２-９]", text, re.MULTILINE))

    agree = sum(paragraphs_en(en[d]) == paragraphs_ja(ja[d]) for d in en)
    assert agree / len(en) > 0.97, agree


def test_japanese_eval_skips_pairs_without_gold_and_says_so(japanese_index: str) -> None:
    queries = data_dir() / "coliee-ja" / "simple" / "simple_R04_jp.xml"
    proc = run_cli("eval", "--queries", str(queries), "--index", japanese_index, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["queries"] == 95 and report["skipped_no_gold"] == 6
    assert "R04-09-I" in report["skipped_ids"]
    # Kuromoji words + character bigrams beat plain bigrams' recall@5 on R04 (about 0.79).
    assert report["recall@5"] > 0.79 and report["recall@100"] > 0.95


def test_reloading_writes_only_changed_articles_and_keeps_the_others_vectors(
        client: OpenSearch, tmp_path: Path) -> None:
    """A document write replaces the whole document: re-loading an unchanged corpus must not
    drop the vectors stored with its articles (every worker would read them again)."""
    name = unique_index("test-reload")
    rows = [{"id": f"a{i}", "text": f"Article {i}. The owner of land {i} may fence it.",
             "caption": f"(Fences {i})"} for i in range(3)]
    corpus = tmp_path / "corpus.jsonl"

    def load(lines: list[dict]) -> str:
        corpus.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
        proc = run_cli("index", "--corpus", str(corpus), "--format", "jsonl", "--index", name,
                       "--no-vectors")
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    client.indices.delete(index=name, ignore_unavailable=True)
    try:
        assert "3 articles, 3 written" in load(rows)
        for i in range(3):  # stand-ins for stored vectors (the field is not indexed)
            client.update(index=name, id=f"a{i}", body={"doc": {"vectors": {"v1": {"n": i}}}},
                          refresh=True)
        seq_nos = {i: client.get(index=name, id=f"a{i}")["_seq_no"] for i in range(3)}

        out = load(rows)
        assert "3 articles, 0 written, 3 unchanged" in out
        for i in range(3):
            doc = client.get(index=name, id=f"a{i}")
            assert doc["_seq_no"] == seq_nos[i] and doc["_source"]["vectors"] == {"v1": {"n": i}}

        rows[1]["text"] = "Article 1. The owner of land 1 may not fence it."
        rows.append({"id": "a3", "text": "Article 3. A fence is owned in common."})
        assert "4 articles, 2 written, 2 unchanged" in load(rows)
        changed = client.get(index=name, id="a1")["_source"]
        assert "not fence" in changed["text"] and "vectors" not in changed  # stale: dropped
        assert client.get(index=name, id="a0")["_source"]["vectors"] == {"v1": {"n": 0}}
        assert client.count(index=name)["count"] == 4
    finally:
        client.indices.delete(index=name, ignore_unavailable=True)
