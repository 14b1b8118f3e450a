"""Evaluation metrics: COLIEE Task 3 macro F2/P/R, plus MRR and recall@k from ir-measures.

Every query in ``qrels`` counts, including queries for which nothing was retrieved (they
score 0), so a system cannot gain by dropping hard queries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import ir_measures
from ir_measures import RR, Qrel, R, ScoredDoc

RANK_CUTOFFS = (1, 5, 10, 100)


def precision_recall_f2(retrieved: Iterable[str], gold: Iterable[str]) -> tuple[float, float,
                                                                                 float]:
    """Per-query COLIEE definitions: P = |ret ∩ gold|/|ret|, R = |ret ∩ gold|/|gold|,
    F2 = 5PR/(4P+R), each 0 where undefined."""
    ret, rel = set(retrieved), set(gold)
    hits = len(ret & rel)
    p = hits / len(ret) if ret else 0.0
    r = hits / len(rel) if rel else 0.0
    f2 = 5 * p * r / (4 * p + r) if p + r > 0 else 0.0
    return p, r, f2


def set_metrics(retrieved: Mapping[str, Sequence[str]], qrels: Mapping[str, Iterable[str]]
                ) -> dict[str, float]:
    """Macro-averaged F2, precision and recall of the returned article sets over ``qrels``."""
    if not qrels:
        raise ValueError("no queries to evaluate")
    totals = [0.0, 0.0, 0.0]
    for qid, gold in qrels.items():
        for i, value in enumerate(precision_recall_f2(retrieved.get(qid, ()), gold)):
            totals[i] += value
    n = len(qrels)
    return {"f2": totals[2] / n, "precision": totals[0] / n, "recall": totals[1] / n}


def ranking_metrics(ranked: Mapping[str, Sequence[tuple[str, float]]],
                    qrels: Mapping[str, Iterable[str]],
                    cutoffs: Sequence[int] = RANK_CUTOFFS) -> dict[str, float]:
    """MRR and recall@k of full rankings (``qid -> [(doc_id, score), ...]`` best first)."""
    if not qrels:
        raise ValueError("no queries to evaluate")
    measures = [RR, *(R @ k for k in cutoffs)]
    qrel_rows = [Qrel(qid, doc, 1) for qid, gold in qrels.items() for doc in set(gold)]
    # Scores are replaced by a rank-derived value so that ties cannot reorder the ranking.
    run_rows = [
        ScoredDoc(qid, doc, float(len(docs) - rank))
        for qid, docs in ranked.items() if qid in qrels
        for rank, (doc, _score) in enumerate(docs)
    ]
    per_query: dict[str, dict[str, float]] = {qid: {} for qid in qrels}
    for m in ir_measures.iter_calc(measures, qrel_rows, run_rows):
        per_query[m.query_id][str(m.measure)] = m.value
    names = {str(RR): "mrr", **{str(R @ k): f"recall@{k}" for k in cutoffs}}
    out = {}
    for measure, key in names.items():
        # Queries absent from the run (nothing retrieved) count as 0.
        out[key] = sum(q.get(measure, 0.0) for q in per_query.values()) / len(qrels)
    return out
