"""`lexrerank eval`: run query sets through the search path and score them (COLIEE Task 3).

The first stage fetches ``depth`` BM25 hits per query (recall@100 is the first stage's); a
reranker, when named, reorders the top ``window`` of them; the cut-off policy then decides
how many articles each query returns, and F2/P/R are computed on those.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from opensearchpy import OpenSearch
from tqdm import tqdm

from lexrerank.bm25 import Hit, search_bm25
from reranker.cutoff import CutoffPolicy
from reranker.datasets import Query
from reranker.ir_metrics import ranking_metrics, set_metrics

FIRST_STAGE_DEPTH = 100
# Rerank function: (query text, first-stage hits in the window) -> [(doc_id, score)] best first.
RerankFn = Callable[[str, Sequence[Hit]], list[tuple[str, float]]]


@dataclass
class QueryResult:
    qid: str
    ranking: list[tuple[str, float]]  # final order, best first
    first_stage: list[tuple[str, float]]
    latency_ms: float


def run_queries(client: OpenSearch, index: str, queries: Sequence[Query],
                rerank: RerankFn | None = None, window: int = 100,
                depth: int = FIRST_STAGE_DEPTH, show_progress: bool = True) -> list[QueryResult]:
    """First stage (+ rerank of the top ``window``) for every query, timed end to end."""
    results = []
    for query in tqdm(queries, desc="queries", unit="q", file=sys.stderr,
                      disable=not show_progress):
        start = time.perf_counter()
        hits = search_bm25(client, index, query.text, size=max(depth, window))
        first = [(h.doc_id, h.score) for h in hits]
        ranking = first
        if rerank is not None and hits:
            ranking = rerank(query.text, hits[:window]) + first[window:]
        elapsed = (time.perf_counter() - start) * 1000
        results.append(QueryResult(query.qid, ranking, first, elapsed))
    return results


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(1, int(round(q / 100 * len(ordered) + 0.4999)))
    return ordered[min(rank, len(ordered)) - 1]


def score_results(results: Sequence[QueryResult], queries: Sequence[Query],
                  cutoff: CutoffPolicy) -> dict:
    """The metrics of DESIGN.md for ``results`` under ``cutoff``."""
    qrels = {q.qid: q.gold for q in queries}
    retrieved = {r.qid: retrieved_docs(r, cutoff) for r in results}
    final = ranking_metrics({r.qid: r.ranking for r in results}, qrels, cutoffs=(1, 5, 10))
    first = ranking_metrics({r.qid: r.first_stage for r in results}, qrels, cutoffs=(100,))
    latencies = [r.latency_ms for r in results]
    return {
        "queries": len(queries),
        **set_metrics(retrieved, qrels),
        "mrr": final["mrr"],
        "recall@1": final["recall@1"],
        "recall@5": final["recall@5"],
        "recall@10": final["recall@10"],
        "recall@100": first["recall@100"],
        "cutoff": str(cutoff),
        "latency_ms": {"p50": round(percentile(latencies, 50), 2),
                       "p95": round(percentile(latencies, 95), 2)},
    }


def retrieved_docs(result: QueryResult, cutoff: CutoffPolicy) -> list[str]:
    scores = [s for _, s in result.ranking]
    return [doc for doc, _ in result.ranking[: cutoff.count(scores)]]


def write_run_file(path: Path, results: Sequence[QueryResult], cutoff: CutoffPolicy,
                   tag: str) -> None:
    """COLIEE/TREC run format, ``qid Q0 article rank score tag``, the returned articles only.

    Whitespace inside ids (ALQAC law names) becomes ``_`` so every line keeps six columns.
    Written to a temporary file and renamed, so a failed run never leaves half a file.
    """
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for r in results:
            returned = r.ranking[: len(retrieved_docs(r, cutoff))]
            for rank, (doc, score) in enumerate(returned, start=1):
                out.write(f"{r.qid} Q0 {'_'.join(doc.split())} {rank} {score:.6f} {tag}\n")
    tmp.replace(path)
