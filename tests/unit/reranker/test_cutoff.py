"""Cut-off policies: how many articles each query returns."""

from __future__ import annotations

import pytest

from reranker.cutoff import CutoffPolicy, mean_f2, tune_cutoff


def test_policies_count() -> None:
    scores = [10.0, 9.0, 7.0, 2.0]
    assert CutoffPolicy("top_k", 2, 2).count(scores) == 2
    assert CutoffPolicy("ratio", 0.85, 5).count(scores) == 2  # 9 >= 8.5 > 7
    assert CutoffPolicy("ratio", 0.6, 5).count(scores) == 3
    assert CutoffPolicy("ratio", 0.1, 2).count(scores) == 2  # capped by max_k
    assert CutoffPolicy("margin", 3.0, 5).count(scores) == 3  # >= 7
    assert CutoffPolicy("margin", 0.0, 5).count(scores) == 1
    assert CutoffPolicy("top_k", 1, 1).count([]) == 0


def test_parse_round_trip_and_errors() -> None:
    for spec in ("top_k:1", "ratio:0.84:5", "margin:0.5:3"):
        assert str(CutoffPolicy.parse(spec)) == spec
    assert CutoffPolicy.from_dict(CutoffPolicy.parse("ratio:0.9").to_dict()).max_k == 3
    for bad in ("top_k", "ratio:x", "best:3", "top_k:1:2:3"):
        with pytest.raises(ValueError):
            CutoffPolicy.parse(bad)
    with pytest.raises(ValueError):
        CutoffPolicy("median", 1, 1)


def test_tuning_prefers_a_second_article_when_it_pays() -> None:
    # Two queries whose gold pair has close scores: returning both lifts F2 from 5/9 to 1.
    rankings = [(["a", "b", "c"], [10.0, 9.5, 2.0]), (["d", "e", "f"], [8.0, 7.8, 1.0])]
    golds = [["a", "b"], ["d", "e"]]
    assert mean_f2(CutoffPolicy(), rankings, golds) == pytest.approx(5 / 9)
    policy, f2 = tune_cutoff(rankings, golds, kind="ratio")
    assert f2 == pytest.approx(1.0)
    assert all(policy.count(s) == 2 for _, s in rankings)


def test_tuning_keeps_top1_when_nothing_is_better() -> None:
    rankings = [(["a", "b"], [10.0, 9.9]), (["c", "d"], [5.0, 4.9])]
    policy, f2 = tune_cutoff(rankings, [["a"], ["c"]], kind="margin")
    assert str(policy) == "top_k:1" and f2 == 1.0
