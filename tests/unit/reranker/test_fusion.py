"""Score fusion and its joint tuning with the cut-off."""

from __future__ import annotations

import numpy as np
import pytest

from reranker.fusion import DevQuery, Fusion, minmax, ranked, tune_fusion


def test_minmax_and_constant_vectors() -> None:
    assert minmax(np.array([2.0, 4.0, 3.0])).tolist() == [0.0, 1.0, 0.5]
    assert minmax(np.array([5.0, 5.0])).tolist() == [1.0, 1.0]
    assert minmax(np.array([])).size == 0


def test_fuse_is_scale_free_and_weighted() -> None:
    bm25, model = [30.0, 20.0, 10.0], [-1.0, 3.0, 1.0]
    assert Fusion(1.0).fuse(bm25, model).tolist() == [1.0, 0.5, 0.0]
    assert Fusion(0.0).fuse(bm25, model).tolist() == [0.0, 1.0, 0.5]
    half = Fusion(0.5).fuse(bm25, model)
    assert half.tolist() == pytest.approx([0.5, 0.75, 0.25])
    # Multiplying BM25 by a constant changes nothing after normalisation.
    assert Fusion(0.5).fuse([3.0, 2.0, 1.0], model).tolist() == pytest.approx(half.tolist())


def test_round_trip_and_unknown_kind() -> None:
    assert Fusion.from_dict(Fusion(0.35).to_dict()) == Fusion(0.35)
    with pytest.raises(ValueError):
        Fusion.from_dict({"kind": "rrf", "alpha": 0.5})


def test_tuning_finds_the_mix_that_ranks_gold_first() -> None:
    # q1: BM25 is right, the model wrong; q2: the model is right, BM25 wrong. Only a mix that
    # trusts the stronger signal per query by margin gets both: BM25's margin in q1 (10 vs 1)
    # is large, the model's in q2 is large, so alpha near 0.5 wins both.
    dev = [
        DevQuery(["a", "b"], [10.0, 1.0], [0.0, 0.2], ["a"]),
        DevQuery(["c", "d"], [1.0, 1.2], [5.0, 0.0], ["c"]),
    ]
    fusion, policy, f2 = tune_fusion(dev)
    assert f2 == pytest.approx(1.0)
    assert [ranked(q, fusion)[0][0] for q in dev] == ["a", "c"]
    assert 0.0 < fusion.alpha < 1.0
    assert policy.count(ranked(dev[0], fusion)[1]) >= 1
