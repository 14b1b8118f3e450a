"""Cross-validated comparison on ALQAC 2023 (Vietnamese): BM25 vs the trained rerankers.

ALQAC's train set has only 100 questions, so each model is trained K times: on each fold's
training part (of which 20% is held out for early stopping and for tuning fusion and
cut-off) and scored on the fold's unseen questions. BM25 uses the same windows and its
default cut-off. Reported figures are means over all held-out questions.

Run: ``python -m bench.alqac_cv --json [--folds 5] [--models attentive-cnn,paraformer]``
after ``lexrerank index --corpus ../shared/data/alqac2023/law.json --index alqac``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

from lexrerank.cli import BM25_CUTOFF
from lexrerank.config import get_settings
from lexrerank.opensearch_client import opensearch_client
from lexrerank.training_job import (
    TrainOptions,
    build_examples,
    build_model,
    dev_windows,
    fetch_articles,
    first_stage,
)
from reranker.cutoff import CutoffPolicy
from reranker.datasets import Query, read_queries
from reranker.fusion import ranked, tune_fusion
from reranker.metrics import ranking_metrics, set_metrics
from reranker.training import train_reranker

WINDOW = 100


def folds_of(queries: Sequence[Query], k: int, seed: int) -> list[list[Query]]:
    shuffled = sorted(queries, key=lambda q: q.qid)
    random.Random(seed).shuffle(shuffled)
    return [shuffled[i::k] for i in range(k)]


def summarise(rankings: dict[str, list[tuple[str, float]]], cutoffs: dict[str, CutoffPolicy],
              queries: Sequence[Query]) -> dict[str, float]:
    qrels = {q.qid: q.gold for q in queries}
    returned = {}
    for qid, ranking in rankings.items():
        n = cutoffs[qid].count([s for _, s in ranking])
        returned[qid] = [d for d, _ in ranking[:n]]
    metrics = {**set_metrics(returned, qrels), **ranking_metrics(rankings, qrels, (1, 5))}
    return {k: round(v, 4) for k, v in metrics.items()}


def run(folds: int = 5, models: Sequence[str] = ("attentive-cnn",), seed: int = 13,
        index: str = "alqac", epochs: int = 8, negatives: int = 7) -> dict[str, Any]:
    settings = get_settings()
    client = opensearch_client(settings)
    queries = read_queries([settings.data_dir / "alqac2023" / "train.json"])
    articles = fetch_articles(client, index)
    windows = first_stage(client, index, queries, WINDOW, "BM25 windows")
    bm25_cut = CutoffPolicy.parse(BM25_CUTOFF)
    rankings: dict[str, dict[str, list[tuple[str, float]]]] = {
        "bm25": {q.qid: windows[q.qid] for q in queries}}
    cutoffs: dict[str, dict[str, CutoffPolicy]] = {"bm25": {q.qid: bm25_cut for q in queries}}
    seconds: dict[str, float] = {}
    parts = folds_of(queries, folds, seed)
    for name in models:
        rankings[name], cutoffs[name], start = {}, {}, time.monotonic()
        for i, test in enumerate(parts):
            train_all = [q for j, part in enumerate(parts) if j != i for q in part]
            n_dev = max(1, len(train_all) // 5)
            dev, train = train_all[:n_dev], train_all[n_dev:]
            print(f"{name}: fold {i + 1}/{folds} ({len(train)} train, {len(dev)} dev, "
                  f"{len(test)} test)", file=sys.stderr)
            model = build_model(TrainOptions(model=name), articles, train)
            train_reranker(model, build_examples(train, windows, 50), articles,
                           build_examples(dev, windows, WINDOW), epochs=epochs, seed=seed,
                           negatives_per_query=negatives, patience=2, show_progress=False)
            fusion, policy, _ = tune_fusion(dev_windows(model, dev, windows, articles))
            for q, window in zip(test, dev_windows(model, test, windows, articles),
                                 strict=True):
                docs, scores = ranked(window, fusion)
                rankings[name][q.qid] = list(zip(docs, scores, strict=True))
                cutoffs[name][q.qid] = policy
        seconds[name] = round(time.monotonic() - start, 1)
    return {
        "suite": "alqac_cv", "queries": len(queries), "folds": folds, "seed": seed,
        "window": WINDOW, "bm25_cutoff": BM25_CUTOFF,
        "results": {name: summarise(rankings[name], cutoffs[name], queries)
                    for name in rankings},
        "epochs": epochs, "negatives": negatives, "train_seconds": seconds, "device": "cpu",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--models", default="attentive-cnn")
    parser.add_argument("--index", default="alqac")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--negatives", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.folds, args.models.split(","), index=args.index, epochs=args.epochs,
                 negatives=args.negatives)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
