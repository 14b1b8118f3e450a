"""One query's rerank: encode the query once, gather cached vectors, score, fuse, explain.

This is the computation the Celery ``rerank`` task runs; `lexrerank eval` also calls it
in-process, so both measure the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from opensearchpy import OpenSearch

from reranker.article_side import Reranker
from reranker.checkpoint import load_reranker
from reranker.cutoff import CutoffPolicy
from reranker.fusion import Fusion
from reranker.paraformer import EncodedQuery
from reranker.registry import checkpoint_path
from worker.vector_cache import ArticleVectorCache

EVIDENCE_MIN_WEIGHT = 1e-6


@dataclass
class RerankedHit:
    doc_id: str
    score: float  # fused
    first_stage_rank: int  # 1-based
    first_stage_score: float
    model_score: float
    evidence: list[dict] = field(default_factory=list)  # [{sentence_index, sentence, weight}]


@dataclass
class RerankResult:
    hits: list[RerankedHit]  # best first
    model: str
    model_version: str
    query_truncated: bool

    def to_dict(self) -> dict:
        """The JSON-safe form (what the ``lexrerank.rerank`` task returns).

        Written out rather than ``dataclasses.asdict``, whose recursive deep copy of every
        hit and evidence entry cost ~3% of a CPU worker's time per rerank.
        """
        return {"hits": [vars(hit).copy() for hit in self.hits], "model": self.model,
                "model_version": self.model_version, "query_truncated": self.query_truncated}


class RerankService:
    """A loaded model, its vector cache for one index, and its fusion and cut-off."""

    def __init__(self, model: Reranker, cache: ArticleVectorCache, fusion: Fusion,
                 cutoff: CutoffPolicy, name: str) -> None:
        self.model = model
        self.cache = cache
        self.fusion = fusion
        self.cutoff = cutoff
        self.name = name

    @classmethod
    def load(cls, client: OpenSearch, index: str, name: str, device: str | None = None,
             show_progress: bool = False) -> RerankService:
        path: Path = checkpoint_path(name)
        model = load_reranker(path, device=device)
        return cls.for_model(client, index, model, name, show_progress=show_progress)

    @classmethod
    def for_model(cls, client: OpenSearch, index: str, model: Reranker, name: str,
                  show_progress: bool = False) -> RerankService:
        """A service around an already-loaded ``model`` (workers share one across indexes)."""
        config = model.checkpoint_config
        fusion = Fusion.from_dict(config.get("fusion", {"alpha": 0.0}))
        cutoff = CutoffPolicy.from_dict(config.get("cutoff", CutoffPolicy().to_dict()))
        cache = ArticleVectorCache.load(client, index, model, show_progress=show_progress)
        return cls(model, cache, fusion, cutoff, name)

    @property
    def model_version(self) -> str:
        return self.model.model_version

    def rerank(self, query: str, candidates: Sequence[tuple[str, float]]) -> RerankResult:
        """Rerank first-stage ``candidates`` ([(doc_id, score)] best first) for ``query``."""
        if not candidates:
            return RerankResult([], self.name, self.model_version, False)
        return self.rerank_prepared(self.model.prepare_query(query), candidates)

    def rerank_prepared(self, query: EncodedQuery, candidates: Sequence[tuple[str, float]],
                        explain: bool = True) -> RerankResult:
        """:meth:`rerank` for a query already encoded by this service's model.

        Without ``explain`` the hits' evidence lists are left empty (not built at all).
        """
        if not candidates:
            return RerankResult([], self.name, self.model_version, query.truncated)
        doc_ids = [d for d, _ in candidates]
        entries = self.cache.get(doc_ids)
        out = self.model.rerank_prepared(query, [side for side, _ in entries])
        fused = self.fusion.fuse([s for _, s in candidates], out.scores)
        hits = []
        for i, (doc_id, first_score) in enumerate(candidates):
            evidence = []
            if explain:
                weights = out.weights[i] if i < len(out.weights) else np.zeros(0)
                sentences = entries[i][1]
                evidence = [
                    {"sentence_index": int(j), "sentence": sentences[j],
                     "weight": float(weights[j])}
                    for j in np.argsort(-weights, kind="stable")
                    if weights[j] > EVIDENCE_MIN_WEIGHT and j < len(sentences)
                ]
            hits.append(RerankedHit(doc_id, float(fused[i]), i + 1, float(first_score),
                                    float(out.scores[i]), evidence))
        hits.sort(key=lambda h: (-h.score, h.first_stage_rank))
        return RerankResult(hits, self.name, self.model_version, out.query_truncated)
