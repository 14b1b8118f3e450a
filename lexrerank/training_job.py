"""`lexrerank train`: build training data from the real BM25 index, train, tune, save.

Hard negatives are each training query's BM25 candidates with the gold removed; random
negatives come from the whole corpus (inside :func:`reranker.training.train_reranker`).
Fusion weight and cut-off are tuned on the dev queries' rerank windows, and written into the
checkpoint with the training data, parameters and dev metrics.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opensearchpy import OpenSearch
from opensearchpy.helpers import scan
from tqdm import tqdm

from indexer.article_vectors import index_language
from lexrerank.bm25 import search_bm25
from lexrerank.config import get_settings
from lexrerank.errors import LexrerankError
from reranker.checkpoint import read_config, save_checkpoint
from reranker.cutoff import CutoffPolicy
from reranker.datasets import Query
from reranker.fusion import DevQuery, Fusion, tune_fusion
from reranker.training import TrainingExample, train_reranker
from reranker.types import Reranker

if TYPE_CHECKING:
    from reranker.attentive_cnn import AttentiveCNNReranker
    from reranker.paraformer import Paraformer

Candidates = dict[str, list[tuple[str, float]]]


@dataclass
class TrainOptions:
    model: str  # "paraformer" | "attentive-cnn"
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 16
    negatives: int = 15
    hard_depth: int = 50  # BM25 depth of the hard-negative pool
    window: int = 100  # rerank window used to tune fusion and cut-off
    loss: str = "listwise"
    seed: int = 13
    patience: int = 3
    finetune_encoder: bool = False
    encoder: str | None = None


def fetch_articles(client: OpenSearch, index: str) -> dict[str, list[str]]:
    """doc id -> sentences, for the whole index (one scan)."""
    return {doc["_id"]: doc["_source"].get("sentences") or []
            for doc in scan(client, index=index, query={"query": {"match_all": {}}},
                            _source=["sentences"], size=1000)}


def first_stage(client: OpenSearch, index: str, queries: Sequence[Query], depth: int,
                desc: str) -> Candidates:
    return {q.qid: [(h.doc_id, h.score) for h in search_bm25(client, index, q.text, depth)]
            for q in tqdm(queries, desc=desc, unit="q", file=sys.stderr)}


def build_examples(queries: Sequence[Query], candidates: Candidates, hard_depth: int
                   ) -> list[TrainingExample]:
    return [TrainingExample(query=q.text, positives=list(q.gold), qid=q.qid,
                            candidates=[d for d, _ in candidates[q.qid][:hard_depth]
                                        if d not in q.gold]) for q in queries]


def dev_windows(model: Reranker, queries: Sequence[Query], candidates: Candidates,
                articles: dict[str, list[str]]) -> list[DevQuery]:
    """Model scores for every dev query's window, from precomputed article vectors."""
    needed = sorted({d for q in queries for d, _ in candidates[q.qid]})
    encoded = dict(zip(needed, model.encode_articles([articles[d] for d in needed],
                                                     show_progress=True), strict=True))
    windows = []
    for q in tqdm(queries, desc="scoring dev windows", unit="q", file=sys.stderr):
        docs = [d for d, _ in candidates[q.qid]]
        out = model.rerank(q.text, [encoded[d] for d in docs])
        windows.append(DevQuery(docs, [s for _, s in candidates[q.qid]], out.scores.tolist(),
                                list(q.gold)))
    return windows


def build_model(options: TrainOptions, articles: dict[str, list[str]],
                queries: Sequence[Query]) -> Paraformer | AttentiveCNNReranker:
    from reranker.encoder import load_encoder

    settings = get_settings()
    if options.model == "paraformer":
        from reranker.paraformer import Paraformer

        return Paraformer(load_encoder(options.encoder, default=settings.encoder,
                                       cache_dir=settings.cache_dir),
                          finetune_encoder=options.finetune_encoder)
    if options.model == "attentive-cnn":
        from reranker.attentive_cnn import AttentiveCNNReranker

        texts = [s for sentences in articles.values() for s in sentences]
        return AttentiveCNNReranker.from_corpus(
            texts + [q.text for q in queries],
            load_encoder(options.encoder, device="cpu", default=settings.encoder,
                         cache_dir=settings.cache_dir))
    raise LexrerankError(f"unknown model {options.model!r}: paraformer or attentive-cnn")


def _files_digest(paths: Sequence[Path]) -> list[dict[str, str]]:
    return [{"file": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()[:16]}
            for p in paths]


def train(client: OpenSearch, index: str, options: TrainOptions, train_files: Sequence[Path],
          train_queries: Sequence[Query], dev_files: Sequence[Path],
          dev_queries: Sequence[Query], out: Path,
          settings_from: Path | None = None) -> dict[str, Any]:
    """Train, tune fusion + cut-off on dev (or copy them from ``settings_from``), save.

    Raises :class:`LexrerankError` for an empty index, an unknown model, or neither dev
    queries nor ``settings_from`` to take fusion and cut-off from.
    """
    articles = fetch_articles(client, index)
    if not articles:
        raise LexrerankError(f"index {index!r} is empty: index a corpus first")
    examples = _training_examples(client, index, options, train_queries, articles)
    dev_candidates = first_stage(client, index, dev_queries, options.window,
                                 "BM25 for dev queries") if dev_queries else {}
    dev_examples = build_examples(dev_queries, dev_candidates, options.window) or None
    model = build_model(options, articles, train_queries)
    report = train_reranker(
        model, examples, articles, dev_examples, epochs=options.epochs, lr=options.lr,
        batch_size=options.batch_size, negatives_per_query=options.negatives,
        loss=options.loss, seed=options.seed, patience=options.patience)
    if settings_from is None and not dev_queries:
        raise LexrerankError("give --dev FILE (to tune fusion and cut-off) or --settings-from "
                             "CHECKPOINT (to reuse tuned ones)")
    tuned = _tuned_settings(model, settings_from, dev_files, dev_queries, dev_candidates,
                            articles)
    language = index_language(client, index)
    config = {
        # The corpus language trained for: the model is refused for indexes of others.
        "languages": [language] if language else [],
        "fusion": tuned.fusion.to_dict(),
        "cutoff": tuned.cutoff.to_dict(),
        "training": {
            "train_files": _files_digest(train_files), "dev_files": _files_digest(dev_files),
            "train_queries": len(examples), "dev_queries": len(dev_queries), "index": index,
            "tuned_on": tuned.tuned_on, "options": vars(options), "report": report.to_dict(),
        },
        "metrics": tuned.metrics,
    }
    save_checkpoint(out, model, config)
    return {"out": str(out), "model_version": model.model_version,
            "fusion": tuned.fusion.to_dict(), "cutoff": str(tuned.cutoff),
            "best_epoch": report.best_epoch, "dev_mrr": report.best_dev_metric,
            **tuned.metrics, "seconds": round(report.seconds, 1)}


def _training_examples(client: OpenSearch, index: str, options: TrainOptions,
                       queries: Sequence[Query], articles: dict[str, list[str]]
                       ) -> list[TrainingExample]:
    """Each query with its BM25 hard negatives; gold articles not in the index are skipped
    (with a warning), and queries left without a positive are dropped."""
    missing = sorted({g for q in queries for g in q.gold} - articles.keys())
    if missing:
        print(f"warning: {len(missing)} gold articles are not in {index!r} "
              f"(e.g. {missing[0]}); those positives are skipped", file=sys.stderr)
    candidates = first_stage(client, index, queries, options.hard_depth,
                             "BM25 for training queries")
    examples = []
    for example in build_examples(queries, candidates, options.hard_depth):
        example.positives = [p for p in example.positives if p in articles]
        if example.positives:
            examples.append(example)
    return examples


@dataclass
class _Tuned:
    fusion: Fusion
    cutoff: CutoffPolicy
    tuned_on: Any  # what they were chosen on: dev file names, or where they were copied from
    metrics: dict[str, Any]


def _tuned_settings(model: Reranker, settings_from: Path | None, dev_files: Sequence[Path],
                    dev_queries: Sequence[Query], dev_candidates: Candidates,
                    articles: dict[str, list[str]]) -> _Tuned:
    """Fusion and cut-off copied from ``settings_from``, else tuned on the dev windows."""
    if settings_from is not None:
        source = read_config(settings_from)
        return _Tuned(Fusion.from_dict(source["fusion"]),
                      CutoffPolicy.from_dict(source["cutoff"]),
                      f"copied from {settings_from.name} ({source['training'].get('tuned_on')})",
                      {})
    fusion, cutoff, f2 = tune_fusion(dev_windows(model, dev_queries, dev_candidates, articles))
    return _Tuned(fusion, cutoff, [p.name for p in dev_files], {"dev_f2": round(f2, 4)})
