"""`lexrerank bench quality`: every quality figure of the README, by an honest protocol.

No setting is ever chosen on the data it is reported on (DESIGN.md, "Evaluation"):

- **COLIEE** (``coliee_en``, ``coliee_ja``), rolling origin: for each test year Y in
  R01..R04 the models train on the years before Y-1 (:func:`bench.quality_folds.rolling_origin`),
  every setting (fusion weights, cut-off, early-stopping epoch) is chosen on Y-1, and Y is
  scored once.
- **ALQAC** (``alqac_vi``): k-fold cross-validation, settings chosen on each fold's training
  part.

Per fold every system gets the same first-stage window (BM25 top 100) and the same treatment:

- ``bm25``: the first stage alone, its cut-off (``ratio`` policy) tuned on dev;
- ``dense``, ``paraformer``, ``attentive-cnn``: BM25 fused with one model
  (:class:`reranker.fusion.WeightedFusion`), weights and cut-off tuned jointly on dev;
- ``ensemble``: BM25 + dense + Paraformer + Attentive CNN, four weights and the cut-off tuned
  on dev (a 0.1 simplex grid; a weight of 0 drops a model);
- ``ensemble-equal``: the same four signals with equal weights fixed in advance
  (:func:`reranker.fusion.equal_weights`), only the cut-off tuned on dev. Four weights tuned
  on one dev year did not carry over to the next in Japanese (README, "Retrieval quality");
  which of the two a language ships is its release recipe's ``ensemble_system``.

The result is one JSON object: per dataset ``per_year`` (or ``per_fold``) with each system's
F2 / P / R / MRR / R@1 / R@5 and chosen settings, ``mean`` over the folds, and
``gain_over_bm25`` (mean F2 gain, and in how many folds the system beat BM25).

Expensive models are cached (:mod:`bench.quality_folds`): the first run trains every fold
(about 15 minutes per COLIEE fold on a 2-core CPU), later runs only score.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bench.quality_data import Window, bm25_windows, coliee_by_year, read_corpus
from bench.quality_folds import Fold, k_folds, rolling_origin
from bench.quality_models import HeadOptions, train_fold, window_scores
from lexrerank.config import get_settings
from lexrerank.opensearch_client import opensearch_client
from reranker.cutoff import CutoffPolicy, tune_cutoff
from reranker.datasets import read_queries
from reranker.encoder import MULTILINGUAL_ENCODER
from reranker.encoder_training import EncoderTrainingOptions
from reranker.fusion import (
    FIRST_STAGE,
    SignalWindow,
    WeightedFusion,
    equal_weights,
    ranked_by,
    tune_weights,
)
from reranker.ir_metrics import ranking_metrics, set_metrics

SYSTEMS = {
    "bm25": (FIRST_STAGE,),
    "dense": (FIRST_STAGE, "dense"),
    "paraformer": (FIRST_STAGE, "paraformer"),
    "attentive-cnn": (FIRST_STAGE, "attentive-cnn"),
    "ensemble": (FIRST_STAGE, "dense", "paraformer", "attentive-cnn"),
    "ensemble-equal": (FIRST_STAGE, "dense", "paraformer", "attentive-cnn"),
}
#: Systems whose fusion weights are fixed in advance (equal); the others tune them on dev.
EQUAL_WEIGHTS = frozenset({"ensemble-equal"})
METRICS = ("f2", "precision", "recall", "mrr", "recall@1", "recall@5")
ENGLISH_ENCODER_OPTIONS = EncoderTrainingOptions(epochs=2, max_seq_length=192)
#: Japanese: the multilingual encoder (all-MiniLM-L6-v2 does not read Japanese), fine-tuned.
#: e5-small is twice as deep as MiniLM: a higher peak rate and 160 tokens (90 % of the
#: articles fit). How many passes (one or two) is chosen per fold on its dev year (MRR@10).
JAPANESE_INDEX = "statutes-ja"
JAPANESE_ENCODER_OPTIONS = EncoderTrainingOptions(epochs=2, lr=5e-5, max_seq_length=160,
                                                  select_epoch_on_dev=True)
# ALQAC: 100 questions, 5 folds; a quarter of each fold's training part chooses the settings.
ALQAC_FOLDS, ALQAC_SEED, ALQAC_DEV_SHARE = 5, 13, 0.25
ALQAC_HEAD_OPTIONS = HeadOptions(attentive_cnn_epochs=4, paraformer_epochs=10, patience=3)


def signal_windows(queries: Sequence, windows: Mapping[str, Window],
                   scores: Mapping[str, Mapping[str, np.ndarray]]) -> list[SignalWindow]:
    return [SignalWindow(windows[q.qid].doc_ids,
                         {FIRST_STAGE: windows[q.qid].bm25, **scores[q.qid]}, q.gold)
            for q in queries]


def choose(system: str, dev: Sequence[SignalWindow]
           ) -> tuple[WeightedFusion, CutoffPolicy, float]:
    """The system's fusion and cut-off, chosen on ``dev`` only."""
    names = SYSTEMS[system]
    if names == (FIRST_STAGE,):
        fusion = WeightedFusion.of({FIRST_STAGE: 1.0})
        # BM25 keeps its raw scores for the ratio policy (min-max would pin the last to 0).
        rankings = [(list(w.doc_ids), list(w.signals[FIRST_STAGE])) for w in dev]
        policy, f2 = tune_cutoff(rankings, [w.gold for w in dev], kind="ratio")
        return fusion, policy, f2
    if system in EQUAL_WEIGHTS:
        return equal_weights(dev, names)
    return tune_weights(dev, names)


def score(system: str, fusion: WeightedFusion, policy: CutoffPolicy,
          test: Sequence[SignalWindow], qids: Sequence[str]) -> dict[str, float]:
    """The metrics of ``system`` on the test windows under the chosen settings."""
    rankings, returned = {}, {}
    for qid, window in zip(qids, test, strict=True):
        if SYSTEMS[system] == (FIRST_STAGE,):
            docs, scores = list(window.doc_ids), [float(s) for s in window.signals[FIRST_STAGE]]
        else:
            docs, scores = ranked_by(window, fusion)
        rankings[qid] = list(zip(docs, scores, strict=True))
        returned[qid] = docs[: policy.count(scores)]
    qrels = {qid: w.gold for qid, w in zip(qids, test, strict=True)}
    metrics = {**set_metrics(returned, qrels), **ranking_metrics(rankings, qrels, (1, 5))}
    return {k: round(metrics[k], 4) for k in METRICS}


Settings = dict[str, tuple[WeightedFusion, CutoffPolicy, float]]


def chosen_settings(fold: Fold, windows: Mapping[str, Window],
                    scores: Mapping[str, Mapping[str, np.ndarray]], systems: Sequence[str],
                    bm25_tuning: Sequence | None = None) -> Settings:
    """Each system's fusion, cut-off and dev F2, chosen on the fold's dev queries.

    ``bm25_tuning``: queries to choose BM25's cut-off on instead of dev (BM25 is not trained,
    so under cross-validation it may use the whole training part).
    """
    dev = signal_windows(fold.dev, windows, scores)
    bm25_dev = (dev if bm25_tuning is None else
                signal_windows(bm25_tuning, windows, {q.qid: {} for q in bm25_tuning}))
    return {system: choose(system, bm25_dev if system == "bm25" else dev)
            for system in systems}


def evaluate_fold(fold: Fold, windows: Mapping[str, Window],
                  scores: Mapping[str, Mapping[str, np.ndarray]],
                  systems: Sequence[str], bm25_tuning: Sequence | None = None,
                  settings: Settings | None = None, torch_settings: Settings | None = None
                  ) -> dict[str, Any]:
    """Each system's test metrics under settings chosen on the fold's dev queries.

    ``settings``: those :func:`chosen_settings` gives for these scores (computed here when
    None). ``torch_settings``: the ones chosen with the torch encoder's scores; each system
    is then also scored with them (``with_torch_settings``), which is what a deployment that
    switches its encoder backend serves: the shipped settings were chosen with torch.
    """
    if settings is None:
        settings = chosen_settings(fold, windows, scores, systems, bm25_tuning)
    test = signal_windows(fold.test, windows, scores)
    qids = [q.qid for q in fold.test]
    out: dict[str, Any] = {"split": fold.describe()}
    for system in systems:
        fusion, policy, dev_f2 = settings[system]
        out[system] = {**score(system, fusion, policy, test, qids),
                       "chosen_on_dev": {"fusion": fusion.as_dict, "cutoff": str(policy),
                                         "dev_f2": round(dev_f2, 4)}}
        if torch_settings is not None:
            fusion, policy, _ = torch_settings[system]
            out[system]["with_torch_settings"] = score(system, fusion, policy, test, qids)
    return out


def summarise(per_fold: Mapping[str, Mapping[str, Any]], systems: Sequence[str]
              ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, Any]]]:
    """Mean metrics over folds, and each system's F2 gain over BM25."""
    mean = {s: {m: round(float(np.mean([f[s][m] for f in per_fold.values()])), 4)
                for m in METRICS} for s in systems}
    gains = {}
    for s in systems:
        if s == "bm25":
            continue
        diffs = [f[s]["f2"] - f["bm25"]["f2"] for f in per_fold.values()]
        gains[s] = {"f2": round(float(np.mean(diffs)), 4),
                    "per_fold": [round(d, 4) for d in diffs],
                    "folds_better": sum(d > 0 for d in diffs), "folds": len(diffs)}
    return mean, gains


def coliee(language: str = "en", index: str = "statutes",
           test_years: Sequence[str] = ("R01", "R02", "R03", "R04"),
           systems: Sequence[str] = tuple(SYSTEMS), base_encoder: str = "all-MiniLM-L6-v2",
           encoder_options: EncoderTrainingOptions | None = ENGLISH_ENCODER_OPTIONS,
           head_options: HeadOptions | None = None, show_progress: bool = True,
           encoder_backends: Sequence[str] = ("torch",)) -> dict[str, Any]:
    """Rolling-origin figures for one COLIEE language (see the module docstring).

    ``encoder_options`` None keeps ``base_encoder`` frozen (dense and Paraformer read its
    embeddings as they are). ``encoder_backends`` beyond ``torch`` score the same trained
    folds again with that encoder runtime (:func:`by_backend`).
    """
    settings = get_settings()
    client = opensearch_client(settings)
    corpus = read_corpus(client, index)
    by_year = coliee_by_year(settings.data_dir, language)
    windows = bm25_windows(client, index, [q for qs in by_year.values() for q in qs])
    head_options = head_options or HeadOptions()
    models = sorted({m for s in systems for m in SYSTEMS[s]} - {FIRST_STAGE})
    per_year, seconds = {}, {}
    variants: dict[str, dict[str, Any]] = {b: {} for b in encoder_backends if b != "torch"}
    for fold in rolling_origin(by_year, test_years):
        start = time.monotonic()
        trained = train_fold(fold, corpus, windows, base_encoder, encoder_options,
                             head_options, models, show_progress=show_progress)
        scores = window_scores(trained, [*fold.dev, *fold.test], windows, corpus, models)
        settings = chosen_settings(fold, windows, scores, systems)
        per_year[fold.name] = evaluate_fold(fold, windows, scores, systems, settings=settings)
        per_year[fold.name]["encoder_training_seconds"] = trained.encoder_report["seconds"]
        if trained.encoder_report.get("chosen_epoch") is not None:  # chosen on dev
            per_year[fold.name]["encoder_epoch"] = {
                "chosen": trained.encoder_report["chosen_epoch"],
                "dev_mrr@10": trained.encoder_report["dev_mrr_by_epoch"]}
        for backend, folds in variants.items():
            folds[fold.name] = evaluate_fold(
                fold, windows, window_scores(trained, [*fold.dev, *fold.test], windows, corpus,
                                             models, encoder_backend=backend), systems,
                torch_settings=settings)
        seconds[fold.name] = round(time.monotonic() - start, 1)
    mean, gains = summarise(per_year, systems)
    out = {"index": index, "base_encoder": base_encoder,
           "encoder": "fine-tuned" if encoder_options else "frozen",
           "encoder_options": vars(encoder_options) if encoder_options else None,
           "head_options": vars(head_options),
           "per_year": per_year, "mean": mean, "gain_over_bm25": gains,
           "fold_seconds": seconds}
    if variants:
        out["encoder_backends"] = by_backend(variants, mean, systems)
    return out


def by_backend(variants: Mapping[str, Mapping[str, Any]],
               torch_mean: Mapping[str, Mapping[str, float]], systems: Sequence[str]
               ) -> dict[str, dict[str, Any]]:
    """Each encoder backend's folds, means and gains, and its mean F2 minus torch's per system.

    Two ways, both on the folds' trained models, each test fold scored once:
    ``mean_f2_minus_torch``, settings chosen again on dev with the backend's scores (the
    protocol as for torch); ``mean_f2_minus_torch_with_torch_settings``, the backend scored
    with the settings torch chose, as a deployment that switches backends serves the shipped
    settings. The second is the served variant's cost; the first adds the tuning's own
    sensitivity (a margin cut-off sits on an observed dev gap, so a change of 1e-4 in a score
    can flip a dev query and with it the chosen weights).
    """
    out = {}
    for backend, folds in variants.items():
        mean, gains = summarise(folds, systems)
        same = {s: float(np.mean([f[s]["with_torch_settings"]["f2"] for f in folds.values()]))
                for s in systems}
        out[backend] = {"per_fold": folds, "mean": mean, "gain_over_bm25": gains,
                        "mean_f2_minus_torch": {
                            s: round(mean[s]["f2"] - torch_mean[s]["f2"], 4) for s in systems},
                        "mean_f2_minus_torch_with_torch_settings": {
                            s: round(same[s] - torch_mean[s]["f2"], 4) for s in systems}}
    return out


def alqac(index: str = "alqac", folds: int = ALQAC_FOLDS, seed: int = ALQAC_SEED,
          systems: Sequence[str] = tuple(SYSTEMS),
          base_encoder: str = MULTILINGUAL_ENCODER, head_options: HeadOptions | None = None,
          show_progress: bool = True) -> dict[str, Any]:
    """K-fold figures for ALQAC (Vietnamese): each fold's models train on its training part,
    settings are chosen on a held-out share of it, the fold is scored once.

    The encoder stays frozen (multilingual-e5-small): 60 training questions a fold are too few
    to fine-tune it; the Paraformer head and the Attentive CNN are trained per fold.
    """
    settings = get_settings()
    client = opensearch_client(settings)
    corpus = read_corpus(client, index)
    queries = read_queries([settings.data_dir / "alqac2023" / "train.json"])
    windows = bm25_windows(client, index, queries)
    head_options = head_options or ALQAC_HEAD_OPTIONS
    models = sorted({m for s in systems for m in SYSTEMS[s]} - {FIRST_STAGE})
    per_fold, seconds = {}, {}
    for fold in k_folds(queries, folds, seed, dev_share=ALQAC_DEV_SHARE):
        start = time.monotonic()
        trained = train_fold(fold, corpus, windows, base_encoder, None, head_options, models,
                             show_progress=show_progress)
        scores = window_scores(trained, [*fold.dev, *fold.test], windows, corpus, models)
        per_fold[fold.name] = evaluate_fold(fold, windows, scores, systems,
                                            bm25_tuning=[*fold.train, *fold.dev])
        seconds[fold.name] = round(time.monotonic() - start, 1)
    mean, gains = summarise(per_fold, systems)
    return {"index": index, "base_encoder": base_encoder, "encoder": "frozen",
            "folds": folds, "seed": seed, "head_options": vars(head_options),
            "per_fold": per_fold, "mean": mean, "gain_over_bm25": gains,
            "fold_seconds": seconds}


def run(datasets: Sequence[str] = ("coliee_en", "coliee_ja", "alqac_vi"),
        show_progress: bool = True, encoder_backends: Sequence[str] = ("torch",)
        ) -> dict[str, Any]:
    """The quality figures of ``datasets`` (keys of the returned object); COLIEE's also with
    each of ``encoder_backends`` (``encoder_backends`` in its object)."""
    out: dict[str, Any] = {
        "protocol": "COLIEE: rolling origin (train on years < Y-1, choose settings on Y-1, "
                    "test on Y); ALQAC: k-fold cross-validation (settings chosen on the "
                    "training folds). No setting is chosen on the data it is reported on.",
        "device": "cuda" if _cuda() else "cpu",
    }
    if "coliee_en" in datasets:
        out["coliee_en"] = coliee("en", show_progress=show_progress,
                                  encoder_backends=encoder_backends)
    if "coliee_ja" in datasets:
        out["coliee_ja"] = coliee("ja", index=JAPANESE_INDEX, base_encoder=MULTILINGUAL_ENCODER,
                                  encoder_options=JAPANESE_ENCODER_OPTIONS,
                                  show_progress=show_progress,
                                  encoder_backends=encoder_backends)
    if "alqac_vi" in datasets:
        out["alqac_vi"] = alqac(show_progress=show_progress)
    return out


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
