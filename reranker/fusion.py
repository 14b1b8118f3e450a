"""Score fusion: a calibrated combination of the first-stage score and the model score.

Both scores are min-max normalised within the query's rerank window, so BM25's corpus- and
query-dependent scale and the model's logit scale do not matter; the fused score is
``alpha * bm25_norm + (1 - alpha) * model_norm``. ``alpha`` is tuned on dev data together with
the cut-off policy (F2 rewards returning a second article when it scores close to the first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from reranker.cutoff import CutoffPolicy, tune_cutoff


@dataclass(frozen=True)
class Fusion:
    alpha: float = 0.0  # weight of the first-stage score; 0 = model only

    def fuse(self, first_stage: Sequence[float], model: Sequence[float]) -> np.ndarray:
        """Fused scores, shape [N], for N candidates of one query (same order as inputs)."""
        return (self.alpha * minmax(np.asarray(first_stage, dtype=np.float64))
                + (1.0 - self.alpha) * minmax(np.asarray(model, dtype=np.float64)))

    def to_dict(self) -> dict:
        return {"kind": "minmax_linear", **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping) -> Fusion:
        if data.get("kind", "minmax_linear") != "minmax_linear":
            raise ValueError(f"unknown fusion kind {data.get('kind')!r}")
        return cls(alpha=float(data["alpha"]))


def minmax(x: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; a constant vector maps to all ones (every candidate ties at the top)."""
    if x.size == 0:
        return x
    lo, hi = float(x.min()), float(x.max())
    if hi - lo < 1e-12:
        return np.ones_like(x)
    return (x - lo) / (hi - lo)


@dataclass
class DevQuery:
    """One dev query's window: candidate ids, their first-stage and model scores, the gold."""

    doc_ids: Sequence[str]
    first_stage: Sequence[float]
    model: Sequence[float]
    gold: Sequence[str]


def ranked(query: DevQuery, fusion: Fusion) -> tuple[list[str], list[float]]:
    fused = fusion.fuse(query.first_stage, query.model)
    order = np.argsort(-fused, kind="stable")
    return [query.doc_ids[i] for i in order], [float(fused[i]) for i in order]


def tune_fusion(dev: Sequence[DevQuery], alphas: Sequence[float] | None = None
                ) -> tuple[Fusion, CutoffPolicy, float]:
    """Grid-search ``alpha`` and the cut-off jointly for the best macro F2 on ``dev``."""
    if not dev:
        raise ValueError("no dev queries to tune on")
    grid = alphas if alphas is not None else [round(0.05 * i, 2) for i in range(21)]
    best: tuple[Fusion, CutoffPolicy, float] = (Fusion(), CutoffPolicy(), -1.0)
    golds = [q.gold for q in dev]
    for alpha in grid:
        fusion = Fusion(alpha)
        policy, f2 = tune_cutoff([ranked(q, fusion) for q in dev], golds, kind="margin")
        if f2 > best[2] + 1e-12:
            best = (fusion, policy, f2)
    return best


# -- several signals: BM25 and any number of models ------------------------------------------

FIRST_STAGE = "bm25"


@dataclass(frozen=True)
class WeightedFusion:
    """``sum_k w_k * minmax(signal_k)`` within the window, for named signals.

    ``weights`` maps a signal name (``"bm25"`` for the first stage, a model name for each
    model) to its weight; the weights of a tuned fusion sum to 1. The two-signal
    :class:`Fusion` is the case ``{"bm25": alpha, <model>: 1 - alpha}``.
    """

    weights: tuple[tuple[str, float], ...]

    @classmethod
    def of(cls, weights: Mapping[str, float]) -> WeightedFusion:
        return cls(tuple(sorted((name, float(w)) for name, w in weights.items())))

    @property
    def as_dict(self) -> dict[str, float]:
        return dict(self.weights)

    def fuse(self, signals: Mapping[str, Sequence[float] | np.ndarray]) -> np.ndarray:
        """Fused scores [N] for N candidates; ``signals[name]`` is [N] for every weight's name."""
        missing = [name for name, _ in self.weights if name not in signals]
        if missing:
            raise ValueError(f"fusion needs the signals {missing}; got {sorted(signals)}")
        total: np.ndarray | None = None
        for name, weight in self.weights:
            part = weight * minmax(np.asarray(signals[name], dtype=np.float64))
            total = part if total is None else total + part
        return total if total is not None else np.zeros(0)

    def to_dict(self) -> dict:
        return {"kind": "minmax_weighted", "weights": self.as_dict}

    @classmethod
    def from_dict(cls, data: Mapping) -> WeightedFusion:
        if data.get("kind") != "minmax_weighted":
            raise ValueError(f"not a weighted fusion: {data.get('kind')!r}")
        weights = data.get("weights")
        if not isinstance(weights, Mapping) or not weights:
            raise ValueError("a weighted fusion needs a non-empty 'weights' object")
        return cls.of({str(k): float(v) for k, v in weights.items()})


@dataclass
class SignalWindow:
    """One dev query's window with every signal: ``signals[name]`` is [N] per candidate."""

    doc_ids: Sequence[str]
    signals: Mapping[str, Sequence[float]]
    gold: Sequence[str]


def simplex_grid(names: Sequence[str], step: float = 0.1) -> list[dict[str, float]]:
    """Every weighting of ``names`` with weights in multiples of ``step`` summing to 1."""
    units = round(1 / step)

    def split(n: int, total: int) -> list[list[int]]:
        if n == 1:
            return [[total]]
        return [[i, *rest] for i in range(total + 1) for rest in split(n - 1, total - i)]

    return [{name: round(u / units, 6) for name, u in zip(names, parts, strict=True)}
            for parts in split(len(names), units)]


def ranked_by(window: SignalWindow, fusion: WeightedFusion) -> tuple[list[str], list[float]]:
    fused = fusion.fuse(window.signals)
    order = np.argsort(-fused, kind="stable")
    return [window.doc_ids[i] for i in order], [float(fused[i]) for i in order]


def equal_weights(dev: Sequence[SignalWindow], names: Sequence[str]
                  ) -> tuple[WeightedFusion, CutoffPolicy, float]:
    """Equal weights of ``names`` (CombSUM of the min-max normalised signals); only the
    cut-off is tuned on ``dev``, for macro F2.

    The alternative to :func:`tune_weights` when one dev set does not pin the weights down:
    the Japanese weights tuned on adjacent COLIEE years differed by up to 0.6, and there equal
    weights carried over to the test years better; on ALQAC they did not (README).
    """
    if not dev:
        raise ValueError("no dev queries to tune on")
    fusion = WeightedFusion.of({name: round(1 / len(names), 6) for name in names})
    policy, f2 = tune_cutoff([ranked_by(w, fusion) for w in dev], [w.gold for w in dev],
                             kind="margin")
    return fusion, policy, f2


def tune_weights(dev: Sequence[SignalWindow], names: Sequence[str], step: float = 0.1
                 ) -> tuple[WeightedFusion, CutoffPolicy, float]:
    """Grid-search the fusion weights of ``names`` and the cut-off jointly for macro F2 on dev.

    Ties go to the earlier grid point (more weight on the earlier names), so a signal gets
    weight only when it strictly improves F2 on dev.
    """
    if not dev:
        raise ValueError("no dev queries to tune on")
    golds = [w.gold for w in dev]
    best: tuple[WeightedFusion, CutoffPolicy, float] = (
        WeightedFusion.of({names[0]: 1.0}), CutoffPolicy(), -1.0)
    for weights in simplex_grid(names, step):
        fusion = WeightedFusion.of({k: v for k, v in weights.items() if v > 0})
        policy, f2 = tune_cutoff([ranked_by(w, fusion) for w in dev], golds, kind="margin")
        if f2 > best[2] + 1e-12:
            best = (fusion, policy, f2)
    return best

