"""`lexrerank bench release`: build the shipped weights of a language by the quality protocol.

The release models are the protocol's fold for the year after the data: trained on every
year but the last, every setting chosen on the last year (COLIEE: H18..R03, settings on R04),
with exactly the code and options `bench quality` measures. The output directory::

    <out>/encoder/        the fine-tuned encoder as a float16 delta (reranker.encoder_delta)
    <out>/paraformer/     its head; fusion and cut-off chosen on the last year
    <out>/attentive-cnn/  the language's Attentive CNN; fusion and cut-off likewise
    <out>/dense/          the bi-encoder alone (article vectors of the same encoder)
    <out>/ensemble/       BM25 + the models; the cut-off (and, by the recipe's
                          ``ensemble_system``, the weights) chosen on the last year

Each config records ``languages`` and, under ``training.settings_chosen_on``, which years
trained the model and which year chose each setting. Before anything is written the shipped
variant (float16 encoder) is scored on the dev year with the chosen settings and compared
with the measured fold model, so what ships is what was measured.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.quality import (
    ALQAC_DEV_SHARE,
    ALQAC_FOLDS,
    ALQAC_HEAD_OPTIONS,
    ALQAC_SEED,
    ENGLISH_ENCODER_OPTIONS,
    EQUAL_WEIGHTS,
    JAPANESE_ENCODER_OPTIONS,
    JAPANESE_INDEX,
    choose,
    score,
    signal_windows,
)
from bench.quality_data import bm25_windows, coliee_by_year, read_corpus
from bench.quality_folds import RELEASE_YEAR, Fold, k_folds, rolling_origin
from bench.quality_models import FoldModels, HeadOptions, train_fold, window_scores
from lexrerank.config import get_settings
from lexrerank.errors import LexrerankError
from lexrerank.opensearch_client import opensearch_client
from reranker.checkpoint import read_config, save_checkpoint, save_ensemble
from reranker.datasets import read_queries
from reranker.dense import DenseReranker
from reranker.encoder import (
    DEFAULT_ENCODER,
    MULTILINGUAL_ENCODER,
    encoder_fingerprint,
    load_encoder,
)
from reranker.encoder_delta import save_delta
from reranker.encoder_training import EncoderTrainingOptions
from reranker.fusion import FIRST_STAGE, Fusion, WeightedFusion

SHIPPED = ("dense", "paraformer", "attentive-cnn", "ensemble")
# The shipped variant may differ from the measured one by float16 rounding only.
MAX_DEV_F2_DRIFT = 0.005


def _write_head(source: Path, target: Path, updates: dict[str, Any]) -> None:
    """Copy a head checkpoint and update its config (weights and their sha256 unchanged)."""
    shutil.copytree(source, target)
    _update_config(target, updates)


def _update_config(checkpoint: Path, updates: dict[str, Any]) -> None:
    config = read_config(checkpoint)
    config.update(updates)
    (checkpoint / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False),
                                            encoding="utf-8")


@dataclass
class _Recipe:
    """What a language's release is trained from (the quality protocol's choices for it)."""

    index: str
    base_encoder: str
    encoder_options: EncoderTrainingOptions | None  # None: the encoder stays frozen
    head_options: HeadOptions
    protocol: str
    # The bench.quality system shipped as `ensemble`: "ensemble" tunes its four weights on
    # dev, "ensemble-equal" fixes them equal. Each language ships the one its own protocol
    # figures favour (README, "Retrieval quality"): Japanese equal, Vietnamese tuned; English
    # keeps tuned weights until its folds are re-measured with equal ones.
    ensemble_system: str


RECIPES = {
    "en": _Recipe("statutes", DEFAULT_ENCODER, ENGLISH_ENCODER_OPTIONS, HeadOptions(),
                  "rolling origin, release fold", "ensemble"),
    "ja": _Recipe(JAPANESE_INDEX, MULTILINGUAL_ENCODER, JAPANESE_ENCODER_OPTIONS, HeadOptions(),
                  "rolling origin, release fold", "ensemble-equal"),
    "vi": _Recipe("alqac", MULTILINGUAL_ENCODER, None, ALQAC_HEAD_OPTIONS,
                  "all ALQAC questions, split as one cross-validation fold", "ensemble"),
}


def _release_fold(language: str, recipe: _Recipe, client: Any) -> tuple[Fold, dict]:
    settings = get_settings()
    if language in ("en", "ja"):
        by_year = coliee_by_year(settings.data_dir, language)
        queries = [q for qs in by_year.values() for q in qs]
        (fold,) = rolling_origin(by_year, (RELEASE_YEAR,))
    else:
        queries = read_queries([settings.data_dir / "alqac2023" / "train.json"])
        # One fold's training part of the cross-validation, here over all questions.
        folds = k_folds(queries, ALQAC_FOLDS, ALQAC_SEED, dev_share=ALQAC_DEV_SHARE)
        fold = Fold("release", (*folds[0].train, *folds[0].test), folds[0].dev, (),
                    f"{len(queries) - len(folds[0].dev)} ALQAC questions")
    return fold, bm25_windows(client, recipe.index, queries)


def build(language: str = "en", out: Path | None = None, index: str | None = None
          ) -> dict[str, Any]:
    """Train (or load from the cache) the release models of ``language`` and write them."""
    if language not in RECIPES:
        raise LexrerankError(f"no release recipe for {language!r}: one of {sorted(RECIPES)}")
    recipe = RECIPES[language]
    index = index or recipe.index
    out = out or Path(__file__).resolve().parents[1] / "reranker" / "weights" / language
    settings = get_settings()
    client = opensearch_client(settings)
    corpus = read_corpus(client, index)
    fold, windows = _release_fold(language, recipe, client)
    trained = train_fold(fold, corpus, windows, recipe.base_encoder, recipe.encoder_options,
                         recipe.head_options)
    dev = list(fold.dev)
    measured = signal_windows(dev, windows, window_scores(trained, dev, windows, corpus))
    chosen = {s: choose(recipe.ensemble_system if s == "ensemble" else s, measured)
              for s in SHIPPED}
    provenance = {"protocol": recipe.protocol, "train": fold.train_tag,
                  "train_queries": len(fold.train), "settings_chosen_on": fold.describe()["dev"],
                  "encoder_options": (vars(recipe.encoder_options) if recipe.encoder_options
                                      else "frozen"),
                  "head_options": vars(recipe.head_options), "index": index}

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".lexrerank-release-", dir=out.parent) as tmp:
        stage = Path(tmp) / language
        stage.mkdir()
        if recipe.encoder_options is not None:
            save_delta(load_encoder(str(trained.encoder_dir), device="cpu"),
                       recipe.base_encoder, stage / "encoder", cache_dir=settings.cache_dir)
            encoder_name = "../encoder"
            fingerprint = encoder_fingerprint(stage / "encoder", cache_dir=settings.cache_dir)
        else:  # the frozen base encoder, by its portable name
            encoder_name = recipe.base_encoder
            fingerprint = encoder_fingerprint(recipe.base_encoder, cache_dir=settings.cache_dir)
        for name, source in (("paraformer", trained.paraformer_dir),
                             ("attentive-cnn", trained.attentive_cnn_dir)):
            fusion, policy, dev_f2 = chosen[name]
            alpha = fusion.as_dict.get(FIRST_STAGE, 0.0)
            updates: dict[str, Any] = {
                "languages": [language], "fusion": Fusion(alpha).to_dict(),
                "cutoff": policy.to_dict(), "metrics": {"dev_f2": round(dev_f2, 4)},
                "training": {**read_config(source).get("training", {}), **provenance}}
            if name == "paraformer":
                updates.update({"encoder": encoder_name, "encoder_fingerprint": fingerprint,
                                "model_version": fingerprint})
            _write_head(source, stage / name, updates)
        fusion, policy, dev_f2 = chosen["dense"]
        dense = DenseReranker(load_encoder(str(stage / "encoder") if encoder_name == "../encoder"
                                           else encoder_name, device="cpu",
                                           cache_dir=settings.cache_dir))
        save_checkpoint(stage / "dense", dense, {
            "languages": [language], "fusion": Fusion(fusion.as_dict.get(FIRST_STAGE, 0.0))
            .to_dict(), "cutoff": policy.to_dict(), "metrics": {"dev_f2": round(dev_f2, 4)},
            "training": {**provenance, "encoder_report": trained.encoder_report}})
        _update_config(stage / "dense", {"encoder": encoder_name})
        fusion, policy, dev_f2 = chosen["ensemble"]
        # Only the members the chosen fusion weighs (a weight of 0 drops a model).
        members = {m: f"../{m}" for m in ("dense", "paraformer", "attentive-cnn")
                   if fusion.as_dict.get(m, 0.0) > 0}
        save_ensemble(stage / "ensemble", members,
                      WeightedFusion.of({k: v for k, v in fusion.as_dict.items() if v > 0}),
                      policy, [language],
                      {**provenance, "dev_f2": round(dev_f2, 4),
                       "fusion_chosen": ("equal weights fixed; cut-off on dev"
                                         if recipe.ensemble_system in EQUAL_WEIGHTS
                                         else "weights and cut-off on dev")})
        drift = _check_shipped(stage, trained, dev, windows, corpus, chosen)
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    return {"out": str(out), "train": fold.train_tag,
            "settings_chosen_on": provenance["settings_chosen_on"],
            "chosen": {s: {"fusion": f.as_dict, "cutoff": str(p), "dev_f2": round(v, 4)}
                       for s, (f, p, v) in chosen.items()},
            "shipped_dev_f2_drift": drift, "sizes_bytes": _sizes(out)}


def _check_shipped(stage: Path, trained: FoldModels, dev: list, windows: dict, corpus: dict,
                   chosen: dict) -> dict[str, float]:
    """Dev F2 of the staged (float16-encoder) models minus the measured ones', per system."""
    encoder_dir = stage / "encoder" if (stage / "encoder").is_dir() else trained.encoder_dir
    shipped = FoldModels(encoder_dir=encoder_dir, encoder_report={},
                         paraformer_dir=stage / "paraformer",
                         attentive_cnn_dir=stage / "attentive-cnn")
    measured = signal_windows(dev, windows, window_scores(trained, dev, windows, corpus))
    staged = signal_windows(dev, windows, window_scores(shipped, dev, windows, corpus))
    qids = [q.qid for q in dev]
    drift = {}
    for system, (fusion, policy, _) in chosen.items():
        before = score(system, fusion, policy, measured, qids)["f2"]
        after = score(system, fusion, policy, staged, qids)["f2"]
        drift[system] = round(after - before, 4)
        if abs(after - before) > MAX_DEV_F2_DRIFT:
            raise LexrerankError(f"the shipped {system} scores {after:.4f} F2 on the dev year, "
                                 f"the measured one {before:.4f}: not shipping it")
    print(f"shipped vs measured dev F2: {drift}", file=sys.stderr)
    return drift


def _sizes(out: Path) -> dict[str, int]:
    return {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
            for p in sorted(out.iterdir()) if p.is_dir()}
