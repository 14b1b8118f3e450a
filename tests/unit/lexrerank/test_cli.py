"""`lexrerank search` in process: the gateway's merge over BM25 and the rerank computation;
the one mapping of library errors to one-line messages."""

from __future__ import annotations

from typing import Any

import pytest
from opensearchpy.exceptions import RequestError

from gateway.merge import MergeError
from lexrerank import cli
from lexrerank.cli import expand_via_gateway
from lexrerank.errors import InputError, LexrerankError
from worker.protocol import ReasonCode


def _response(scores: dict[str, float]) -> dict[str, Any]:
    hits = [{"_index": "i", "_id": d, "_score": s,
             "_source": {"caption": f"c{d}", "text": f"text of {d}"}}
            for d, s in scores.items()]
    return {"took": 1, "hits": {"total": {"value": len(hits), "relation": "eq"},
                                "max_score": max(scores.values()), "hits": hits}}


class _Service:
    """Reverses the window and explains each hit with one sentence."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []

    def rerank(self, query: str, candidates: list[tuple[str, float]]) -> Any:
        from worker.rerank_service import RerankedHit, RerankResult

        self.seen = list(candidates)
        reversed_window = list(enumerate(candidates, start=1))[::-1]  # (BM25 rank, pair)
        hits = [RerankedHit(d, 10.0 - i, rank, s, 0.5,
                            [{"sentence_index": 0, "sentence": f"s{d}", "weight": 1.0}])
                for i, (rank, (d, s)) in enumerate(reversed_window)]
        return RerankResult(hits, "paraformer", "v1", query_truncated=False)


@pytest.fixture
def bm25(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    import lexrerank.bm25
    import lexrerank.opensearch_client

    sizes: list[int] = []

    def fake(client: Any, index: str, query: str, size: int = 100) -> dict[str, Any]:
        sizes.append(size)
        return _response({"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.5})

    monkeypatch.setattr(lexrerank.bm25, "bm25_response", fake)
    monkeypatch.setattr(lexrerank.opensearch_client, "opensearch_client", lambda s: None)
    return sizes


def test_bm25_only_search_keeps_the_first_stage_order(bm25: list[int]) -> None:
    rows = cli._search_in_process("i", "q", "none", 100, 2)
    assert bm25 == [2]
    assert rows == [{"rank": 1, "doc_id": "a", "score": 3.0, "caption": "ca",
                     "text": "text of a"},
                    {"rank": 2, "doc_id": "b", "score": 2.0, "caption": "cb",
                     "text": "text of b"}]


def test_reranked_search_reorders_the_window_and_keeps_the_tail(
        bm25: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.rerank_service import RerankService

    service = _Service()
    monkeypatch.setattr(RerankService, "load", classmethod(lambda cls, *a, **k: service))
    rows = cli._search_in_process("i", "q", "paraformer", 3, 4)
    assert bm25 == [4]  # max(k, window)
    assert service.seen == [("a", 3.0), ("b", 2.0), ("c", 1.0)]
    assert [r["doc_id"] for r in rows] == ["c", "b", "a", "d"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["score"] == 10.0 and rows[0]["first_stage_rank"] == 3
    assert rows[0]["evidence"] == [{"sentence_index": 0, "sentence": "sc", "weight": 1.0}]
    assert rows[3] == {"rank": 4, "doc_id": "d", "score": 0.5, "caption": "cd",
                       "text": "text of d"}


def test_library_errors_map_to_one_line_and_bugs_do_not() -> None:
    assert cli.error_message(LexrerankError("no index")) == "no index"
    assert cli.error_message(InputError("f.txt", "bad", 3)) == "f.txt:3: bad"
    assert cli.error_message(RequestError(400, "search_phase_execution_exception", {})) == (
        "OpenSearch rejected the request (400 search_phase_execution_exception)")
    assert "rerank does not fit" in cli.error_message(
        MergeError(ReasonCode.BAD_ANSWER, "other candidates"))
    assert cli.error_message(ValueError("a bug")) is None


def test_via_gateway_takes_an_optional_url() -> None:
    url = "http://127.0.0.1:8000"
    assert expand_via_gateway(["search", "q", "--via-gateway"], url) == [
        "search", "q", "--via-gateway", url]
    assert expand_via_gateway(["search", "--via-gateway", "the query"], url) == [
        "search", "--via-gateway", url, "the query"]
    assert expand_via_gateway(["eval", "--via-gateway", "http://gw:9"], url) == [
        "eval", "--via-gateway", "http://gw:9"]


# ---------------------------------------------------------------------------- app, stubbed
