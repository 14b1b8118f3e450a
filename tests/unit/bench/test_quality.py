"""The quality protocol never chooses a setting on the data it reports."""

from __future__ import annotations

import numpy as np
import pytest

from bench.quality import chosen_settings, evaluate_fold, summarise
from bench.quality_data import Window
from bench.quality_folds import COLIEE_YEARS, k_folds, rolling_origin
from reranker.datasets import Query


class _Fold:
    """The parts of a :class:`bench.quality_folds.Fold` the scoring reads."""

    def __init__(self, dev: list[Query], test: list[Query]) -> None:
        self.dev, self.test = dev, test

    def describe(self) -> dict:
        return {}


def _year_queries(year: str, n: int = 3) -> list[Query]:
    return [Query(f"{year}-{i:02d}-A", f"question {year} {i}", (str(i),)) for i in range(n)]


def _years_of(queries) -> set[str]:
    return {q.qid.split("-")[0] for q in queries}


def test_rolling_origin_trains_before_the_dev_year_and_tests_after_it():
    by_year = {y: _year_queries(y) for y in COLIEE_YEARS}
    folds = rolling_origin(by_year, ("R01", "R04", "R05"))
    r01, r04, release = folds
    assert _years_of(r01.dev) == {"H30"} and _years_of(r01.test) == {"R01"}
    assert _years_of(r01.train) == set(COLIEE_YEARS[:COLIEE_YEARS.index("H30")])
    assert _years_of(r04.dev) == {"R03"} and _years_of(r04.test) == {"R04"}
    assert "R03" not in _years_of(r04.train) and "R04" not in _years_of(r04.train)
    assert r04.train_tag == "H18..R02"
    # The release fold: everything before the last year, settings chosen on the last year.
    assert _years_of(release.dev) == {"R04"} and not release.test
    assert _years_of(release.train) == set(COLIEE_YEARS[:-1])
    with pytest.raises(ValueError, match="no rolling-origin fold"):
        rolling_origin(by_year, ("H19",))  # no year before its dev year to train on


def test_k_folds_are_disjoint_and_each_fold_tunes_on_its_training_part():
    queries = [Query(f"q{i}", f"text {i}", ("1",)) for i in range(100)]
    folds = k_folds(queries, k=5, seed=3)
    tested = [q.qid for f in folds for q in f.test]
    assert sorted(tested) == sorted(q.qid for q in queries)
    for fold in folds:
        test = {q.qid for q in fold.test}
        assert not test & {q.qid for q in (*fold.train, *fold.dev)}
        assert len(fold.dev) == 16 and len(fold.train) == 64


def test_settings_come_from_dev_and_test_is_scored_with_them():
    # Dev rewards the model; test would reward BM25. The chosen weights must still be dev's.
    dev_q = [Query(f"d{i}", "x", ("g",)) for i in range(10)]
    test_q = [Query(f"t{i}", "x", ("g",)) for i in range(10)]
    windows = {q.qid: Window(q.qid, ("g", "x", "y"), (2.0, 3.0, 1.0), q.gold) for q in dev_q}
    windows.update({q.qid: Window(q.qid, ("g", "x", "y"), (3.0, 2.0, 1.0), q.gold)
                    for q in test_q})
    scores = {q.qid: {"paraformer": np.array([3.0, 1.0, 0.0])} for q in dev_q}
    scores.update({q.qid: {"paraformer": np.array([0.0, 3.0, 1.0])} for q in test_q})

    fold = _Fold(dev_q, test_q)
    result = evaluate_fold(fold, windows, scores, ("bm25", "paraformer"))
    chosen = result["paraformer"]["chosen_on_dev"]
    assert chosen["dev_f2"] == pytest.approx(1.0)
    assert chosen["fusion"].get("paraformer", 0) > 0.5
    assert result["bm25"]["f2"] == pytest.approx(1.0)  # BM25 is right on test
    assert result["paraformer"]["f2"] < 1.0  # and the dev-chosen fusion is not
    mean, gains = summarise({"R01": result, "R02": result}, ("bm25", "paraformer"))
    assert gains["paraformer"]["folds_better"] == 0
    assert gains["paraformer"]["f2"] == pytest.approx(result["paraformer"]["f2"] - 1.0,
                                                      abs=1e-4)
    assert mean["bm25"]["f2"] == pytest.approx(1.0)


def test_a_backend_is_also_scored_with_the_settings_torch_chose():
    # Torch's Paraformer is right on dev, so its settings lean on it; the backend's is wrong
    # on dev (re-tuning cannot trust it) but right on test, where BM25 is wrong.
    dev_q = [Query(f"d{i}", "x", ("g",)) for i in range(10)]
    test_q = [Query(f"t{i}", "x", ("g",)) for i in range(10)]
    windows = {q.qid: Window(q.qid, ("g", "x", "y"), (2.0, 3.0, 1.0), q.gold)
               for q in (*dev_q, *test_q)}
    torch_scores = {q.qid: {"paraformer": np.array([3.0, 1.0, 0.0])} for q in dev_q}
    backend_scores = {q.qid: {"paraformer": np.array([0.0, 3.0, 1.0])} for q in dev_q}
    for scores in (torch_scores, backend_scores):
        scores.update({q.qid: {"paraformer": np.array([3.0, 1.0, 0.0])} for q in test_q})

    systems, fold = ("bm25", "paraformer"), _Fold(dev_q, test_q)
    settings = chosen_settings(fold, windows, torch_scores, systems)
    torch_result = evaluate_fold(fold, windows, torch_scores, systems, settings=settings)
    backend = evaluate_fold(fold, windows, backend_scores, systems, torch_settings=settings)
    assert torch_result["paraformer"]["chosen_on_dev"]["dev_f2"] == pytest.approx(1.0)
    assert backend["paraformer"]["chosen_on_dev"]["dev_f2"] < 1.0  # re-tuned on its own dev
    assert backend["paraformer"]["with_torch_settings"]["f2"] == pytest.approx(1.0)
    assert backend["paraformer"]["with_torch_settings"] == {
        k: torch_result["paraformer"][k] for k in backend["paraformer"]["with_torch_settings"]}
    assert "with_torch_settings" not in torch_result["paraformer"]
