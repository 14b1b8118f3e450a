"""The folds of the quality protocol and the models trained for each (cached on disk).

COLIEE is split by year, rolling origin (DESIGN.md, "Evaluation"): for a test year Y the
models train on every year before Y-1, every setting is chosen on Y-1, and Y is scored once.
ALQAC has no years: k folds, each fold's training part split again into train and dev.

Training an encoder is the expensive step (minutes per fold on a CPU), so each fold's
fine-tuned encoder is saved under ``<LEXRERANK_CACHE>/quality/encoders/<key>``, where the key
hashes everything the result depends on: the base encoder's fingerprint, the training query
ids and texts, the corpus passages and the options. A rerun with the same inputs loads it; a
change of any input trains a new one.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from lexrerank.config import get_settings
from reranker.datasets import Query
from reranker.encoder import encoder_fingerprint, load_encoder, resolve_encoder_path
from reranker.encoder_training import (
    EncoderTrainingOptions,
    finetune_encoder,
    save_encoder,
)
from reranker.training import TrainingExample

COLIEE_YEARS = tuple(f"H{n}" for n in range(18, 31)) + ("R01", "R02", "R03", "R04")
TEST_YEARS = ("R01", "R02", "R03", "R04")
# The fold whose dev year is the last year of the data: how the release models are trained.
RELEASE_YEAR = "R05"
# A dotfile: the encoder fingerprint skips it, so the report never changes the model version.
REPORT_FILE = ".lexrerank-training.json"


@dataclass(frozen=True)
class Fold:
    """One train / dev / test split. ``name`` is the test year (COLIEE) or ``fold-i``."""

    name: str
    train: tuple[Query, ...]
    dev: tuple[Query, ...]
    test: tuple[Query, ...]
    train_tag: str  # human-readable description of the training part, e.g. "H18..H29"

    def describe(self) -> dict[str, object]:
        return {"train": self.train_tag, "train_queries": len(self.train),
                "dev": _span(self.dev), "dev_queries": len(self.dev),
                "test": _span(self.test), "test_queries": len(self.test)}


def _span(queries: Sequence[Query]) -> str:
    years = sorted({q.qid.split("-")[0] for q in queries}, key=_year_order)
    if len(years) > 3 or not all(y in COLIEE_YEARS for y in years):
        return f"{len(queries)} queries"
    return ",".join(years)


def _year_order(year: str) -> int:
    return COLIEE_YEARS.index(year) if year in COLIEE_YEARS else len(COLIEE_YEARS)


def rolling_origin(by_year: Mapping[str, Sequence[Query]],
                   test_years: Sequence[str] = TEST_YEARS) -> list[Fold]:
    """For each test year Y: train on the years before Y-1, dev = Y-1, test = Y.

    A "fold" for the year after the last one (e.g. R05) has no test queries: it is how the
    release model is trained (before the last year, settings chosen on the last year).
    """
    folds = []
    for year in test_years:
        if year == RELEASE_YEAR:  # the year after the data: the release fold
            position = len(COLIEE_YEARS)
        elif year in COLIEE_YEARS[2:]:
            position = COLIEE_YEARS.index(year)
        else:
            raise ValueError(f"no rolling-origin fold for {year!r}: test years are "
                             f"{COLIEE_YEARS[2]}..{COLIEE_YEARS[-1]} and {RELEASE_YEAR}")
        dev_year = COLIEE_YEARS[position - 1]
        train_years = COLIEE_YEARS[: position - 1]
        folds.append(Fold(
            name=year,
            train=tuple(q for y in train_years for q in by_year.get(y, ())),
            dev=tuple(by_year.get(dev_year, ())),
            test=tuple(by_year.get(year, ())),
            train_tag=f"{train_years[0]}..{train_years[-1]}",
        ))
    return folds


def k_folds(queries: Sequence[Query], k: int = 5, seed: int = 13, dev_share: float = 0.2
            ) -> list[Fold]:
    """K folds; each fold's other queries are split into train and dev (``dev_share``)."""
    shuffled = sorted(queries, key=lambda q: q.qid)
    random.Random(seed).shuffle(shuffled)
    parts = [shuffled[i::k] for i in range(k)]
    folds = []
    for i, test in enumerate(parts):
        rest = [q for j, part in enumerate(parts) if j != i for q in part]
        n_dev = max(1, round(len(rest) * dev_share))
        folds.append(Fold(name=f"fold-{i + 1}", train=tuple(rest[n_dev:]),
                          dev=tuple(rest[:n_dev]), test=tuple(test),
                          train_tag=f"{len(rest) - n_dev} queries of folds != {i + 1}"))
    return folds


def encoder_cache_root() -> Path:
    return get_settings().cache_dir / "quality" / "encoders"


def encoder_key(base: str, examples: Sequence[TrainingExample], passages: Mapping[str, str],
                options: EncoderTrainingOptions, dev: Sequence[TrainingExample] = ()) -> str:
    """A hash of everything a fine-tuned encoder depends on (see the module docstring); the
    dev queries count only when they choose the epoch."""
    digest = hashlib.sha256()
    digest.update(encoder_fingerprint(base, cache_dir=get_settings().cache_dir).encode())
    digest.update(json.dumps(asdict(options), sort_keys=True).encode())
    for ex in examples:
        digest.update(json.dumps([ex.qid, ex.query, ex.positives, ex.candidates]).encode())
    if options.select_epoch_on_dev:
        digest.update(b"dev\0")
        for ex in dev:
            digest.update(json.dumps([ex.qid, ex.query, ex.positives]).encode())
    for doc_id in sorted(passages):
        digest.update(doc_id.encode() + b"\0" + passages[doc_id].encode() + b"\0")
    return digest.hexdigest()[:16]


def fold_encoder(fold_name: str, base: str, examples: Sequence[TrainingExample],
                 passages: Mapping[str, str], options: EncoderTrainingOptions,
                 articles: Mapping[str, tuple[str, Sequence[str]]] | None = None,
                 show_progress: bool = True, dev: Sequence[TrainingExample] = ()
                 ) -> tuple[Path, dict]:
    """The fold's fine-tuned encoder directory (trained now unless cached) and its report.

    ``dev``: the fold's dev queries, which choose the epoch under
    ``options.select_epoch_on_dev`` (never trained on).
    """
    key = encoder_key(base, examples, passages, options, dev)
    out = encoder_cache_root() / f"{fold_name}-{key}"
    report_file = out / REPORT_FILE
    if report_file.is_file():
        return out, json.loads(report_file.read_text(encoding="utf-8"))
    print(f"fine-tuning the encoder for {fold_name} ({len(examples)} queries)",
          file=sys.stderr)
    model = load_encoder(resolve_encoder_path(base, cache_dir=get_settings().cache_dir),
                         device=None)
    report = finetune_encoder(model, examples, passages, options, articles=articles, dev=dev,
                              base_name=base, show_progress=show_progress).to_dict()
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_encoder(model, tmp)
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2),
                                                      encoding="utf-8")
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, report
