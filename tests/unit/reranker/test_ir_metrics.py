"""Metrics against hand-computed cases (COLIEE Task 3 definitions)."""

from __future__ import annotations

import pytest

from reranker.ir_metrics import precision_recall_f2, ranking_metrics, set_metrics


def test_f2_hand_computed() -> None:
    # 1 of 2 retrieved is gold, 1 of 3 gold retrieved: P=1/2, R=1/3,
    # F2 = 5*(1/2)*(1/3) / (4*(1/2) + 1/3) = (5/6) / (7/3) = 5/14.
    p, r, f2 = precision_recall_f2(["a", "x"], ["a", "b", "c"])
    assert (p, r) == (0.5, pytest.approx(1 / 3))
    assert f2 == pytest.approx(5 / 14)


def test_f2_zero_cases() -> None:
    assert precision_recall_f2([], ["a"]) == (0.0, 0.0, 0.0)
    assert precision_recall_f2(["x"], ["a"]) == (0.0, 0.0, 0.0)
    assert precision_recall_f2(["a"], ["a"]) == (1.0, 1.0, 1.0)


def test_set_metrics_macro_average_counts_missing_queries_as_zero() -> None:
    qrels = {"q1": ["a"], "q2": ["b", "c"], "q3": ["d"]}
    retrieved = {"q1": ["a"], "q2": ["b"]}  # q3 retrieved nothing
    m = set_metrics(retrieved, qrels)
    # q1: P=1 R=1 F2=1; q2: P=1 R=1/2 F2=5*0.5/(4+0.5)=5/9; q3: 0.
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f2"] == pytest.approx((1 + 5 / 9) / 3)


def test_ranking_metrics_hand_computed() -> None:
    qrels = {"q1": ["a"], "q2": ["b", "c"], "q3": ["z"]}
    ranked = {
        "q1": [("x", 3.0), ("a", 2.0)],  # RR 1/2
        "q2": [("c", 9.0), ("y", 1.0), ("b", 0.5)],  # RR 1, R@1 1/2, R@5 1
        # q3 absent: contributes 0 everywhere
    }
    m = ranking_metrics(ranked, qrels, cutoffs=(1, 5))
    assert m["mrr"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert m["recall@1"] == pytest.approx((0 + 0.5 + 0) / 3)
    assert m["recall@5"] == pytest.approx((1 + 1 + 0) / 3)


def test_ranking_uses_list_order_not_raw_scores() -> None:
    # Equal scores must not let the library reorder the ranking we produced.
    m = ranking_metrics({"q": [("x", 1.0), ("a", 1.0)]}, {"q": ["a"]}, cutoffs=(1,))
    assert m["recall@1"] == 0.0 and m["mrr"] == 0.5


def test_empty_qrels_is_an_error() -> None:
    with pytest.raises(ValueError):
        set_metrics({}, {})
