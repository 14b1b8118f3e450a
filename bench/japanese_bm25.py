"""`lexrerank bench japanese-bm25`: which analysis chain the Japanese first stage uses.

Japanese has no spaces, so BM25 is only as good as its tokens. This suite indexes the Japanese
civil code once into a scratch index whose ``content`` field carries one sub-field per
candidate analysis chain, runs every COLIEE Japanese query against each chain alone and
against kuromoji + character bigrams combined in one query (a ``multi_match`` of type
``most_fields``: the scores add up, the bigram field weighted), and chooses by the quality
protocol's rolling origin: for each test year Y in R01..R04 the chain with the best mean MRR
over the years before Y is chosen (BM25 trains nothing, so every earlier year may choose),
its cut-off (``ratio`` policy) is tuned on Y-1, and Y is scored once.

The chain that the folds choose is what :mod:`indexer.templates` ships for ``ja``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from opensearchpy import OpenSearch
from opensearchpy.helpers import bulk
from tqdm import tqdm

from bench.quality import METRICS as QUALITY_METRICS
from bench.quality import choose, score
from bench.quality_data import coliee_by_year
from bench.quality_folds import TEST_YEARS
from indexer.parsers import parse_corpus
from lexrerank.config import get_settings
from lexrerank.opensearch_client import opensearch_client
from reranker.fusion import FIRST_STAGE, SignalWindow
from reranker.ir_metrics import ranking_metrics

SCRATCH_INDEX = "lexrerank-bench-ja-bm25"
DEPTH = 100
_KUROMOJI_FILTERS = ["kuromoji_baseform", "kuromoji_part_of_speech", "cjk_width", "ja_stop",
                     "kuromoji_stemmer", "lowercase"]
#: sub-field -> analyzer: the candidate chains.
ANALYZERS: dict[str, dict[str, Any]] = {
    # kuromoji search mode (compounds also split), base forms, particles/auxiliaries (POS)
    # and stop words removed: the Lucene JapaneseAnalyzer chain.
    "kuromoji": {"type": "custom", "tokenizer": "ja_search", "filter": _KUROMOJI_FILTERS},
    # the same tokens without part-of-speech and stop filtering.
    "kuromoji_all": {"type": "custom", "tokenizer": "ja_search",
                     "filter": ["kuromoji_baseform", "cjk_width", "lowercase"]},
    # normal mode: compounds kept whole.
    "kuromoji_normal": {"type": "custom", "tokenizer": "ja_normal", "filter": _KUROMOJI_FILTERS},
    # overlapping character bigrams (the analyzer of a cluster without kuromoji).
    "bigram": {"type": "custom", "tokenizer": "standard",
               "filter": ["cjk_width", "lowercase", "cjk_bigram"]},
}
#: system -> {sub-field: boost}: each chain alone, and kuromoji + bigrams in one query.
SYSTEMS: dict[str, dict[str, float]] = {
    **{name: {name: 1.0} for name in ANALYZERS},
    **{f"kuromoji+bigram^{w:g}": {"kuromoji": 1.0, "bigram": w} for w in (0.25, 0.5, 1.0, 2.0)},
    "kuromoji_all+bigram^0.5": {"kuromoji_all": 1.0, "bigram": 0.5},
}
METRICS = (*QUALITY_METRICS, "recall@100")


def _index_body() -> dict[str, Any]:
    return {
        "settings": {
            "index": {"number_of_shards": 1, "number_of_replicas": 0,
                      "similarity": {"default": {"type": "BM25", "k1": 1.2, "b": 0.75}}},
            "analysis": {
                "tokenizer": {"ja_search": {"type": "kuromoji_tokenizer", "mode": "search"},
                              "ja_normal": {"type": "kuromoji_tokenizer", "mode": "normal"}},
                "analyzer": ANALYZERS,
            },
        },
        "mappings": {"properties": {
            "content": {"type": "text", "analyzer": "kuromoji",
                        "fields": {name: {"type": "text", "analyzer": name}
                                   for name in ANALYZERS}}}},
    }


def build_scratch_index(client: OpenSearch, corpus: str) -> int:
    """(Re)create the scratch index from the Japanese civil code; returns the article count."""
    client.indices.delete(index=SCRATCH_INDEX, ignore_unavailable=True)
    client.indices.create(index=SCRATCH_INDEX, body=_index_body())
    articles = list(parse_corpus(corpus, "coliee-xml", "ja"))
    actions = ({"_index": SCRATCH_INDEX, "_id": a.doc_id,
                "_source": {"content": f"{a.caption or ''}\n{a.text}"}} for a in articles)
    bulk(client, actions, refresh="wait_for")
    return len(articles)


def _query(text: str, fields: Mapping[str, float]) -> dict[str, Any]:
    names = [f"content.{name}^{boost:g}" for name, boost in fields.items()]
    return {"multi_match": {"query": text, "fields": names, "type": "most_fields"}}


def rankings(client: OpenSearch, queries: Sequence, fields: Mapping[str, float]
             ) -> dict[str, list[tuple[str, float]]]:
    """Top ``DEPTH`` hits of every query for one system."""
    out = {}
    for q in queries:
        resp = client.search(index=SCRATCH_INDEX,
                             body={"size": DEPTH, "query": _query(q.text, fields),
                                   "_source": False})
        out[q.qid] = [(h["_id"], float(h["_score"])) for h in resp["hits"]["hits"]]
    return out


def _metrics(ranked: Mapping[str, list[tuple[str, float]]], queries: Sequence,
             tune_on: Sequence) -> dict[str, Any]:
    """BM25's figures on ``queries``, its cut-off tuned on ``tune_on`` as `bench quality`
    does (:func:`bench.quality.choose` / :func:`bench.quality.score`), plus recall@100."""
    def windows(qs: Sequence) -> list[SignalWindow]:
        return [SignalWindow(tuple(d for d, _ in ranked[q.qid]),
                             {FIRST_STAGE: np.array([s for _, s in ranked[q.qid]])}, q.gold)
                for q in qs]

    fusion, policy, _ = choose("bm25", windows(tune_on))
    out = score("bm25", fusion, policy, windows(queries), [q.qid for q in queries])
    deep = ranking_metrics({q.qid: ranked[q.qid] for q in queries},
                           {q.qid: q.gold for q in queries}, (100,))
    return {**out, "recall@100": round(deep["recall@100"], 4), "cutoff": str(policy)}


def run(show_progress: bool = True) -> dict[str, Any]:
    """Each system per year; the rolling-origin choice and its test figures per year."""
    settings = get_settings()
    client = opensearch_client(settings)
    articles = build_scratch_index(client, str(settings.data_dir / "coliee-ja" / "civil.xml"))
    by_year = coliee_by_year(settings.data_dir, "ja")
    years = list(by_year)
    ranked = {system: rankings(client, [q for y in years for q in by_year[y]], fields)
              for system, fields in tqdm(SYSTEMS.items(), desc="systems", file=sys.stderr,
                                         disable=not show_progress)}
    mrr = {s: {y: ranking_metrics({q.qid: ranked[s][q.qid] for q in by_year[y]},
                                  {q.qid: q.gold for q in by_year[y]}, (1,))["mrr"]
               for y in years} for s in SYSTEMS}
    per_year: dict[str, Any] = {}
    for test in TEST_YEARS:
        before = years[: years.index(test)]
        chosen = max(SYSTEMS, key=lambda s: np.mean([mrr[s][y] for y in before]))
        dev = by_year[before[-1]]
        per_year[test] = {
            "chosen": chosen,
            "chosen_on": f"{before[0]}..{before[-1]} (mean MRR)",
            "chosen_system": _metrics(ranked[chosen], by_year[test], dev),
            **{s: _metrics(ranked[s], by_year[test], dev) for s in SYSTEMS},
        }
    mean = {s: {m: round(float(np.mean([per_year[y][s][m] for y in TEST_YEARS])), 4)
                for m in METRICS} for s in [*SYSTEMS, "chosen_system"]}
    client.indices.delete(index=SCRATCH_INDEX, ignore_unavailable=True)
    return {"articles": articles, "queries": sum(len(v) for v in by_year.values()),
            "systems": {s: dict(fields) for s, fields in SYSTEMS.items()},
            "mrr_by_year": {s: {y: round(v, 4) for y, v in mrr[s].items()} for s in SYSTEMS},
            "per_year": per_year, "mean_over_test_years": mean}
