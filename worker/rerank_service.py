"""One query's rerank: encode the query once, gather cached vectors, score, fuse, explain.

This is the computation the Celery ``rerank`` task runs; `lexrerank eval` also calls it
in-process, so both measure the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
from opensearchpy import OpenSearch

from indexer.article_vectors import index_language
from lexrerank.config import get_settings
from reranker.attentive_cnn import AttentiveCNNReranker
from reranker.checkpoint import check_language, load_reranker
from reranker.cutoff import CutoffPolicy
from reranker.ensemble import Ensemble, EnsembleQuery
from reranker.fusion import FIRST_STAGE, Fusion, WeightedFusion
from reranker.paraformer import Paraformer
from reranker.registry import checkpoint_path, resolve_name
from reranker.types import EncodedQuery, Reranker
from worker.fetch_threads import fetch_threads
from worker.protocol import AnswerHit, ReasonCode, RerankAnswer, RerankFailed
from worker.vector_cache import (
    MIB,
    ArticleVectorCache,
    Gathered,
    VectorMemory,
    check_index_versions,
    gather,
    warm,
)

EVIDENCE_MIN_WEIGHT = 1e-6
_EVIDENCE_PRIORITY = {Paraformer: 2, AttentiveCNNReranker: 1}


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

    def to_dict(self) -> RerankAnswer:
        """The JSON-safe form (what the ``lexrerank.rerank`` task returns).

        Written out rather than ``dataclasses.asdict``, whose recursive deep copy of every
        hit and evidence entry cost ~3% of a CPU worker's time per rerank.
        """
        # A RerankedHit's fields are an AnswerHit's.
        hits = cast(list[AnswerHit], [vars(hit).copy() for hit in self.hits])
        return {"hits": hits, "model": self.model,
                "model_version": self.model_version, "query_truncated": self.query_truncated}


class MemberCaches:
    """The vector caches of an ensemble's members, seen as one (a doc is covered by all)."""

    def __init__(self, caches: dict[str, ArticleVectorCache]) -> None:
        self.caches = caches

    def __len__(self) -> int:
        """Articles held by the member that holds fewest (an upper bound of complete ones)."""
        return min(len(c) for c in self.caches.values())

    def __contains__(self, doc_id: str) -> bool:
        return all(doc_id in c for c in self.caches.values())

    def nbytes(self) -> int:
        return sum(c.nbytes() for c in self.caches.values())


class RerankService:
    """Loaded model(s), their vector caches for one index, the fusion and the cut-off.

    A single reranker is the one-member case: its fusion ``alpha * bm25 + (1 - alpha) *
    model`` is the weighted fusion ``{bm25: alpha, name: 1 - alpha}``. An
    :class:`reranker.ensemble.Ensemble` has one member per model, each with its own cache.
    The caches are views of one (index, model version) each on a shared
    :class:`worker.vector_cache.VectorMemory`, filled on demand by :meth:`gather`.
    """

    def __init__(self, model: Reranker | Ensemble, caches: dict[str, ArticleVectorCache],
                 fusion: WeightedFusion, cutoff: CutoffPolicy, name: str) -> None:
        self.model = model
        self.members = model_members(model, name)
        self.caches = caches
        first = next(iter(caches.values()))
        self.index, self.client, self.compute_max = first.index, first.client, first.compute_max
        self.cache = next(iter(caches.values())) if len(caches) == 1 else MemberCaches(caches)
        self.fusion = fusion
        self.cutoff = cutoff
        self.name = name

    @classmethod
    def load(cls, client: OpenSearch, index: str, name: str, device: str | None = None,
             show_progress: bool = False) -> RerankService:
        """Load ``name`` for ``index``: the model trained for the index's language."""
        language = index_language(client, index)
        settings = get_settings()
        path: Path = checkpoint_path(name, language, settings.model_dir)
        model = load_reranker(path, device=device, cache_dir=settings.cache_dir,
                              backend=settings.encoder_backend)
        return cls.for_model(client, index, model, name, show_progress=show_progress,
                             language=language)

    @classmethod
    def for_model(cls, client: OpenSearch, index: str, model: Reranker | Ensemble, name: str,
                  show_progress: bool = False, language: str | None = None,
                  memory: VectorMemory | None = None, compute_max: int | None = None
                  ) -> RerankService:
        """A service around an already-loaded ``model`` (workers share one across indexes).

        With ``memory`` (a worker's process-wide cache) nothing is read yet: reranks fill it
        on demand. Without, the service gets a memory of its own of
        ``LEXRERANK_VECTOR_CACHE_MB`` and is warmed from the index now (in-process use:
        ``lexrerank eval``, benchmarks). ``compute_max`` (default
        ``LEXRERANK_VECTOR_COMPUTE_MAX``): candidates lacking vectors a rerank computes.

        Raises:
            LanguageMismatch: the model was not trained for the index's language.
            LexrerankError: the index holds no vectors of (a member of) the model.
        """
        config = model.checkpoint_config
        if language is None:
            language = index_language(client, index)
        check_language(config, name, index, language)
        # "default" answers with the model it means
        name = resolve_name(name, language, get_settings().model_dir)
        cutoff = CutoffPolicy.from_dict(config.get("cutoff", CutoffPolicy().to_dict()))
        members = model_members(model, name)
        check_index_versions(client, index, members.values())
        settings = get_settings()
        own_memory = memory is None
        if memory is None:
            memory = VectorMemory(settings.vector_cache_mb * MIB)
        if compute_max is None:
            compute_max = settings.vector_compute_max
        caches = {member: ArticleVectorCache(index, m, memory, client, compute_max)
                  for member, m in members.items()}
        if own_memory:
            warm(client, index, caches, show_progress=show_progress)
        if isinstance(model, Ensemble):
            fusion = model.fusion
        else:
            alpha = Fusion.from_dict(config.get("fusion", {"alpha": 0.0})).alpha
            fusion = WeightedFusion.of({FIRST_STAGE: alpha, name: 1.0 - alpha})
        return cls(model, caches, fusion, cutoff, name)

    @property
    def model_version(self) -> str:
        return self.model.model_version

    def rerank(self, query: str, candidates: Sequence[tuple[str, float]]) -> RerankResult:
        """Rerank first-stage ``candidates`` ([(doc_id, score)] best first) for ``query``.

        As the worker's task does, the window's vectors are read on a fetch thread
        (:mod:`worker.fetch_threads`) while the query encodes. A window with documents
        lacking vectors is gathered again after the encode: computing them needs the
        encoder, whose tokenizer is not shared between threads.
        """
        if not candidates:
            return RerankResult([], self.name, self.model_version, False)
        doc_ids = [d for d, _ in candidates]
        reading = fetch_threads().submit(self.gather_held, doc_ids)
        prepared = self.model.prepare_query(query)
        gathered = reading.result()
        if gathered is None:
            gathered = self.gather(doc_ids)
        return self.rerank_prepared(prepared, candidates, gathered=gathered)

    def gather(self, doc_ids: Sequence[str], compute: bool = True) -> Gathered:
        """Every member's current vectors of ``doc_ids``, read or computed where missing
        (:func:`worker.vector_cache.gather`: one ``mget``, never a reload). ``compute=False``
        raises ``no_vectors`` for a document without vectors instead of computing them."""
        return gather(self.client, self.index, self.caches, doc_ids,
                      self.compute_max if compute else 0)

    def gather_held(self, doc_ids: Sequence[str]) -> Gathered | None:
        """:meth:`gather` without computing: None when a document has no vectors yet."""
        try:
            return self.gather(doc_ids, compute=False)
        except RerankFailed as exc:
            if exc.code != ReasonCode.NO_VECTORS:
                raise
            return None

    def warm(self, show_progress: bool = False) -> int:
        """Fill the caches from the index within the memory's budget; documents cached."""
        if self.client is None:
            return 0
        return warm(self.client, self.index, self.caches, show_progress=show_progress)

    def rerank_prepared(self, query: EncodedQuery | EnsembleQuery,
                        candidates: Sequence[tuple[str, float]],
                        explain: bool = True, gathered: Gathered | None = None
                        ) -> RerankResult:
        """:meth:`rerank` for a query already encoded by this service's model.

        Without ``explain`` the hits' evidence lists are left empty (not built at all).
        ``gathered``: the candidates' vectors when the caller gathered them already (the
        worker times and counts that step), else they are gathered here.
        """
        if not candidates:
            return RerankResult([], self.name, self.model_version, query.truncated)
        doc_ids = [d for d, _ in candidates]
        if gathered is None:
            gathered = self.gather(doc_ids)
        parts = query.parts if isinstance(query, EnsembleQuery) else {self.name: query}
        members = self.members
        signals: dict[str, np.ndarray] = {FIRST_STAGE: np.asarray([s for _, s in candidates])}
        evidence_source, evidence_rank = None, -1
        for member, model in members.items():
            entries = gathered.entries[member]
            out = model.rerank_prepared(parts[member], [e.side for e in entries])
            signals[member] = out.scores
            # Evidence: the sentences the Paraformer's attention selected for this query,
            # else the Attentive CNN's (query-independent) ones; a dense model has none.
            rank = _EVIDENCE_PRIORITY.get(type(model), 0)
            if rank > evidence_rank:
                evidence_source, evidence_rank = (out.weights, entries), rank
        fused = self.fusion.fuse(signals)
        model_scores = (signals[self.name] if len(members) == 1
                        else self.fusion.fuse({**signals, FIRST_STAGE: np.zeros(len(doc_ids))})
                        - self.fusion.as_dict.get(FIRST_STAGE, 0.0))
        hits = []
        for i, (doc_id, first_score) in enumerate(candidates):
            evidence = []
            if explain and evidence_source is not None:
                weights_list, entries = evidence_source
                weights = weights_list[i] if i < len(weights_list) else np.zeros(0)
                sentences = entries[i].sentences
                evidence = [
                    {"sentence_index": int(j), "sentence": sentences[j],
                     "weight": float(weights[j])}
                    for j in np.argsort(-weights, kind="stable")
                    if weights[j] > EVIDENCE_MIN_WEIGHT and j < len(sentences)
                ]
            hits.append(RerankedHit(doc_id, float(fused[i]), i + 1, float(first_score),
                                    float(model_scores[i]), evidence))
        hits.sort(key=lambda h: (-h.score, h.first_stage_rank))
        return RerankResult(hits, self.name, self.model_version, query.truncated)


def model_members(model: Reranker | Ensemble, name: str) -> dict[str, Reranker]:
    """The models a rerank scores with: an ensemble's members, else ``{name: model}``."""
    return dict(model.members) if isinstance(model, Ensemble) else {name: model}
